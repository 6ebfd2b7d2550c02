"""Pencil-beam dose evaluation shared by the influence matrix and plan recalculation.

For the voxels a beam can reach, :func:`beam_points` gathers BEV position ``(u, v)``,
axial distance ``z``, radiological depth and local density; :func:`kernel_terms`
turns them into per-component amplitudes and lateral widths (see
:mod:`art.dose.kernel`); :func:`fluence_dose` and :func:`beamlet_block` integrate
the separable Gaussian kernels exactly over rectangular fluence pixels (erf).
The numeric core takes its array namespace from its inputs (NumPy or CuPy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from art.backend import array_namespace
from art.content_cache import ContentCache, Digest
from art.dose.beam_geometry import BeamFrame
from art.dose.kernel import LATERAL_DENSITY_FLOOR, PencilKernel, gaussian_bin_integrals
from art.dose.raytrace import radiological_depth, sample_density
from art.geometry import Volume


@dataclass
class BeamPoints:
    """Per-voxel beam geometry (all arrays shape (n,), float32)."""

    u: np.ndarray
    v: np.ndarray
    z: np.ndarray
    depth: np.ndarray
    rho: np.ndarray


#: Radiological depths and densities of beams at point sets (:func:`beam_points` with ``geometry_key``):
#: a plan recomputed on the same density and grid (the scheduled and adapted plans of a day share their
#: beams' geometry; normalisation and the correction stage recompute a plan's final dose) traces its rays once.
DEPTHS = ContentCache(192 * 2**20)


def beam_points(density: Volume, frame: BeamFrame, points_lps: np.ndarray, *, lateral_step_mm: float = 2.0, bev: tuple | None = None,
                geometry_key: bytes | None = None) -> BeamPoints:  # fmt: skip
    """Geometry of LPS points (n, 3) for one beam: BEV (u, v) at the isocentre plane (mm),
    axial distance from the source z (mm), radiological depth (mm) and relative density.
    ``bev``: ``frame.to_bev(points_lps)`` if the caller already has it. ``geometry_key``: a digest of
    the density (values and grid) and of ``points_lps`` (:func:`geometry_key`); with it the depth and
    density are kept in (and taken from) :data:`DEPTHS` under that key and the beam's frame."""
    u, v, z = frame.to_bev(points_lps) if bev is None else bev
    key = None
    if geometry_key is not None:
        key = Digest(geometry_key, frame.rotation, frame.isocenter, frame.sad, float(lateral_step_mm)).digest()
        hit = DEPTHS.get(key)
        if hit is not None:
            f4 = np.float32
            return BeamPoints(u.astype(f4), v.astype(f4), z.astype(f4), hit[0], hit[1])
    d = radiological_depth(density, frame, points_lps, lateral_step_mm=lateral_step_mm, bev=(u, v, z))
    rho = sample_density(density, points_lps)
    if key is not None:
        DEPTHS.put(key, d, rho)
    f4 = np.float32
    return BeamPoints(u.astype(f4), v.astype(f4), z.astype(f4), d, rho)


def geometry_key(density: Volume, points_lps: np.ndarray) -> bytes:
    """The digest of a density (values and grid) and of LPS points (n, 3) that keys :data:`DEPTHS`."""
    return Digest("beam points", density.grid, np.asarray(density.array), np.asarray(points_lps)).digest()


def softening_factor(machine, pts: BeamPoints) -> np.ndarray | None:
    """Off-axis softening of the machine as a per-point depth factor (float32, shape (n,)):
    ``exp(-(mu_ratio(r) - 1) · mu_eff · (d - d_ref))`` with ``r`` the point's radius at the isocentre
    plane (mm), ``d`` its radiological depth, ``mu_eff`` the central-axis attenuation of the calibration
    field (:meth:`~art.dose.machine.Machine.effective_mu_per_mm`) and ``d_ref`` the calibration depth;
    None when the machine has no off-axis softening (factor 1)."""
    if not machine.has_off_axis_softening:
        return None
    r = np.hypot(pts.u.astype(np.float64), pts.v.astype(np.float64))
    mu = machine.effective_mu_per_mm()
    excess = machine.off_axis_mu_ratio(r) - 1.0
    return np.exp(-excess * mu * (pts.depth.astype(np.float64) - machine.calib_depth_mm)).astype(np.float32)


def kernel_terms(kernel: PencilKernel, pts: BeamPoints, xp=np) -> tuple:
    """Amplitudes ``(SAD/z)² w_i(d)`` (Gy/MU) and iso-plane widths ``σ_i(d) SAD/z`` (mm).

    The primary width is divided by the local density where it is below 1
    (floored at ``LATERAL_DENSITY_FLOOR``): lateral electron transport is longer in lung.

    Returns
    -------
    amp, sig : arrays (n, n_components), float32, in namespace ``xp``
    """
    w, s = kernel.at(pts.depth)
    sad = kernel.sad_mm
    scale = (sad / pts.z).astype(np.float32)
    rho = np.clip(pts.rho, LATERAL_DENSITY_FLOOR, 1.0)
    s = s.copy()
    s[:, 0] = s[:, 0] / rho
    amp = w * (scale**2)[:, None]
    sig = s * scale[:, None]
    if xp is not np:
        return xp.asarray(amp), xp.asarray(sig)
    return amp, sig


def fluence_dose(amp, sig, u, v, x_edges, y_edges, fluence, *, chunk: int = 16384):
    """Dose (Gy) at points from a fluence map (MU per pixel, S_c included).

    Parameters
    ----------
    amp, sig : (n, nc) from :func:`kernel_terms`
    u, v : (n,) BEV positions at the isocentre plane, mm
    x_edges : (nx + 1,), y_edges : (ny + 1,) pixel edges at the isocentre plane, mm
    fluence : (ny, nx) MU-weighted open fraction of each pixel

    Returns
    -------
    (n,) float32 array in the inputs' namespace.
    """
    xp = array_namespace(amp)
    n = int(u.shape[0])
    out = xp.zeros(n, dtype=xp.float32)
    fl = xp.asarray(fluence, dtype=xp.float32)
    ex = xp.asarray(x_edges, dtype=xp.float32)
    ey = xp.asarray(y_edges, dtype=xp.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        acc = xp.zeros(b - a, dtype=xp.float32)
        for i in range(amp.shape[1]):
            gx = gaussian_bin_integrals(u[a:b], sig[a:b, i], ex, xp=xp)
            gy = gaussian_bin_integrals(v[a:b], sig[a:b, i], ey, xp=xp)
            acc += amp[a:b, i] * xp.sum((gy @ fl) * gx, axis=1)
        out[a:b] = acc
    return out


def beamlet_block(amp, sig, u, v, x_edges, y_edges, col_x, col_y):
    """Dense dose per unit weight (Gy/MU) of beamlets at points.

    Beamlet ``j`` is the pixel ``[x_edges[col_x[j]], x_edges[col_x[j]+1]] ×
    [y_edges[col_y[j]], y_edges[col_y[j]+1]]``.

    Returns
    -------
    (n, n_beamlets) float32
    """
    xp = array_namespace(amp)
    ex = xp.asarray(x_edges, dtype=xp.float32)
    ey = xp.asarray(y_edges, dtype=xp.float32)
    out = None
    for i in range(amp.shape[1]):
        gx = gaussian_bin_integrals(u, sig[:, i], ex, xp=xp) * amp[:, i : i + 1]
        gy = gaussian_bin_integrals(v, sig[:, i], ey, xp=xp)
        term = gx[:, col_x] * gy[:, col_y]
        out = term if out is None else out + term
    return out
