"""Segment-MU optimisation (apertures fixed) against the clinical goals with cvxpy + Clarabel.

After leaf sequencing, the segments' MU (~100–200 variables) are optimised against the
protocol's goals on a per-segment dose matrix. Priorities are lexicographic: the stage of
priority 1 minimises the shortfalls of its goals' convex bounds; what it achieved becomes a
hard constraint (a bound met stays met; a shortfall may grow by at most 1 % of itself plus
``level_tolerance`` × prescription) for the stage of priority 2, and so on; the stretch
values come last. Each D/V goal enters through a conservative CVaR bound
(:mod:`art.optimize.segment_mu_convex`: meeting the bound implies meeting the goal as
:func:`art.evaluate.metrics.evaluate_metric` computes it), ``Dmean`` exactly; every bound
also keeps ``margin`` × prescription inside its level, against solver tolerances.

MU: a segment that starts at or above the machine's minimum MU per segment keeps
``MU ≥ mu_min``; one that starts below it (undeliverable) is dropped (MU fixed at 0), so the
feasible MU set is a box (convex) and every answer is deliverable. Each beam's total is at
most ``mu_max_per_beam``. A mild quadratic term pulls the MU toward ``mu_start``.

Size: the programme has the MU, one slack per bound and the cuts (cutting planes, Kelley):
a CVaR enters through the tail weights ``q`` of the current dose (``q·d`` never exceeds
the CVaR, so a cut removes no feasible MU), a max/min through single voxels, a mean through
its exact row. Each solve is checked on the watched voxels of every bound that counts
(this stage's and the capped ones) and a cut is added for each bound missed by more than
half the margin; a stage ends only when its solution meets every bound on **every** voxel
of its structure (the watch widens otherwise), so the answer is exact to half the margin.
Correction: when a priority-1 goal is missed on the exact
evaluation, the pass is repeated (``corrections`` times at most) with each bound's level
moved by its CVaR-to-quantile gap at the current MU (so the bound tracks the metric itself)
and by the goal's shortfall; the better plan by priority is kept, and every reported
value is the exact metric. cvxpy loads on the first call.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from art.errors import InputError
from art.optimize.fmo_types import OptimizationError
from art.optimize.objectives import Surrogate
from art.optimize.segment_mu_convex import bound_value, exact_goal_value, goal_bounds, tail_quantile
from art.optimize.segment_mu_convex import Setup, run_pass, structure_doses
from art.optimize.voxels import StructureVoxels
from art.protocol import Goal, Prescription

__all__ = ["SegmentGoalResult", "SegmentMUResult", "optimize_segment_mu", "optimize_plan_segment_mu"]

SOLVERS = ("CLARABEL", "OSQP", "SCS")
ZERO_MU = 1e-3  # MU per segment below this are solver noise: set to 0 (then the segment is removed from a plan)


@dataclass(frozen=True)
class SegmentGoalResult:
    """One goal before and after the segment-MU stage.

    Attributes
    ----------
    goal : Goal
    bounds : tuple of Surrogate
        Its convex bounds (levels as in the goal; empty when every dose meets it).
    bound_values_gy : tuple of float
        Each bound's value (CVaR, max/min or mean, Gy) on the resulting dose.
    bound_met : bool
        Every bound meets its level (then the goal is met; the converse need not hold).
    value_before, value : float
        The exact metric (:func:`art.evaluate.metrics.evaluate_metric`, in the goal's unit)
        at ``mu_start`` and at the result.
    met_before, met : bool
    """

    goal: Goal
    bounds: tuple
    bound_values_gy: tuple
    bound_met: bool
    value_before: float
    value: float
    met_before: bool
    met: bool


@dataclass
class SegmentMUResult:
    """What :func:`optimize_segment_mu` returns.

    Attributes
    ----------
    mu, mu_start : ndarray of float64, shape (n_segments,)
        MU per segment per fraction, after and before (0 = dropped segment; below ``ZERO_MU``
        = 0.001 MU is 0). The goals are evaluated on exactly these MU.
    beam_mu : ndarray of float64, shape (n_beams,)
        Total MU per beam (beams numbered as in ``beam_of_segment``).
    goals : list of SegmentGoalResult
        In the caller's order.
    achieved_priorities, missed_priorities : tuple of int
        Priority levels whose goals are all met (some missed) on the exact evaluation.
    stages : list of dict
        Per stage: name, priority, status, solver time, wall time, rounds, voxels.
    status : str
        ``"ok"``, ``"time limit"`` or ``"solver problem"``.
    message : str
        One line: what was achieved, and which priority-1 goals are missed (if any).
    time_s : float
    n_variables : int
        Scalar variables of the cvxpy programme (MU and one slack per bound; the cuts are constraints).
    corrections : int
        Correction passes run (0 when priority 1 was met by the first pass).
    """

    mu: np.ndarray
    mu_start: np.ndarray
    beam_mu: np.ndarray
    goals: list
    achieved_priorities: tuple
    missed_priorities: tuple
    stages: list = field(default_factory=list)
    status: str = "ok"
    message: str = ""
    time_s: float = 0.0
    n_variables: int = 0
    corrections: int = 0

    @property
    def priority1_met(self) -> bool:
        """True when every priority-1 goal is met on the exact evaluation."""
        return all(g.met for g in self.goals if g.goal.priority == 1)


def _as_matrix(segment_dose: Any, n_segments: int | None) -> Any:
    """``segment_dose`` as CSR float64 (sparse input) or a C-contiguous float64 array, checked."""
    if sp.issparse(segment_dose):
        a = segment_dose if sp.isspmatrix_csr(segment_dose) and segment_dose.dtype == np.float64 else sp.csr_matrix(segment_dose, dtype=np.float64)
        data = a.data
    else:
        a = np.ascontiguousarray(np.asarray(segment_dose, dtype=np.float64))
        data = a
    if a.ndim != 2 or a.shape[1] == 0 or a.shape[0] == 0:
        raise InputError(f"segment_dose must be a 2-D (n_voxels, n_segments) matrix, got shape {a.shape}")
    if not np.all(np.isfinite(data)) or np.any(data < 0):
        raise InputError("segment_dose must be finite and non-negative (Gy per MU per fraction)")
    if n_segments is not None and a.shape[1] != n_segments:
        raise InputError(f"segment_dose has {a.shape[1]} columns but there are {n_segments} segments")
    return a


def _check_mu(mu_start: Any, beam_of_segment: Any, n: int, mu_min: float, mu_max_per_beam: float) -> tuple[np.ndarray, np.ndarray]:
    """``mu_start`` (float64) and ``beam_of_segment`` (int64), shape (n,), checked; the MU box must be feasible."""
    mu0 = np.asarray(mu_start, dtype=np.float64).reshape(-1)
    if mu0.shape != (n,) or not np.all(np.isfinite(mu0)) or np.any(mu0 < 0):
        raise InputError(f"mu_start must be {n} finite non-negative MU values (one per segment column)")
    beams = np.asarray(beam_of_segment).reshape(-1)
    if beams.shape != (n,) or (beams.size and not np.issubdtype(beams.dtype, np.integer)) or np.any(beams < 0):
        raise InputError(f"beam_of_segment must be {n} non-negative integers (the beam of each segment column)")
    if not (np.isfinite(mu_min) and mu_min >= 0):
        raise InputError(f"mu_min must be a finite non-negative MU, got {mu_min!r}")
    if not (np.isfinite(mu_max_per_beam) and mu_max_per_beam > 0):
        raise InputError(f"mu_max_per_beam must be a positive finite MU, got {mu_max_per_beam!r}")
    kept = mu0 >= mu_min - 1e-9
    for b in np.unique(beams):
        k = int(np.count_nonzero(kept & (beams == b)))
        if k * mu_min > mu_max_per_beam:
            raise InputError(f"mu_max_per_beam {mu_max_per_beam} MU is below beam {int(b)}'s {k} segments × mu_min {mu_min} MU")
    return mu0, beams.astype(np.int64)


def _goal_bounds(goals: Sequence[Goal], structures: Mapping[str, StructureVoxels], n_rows: int) -> list[tuple[Surrogate, StructureVoxels]]:
    """Every goal's bounds with its structure (checked: known, rows inside the matrix)."""
    out = []
    for i, g in enumerate(goals):
        if not isinstance(g, Goal):
            raise InputError(f"goals[{i}] must be a Goal, got {type(g).__name__}")
        sv = structures.get(g.structure)
        if sv is None:
            raise InputError(f"goals[{i}] ({g.structure} {g.metric.text}): no structure {g.structure!r} in structures (has: {', '.join(structures)})")
        if sv.rows.size and int(sv.rows.max()) >= n_rows:
            raise InputError(f"structures[{g.structure!r}]: row {int(sv.rows.max())} outside segment_dose ({n_rows} rows)")
        out += [(s, sv) for s in goal_bounds(g, i, sv)]
    return out


def _check_options(solver: str, prescription: Any, fractions: Any, **numbers: float) -> None:
    """The solver name, prescription, fractions and the non-negative numbers (``time_limit_s`` positive), named when wrong."""
    if solver not in SOLVERS:
        raise InputError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if not isinstance(prescription, Prescription) or not prescription.dose_gy > 0:
        raise InputError("prescription must be a Prescription with a positive dose_gy")
    if isinstance(fractions, bool) or not isinstance(fractions, (int, np.integer)) or fractions < 1:
        raise InputError(f"fractions must be a positive integer, got {fractions!r}")
    for name, v in numbers.items():
        if not (np.isfinite(v) and v >= 0) or (name == "time_limit_s" and v <= 0):
            raise InputError(f"{name} must be a non-negative finite number{' (positive)' if name == 'time_limit_s' else ''}, got {v!r}")


def optimize_segment_mu(
    segment_dose: Any, structures: Mapping[str, StructureVoxels], goals: Sequence[Goal], prescription: Prescription, *,
    mu_min: float, mu_max_per_beam: float, beam_of_segment: Any, mu_start: Any, fractions: int, solver: str = "CLARABEL",
    solver_options: Mapping[str, Any] | None = None, time_limit_s: float = 60.0, margin: float = 1e-3,
    level_tolerance: float = 1e-3, regularization: float = 1e-4, corrections: int = 2,
) -> SegmentMUResult:  # fmt: skip
    """Optimise the MU of fixed segments against priority-ordered clinical goals (lexicographic).

    Parameters
    ----------
    segment_dose : (n_voxels, n_segments) scipy.sparse matrix or ndarray
        Dose of each segment in **Gy per MU per fraction** (column j: segment j at 1 MU);
        the course dose is ``fractions × segment_dose @ mu``. Rows are the voxels that
        ``structures`` index (e.g. ``influence.matrix @ segment_beamlet_matrix(plan, influence)``).
    structures : mapping of str to StructureVoxels
        Rows (and fractional weights, voxel volume) of every structure a goal names.
    goals : sequence of Goal
    prescription : Prescription
        Its dose sets the problem's scale (margins and tolerances are fractions of it).
    mu_min : float, keyword-only
        Machine minimum MU per segment (per fraction); see the module notes for dropping.
    mu_max_per_beam : float, keyword-only
        Machine maximum MU per beam (per fraction).
    beam_of_segment : (n_segments,) int array_like, keyword-only
    mu_start : (n_segments,) array_like, keyword-only
        The sequenced MU (per fraction): the regulariser's centre and the warm point.
    fractions : int, keyword-only
    solver : {"CLARABEL", "OSQP", "SCS"}, keyword-only
    solver_options : mapping, optional, keyword-only
        Passed to ``cvxpy.Problem.solve`` over the defaults.
    time_limit_s : float, keyword-only
        Wall-time budget of the whole stage, checked between solves (a solve itself ends by the solver's
        iteration limit, never by time, so that the result does not depend on the machine's speed or load
        unless this budget is spent); when spent, the last completed priority's MU are returned and
        ``status`` is ``"time limit"``.
    margin : float, keyword-only
        Each bound is required ``margin × prescription dose`` inside its level.
    level_tolerance : float, keyword-only
        A missed higher-priority bound may grow by 1 % of its shortfall plus ``level_tolerance``
        × prescription dose in later stages (a met one stays met).
    regularization : float, keyword-only
        Weight of the mean squared relative MU change (slacks are in prescription units).
    corrections : int, keyword-only
        Correction passes at most when a priority-1 goal is missed (0: none).

    Returns
    -------
    SegmentMUResult

    Raises
    ------
    InputError
        Bad input; the message names the parameter.
    OptimizationError
        The solver failed before any stage gave MU.
    """
    t0 = time.perf_counter()
    _check_options(solver, prescription, fractions, time_limit_s=time_limit_s, margin=margin, level_tolerance=level_tolerance, regularization=regularization)
    a = _as_matrix(segment_dose, None)
    mu0, beams = _check_mu(mu_start, beam_of_segment, a.shape[1], float(mu_min), float(mu_max_per_beam))
    bounds = _goal_bounds(goals, structures, a.shape[0])
    used = {g.structure: structures[g.structure] for g in goals}
    setup = Setup.create(a, bounds, used, mu0, beams, goal_priority=np.array([g.priority for g in goals], np.int64), mu_min=float(mu_min), mu_max=float(mu_max_per_beam), fractions=int(fractions),
                         rx=float(prescription.dose_gy), margin=margin, level_tolerance=level_tolerance, regularization=regularization,
                         solver=solver, solver_options=solver_options, deadline=t0 + float(time_limit_s))  # fmt: skip
    before = _evaluate(setup, list(goals), setup.x0)
    x, stages, status = run_pass(setup, setup.x0, setup.levels0)
    after = _evaluate(setup, list(goals), x)
    n_corr = 0
    while n_corr < int(corrections) and not all(m for g, (_, m) in zip(goals, after) if g.priority == 1) and status == "ok":
        n_corr += 1
        levels = _corrected_levels(setup, list(goals), x, after)
        x2, st2, status = run_pass(setup, x, levels, label=f"correction {n_corr}: ")
        stages += st2
        after2 = _evaluate(setup, list(goals), x2)
        if _key(list(goals), after2) > _key(list(goals), after):
            x, after = x2, after2
    return _result(setup, list(goals), x, before, after, stages, status, n_corr, time.perf_counter() - t0)


def _evaluate(setup: Setup, goals: list[Goal], x: np.ndarray) -> list[tuple[float, bool]]:
    """(exact value, met) of each goal at scaled MU ``x``."""
    d = setup.dose(x)
    out = []
    for g in goals:
        sv = setup.structures[g.structure]
        v = exact_goal_value(g, structure_doses(d, sv), sv)
        out.append((v, (g.at_least is None or v >= g.at_least) and (g.at_most is None or v <= g.at_most)))
    return out


def _key(goals: list[Goal], values: list[tuple[float, bool]]) -> tuple:
    """Goals met per priority (ascending), then minus the total relative shortfall: larger is better."""
    met: dict[int, int] = {}
    short = 0.0
    for g, (v, m) in zip(goals, values):
        met[g.priority] = met.get(g.priority, 0) + int(m)
        lo = 0.0 if g.at_least is None else max(0.0, g.at_least - v) / max(abs(g.at_least), 1e-9)
        hi = 0.0 if g.at_most is None else max(0.0, v - g.at_most) / max(abs(g.at_most), 1e-9)
        short += lo + hi
    return tuple(met[p] for p in sorted(met)) + (-short,)


def _corrected_levels(setup: Setup, goals: list[Goal], x: np.ndarray, values: list[tuple[float, bool]]) -> np.ndarray:
    """Bound levels (Gy) for a correction pass: each moved outward by its CVaR-to-quantile gap at ``x``, inward by its dose goal's shortfall."""
    d = setup.dose(x)
    levels = setup.levels0.copy()
    for k, (s, sv) in enumerate(setup.bounds):
        dk = structure_doses(d, sv)
        gap = abs(bound_value(s, dk, sv) - tail_quantile(s, dk, sv.weight_array())) if s.form == "cvar" else 0.0
        g = goals[s.goal_index]
        v = values[s.goal_index][0]
        short = 0.0
        if g.metric.is_dose and not s.stretch:
            short = max(0.0, g.at_least - v) if s.sense == "lower" and g.at_least is not None else 0.0
            short = max(short, v - g.at_most) if s.sense == "upper" and g.at_most is not None else short
        levels[k] += (gap - short) if s.sense == "upper" else (short - gap)
    return levels


def _result(setup: Setup, goals: list[Goal], x: np.ndarray, before: list, after: list, stages: list, status: str, n_corr: int, t: float) -> SegmentMUResult:
    """The result at scaled MU ``x`` (MU below ``ZERO_MU`` set to 0) with the goals' bounds and metrics valued there."""
    mu = np.where(x * setup.mu_scale >= ZERO_MU, x * setup.mu_scale, 0.0)
    d = setup.dose(mu / setup.mu_scale)
    after = _evaluate(setup, goals, mu / setup.mu_scale)
    res_goals = []
    for i, g in enumerate(goals):
        bs = [(s, sv) for s, sv in setup.bounds if s.goal_index == i and not s.stretch]
        vals = tuple(bound_value(s, structure_doses(d, sv), sv) for s, sv in bs)
        ok = all((v < s.level_gy if g.metric.kind == "V" else v <= s.level_gy) if s.sense == "upper" else v >= s.level_gy for (s, _), v in zip(bs, vals))
        res_goals.append(SegmentGoalResult(g, tuple(s for s, _ in bs), vals, ok, before[i][0], after[i][0], before[i][1], after[i][1]))
    prios = sorted({g.priority for g in goals})
    achieved = tuple(p for p in prios if all(r.met for r in res_goals if r.goal.priority == p))
    missed = tuple(p for p in prios if p not in achieved)
    miss1 = [f"{r.goal.structure} {r.goal.metric.text} = {r.value:.4g} (goal {r.goal.describe()})" for r in res_goals if r.goal.priority == 1 and not r.met]
    msg = f"segment MU: priorities met {list(achieved)}, missed {list(missed)}; status {status}"
    if miss1:
        msg += "; priority-1 goal(s) missed: " + ", ".join(miss1)
    beam_mu = np.bincount(setup.beams, weights=mu, minlength=int(setup.beams.max()) + 1)
    n_var = max((int(s.get("n_variables", 0)) for s in stages), default=0)
    return SegmentMUResult(mu, setup.mu0.copy(), beam_mu, res_goals, achieved, missed, stages, status, msg, t, n_var, n_corr)


def optimize_plan_segment_mu(
    plan: Any, segment_dose: Any, structures: Mapping[str, StructureVoxels], protocol: Any, *, machine: Any = None, **options: Any
) -> tuple[Any, SegmentMUResult]:
    """Optimise a sequenced plan's segment MU against a protocol; the plan with the new MU.

    Parameters
    ----------
    plan : art.plan.Plan
        Sequenced (beams with MLC segments, MU per fraction).
    segment_dose : (n_voxels, n_segments) sparse matrix or ndarray
        Gy per MU per fraction of each segment, columns in plan order (beam by beam, segment
        by segment), e.g. ``influence.matrix @ art.delivery.segment_beamlet_matrix(plan, influence)``
        (built by the caller: :mod:`art.optimize` does not import :mod:`art.delivery`).
    structures : mapping of str to StructureVoxels
        On the rows of ``segment_dose`` (e.g. :func:`art.optimize.voxels.build_structure_voxels`).
    protocol : art.protocol.Protocol
        Its goals and prescription; ``protocol.prescription.fractions`` must be ``plan.fractions``.
    machine : Machine, optional, keyword-only
        Its ``min_mu_per_segment`` and ``max_mu_per_beam`` (default :func:`art.dose.load_machine`).
    **options
        Further keywords of :func:`optimize_segment_mu` (solver, time_limit_s, …).

    Returns
    -------
    plan : Plan
        A copy with the optimised MU; segments with MU 0 removed.
    result : SegmentMUResult

    Raises
    ------
    InputError
        Mismatched plan and matrix or protocol.
    OptimizationError
        A beam left without segments (every MU 0).
    """
    from art.dose import load_machine
    from art.plan import Segment

    machine = load_machine() if machine is None else machine
    segs = [(b, s) for b in range(len(plan.beams)) for s in plan.beams[b].segments]
    if not segs:
        raise InputError("plan has no segments: sequence it first")
    if int(protocol.prescription.fractions) != int(plan.fractions):
        raise InputError(f"protocol fractions {protocol.prescription.fractions} differ from plan.fractions {plan.fractions}")
    shape = getattr(segment_dose, "shape", ())
    if len(shape) != 2 or shape[1] != len(segs):
        raise InputError(f"segment_dose must have one column per segment of the plan ({len(segs)}), got shape {shape}")
    res = optimize_segment_mu(segment_dose, structures, list(protocol.goals), protocol.prescription, mu_min=float(machine.min_mu_per_segment),
                              mu_max_per_beam=float(machine.max_mu_per_beam), beam_of_segment=np.array([b for b, _ in segs], np.int64),
                              mu_start=np.array([s.mu for _, s in segs]), fractions=int(plan.fractions), **options)  # fmt: skip
    beams, j = [], 0
    for beam in plan.beams:
        new = []
        for s in beam.segments:
            if res.mu[j] > 0:
                new.append(Segment(s.leaf_positions, s.jaws, float(res.mu[j])))
            j += 1
        if not new:
            raise OptimizationError(f"segment MU: beam {beam.name!r} has no segment left (all MU 0); drop the beam or re-sequence")
        beams.append(dataclasses.replace(beam, segments=new))
    return dataclasses.replace(plan, beams=beams), res
