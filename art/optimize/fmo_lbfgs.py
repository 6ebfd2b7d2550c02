"""The ``method="lbfgs"`` side of :func:`art.optimize.fmo.optimize_fluence`.

Connects the sampled, scaled problem (:class:`~art.optimize.fmo_problem.SampledProblem`)
to the staged L-BFGS-B minimisation of :mod:`art.optimize.lbfgs`: the goal
penalties, the rows and weights of the final stage's extra terms (normal
tissue, OAR mean, target hot spots, smoothness, total fluence), the iteration
budgets, and the stage logs in Gy. SciPy's optimiser loads on the first call.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from art.optimize.fmo_checks import _find
from art.optimize.fmo_problem import SampledProblem
from art.optimize.fmo_types import NormalTissue, StageLog

__all__ = ["solve_lbfgs"]


def solve_lbfgs(
    problem: SampledProblem,
    x0: np.ndarray | None,
    pairs: np.ndarray | None,
    normal_tissue: NormalTissue | None,
    *,
    smoothness: float,
    oar_sparing: float,
    hot_spot: float,
    tolerance: float,
    max_iterations: int | None,
    warm: bool,
    deadline: float | None,
    progress: Callable[[str, float], None] | None,
) -> tuple[np.ndarray, list[StageLog], bool]:
    """The L-BFGS-B method (see :mod:`art.optimize.lbfgs`) on the sampled, scaled problem.

    Parameters
    ----------
    problem : SampledProblem
    x0 : ndarray of float64, shape (n_beamlets,), or None
        Start (scaled weights); None starts from ones.
    pairs : ndarray of int64, shape (n_pairs, 2), or None
        Neighbouring beamlets of the smoothness term.
    normal_tissue : NormalTissue or None
    smoothness, oar_sparing, hot_spot : float, keyword-only
        Final-stage weights of the smoothness, OAR mean and hot-spot terms.
    tolerance : float, keyword-only
        Slip allowed to held goals, prescription units (at least 1e-3 is used).
    max_iterations : int or None, keyword-only
        Iterations per stage; None: 400 per priority stage and 250 for the
        final stage (150 and 100 when ``warm``).
    warm : bool, keyword-only
        Whether ``x0`` comes from a warm start.
    deadline : float or None, keyword-only
        ``time.perf_counter()`` value after which the best point so far is kept.
    progress : callable(str, float) or None, keyword-only

    Returns
    -------
    x : ndarray of float64, shape (n_beamlets,)
        Scaled weights.
    stages : list of StageLog
        Slacks in Gy.
    timed_out : bool
    """
    from art.optimize.lbfgs import penalty_terms, run_stages

    surr, rx = problem.surr, problem.rx
    n_b = problem.b_mat.shape[1]
    terms = penalty_terms(surr, dict(problem.structures), rx, _find)
    extra, lam = _extra_terms(problem, pairs, normal_tissue, smoothness=smoothness, oar_sparing=oar_sparing, hot_spot=hot_spot)
    stage_terms = [(p, [k for k, s in enumerate(surr) if not s.stretch and problem.goals[s.goal_index].priority == p]) for p in problem.priorities]
    if x0 is None:
        x0 = np.ones(n_b)
    iters = max_iterations if max_iterations is not None else (150 if warm else 400)
    final_iters = max_iterations if max_iterations is not None else (100 if warm else 250)
    x, lstages, timed_out = run_stages(
        problem.b_mat, terms, stage_terms, problem.stretch_idx, extra, lam, x0,
        tolerance=max(tolerance, 1e-3), max_iterations=iters, final_iterations=final_iters, deadline=deadline, progress=progress,
    )
    stages = []
    for ls in lstages:
        slacks: dict[int, float] = {}
        for k, v in ls.violations.items():
            gi = surr[k].goal_index
            slacks[gi] = max(slacks.get(gi, 0.0), v * rx)
        stages.append(StageLog(ls.name, ls.priority, ls.status, solve_time_s=ls.wall_time_s, wall_time_s=ls.wall_time_s, iterations=ls.iterations, slacks_gy=slacks))
    return x, stages, timed_out


def _extra_terms(
    problem: SampledProblem,
    pairs: np.ndarray | None,
    normal_tissue: NormalTissue | None,
    *,
    smoothness: float,
    oar_sparing: float,
    hot_spot: float,
) -> tuple[dict, np.ndarray]:
    """Rows, weights and levels of the final stage's extra terms, and their weights.

    Returns
    -------
    extra : dict
        ``nt_rows``/``nt_omega``/``nt_level`` (sampled normal-tissue rows,
        normalised volumes, allowed dose in prescription units), ``oars``
        (list of (rows, normalised volumes)), ``hot_rows``/``hot_omega``
        (prescription target) and ``pairs``, as far as they apply (see
        ``art.optimize.lbfgs._Problem.objective``).
    lam : ndarray of float64, shape (5,)
        Weights of normal tissue, OAR mean, hot spot, smoothness, total fluence.
    """
    rows, scale, dist, nt_rows_full = problem.rows, problem.scale, problem.dist, problem.nt_rows_full
    svs_s = problem.structures
    extra: dict = {}
    lam = np.zeros(5)
    if dist is not None and normal_tissue is not None and nt_rows_full is not None and nt_rows_full.size:
        pos = np.clip(np.searchsorted(rows, nt_rows_full), 0, rows.size - 1)
        nt_idx = pos[rows[pos] == nt_rows_full]
        if nt_idx.size:
            om = scale[nt_idx] / scale[nt_idx].sum()
            extra.update(nt_rows=nt_idx, nt_omega=om, nt_level=normal_tissue.level(dist[rows[nt_idx]]))
            lam[0] = normal_tissue.weight
    oars = []
    for sv in svs_s.values():
        if sv.roi_type in ("ORGAN", "AVOIDANCE") and sv.rows.size:
            w = sv.weight_array()
            oars.append((sv.rows, w / w.sum()))
    if oars:
        extra["oars"] = oars
        lam[1] = oar_sparing
    tsv = _find(svs_s, problem.prescription.target)
    wt = tsv.weight_array()
    extra.update(hot_rows=tsv.rows, hot_omega=wt / wt.sum())
    lam[2] = hot_spot
    if pairs is not None:
        extra["pairs"] = pairs
        lam[3] = smoothness
    lam[4] = 1e-3
    return extra, lam
