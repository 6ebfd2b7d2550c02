"""TERMA of one beam on the dose grid (the energy released per unit mass, before transport).

For a voxel at BEV ``(u, v)`` (isocentre plane, mm), axial distance ``z`` from the source
and radiological depth ``d`` (water-equivalent mm, :func:`art.dose.raytrace.radiological_depth`):

    T = Ψ(u, v) · (SAD / z)² · Σ_E w_E exp(−μ_E d'),     w_E = φ_E E μ_E  (normalised spectrum)

* ``Ψ``: the beam's fluence map (:func:`art.dose.calc.beam_fluence`: MU, head scatter S_c, MLC
  transmission, and the machine's off-axis ratio where the fluence map carries it), each
  segment's MU (or a beamlet map) scaled by the model's output correction at its aperture's
  equivalent square (:func:`art.dose.ccc.output.corrected_beam`), blurred by
  the source (``source_sigma_mm``) and by the voxel (a Gaussian of the voxel's σ, h/√12, so that
  the voxel average is sampled), plus the optional extra-focal part;
* the depth correction (``ccc.depth_correction``, when the model has one): each segment's fluence
  is shared between the table's field sizes around its aperture's equivalent square
  (:func:`art.dose.ccc.output.depth_parts`), and each part's photon TERMA is multiplied by its
  field size's factor at the voxel's radiological depth ``d`` (interpolated, clamped): the
  commissioned correction of the kernels' PDD shape per field size;
* off-axis softening: where the machine gives ``off_axis_mu_ratio(r)`` (μ relative to the
  axis at radius r in the isocentre plane), ``d' = d + (ratio − 1)(d − d_ref)`` with d_ref the
  calibration depth, so the ratio leaves the fluence at d_ref unchanged;
* kernel hardening with depth: the spectrum's energies are split into groups
  (:data:`art.dose.ccc.kernels.GROUP_EDGES_MEV`) and each group's TERMA is kept apart,
  ``T_g = Ψ (SAD/z)² Σ_{E∈g} w_E exp(−μ_E d')``; the transport gives each group its own kernel, so
  where the low energies have been attenuated (at depth) the harder groups' kernels dominate.

The electron contamination of the model (when given) is a dose added without transport:
``C = f · Ψ (SAD/z)² Σ_E w_E · exp(−d / λ)``, in the same units as T.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from art.dose.beam_geometry import BeamFrame
from art.dose.calc import beam_fluence
from art.dose.ccc.kernels import GroupedKernel, PolyKernel
from art.dose.ccc.model import CCCModel
from art.dose.ccc.output import depth_parts
from art.dose.machine import Machine
from art.dose.raytrace import radiological_depth
from art.geometry import Volume
from art.plan import Beam


def blurred_fluence(beam: Beam, machine: Machine, model: CCCModel, *, fluence_mm: float, voxel_mm: float):
    """The fluence map of the beam as given (the caller applies the output correction: :func:`beam_terma`
    takes its parts from :func:`art.dose.ccc.output.depth_parts`) blurred by the source, the voxel and
    the extra-focal source.

    Returns
    -------
    flu : (ny, nx) float64 ; x0, y0 : float, centre of pixel [0, 0] (mm) ; h : float, pixel size (mm)
    """
    flu, ex, ey = beam_fluence(beam, machine, fluence_mm=fluence_mm)
    h = float(ex[1] - ex[0])
    sigma = float(np.hypot(model.source_sigma_mm, voxel_mm / np.sqrt(12.0)))
    wide = model.extra_focal_sigma_mm if model.extra_focal_fraction > 0 else 0.0
    pad = int(np.ceil(4.0 * max(sigma, wide) / h)) + 2
    f = np.pad(np.asarray(flu, np.float64), pad)
    out = ndimage.gaussian_filter(f, sigma / h, mode="constant", truncate=4.0)
    if wide > 0:
        frac = model.extra_focal_fraction
        out = (1.0 - frac) * out + frac * ndimage.gaussian_filter(f, wide / h, mode="constant", truncate=4.0)
    return out, float(ex[0]) + 0.5 * h - pad * h, float(ey[0]) + 0.5 * h - pad * h, h


def _softening(machine: Machine, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """μ ratio (off-axis / axis) at the voxels' iso-plane radius, or None when the machine has none."""
    fn = getattr(machine, "off_axis_mu_ratio", None)  # added with the machine library (issue 19, part A)
    if fn is None:
        return None
    ratio = np.asarray(fn(np.hypot(u, v)), dtype=np.float64)
    return None if np.allclose(ratio, 1.0) else ratio


