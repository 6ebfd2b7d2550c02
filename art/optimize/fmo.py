"""Fluence-map optimisation: priority-ordered (lexicographic) goals with convex surrogates.

:func:`optimize_fluence` finds non-negative beamlet weights ``w`` for a
dose-influence matrix ``D`` (course dose = ``fractions * D @ w``, Gy; pass a
per-fraction matrix with the protocol's ``fractions``) that meet a protocol's
clinical goals in priority order. Two methods share the goal surrogates, the
voxel down-sampling, the normalisation and the goal report:

``method="lbfgs"`` (default)
    smooth penalties minimised with SciPy's L-BFGS-B, one stage per priority
    with earlier goals held (heavily penalised) at what they achieved; seconds
    on a patient (:mod:`art.optimize.lbfgs` describes the penalties).
``method="cvxpy"``
    the reference: the convex programme below, solved exactly by Clarabel
    (OSQP/SCS selectable); minutes on a patient.

The cvxpy method:

1. Each bound of each goal becomes a convex surrogate with a slack
   (:mod:`art.optimize.objectives`: CVaR for D/V goals, max/min, mean).
2. Stage *k* (one per distinct priority, ascending) minimises the sum of the
   slacks of the priority-*k* goals, subject to every earlier goal keeping
   the slack it achieved (``slack ≤ achieved + tolerance``). A goal met in its
   stage is therefore a hard constraint afterwards; an unreachable goal ends
   as close as possible, its slack saying by how much. A stage whose goals
   the current solution already meets is skipped (its optimum is 0).
3. A final stage, under all those constraints, improves stretch goals, spares
   the OARs (their mean dose), pushes the dose outside the targets below a
   fall-off with distance (:class:`NormalTissue`), limits target hot spots
   and smooths the fluence (squared differences of neighbouring beamlets).
4. The weights are scaled so that the prescription goal holds exactly
   (:mod:`art.optimize.normalize`), as far as that keeps met goals of the same
   or higher priority met.
5. Every goal is evaluated exactly (DVH metric) on the full-resolution dose;
   :attr:`OptimizationResult.failed` lists the goals not met and by how much.

The problem is one cvxpy problem with parameters (DPP): the stages only change
parameter values (objective weights, slack caps), so cvxpy compiles it once.
To keep it tractable, voxels are down-sampled (:func:`art.optimize.voxels.sample_voxels`):
all target voxels and all voxels within ``keep_near_target_mm`` of a target are
kept, the rest is a seeded random subsample weighted by the inverse sampling
probability.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import sparse

from art.optimize.fmo_checks import (
    METHODS,
    SOLVERS,
    _check_counts,
    _check_inputs,
    _check_method_and_solver,
    _check_weights,
    _distances,
    _find,
    _neighbour_pairs,
    _warm_weights,
    validate_solver,
)
from art.optimize.fmo_cvxpy import solve_cvxpy
from art.optimize.fmo_lbfgs import solve_lbfgs
from art.optimize.fmo_problem import SampledProblem, sampled_problem
from art.optimize.fmo_types import GoalReport, NormalTissue, OptimizationError, OptimizationResult, StageLog
from art.optimize.normalize import metric_value, normalize_to_prescription, prescription_goal, scale_limits
from art.optimize.voxels import StructureVoxels
from art.protocol import Goal, Prescription

__all__ = [
    "SOLVERS",
    "NormalTissue",
    "GoalReport",
    "StageLog",
    "OptimizationResult",
    "OptimizationError",
    "optimize_fluence",
    "validate_solver",
    "METHODS",
]

#: The parameters of :func:`optimize_fluence` (its docstring, less ``continuation``).
_OPTIMIZE_FLUENCE_DOC = """Optimise beamlet weights for priority-ordered clinical goals.

    Parameters
    ----------
    matrix : scipy.sparse matrix, shape (n_voxels, n_beamlets)
        Dose influence, Gy per unit weight; per fraction (as
        :func:`art.dose.influence.influence_matrix` gives it) when
        ``fractions`` is the number of fractions, or over the course with
        ``fractions=1``. Goals are always course totals.
    structures : mapping of str to StructureVoxels
        Rows of ``matrix`` in each structure; targets are those with
        ``roi_type`` PTV/CTV/GTV. Every structure a goal names must be here
        (names matched exactly, then case-insensitively).
    goals : sequence of Goal
        The clinical goals (priority 1 = most important).
    prescription : Prescription
        Target and dose; doses are optimised relative to ``dose_gy``.
    method : {"lbfgs", "cvxpy"}, keyword-only
        ``"lbfgs"`` (default, fast): smooth penalties minimised with SciPy's
        L-BFGS-B in priority stages (:mod:`art.optimize.lbfgs`); the
        surrogate goals are met up to the penalty accuracy, which the goal
        margin absorbs. ``"cvxpy"``: the convex CVaR programme solved exactly
        by ``solver`` (the reference; slower, minutes on a patient).
    fractions : int, keyword-only
        Number of fractions: the course dose is ``fractions * matrix @ w``.
        Pass the protocol's fractions with a per-fraction matrix; the
        returned ``weights`` then are per-fraction weights.
    solver : {"CLARABEL", "OSQP", "SCS"}, keyword-only
        cvxpy solver (case-insensitive), for ``method="cvxpy"``; ignored
        (but checked) by ``"lbfgs"``.
    warm_start : OptimizationResult or ndarray (n_beamlets,), optional, keyword-only
        A previous plan's weights (``raw_weights`` of a result), e.g. the
        reference plan on the daily matrix (same beamlet columns; see
        :func:`art.optimize.neighbours.transfer_weights` when they differ):
        the optimisation starts from them (L-BFGS-B, OSQP, SCS), stages whose
        goals they already meet are skipped, and ``"lbfgs"`` uses fewer
        iterations per stage.
    smoothness : float, keyword-only
        Weight of the squared differences of neighbouring beamlets (final
        stage); needs ``beamlet_neighbours``.
    beamlet_neighbours : int array, shape (n_pairs, 2), optional, keyword-only
        Pairs of adjacent beamlets (same beam, same row or column).
    distance_to_target_mm : array, shape (n_voxels,), optional, keyword-only
        Distance of each row's voxel to the nearest target, mm (0 inside).
        Rows outside the targets then form the normal tissue, and rows within
        ``keep_near_target_mm`` are never dropped by down-sampling.
    normal_tissue : NormalTissue or None, keyword-only
        Fall-off objective (needs ``distance_to_target_mm``); None disables it.
    oar_sparing : float, keyword-only
        Weight of the OARs' mean dose (relative to the prescription) in the final stage.
    hot_spot : float, keyword-only
        Weight of the prescription target's mean dose above the prescription (final stage).
    max_voxels : int or None, keyword-only
        About how many rows to optimise on (see :func:`~art.optimize.voxels.sample_voxels`);
        None uses every row that belongs to a structure or the normal tissue.
    keep_near_target_mm : float, keyword-only
    seed : int, keyword-only
        Seed of the voxel subsample.
    goal_margin : float, keyword-only
        The surrogates aim this much (fraction of the prescription dose)
        beyond each goal's bound, so that solver accuracy, the hierarchy's
        tolerance and normalisation do not leave a reachable goal just missed.
    tolerance : float, keyword-only
        Slack allowed above what a stage achieved (fraction of the
        prescription dose, plus 1 % of the achieved slack); a stage is skipped
        when the current weights leave each of its goals' slacks below it.
        ``"lbfgs"`` uses ``max(tolerance, 1e-3)``.
    normalize : bool, keyword-only
        Scale the result so that the prescription goal holds exactly
        (:func:`~art.optimize.normalize.prescription_goal`), limited so that
        goals of the same or higher priority that were met stay met.
    max_time_s : float, optional, keyword-only
        Wall-time budget; when spent, the best plan so far is returned
        (status ``"time limit"``).
    solver_options : mapping, optional, keyword-only
        Passed to ``cvxpy.Problem.solve`` (``method="cvxpy"``).
    max_iterations : int, optional, keyword-only
        L-BFGS-B iterations per stage (``method="lbfgs"``); default 400 per
        priority stage and 250 for the final stage from a cold start, 150 and
        100 from a warm start.
    progress : callable(str, float), optional, keyword-only
        Called with a message and the fraction done.

    Returns
    -------
    OptimizationResult

    Raises
    ------
    InputError
        For invalid inputs (matrix, structures, goals, solver name).
    OptimizationError
        When the solver fails before any stage produced weights.
    """


# ----------------------------------------------------------------------------- main entry
def _optimize_fluence_once(
    matrix: sparse.spmatrix,
    structures: Mapping[str, StructureVoxels],
    goals: Sequence[Goal],
    prescription: Prescription,
    *,
    method: str = "lbfgs",
    fractions: int = 1,
    solver: str = "CLARABEL",
    warm_start: OptimizationResult | np.ndarray | None = None,
    smoothness: float = 0.05,
    beamlet_neighbours: np.ndarray | None = None,
    distance_to_target_mm: np.ndarray | None = None,
    normal_tissue: NormalTissue | None = NormalTissue(),
    oar_sparing: float = 0.05,
    hot_spot: float = 0.5,
    max_voxels: int | None = 20000,
    keep_near_target_mm: float = 10.0,
    seed: int = 0,
    goal_margin: float = 0.002,
    tolerance: float = 1e-4,
    normalize: bool = True,
    max_time_s: float | None = None,
    solver_options: Mapping[str, Any] | None = None,
    max_iterations: int | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> OptimizationResult:
    """One optimisation: check, sample and scale, solve the stages, normalise, report (parameters: :func:`optimize_fluence`)."""
    t_start = time.perf_counter()
    method, solver = _check_method_and_solver(method, solver)
    _check_counts(fractions, max_iterations)
    goals = list(goals)
    a, svs = _check_inputs(matrix, structures, goals, prescription)
    n_vox, n_b = a.shape
    _check_weights(smoothness=smoothness, oar_sparing=oar_sparing, hot_spot=hot_spot, goal_margin=goal_margin, tolerance=tolerance)
    pairs = _neighbour_pairs(beamlet_neighbours, smoothness, n_b)
    dist = _distances(distance_to_target_mm, n_vox)
    w0 = _warm_weights(warm_start, n_b)
    problem = sampled_problem(
        a, svs, goals, prescription, dist, fractions=fractions, goal_margin=goal_margin, max_voxels=max_voxels,
        keep_near_target_mm=keep_near_target_mm, seed=seed,
    )
    setup_time = time.perf_counter() - t_start
    xv = None if w0 is None else w0 / problem.c
    term_weights = dict(smoothness=smoothness, oar_sparing=oar_sparing, hot_spot=hot_spot, tolerance=tolerance)
    if method == "lbfgs":
        xv, stages, timed_out = solve_lbfgs(
            problem, xv, pairs, normal_tissue, **term_weights, max_iterations=max_iterations, warm=w0 is not None,
            deadline=None if max_time_s is None else t_start + max_time_s, progress=progress,
        )
        status = "time limit" if timed_out else "ok"
    else:
        xv, stages, status, setup_time = solve_cvxpy(
            problem, xv, pairs, normal_tissue, solver=solver, solver_options=solver_options, **term_weights,
            max_time_s=max_time_s, t_start=t_start, progress=progress,
        )
    assert xv is not None
    weights = xv * problem.c
    raw_weights = weights.copy()
    dose = np.asarray(a @ weights, dtype=np.float64) * float(fractions)
    final_slacks = problem.slacks(xv)
    factor, note = 1.0, ""
    if normalize:
        weights, dose, factor, note = _normalise(weights, dose, goals, prescription, svs)
    reports = _goal_reports(goals, svs, problem, dose, final_slacks)
    if status == "ok" and any(not r.met for r in reports):
        status = "goals not met"
    if progress is not None:
        progress("done", 1.0)
    return OptimizationResult(
        weights=weights, dose=dose.astype(np.float32), goals=reports, stages=stages, solver=solver,
        time_s=time.perf_counter() - t_start, setup_time_s=setup_time, iterations=sum(s.iterations for s in stages),
        n_voxels_used=int(problem.rows.size), normalization_factor=float(factor), normalization_note=note, status=status,
        warm_started=w0 is not None, raw_weights=raw_weights, method=method, fractions=int(fractions),
    )


def _normalise(
    weights: np.ndarray, dose: np.ndarray, goals: list[Goal], prescription: Prescription, svs: Mapping[str, StructureVoxels]
) -> tuple[np.ndarray, np.ndarray, float, str]:
    """Scale the plan so that the prescription goal holds exactly, as far as met goals of its priority or higher stay met.

    Parameters
    ----------
    weights : ndarray of float64, shape (n_beamlets,)
    dose : ndarray of float64, shape (n_voxels,)
        Course dose of ``weights`` on every matrix row, Gy.
    goals : list of Goal
    prescription : Prescription
    svs : mapping of str to StructureVoxels
        The full-resolution structures.

    Returns
    -------
    weights, dose : ndarray of float64
        Scaled by ``factor``.
    factor : float
    note : str
        Why the factor was limited ("" when it was not).
    """
    note = ""
    pg = prescription_goal(goals, prescription)
    tfull = _find(svs, prescription.target)
    vv = tfull.voxel_volume_cc or 1.0
    _, _, f_need = normalize_to_prescription(weights, dose, tfull.rows, pg, voxel_volumes_cc=tfull.weight_array() * vv)
    vals = {}
    for i, g in enumerate(goals):
        sv = _find(svs, g.structure)
        vals[i] = (dose[sv.rows], sv.weight_array() * (sv.voxel_volume_cc or 1.0))
    lo, hi = scale_limits(goals, vals, max_priority=pg.priority)
    factor = f_need
    if f_need > hi:
        factor = max(hi, 1.0) if hi >= 1.0 else 1.0
        note = f"limited to {factor:.4f} (needed {f_need:.4f}) to keep goals of priority <= {pg.priority} met"
    elif f_need < lo:
        factor = min(lo, 1.0) if lo <= 1.0 else 1.0
        note = f"limited to {factor:.4f} (needed {f_need:.4f}) to keep goals of priority <= {pg.priority} met"
    weights = weights * factor
    dose = dose * factor
    return weights, dose, factor, note


def _goal_reports(
    goals: list[Goal], svs: Mapping[str, StructureVoxels], problem: SampledProblem, dose: np.ndarray, final_slacks: np.ndarray
) -> list[GoalReport]:
    """Every goal evaluated exactly (DVH metric) on the full-resolution course dose.

    Parameters
    ----------
    goals : list of Goal
    svs : mapping of str to StructureVoxels
        The full-resolution structures.
    problem : SampledProblem
        For the goals' surrogates.
    dose : ndarray of float64, shape (n_voxels,)
        Course dose, Gy.
    final_slacks : ndarray of float64, shape (n_surrogates,)
        Slack of each surrogate on the sampled dose before normalisation, Gy.

    Returns
    -------
    list of GoalReport
        One per goal, in order; met when the shortfall is at most 1e-9 of the value (or 1e-9).
    """
    surr = problem.surr
    reports: list[GoalReport] = []
    for i, g in enumerate(goals):
        sv = _find(svs, g.structure)
        val = metric_value(g.metric, dose[sv.rows], sv.weight_array() * (sv.voxel_volume_cc or 1.0), name=g.structure)
        short = 0.0
        if g.at_least is not None:
            short = max(short, g.at_least - val)
        if g.at_most is not None:
            short = max(short, val - g.at_most)
        ks = [k for k, s in enumerate(surr) if s.goal_index == i and not s.stretch]
        reports.append(GoalReport(i, g, float(val), bool(short <= 1e-9 * max(1.0, abs(val))), float(max(short, 0.0)), float(max((final_slacks[k] for k in ks), default=0.0))))
    return reports


def priority_key(goals: Sequence[GoalReport]) -> tuple:
    """Goals met per priority (ascending), then minus the total shortfall: the larger, the better plan."""
    by: dict[int, int] = {}
    short = 0.0
    for g in goals:
        by[int(g.goal.priority)] = by.get(int(g.goal.priority), 0) + int(bool(g.met))
        short += float(g.shortfall)
    return tuple(by[p] for p in sorted(by)) + (-short,)


def optimize_fluence(*args: Any, continuation: int = 1, **kwargs: Any) -> "OptimizationResult":
    result = _optimize_fluence_once(*args, **kwargs)
    method = kwargs.get("method", "lbfgs")
    budget_limited = any(s.status in ("iteration limit",) for s in result.stages)
    if method == "lbfgs" and continuation > 0 and result.failed and budget_limited and kwargs.get("max_time_s") is None:
        # a goal still missed while a stage ran out of iterations: continue once from where it
        # stopped (warm, with the cold iteration budget) and keep the better plan by priority
        more = dict(kwargs, warm_start=result, max_iterations=kwargs.get("max_iterations") or 400)
        again = _optimize_fluence_once(*args, **more)
        again.time_s += result.time_s
        again.iterations += result.iterations
        if priority_key(again.goals) > priority_key(result.goals):
            return again
    return result


optimize_fluence.__doc__ = _OPTIMIZE_FLUENCE_DOC + """
    continuation : int, keyword-only
        With ``method="lbfgs"``: when a goal is still missed and a stage stopped at its
        iteration limit, continue this many times from the result (warm, with the cold
        iteration budget) and keep the better plan by goals met per priority (default 1).
"""
