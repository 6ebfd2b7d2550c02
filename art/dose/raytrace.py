"""Radiological (water-equivalent) depth by cumulative sampling on a divergent BEV grid.

For a beam, the density volume is sampled on a fan of rays (a regular grid in BEV
``(u, v)`` at the isocentre plane × axial distance ``z`` from the source) with
trilinear interpolation, accumulated along each ray (midpoint rule, step length
corrected for the ray's obliquity) and interpolated back at the requested points.
Everything is vectorised (``scipy.ndimage.map_coordinates`` and ``cumsum``); no
Python loop over voxels or rays. Outside the density volume the medium is vacuum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from art.dose.beam_geometry import BeamFrame
from art.errors import InputError
from art.geometry import Volume


def _grid_z_range(frame: BeamFrame, density: Volume) -> tuple[float, float]:
    corners = density.grid.corners_lps()
    _, _, z = frame.to_bev(corners)
    return float(np.nanmin(z)), float(np.nanmax(z))


def radiological_depth(
    density: Volume,
    frame: BeamFrame,
    points_lps: np.ndarray,
    *,
    lateral_step_mm: float = 2.0,
    axial_step_mm: float | None = None,
    max_samples: int = 40_000_000,
    bev: tuple | None = None,
) -> np.ndarray:
    """Water-equivalent depth (mm) of points along rays from the beam's source.

    Parameters
    ----------
    density : Volume
        Relative electron density (water = 1) on any grid.
    frame : BeamFrame
        The beam (source position, BEV axes).
    points_lps : ndarray, shape (n, 3)
        LPS points, mm.
    lateral_step_mm : float, keyword-only
        Ray spacing at the isocentre plane, mm.
    axial_step_mm : float, keyword-only
        Sampling step along the central axis; default half the smallest voxel size.
    max_samples : int, keyword-only
        Guard against runaway memory; the fan is coarsened if it would exceed this.
    bev : tuple of three (n,) arrays, keyword-only
        ``frame.to_bev(points_lps)`` if the caller already has it.

    Returns
    -------
    ndarray, shape (n,), float32
        ∫ ρ dl from the source to each point (0 for points before the volume).
    """
    pts = np.asarray(points_lps, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"points_lps must have shape (n, 3), got {pts.shape}")
    if pts.shape[0] == 0:
        return np.zeros(0, np.float32)
    u, v, z = frame.to_bev(pts) if bev is None else bev
    if np.any(~np.isfinite(u)) or np.any(z <= 0):
        raise InputError("some points lie behind the beam's source")
    fan = _fan_lattice(density, frame, u, v, z, lateral_step_mm=lateral_step_mm, axial_step_mm=axial_step_mm, max_samples=max_samples)
    if fan is None:
        return np.zeros(pts.shape[0], np.float32)
    cum = _cumulative_density(density, frame, fan)
    idx = np.stack([(u - fan.u0) / fan.du, (v - fan.v0) / fan.du, (z - fan.z0) / fan.dz]).astype(np.float32)
    out = ndimage.map_coordinates(cum, idx, order=1, mode="nearest", prefilter=False)
    return np.maximum(out, 0.0).astype(np.float32)


@dataclass(frozen=True)
class _Fan:
    """A divergent ray lattice: ray ``(i, j)`` crosses the isocentre plane at BEV
    ``(u0 + i du, v0 + j du)`` mm and is sampled at axial distances ``z0 + k dz`` mm
    from the source, ``0 <= i < nu``, ``0 <= j < nv``, ``0 <= k < nz``."""

    u0: float
    v0: float
    z0: float
    du: float
    dz: float
    nu: int
    nv: int
    nz: int


def _fan_lattice(density: Volume, frame: BeamFrame, u: np.ndarray, v: np.ndarray, z: np.ndarray, *,
                 lateral_step_mm: float, axial_step_mm: float | None, max_samples: int) -> _Fan | None:
    """The ray lattice covering points at BEV ``(u, v)`` (mm at the isocentre plane) and
    axial distance ``z`` (mm), each (n,), from the density volume's entrance on.

    The lattice is anchored at the central axis (multiples of the steps), so that
    different point sets of one beam see the same rays; it is coarsened (lateral × 1.25,
    axial × 1.1 per try) until it has at most ``max_samples`` samples. None when the
    points lie before the volume.
    """
    dz = float(axial_step_mm) if axial_step_mm else 0.5 * min(density.grid.spacing)
    du = float(lateral_step_mm)
    z0, z1 = _grid_z_range(frame, density)
    z0 = max(z0 - dz, 1.0)
    z1 = min(z1, float(z.max())) + 2 * dz
    if z1 <= z0:
        return None
    u0, u1 = du * np.floor(float(u.min()) / du - 2), float(u.max()) + 2 * du
    v0, v1 = du * np.floor(float(v.min()) / du - 2), float(v.max()) + 2 * du
    z0 = dz * np.floor(z0 / dz)
    while True:
        nu = int(np.ceil((u1 - u0) / du)) + 1
        nv = int(np.ceil((v1 - v0) / du)) + 1
        nz = int(np.ceil((z1 - z0) / dz)) + 1
        if nu * nv * nz <= max_samples:
            break
        du *= 1.25
        dz *= 1.1
    return _Fan(u0=u0, v0=v0, z0=z0, du=du, dz=dz, nu=nu, nv=nv, nz=nz)


def _cumulative_density(density: Volume, frame: BeamFrame, fan: _Fan) -> np.ndarray:
    """∫ ρ dl (mm, water-equivalent) from the source to every sample of the ray lattice.

    The density (trilinear, vacuum outside the volume) is sampled slice by slice in z,
    accumulated along each ray with the step length corrected for the ray's obliquity
    (midpoint rule: each sample gets the integral up to its own centre).

    Returns
    -------
    ndarray, shape (nu, nv, nz), float32
    """
    nu, nv, nz, dz = fan.nu, fan.nv, fan.nz, fan.dz
    ug = fan.u0 + fan.du * np.arange(nu)
    vg = fan.v0 + fan.du * np.arange(nv)
    zg = fan.z0 + dz * np.arange(nz)
    arr = np.asarray(density.array, dtype=np.float32)
    # positions slice by slice in z keep memory at O(nu*nv) per slice for the coordinates
    cum = np.empty((nu, nv, nz), dtype=np.float32)
    uu, vv = np.meshgrid(ug, vg, indexing="ij")
    obliq = np.sqrt(1.0 + (uu**2 + vv**2) / frame.sad**2).astype(np.float32)
    # LPS = iso + rot @ (u f, v f, sad - z), f = z / sad; index = inv @ (LPS - origin), so
    # index_d = f (M_d0 u + M_d1 v) + M_d2 (sad - z) + c_d with M = inv @ rot
    a = density.grid.affine
    inv = np.linalg.inv(a[:3, :3])
    mrot = inv @ frame.rotation
    cvec = inv @ (np.asarray(frame.isocenter, np.float64) - a[:3, 3])
    lat = [(mrot[d, 0] * uu + mrot[d, 1] * vv).astype(np.float32)[..., None] for d in range(3)]
    chunk = max(1, int(4_000_000 // (nu * nv)))
    running = np.zeros((nu, nv), dtype=np.float32)
    for k0 in range(0, nz, chunk):
        ks = np.arange(k0, min(nz, k0 + chunk))
        f = (zg[ks] / frame.sad).astype(np.float32)
        coords = np.empty((3, nu, nv, ks.size), np.float32)
        for d in range(3):  # array axes (k, j, i) = index components (2, 1, 0)
            off = (mrot[d, 2] * (frame.sad - zg[ks]) + cvec[d]).astype(np.float32)
            np.multiply(lat[d], f, out=coords[2 - d])
            coords[2 - d] += off
        rho = ndimage.map_coordinates(arr, coords.reshape(3, -1), order=1, mode="constant", cval=0.0, prefilter=False)
        rho = rho.reshape(nu, nv, ks.size) * (obliq[..., None] * dz)
        c = np.cumsum(rho, axis=2) + running[..., None]
        running = c[..., -1].copy()
        cum[:, :, ks] = c - 0.5 * rho
    return cum


def sample_density(density: Volume, points_lps: np.ndarray) -> np.ndarray:
    """Trilinear density at LPS points (0 outside the volume), float32 (n,)."""
    idx = density.grid.lps_to_index(np.asarray(points_lps, dtype=np.float64)).T.astype(np.float32)
    return ndimage.map_coordinates(np.asarray(density.array, np.float32), idx, order=1, mode="constant", cval=0.0, prefilter=False).astype(np.float32)
