"""The ``method="cvxpy"`` side of :func:`art.optimize.fmo.optimize_fluence`: the reference convex programme.

One cvxpy problem with parameters (DPP), built once on the sampled, scaled
problem (:class:`~art.optimize.fmo_problem.SampledProblem`): each surrogate is
a convex constraint with a slack (CVaR for D/V goals, max/min, mean), capped
by a parameter; the objective is the weighted sum of the slacks plus the final
stage's terms (normal tissue, OAR mean, target hot spots, smoothness, total
fluence) with parameter weights. The stages of the hierarchy only change the
parameter values (:func:`_run_stages`), so cvxpy compiles the problem once.
cvxpy loads on the first call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from art.optimize.fmo_checks import _find
from art.optimize.fmo_problem import SampledProblem
from art.optimize.fmo_types import NormalTissue, OptimizationError, StageLog

__all__ = ["solve_cvxpy"]

_SLACK_CAP = 100.0  # slack cap (in units of the prescription dose) of goals not yet fixed


@dataclass(frozen=True)
class _ConvexProgramme:
    """The compiled-once cvxpy problem and the handles the stages set or read.

    Attributes
    ----------
    problem : cvxpy.Problem
    x : cvxpy.Variable, shape (n_beamlets,)
        Scaled beamlet weights (>= 0).
    u : cvxpy.Variable, shape (m,)
        Sampled dose, prescription units.
    cap, cw : cvxpy.Parameter, shape (n_surrogates,)
        Slack caps (prescription units) and slack weights in the objective.
    lam : cvxpy.Parameter, shape (5,)
        Weights of normal tissue, OAR mean, hot spot, smoothness, total fluence.
    lam_full : ndarray of float64, shape (5,)
        ``lam`` of the final stage (0 for a term that is absent).
    """

    problem: Any
    x: Any
    u: Any
    cap: Any
    cw: Any
    lam: Any
    lam_full: np.ndarray


def solve_cvxpy(
    problem: SampledProblem,
    xv: np.ndarray | None,
    pairs: np.ndarray | None,
    normal_tissue: NormalTissue | None,
    *,
    solver: str,
    solver_options: Mapping[str, Any] | None,
    smoothness: float,
    oar_sparing: float,
    hot_spot: float,
    tolerance: float,
    max_time_s: float | None,
    t_start: float,
    progress: Callable[[str, float], None] | None,
) -> tuple[np.ndarray | None, list[StageLog], str, float]:
    """Build the convex programme and run its stages.

    Parameters
    ----------
    problem : SampledProblem
    xv : ndarray of float64, shape (n_beamlets,), or None
        Warm start (scaled weights).
    pairs : ndarray of int64, shape (n_pairs, 2), or None
    normal_tissue : NormalTissue or None
    solver : str, keyword-only
        ``"CLARABEL"``, ``"OSQP"`` or ``"SCS"`` (checked).
    solver_options : mapping or None, keyword-only
        Passed to ``cvxpy.Problem.solve`` over the defaults.
    smoothness, oar_sparing, hot_spot : float, keyword-only
        Final-stage weights.
    tolerance : float, keyword-only
        Slack (prescription units) allowed above what a stage achieved.
    max_time_s : float or None, keyword-only
        Wall-time budget from ``t_start``, s.
    t_start : float, keyword-only
        ``time.perf_counter()`` at the start of the optimisation.
    progress : callable(str, float) or None, keyword-only

    Returns
    -------
    xv : ndarray of float64, shape (n_beamlets,), or None
        Scaled weights (None only if no stage ran).
    stages : list of StageLog
    status : str
        ``"ok"``, ``"time limit"`` or ``"solver problem"``.
    setup_time_s : float
        Time from ``t_start`` to the built problem, s.
    """
    cvx = _build(problem, pairs, normal_tissue, smoothness=smoothness, oar_sparing=oar_sparing, hot_spot=hot_spot)
    setup_time = time.perf_counter() - t_start
    opts = _solver_options(solver, solver_options)
    xv, stages, status = _run_stages(cvx, problem, xv, solver=solver, opts=opts, tolerance=tolerance, max_time_s=max_time_s, t_start=t_start, progress=progress)
    return xv, stages, status, setup_time


def _build(problem: SampledProblem, pairs: np.ndarray | None, normal_tissue: NormalTissue | None, *, smoothness: float, oar_sparing: float, hot_spot: float) -> _ConvexProgramme:
    """The cvxpy problem (DPP: stages only change parameter values), variables and parameters created in a fixed order."""
    import cvxpy as cp

    n_s = len(problem.surr)
    n_b = problem.b_mat.shape[1]
    x = cp.Variable(n_b, nonneg=True, name="x")
    u = cp.Variable(problem.rows.size, name="u")
    slack = cp.Variable(n_s, nonneg=True, name="slack")
    cap = cp.Parameter(n_s, nonneg=True, name="cap", value=np.full(n_s, _SLACK_CAP))
    cw = cp.Parameter(n_s, nonneg=True, name="weight", value=np.zeros(n_s))
    lam = cp.Parameter(5, nonneg=True, name="lam", value=np.zeros(5))  # nt, oar, hot, smooth, total fluence
    cons = [u == problem.b_mat @ x, slack <= cap]
    _add_surrogate_constraints(cons, problem, u, slack)
    objective, has_nt, has_smooth = _objective(problem, x, u, slack, cw, lam, pairs, normal_tissue)
    lam_full = np.array([0.0 if not has_nt else 1.0, oar_sparing, hot_spot, 0.0 if not has_smooth else smoothness, 1e-3])
    return _ConvexProgramme(cp.Problem(objective, cons), x, u, cap, cw, lam, lam_full)


def _add_surrogate_constraints(cons: list, problem: SampledProblem, u: Any, slack: Any) -> None:
    """Append to ``cons`` one constraint per surrogate: its convex form on the sampled dose ``u`` within its level plus slack.

    Mean goals bound the volume-weighted mean, max/min goals every voxel, D/V
    goals the CVaR (Rockafellar–Uryasev, one auxiliary variable each); a
    surrogate on an empty sampled structure gets a zero slack.
    """
    import cvxpy as cp

    rx = problem.rx
    for k, s in enumerate(problem.surr):
        sv = _find(problem.structures, s.structure)
        r = sv.rows
        if r.size == 0:
            cons.append(slack[k] == 0)
            continue
        om = sv.weight_array()
        om = om / om.sum()
        lvl = s.level_gy / rx
        ur = u[r]
        if s.form == "mean":
            e = om @ ur
            cons.append(e <= lvl + slack[k] if s.sense == "upper" else e >= lvl - slack[k])
        elif s.form == "extreme":
            cons.append(ur <= lvl + slack[k] if s.sense == "upper" else ur >= lvl - slack[k])
        else:
            t = cp.Variable(name=f"t{k}")
            if s.sense == "upper":
                cons.append(t + (1.0 / s.fraction) * (om @ cp.pos(ur - t)) <= lvl + slack[k])
            else:
                cons.append(t - (1.0 / s.fraction) * (om @ cp.pos(t - ur)) >= lvl - slack[k])


def _objective(problem: SampledProblem, x: Any, u: Any, slack: Any, cw: Any, lam: Any, pairs: np.ndarray | None, normal_tissue: NormalTissue | None) -> tuple[Any, bool, bool]:
    """The parametrised objective: weighted slacks plus ``lam``-weighted normal tissue, OAR mean, hot spot, smoothness and total fluence.

    Returns
    -------
    objective : cvxpy.Minimize
    has_nt, has_smooth : bool
        Whether the normal-tissue and smoothness terms are present (not the zero constant).
    """
    import cvxpy as cp

    rows, dist, nt_rows_full = problem.rows, problem.dist, problem.nt_rows_full
    svs_s = problem.structures
    n_b = problem.b_mat.shape[1]
    terms = [cw @ slack]
    zero = cp.Constant(0.0)
    nt_term = zero
    if dist is not None and normal_tissue is not None and nt_rows_full is not None and nt_rows_full.size:
        pos_in_sample = np.searchsorted(rows, nt_rows_full)
        pos_in_sample = np.clip(pos_in_sample, 0, rows.size - 1)
        ok = rows[pos_in_sample] == nt_rows_full
        nt_idx = pos_in_sample[ok]
        if nt_idx.size:
            om = problem.scale[nt_idx]
            om = om / om.sum()
            lvl = normal_tissue.level(dist[rows[nt_idx]])
            nt_term = normal_tissue.weight * (om @ cp.pos(u[nt_idx] - lvl))
    oar_list = [sv for k, sv in svs_s.items() if sv.roi_type in ("ORGAN", "AVOIDANCE") and sv.rows.size]
    oar_term = zero
    if oar_list:
        oar_term = sum((sv.weight_array() / sv.weight_array().sum()) @ u[sv.rows] for sv in oar_list) / len(oar_list)
    tsv = _find(svs_s, problem.prescription.target)
    om_t = tsv.weight_array() / tsv.weight_array().sum()
    hot_term = om_t @ cp.pos(u[tsv.rows] - 1.0)
    smooth_term = zero
    if pairs is not None:
        smooth_term = cp.sum_squares(x[pairs[:, 0]] - x[pairs[:, 1]]) / pairs.shape[0]
    mu_term = cp.sum(x) / n_b
    objective = cp.Minimize(
        terms[0] + lam[0] * nt_term + lam[1] * oar_term + lam[2] * hot_term + lam[3] * smooth_term + lam[4] * mu_term
    )
    return objective, nt_term is not zero, smooth_term is not zero


def _solver_options(solver: str, solver_options: Mapping[str, Any] | None) -> dict:
    """``solver_options`` over the default tolerances and iteration limits of ``solver``."""
    opts = dict(solver_options or {})
    if solver == "CLARABEL":
        opts.setdefault("tol_gap_rel", 1e-6)
        opts.setdefault("tol_gap_abs", 1e-6)
        opts.setdefault("tol_feas", 1e-6)
    elif solver == "OSQP":
        opts.setdefault("max_iter", 20000)
        opts.setdefault("eps_abs", 1e-5)
        opts.setdefault("eps_rel", 1e-5)
    elif solver == "SCS":
        opts.setdefault("max_iters", 20000)
        opts.setdefault("eps", 1e-5)
    return opts


def _report(progress: Callable[[str, float], None] | None, msg: str, frac: float) -> None:
    if progress is not None:
        progress(msg, frac)


def _run_stages(
    cvx: _ConvexProgramme,
    problem: SampledProblem,
    xv: np.ndarray | None,
    *,
    solver: str,
    opts: dict,
    tolerance: float,
    max_time_s: float | None,
    t_start: float,
    progress: Callable[[str, float], None] | None,
) -> tuple[np.ndarray | None, list[StageLog], str]:
    """One stage per priority (ascending), then the final stage, unless the time runs out.

    Returns the scaled weights (shape (n_beamlets,)), the stage logs and the
    status (``"ok"``, ``"time limit"`` or ``"solver problem"``).
    """
    surr, goals, priorities = problem.surr, problem.goals, problem.priorities
    stages: list[StageLog] = []
    status = "ok"
    goal_surr = {p: [k for k, s in enumerate(surr) if not s.stretch and goals[s.goal_index].priority == p] for p in priorities}
    n_stages = len(priorities) + 1
    solve = dict(solver=solver, opts=opts, max_time_s=max_time_s, t_start=t_start)
    for si, p in enumerate(priorities):
        _report(progress, f"priority {p} goals", si / n_stages)
        if max_time_s is not None and time.perf_counter() - t_start > max_time_s and xv is not None:
            status = "time limit"
            break
        log, xv = _priority_stage(cvx, problem, p, goal_surr[p], xv, tolerance, solve)
        stages.append(log)
        if log.status.startswith("failed"):
            status = "solver problem"
    else:
        _report(progress, "final stage (stretch goals, OAR sparing, normal tissue, smoothness)", len(priorities) / n_stages)
        wv = np.zeros(len(surr))
        wv[problem.stretch_idx] = 1.0
        log, xv = _solve_stage(cvx, problem, "final", None, wv, cvx.lam_full, xv, **solve)
        if xv is not None:
            cur = problem.slacks(xv)
            log.slacks_gy = {surr[k].goal_index: float(cur[k]) for k in problem.stretch_idx}
        stages.append(log)
        if log.status.startswith("failed"):
            status = "solver problem"
    if max_time_s is not None and time.perf_counter() - t_start > max_time_s and status == "ok":
        status = "time limit"
    return xv, stages, status


def _priority_stage(
    cvx: _ConvexProgramme, problem: SampledProblem, p: int, ks: list[int], xv: np.ndarray | None, tolerance: float, solve: dict
) -> tuple[StageLog, np.ndarray]:
    """Minimise the slacks of the priority-``p`` surrogates ``ks`` (skipped when already met), then cap them at what they achieved.

    Parameters
    ----------
    ks : list of int
        Indices into ``problem.surr`` of the priority's non-stretch surrogates.
    xv : ndarray of float64, shape (n_beamlets,), or None
        Current scaled weights.
    tolerance : float
        Slack allowed above the achieved one, prescription units (plus 1 % of it).
    solve : dict
        Keyword arguments of :func:`_solve_stage` (solver, opts, max_time_s, t_start).

    Returns
    -------
    log : StageLog
        With the achieved slack (Gy) of each goal of the priority.
    xv : ndarray of float64, shape (n_beamlets,)

    Raises
    ------
    OptimizationError
        When the solver gives no weights in the first stage.
    """
    rx = problem.rx
    reg = 1e-3  # regularisation weight in priority stages (keeps the stage solutions bounded and sensible)
    cur = problem.slacks(xv) if xv is not None else None
    if cur is not None and np.all(cur[ks] <= tolerance * rx):
        log = StageLog(f"priority {p}", p, "skipped")
    else:
        wv = np.zeros(len(problem.surr))
        wv[ks] = 1.0
        log, xv = _solve_stage(cvx, problem, f"priority {p}", p, wv, reg * cvx.lam_full, xv, **solve)
        if xv is None:
            raise OptimizationError(f"the solver {solve['solver']} failed in the first stage ({log.status}); no plan")
        cur = problem.slacks(xv)
    achieved = cur[ks] / rx  # in units of the prescription
    newcap = np.asarray(cvx.cap.value, dtype=np.float64).copy()
    newcap[ks] = achieved + tolerance + 0.01 * achieved
    cvx.cap.value = newcap
    for k in ks:
        gi = problem.surr[k].goal_index
        log.slacks_gy[gi] = max(log.slacks_gy.get(gi, 0.0), float(cur[k]))
    return log, xv


def _solve_stage(
    cvx: _ConvexProgramme,
    problem: SampledProblem,
    name: str,
    prio: int | None,
    weights_vec: np.ndarray,
    lam_vec: np.ndarray,
    xv: np.ndarray | None,
    *,
    solver: str,
    opts: dict,
    max_time_s: float | None,
    t_start: float,
) -> tuple[StageLog, np.ndarray | None]:
    """Solve the programme with slack weights ``weights_vec`` (shape (n_surrogates,)) and term weights ``lam_vec`` (shape (5,)).

    OSQP and SCS start from ``xv``; the time left of ``max_time_s`` is the
    solver's time limit. Returns the stage's log and the new scaled weights
    (clipped at 0; ``xv`` unchanged when the solver gave no usable solution).
    """
    import cvxpy as cp

    x, u, problem_cp = cvx.x, cvx.u, cvx.problem
    cvx.cw.value = weights_vec
    cvx.lam.value = lam_vec
    stage_opts = dict(opts)
    if max_time_s is not None:
        left = max_time_s - (time.perf_counter() - t_start)
        if solver == "CLARABEL":
            stage_opts["time_limit"] = max(left, 0.1)
        elif solver == "OSQP":
            stage_opts["time_limit"] = max(left, 0.1)
        else:
            stage_opts["time_limit_secs"] = max(left, 0.1)
    if xv is not None and solver in ("OSQP", "SCS"):
        x.value = xv
        u.value = problem.b_mat @ xv
    t0 = time.perf_counter()
    try:
        problem_cp.solve(solver=solver, warm_start=xv is not None, **stage_opts)
        st = str(problem_cp.status)
    except cp.SolverError as exc:
        st = f"failed: {exc}"
    wall = time.perf_counter() - t0
    stats = problem_cp.solver_stats
    log = StageLog(
        name,
        prio,
        st,
        solve_time_s=float(stats.solve_time or 0.0) if stats is not None else 0.0,
        wall_time_s=wall,
        iterations=int(stats.num_iters or 0) if stats is not None and stats.num_iters is not None else 0,
    )
    if x.value is not None and st in ("optimal", "optimal_inaccurate", "user_limit") or (x.value is not None and "time" in st.lower()):
        xv = np.maximum(np.asarray(x.value, dtype=np.float64), 0.0)
    return log, xv
