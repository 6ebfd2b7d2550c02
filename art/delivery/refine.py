"""Segment-weight re-optimisation: recover the dose lost to quantisation, transmission
and dropped segments by re-fitting the segments' MU (apertures fixed) to the optimised dose."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from art.delivery.sequencing import segments_to_fluence
from art.dose.influence import InfluenceMatrix
from art.dose.machine import Machine, load_machine
from art.errors import InputError
from art.plan import Plan, Segment


def _beam_grid(im: InfluenceMatrix, k: int):
    b = im.bixel_mm
    cols = im.columns(k)
    ix = np.round(im.bev_x_mm[cols] / b - 0.5).astype(int)
    iy = np.round(im.bev_y_mm[cols] / b - 0.5).astype(int)
    x0, y0 = ix.min(), iy.min()
    grid = {"x_edges_mm": (x0 + np.arange(ix.max() - x0 + 2)) * b, "y_edges_mm": (y0 + np.arange(iy.max() - y0 + 2)) * b}
    return cols, iy - y0, ix - x0, grid


def segment_beamlet_matrix(plan: Plan, influence: InfluenceMatrix, machine: Machine | None = None, *, transmission: bool = True) -> sp.csc_matrix:
    """Beamlet weights of each segment at 1 MU: (n_beamlets, n_segments), columns in plan order
    (beam by beam, segment by segment); ``influence.matrix @ S @ mu`` is the per-fraction dose
    of the segments with MU ``mu`` (apart from fluence outside the influence matrix's bixels).

    Parameters
    ----------
    plan : Plan
        Its beams must be ``influence.beams`` in the same order (matched by name).
    influence : InfluenceMatrix
    machine : Machine, optional
    transmission : bool, keyword-only
        Include MLC transmission inside the jaws.
    """
    machine = load_machine() if machine is None else machine
    names = [b.name for b in influence.beams]
    if [b.name for b in plan.beams] != names:
        raise InputError(f"plan beams {[b.name for b in plan.beams]} do not match the influence matrix beams {names}")
    cols_all, rows_all, vals_all = [], [], []
    j = 0
    for k, beam in enumerate(plan.beams):
        cols, r, c, grid = _beam_grid(influence, k)
        for s in beam.segments:
            unit = Segment(s.leaf_positions, s.jaws, 1.0)
            m = segments_to_fluence([unit], grid, machine, transmission=transmission)
            v = m[r, c]
            nz = np.flatnonzero(v)
            rows_all.append(cols[nz])
            cols_all.append(np.full(nz.size, j))
            vals_all.append(v[nz])
            j += 1
    if j == 0:
        raise InputError("the plan has no segments")
    return sp.csc_matrix(
        (np.concatenate(vals_all), (np.concatenate(rows_all), np.concatenate(cols_all))),
        shape=(influence.n_beamlets, j),
    )


#: Largest condition number of the reduced matrix (its square is the Gram matrix's) for which the
#: least-squares problem is solved in its reduced form (:func:`_reduced`).
MAX_REDUCED_CONDITION = 1e6


def _reduced(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same least-squares problem with ``n`` rows: ``(R, c)`` with ``‖R x − c‖² = ‖a x − b‖² − const``.

    ``R = Lᵀ`` and ``c = L⁻¹ aᵀ b`` from the Cholesky factor of ``aᵀ a = L Lᵀ``, so
    ``lsq_linear`` works on ``(n, n)`` instead of ``(m, n)`` (``m`` ~10⁵ voxels, ``n`` ~150 segments):
    its first step, an SVD least-squares solve on ``a``, took ~1.2 s of the ~1.5 s. The normal
    equations square the condition number, so a rank-deficient or ill-conditioned ``a`` (a segment
    without dose in the fitted voxels, cond(R) > :data:`MAX_REDUCED_CONDITION`) keeps ``(a, b)``.

    Parameters
    ----------
    a : (m, n) float64
    b : (m,) float64

    Returns
    -------
    (R, c) : (n, n) and (n,) float64, or ``(a, b)`` unchanged.
    """
    from scipy.linalg import solve_triangular

    try:
        low = np.linalg.cholesky(a.T @ a)
    except np.linalg.LinAlgError:
        return a, b
    if not np.isfinite(low).all() or np.linalg.cond(low) > MAX_REDUCED_CONDITION:
        return a, b
    return np.ascontiguousarray(low.T), solve_triangular(low, a.T @ b, lower=True)


def refine_segment_weights(
    plan: Plan,
    influence: InfluenceMatrix,
    weights: Any,
    machine: Machine | None = None,
    *,
    threshold_percent: float = 10.0,
    min_segment_mu: float | None = None,
    max_iter: int = 200,
) -> tuple[Plan, dict]:
    """Re-fit the segments' MU to the dose of the optimised beamlet weights (apertures fixed).

    Solves the bounded least-squares problem ``min ‖D S mu − D w‖²`` over the voxels where
    ``D w`` exceeds ``threshold_percent`` of its maximum, with ``mu ≥ min_segment_mu``
    (``scipy.optimize.lsq_linear``), where ``D`` is the influence matrix, ``S`` the
    segments' beamlet weights at 1 MU (:func:`segment_beamlet_matrix`, MLC transmission and
    head scatter of the segment jaws included) and ``w`` the optimised weights.

    Parameters
    ----------
    plan : Plan
        Sequenced plan whose beams are ``influence.beams`` (same names and order).
    influence : InfluenceMatrix
    weights : (n_beamlets,) array_like
        Optimised beamlet weights (MU-equivalent per fraction).
    machine : Machine, optional
    threshold_percent : float, keyword-only
    min_segment_mu : float, keyword-only
        Lower bound on every segment's MU; default ``machine.min_mu_per_segment``.
    max_iter : int, keyword-only

    Returns
    -------
    plan : Plan
        Copy with the new MU (per fraction).
    stats : dict
        ``rms_before``, ``rms_after`` (RMS dose difference over the fitted voxels relative to
        the maximum optimised dose), ``mu_before``, ``mu_after`` (per fraction), ``n_voxels``,
        ``time_s``, ``status``.
    """
    from scipy.optimize import lsq_linear

    t0 = time.perf_counter()
    machine = load_machine() if machine is None else machine
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != influence.n_beamlets or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise InputError(f"weights must be {influence.n_beamlets} finite non-negative values")
    if not 0 <= threshold_percent < 100:
        raise InputError(f"threshold_percent must be in [0, 100), got {threshold_percent!r}")
    min_mu = machine.min_mu_per_segment if min_segment_mu is None else float(min_segment_mu)
    s = segment_beamlet_matrix(plan, influence, machine)
    target = np.asarray(influence.matrix @ w.astype(np.float32), dtype=np.float64)
    dmax = float(target.max())
    if dmax <= 0:
        raise InputError("the optimised weights give no dose")
    rows = np.flatnonzero(target >= threshold_percent / 100.0 * dmax)
    a = np.asarray((influence.matrix[rows] @ s.astype(np.float32)).toarray(), dtype=np.float64)
    b = target[rows]
    mu0 = np.array([seg.mu for beam in plan.beams for seg in beam.segments])
    lb = np.full_like(mu0, min_mu) if min_mu > 0 else np.zeros_like(mu0)
    r, c = _reduced(a, b)
    res = lsq_linear(r, c, bounds=(lb, np.full_like(mu0, np.inf)), method="trf", max_iter=max_iter, lsmr_tol="auto")
    mu = np.maximum(res.x, lb)
    beams, j = [], 0
    for beam in plan.beams:
        segs = []
        for seg in beam.segments:
            segs.append(Segment(seg.leaf_positions, seg.jaws, float(mu[j])))
            j += 1
        beams.append(dataclasses.replace(beam, segments=segs))
    stats = {
        "rms_before": float(np.sqrt(np.mean((a @ mu0 - b) ** 2)) / dmax),
        "rms_after": float(np.sqrt(np.mean((a @ mu - b) ** 2)) / dmax),
        "mu_before": float(mu0.sum()),
        "mu_after": float(mu.sum()),
        "n_voxels": int(rows.size),
        "time_s": time.perf_counter() - t0,
        "status": str(res.message),
    }
    return dataclasses.replace(plan, beams=beams), stats