def beam_terma(beam: Beam, machine: Machine, model: CCCModel, kernel: PolyKernel | GroupedKernel, density_ct: Volume, points_lps: np.ndarray, *,
               fluence_mm: float = 1.25, voxel_mm: float, patient_position: str = "HFS") -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """TERMA and electron-contamination dose of one beam at LPS points (units ∝ MU, calibrated by the caller).

    Parameters
    ----------
    beam : Beam
    machine : Machine
    model : CCCModel
    kernel : PolyKernel or GroupedKernel
        The spectrum's kernel (its energies, μ and weights), or the spectrum split into energy groups
        (:func:`art.dose.ccc.kernels.group_kernels`): one TERMA per group.
    density_ct : Volume
        Relative density on the CT grid (for the radiological depth).
    points_lps : (n, 3)
        Voxel centres, LPS mm.
    fluence_mm : float, keyword-only
        Pixel size of the fluence map (isocentre plane), mm.
    voxel_mm : float, keyword-only
        Dose-grid voxel size (mean), mm.
    patient_position : str, keyword-only

    Returns
    -------
    terma : (G, n) float32
        Per energy group (G = 1 for a PolyKernel); their sum is the spectrum's TERMA.
    contamination : (n,) float32
    """
    whole = kernel.kernel if isinstance(kernel, GroupedKernel) else kernel
    w = kernel.terma_weights() if isinstance(kernel, GroupedKernel) else whole.terma_weights()[:, None]  # (n_E, G)
    out = np.zeros((w.shape[1], points_lps.shape[0]), np.float32)
    cont = np.zeros(points_lps.shape[0], np.float32)
    parts = depth_parts(beam, machine, model)  # output-corrected
    frame = BeamFrame.of(beam, patient_position=patient_position)
    u, v, z = frame.to_bev(points_lps)
    idx = np.flatnonzero(np.isfinite(u) & (z > 1.0))
    psis, peak = [], 0.0
    for part, _ in parts:
        flu, x0, y0, h = blurred_fluence(part, machine, model, fluence_mm=fluence_mm, voxel_mm=voxel_mm)
        psis.append(ndimage.map_coordinates(flu, np.stack([(v[idx] - y0) / h, (u[idx] - x0) / h]), order=1, mode="constant", cval=0.0, prefilter=False))
        peak += float(flu.max())
    psi = np.zeros(points_lps.shape[0], np.float64)
    psi[idx] = psis[0] if len(psis) == 1 else np.sum(psis, axis=0)
    sel = np.flatnonzero(psi > 1e-9 * max(peak, 1e-30))
    if sel.size == 0:
        return out, cont
    bev = (u[sel], v[sel], z[sel])
    depth = radiological_depth(density_ct, frame, points_lps[sel], bev=bev).astype(np.float64)
    geometric = (frame.sad / z[sel]) ** 2
    fluence = psi[sel] * geometric
    photons = fluence
    if parts[0][1] is not None:  # the depth correction: each part's fluence × its factors at the radiological depth
        at = np.searchsorted(idx, sel)
        photons = geometric * sum(p[at] * np.interp(depth, model.depth_mm, row) for p, (_, row) in zip(psis, parts))
    ratio = _softening(machine, u[sel], v[sel])
    if ratio is not None:
        depth = np.maximum(depth + (ratio - 1.0) * (depth - machine.calib_depth_mm), 0.0)
    out[:, sel] = (photons[:, None] * (np.exp(-np.outer(depth, whole.mu_per_mm)) @ w)).T.astype(np.float32)
    if model.contamination_fraction > 0:
        surface = fluence * (model.contamination_fraction * float(w.sum()))
        cont[sel] = (surface * np.exp(-depth / model.contamination_depth_mm)).astype(np.float32)
    return out, cont
