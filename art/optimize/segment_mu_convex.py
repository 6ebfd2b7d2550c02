"""The segment-MU stage's convex side: conservative bounds of the goals, their exact check, and the cvxpy programme.

The segment-MU stage (:mod:`art.optimize.segment_mu`) turns every bound of a goal into one
convex requirement on the voxel doses ``d`` of the structure (volume weights ``w``, total
``V``), chosen so that **meeting the convex requirement implies meeting the goal as
:func:`art.evaluate.metrics.evaluate_metric` computes it on the same samples** (exactly, not
only in the limit of fine voxels). The requirements are expressed with
:class:`art.optimize.objectives.Surrogate` (``sense``, ``form``, tail ``fraction``,
``level_gy``) and valued with :func:`art.optimize.objectives.surrogate_value`.

Notation: the upper CVaR of volume ``v`` is the mean dose of the hottest ``v`` (voxels split
fractionally at the edge), the lower CVaR the mean of the coldest ``v``; a tail of zero
volume is the max (min) voxel dose, a tail of the whole volume the mean. ``h`` is half the
largest sample volume when the weights differ, and 0 when all samples have the same volume.

==========================  ==============================================  ==============================
goal                        convex requirement                              why it is conservative
==========================  ==============================================  ==============================
``D(v) ≤ b``                upper CVaR of ``max(v - h, 0)`` ≤ b             CVaR ≥ the interpolated D(v)
``D(v) ≥ a``                lower CVaR of ``max(V - v - h, 0)`` ≥ a         lower CVaR ≤ D(v)
``Dmean ≤ b`` / ``≥ a``     the weighted mean (exact, linear)               exact
``V_x ≤ v``                 upper CVaR of ``v`` ≤ x - margin (strict)       V_x > v ⇒ the hottest v all ≥ x
``V_x ≥ v``                 lower CVaR of ``V - v`` ≥ x                     V_x < v ⇒ the coldest V-v all < x
==========================  ==============================================  ==============================

``D(v)`` is any dose metric as a dose to the hottest volume ``v``: ``D<x>%`` (``v = x V /
100``), ``D<x>cc``, ``Dmax`` (``v = 0.03 cc``; 0 below 0.03 cc, the max) and ``Dmin``
(``v = V - 0.03 cc``; ``V`` below 0.03 cc, the min). Why the half-voxel ``h``:
``evaluate_metric`` interpolates between the samples' mid-volumes, so with unequal sample
volumes (fractional occupancy) ``D(v)`` can exceed the upper CVaR of ``v`` (a small hot
sample next to a large cold one); it never exceeds the dose of the sample covering
``v - h``, which is at most the upper CVaR of ``v - h``. With equal volumes the CVaR of
``v`` itself already bounds ``D(v)`` (the interpolation's integral never exceeds the step
quantile's), so ``h = 0``. A ``V`` bound that every dose meets (``V_x ≤ 100 %``,
``V_x ≥ 0``) gives no requirement.

The programme (:class:`Setup`, :func:`run_pass`): scaled MU ``x = mu / mu_scale``, dose in
prescription units, one slack per bound (capped by a parameter), the CVaR in Rockafellar–
Uryasev form ``t + (1/β) Σ ω_i max(d_i - t, 0)`` on the bound's active voxels (normalised by
the whole structure's volume, so leaving voxels out only relaxes it); cutting planes keep it small (module notes of
:mod:`art.optimize.segment_mu`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from art.errors import InputError
from art.evaluate.metrics import evaluate_metric, prepare_samples
from art.optimize.fmo_types import OptimizationError
from art.optimize.objectives import Surrogate, surrogate_value
from art.optimize.voxels import StructureVoxels
from art.protocol import NEAR_POINT_CC, Goal

__all__ = ["goal_bounds", "exact_goal_value", "bound_value", "candidate_positions", "tail_quantile", "Setup", "run_pass", "structure_doses"]

_EDGE = 1e-12  # tail fractions closer than this to 0 or 1 become the max/min or the mean


def _volumes(goal: Goal, sv: StructureVoxels) -> tuple[float, float, float]:
    """(total V, half-sample shift h, cc per weight unit) of a structure, in weight units (cc / voxel volume)."""
    w = sv.weight_array()
    if w.size == 0:
        raise InputError(f"goal {goal.structure} {goal.metric.text}: structure {goal.structure!r} has no voxels")
    needs_cc = goal.metric.unit == "cc" or goal.metric.kind in ("max", "min") or goal.metric.output_unit == "cc"
    if needs_cc and sv.voxel_volume_cc is None:
        raise InputError(f"goal {goal.structure} {goal.metric.text}: structures[{goal.structure!r}].voxel_volume_cc is needed for a cc volume")
    uniform = bool(np.all(w == w[0]))
    return float(w.sum()), 0.0 if uniform else 0.5 * float(w.max()), float(sv.voxel_volume_cc or 1.0)


def _tail(index: int, goal: Goal, sense: str, tail_volume: float, total: float, level: float, stretch: bool) -> Surrogate:
    """The requirement on the hottest (upper) or coldest (lower) ``tail_volume`` (weight units)."""
    f = tail_volume / total
    if f <= _EDGE:
        form, f = "extreme", 0.0
    elif f >= 1.0 - _EDGE:
        form, f = "mean", 1.0
    else:
        form = "cvar"
    return Surrogate(index, goal.structure, sense, form, float(f), float(level), stretch)


def _hot_volume(goal: Goal, total: float, cc: float) -> float:
    """The volume ``v`` (weight units) of a dose metric read as ``D(v)``, the dose to the hottest ``v``."""
    m = goal.metric
    if m.kind == "D" and m.unit == "%":
        return float(m.parameter) / 100.0 * total
    if m.kind == "D":
        v = float(m.parameter) / cc
        if v > total * (1 + 1e-9):
            raise InputError(f"goal {goal.structure} {m.text}: the structure ({total * cc:.4g} cc) is smaller than {m.parameter} cc")
        return min(v, total)
    near = NEAR_POINT_CC / cc
    if m.kind == "max":
        return 0.0 if near > total else near
    return total if near > total else total - near  # min


def goal_bounds(goal: Goal, index: int, sv: StructureVoxels) -> list[Surrogate]:
    """The conservative convex requirements of one goal (see the module table).

    Parameters
    ----------
    goal : Goal
    index : int
        The goal's index in the caller's list (kept in ``Surrogate.goal_index``).
    sv : StructureVoxels
        The goal's structure.

    Returns
    -------
    list of Surrogate
        One per bound (``at_least``, ``at_most``) and one for ``stretch``, minus the
        bounds every dose meets. ``level_gy`` is the goal's dose level; for a ``V``
        goal it is the metric's dose ``x``.

    Raises
    ------
    InputError
        For a cc metric without the structure's voxel volume or larger than the structure.
    """
    total, h, cc = _volumes(goal, sv)
    m = goal.metric
    out: list[Surrogate] = []
    bounds = [("lower", goal.at_least, False), ("upper", goal.at_most, False)]
    if goal.stretch is not None:
        bounds.append(("lower" if goal.at_least is not None else "upper", goal.stretch, True))
    for sense, value, stretch in bounds:
        if value is None:
            continue
        if m.kind == "mean":
            out.append(Surrogate(index, goal.structure, sense, "mean", 1.0, float(value), stretch))
        elif m.kind == "V":
            v = float(value) / 100.0 * total if m.output_unit == "%" else float(value) / cc
            if (sense == "upper" and v >= total) or (sense == "lower" and v <= 0):
                continue  # met by every dose
            tail = v if sense == "upper" else total - v
            out.append(_tail(index, goal, sense, max(tail, 0.0), total, float(m.parameter), stretch))
        else:
            v = _hot_volume(goal, total, cc)
            tail = v - h if sense == "upper" else total - v - h
            out.append(_tail(index, goal, sense, max(tail, 0.0), total, float(value), stretch))
    return out


def bound_value(s: Surrogate, dose: np.ndarray, sv: StructureVoxels) -> float:
    """The requirement's value (Gy) on the structure's voxel doses ``dose`` (shape (k,), course Gy).

    :func:`art.optimize.objectives.surrogate_value` on the voxels that can hold the tail
    (the hottest or coldest ``need / min weight + 1``, found by partition: a small tail of a
    large structure is not sorted whole).
    """
    w = sv.weight_array()
    d = np.asarray(dose, dtype=np.float64)
    if s.form == "mean" or d.size < 4096:
        return surrogate_value(s, d, w)
    need = s.fraction * float(w.sum()) if s.form == "cvar" else 0.0
    k = min(d.size, int(np.ceil(need / float(w.min()))) + 1)
    if k >= d.size // 2:
        return surrogate_value(s, d, w)
    part = np.argpartition(-d if s.sense == "upper" else d, k - 1)[:k]
    if s.form == "extreme":
        return surrogate_value(s, d[part], w[part])
    sub = Surrogate(s.goal_index, s.structure, s.sense, "cvar", need / float(w[part].sum()), s.level_gy, s.stretch)
    return surrogate_value(sub, d[part], w[part])


def exact_goal_value(goal: Goal, dose: np.ndarray, sv: StructureVoxels) -> float:
    """The goal's metric by :func:`art.evaluate.metrics.evaluate_metric` on the structure's samples.

    The samples are the structure's voxel doses ``dose`` (shape (k,), course Gy) with volumes
    ``weights × voxel_volume_cc`` (``voxel_volume_cc`` taken as 1 when absent: only %
    metrics are then defined).
    """
    d, v = prepare_samples(dose, sv.weight_array() * float(sv.voxel_volume_cc or 1.0), name=goal.structure)
    return float(evaluate_metric(goal.metric, d, v, name=goal.structure))


def tail_quantile(s: Surrogate, dose: np.ndarray, weights: np.ndarray) -> float:
    """The dose at the inner edge of the requirement's tail (the value-at-risk), Gy; the max/min or mean for the other forms."""
    d = np.asarray(dose, dtype=np.float64)
    if s.form != "cvar":
        return surrogate_value(s, d, weights)
    order = np.argsort(-d if s.sense == "upper" else d, kind="stable")
    cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    k = min(int(np.searchsorted(cum, s.fraction * cum[-1])), d.size - 1)
    return float(d[order][k])


def candidate_positions(s: Surrogate, dose: np.ndarray, weights: np.ndarray, widen: float) -> np.ndarray:
    """Positions (into the structure's voxels) that the requirement's tail may reach from ``dose``.

    The voxels on the tail's side of ``τ ∓ widen·(0.1 τ + 1 Gy)`` where ``τ`` is the tail edge
    (the level for the max/min, the nearer of level and value-at-risk for a CVaR), and at
    least the ``2 × tail + 20`` hottest (coldest) voxels. A mean needs none (it is one
    linear row). Exactness does not depend on this choice: the caller checks the full
    structure after each solve and widens.
    """
    d = np.asarray(dose, dtype=np.float64)
    if s.form == "mean" or d.size == 0:
        return np.zeros(0, np.int64)
    q = tail_quantile(s, d, weights) if s.form == "cvar" else s.level_gy
    upper = s.sense == "upper"
    tau = min(q, s.level_gy) if upper else max(q, s.level_gy)
    delta = widen * (0.1 * abs(tau) + 1.0)
    near = d >= tau - delta if upper else d <= tau + delta
    k = min(d.size, int(np.ceil(2 * s.fraction * d.size)) + 20)
    order = np.argsort(-d if upper else d, kind="stable")[:k]
    near[order] = True
    return np.flatnonzero(near)


_BIG = 1e3  # slack cap (prescription units) of a bound whose stage has not run
_MAX_ITER = 200  # cutting-plane iterations per stage
_CUTS_PER_ROUND = 8  # single-voxel cuts added at most per bound and iteration
_MAX_IDLE = 5  # a cut slack at this many solutions in a row is dropped


def structure_doses(dose: np.ndarray, sv: StructureVoxels) -> np.ndarray:
    """The structure's voxel doses (shape (k,)) out of a dose over all rows."""
    return dose[sv.rows]


def _tail_weights(s: Surrogate, d: np.ndarray, w: np.ndarray, total: float) -> np.ndarray:
    """The CVaR's maximising (upper) or minimising (lower) voxel weights ``q`` (sum 1) for doses ``d``: ``q·d`` is the CVaR."""
    order = np.argsort(-d if s.sense == "upper" else d, kind="stable")
    need = s.fraction * total
    cum = np.cumsum(w[order])
    take = np.minimum(w[order], np.maximum(need - (cum - w[order]), 0.0))
    q = np.zeros(d.size)
    q[order] = take / need
    return q


@dataclass
class Setup:
    """The fixed data of one segment-MU optimisation, its watched voxels and its cuts.

    Attributes
    ----------
    a : scipy.sparse.csr_matrix or ndarray, float64, (n_voxels, n_segments)
        Gy per MU per fraction.
    bounds : list of (Surrogate, StructureVoxels)
    structures : mapping of str to StructureVoxels
    mu0 : ndarray, (n,)
        Start MU; ``x0 = mu0 / mu_scale``.
    beams : ndarray of int64, (n,)
    lb : ndarray, (n,)
        Scaled lower bounds (``mu_min / mu_scale`` for kept segments, 0 for dropped ones).
    dropped : ndarray of bool, (n,)
        Segments fixed at 0 (they start below ``mu_min``).
    beam_matrix : scipy.sparse.csr_matrix, (n_beams, n)
    beam_cap : float
        ``mu_max / mu_scale``.
    levels0 : ndarray, (n_bounds,)
        The bounds' levels, Gy.
    goal_priority : ndarray of int, (n_goals,)
    watch : list of ndarray
        Watched voxels of each bound (positions into its structure's rows): cuts are found
        on them; the whole structure is checked before a stage ends.
    cuts : list of (int, ndarray)
        Bound index and the cut's row ``c`` (``c·x`` in prescription units).
    """

    a: Any
    bounds: list
    structures: Mapping[str, StructureVoxels]
    mu0: np.ndarray
    mu_scale: float
    beams: np.ndarray
    lb: np.ndarray
    dropped: np.ndarray
    beam_matrix: Any
    beam_cap: float
    fractions: int
    rx: float
    margin: float
    level_tolerance: float
    regularization: float
    solver: str
    solver_options: dict
    deadline: float
    levels0: np.ndarray
    goal_priority: np.ndarray
    watch: list = field(default_factory=list)
    cuts: list = field(default_factory=list)
    cut_idle: list = field(default_factory=list)
    programme: Any = None  # the last cvxpy programme (dict of handles)
    _watch_mats: dict = field(default_factory=dict)
    _last_dose: Any = None

    @classmethod
    def create(cls, a: Any, bounds: list, structures: Mapping[str, StructureVoxels], mu0: np.ndarray, beams: np.ndarray, *, mu_min: float,
               mu_max: float, solver: str, solver_options: Mapping[str, Any] | None, **fixed: Any) -> "Setup":  # fmt: skip
        """The setup from checked inputs (``fixed``: fractions, rx, margin, level_tolerance, regularization, deadline, goal_priority)."""
        from art.optimize.fmo_cvxpy import _solver_options

        pos = mu0[mu0 > 0]
        scale = float(pos.mean()) if pos.size else max(mu_min, 1.0)
        dropped = ~(mu0 >= mu_min - 1e-9)
        lb = np.where(dropped, 0.0, mu_min / scale)
        n = mu0.size
        bm = sp.csr_matrix((np.ones(n), (beams, np.arange(n))), shape=(int(beams.max()) + 1, n))
        levels0 = np.array([s.level_gy for s, _ in bounds], dtype=np.float64)
        opts = _solver_options(solver, solver_options)
        if solver == "CLARABEL":
            opts.setdefault("max_threads", 1)  # the programme is small and dense: a second thread only competes
        setup = cls(a, bounds, structures, mu0, scale, beams, lb, dropped, bm, mu_max / scale, solver=solver,
                    solver_options=opts, levels0=levels0, **fixed)  # fmt: skip
        d = setup.dose(setup.x0)
        setup.watch = [np.arange(sv.rows.size) if s.form == "mean" else candidate_positions(s, structure_doses(d, sv), sv.weight_array(), 2.0) for s, sv in bounds]
        return setup

    def watch_dose(self, k: int, x: np.ndarray) -> np.ndarray:
        """Dose (prescription units) of bound ``k``'s watched voxels at scaled MU ``x``."""
        key = (k, self.watch[k].size)
        if key not in self._watch_mats:
            self._watch_mats[key] = self.a[self.bounds[k][1].rows[self.watch[k]]]
        return np.asarray(self._watch_mats[key] @ x, dtype=np.float64).reshape(-1) * (self.fractions * self.mu_scale / self.rx)

    @property
    def x0(self) -> np.ndarray:
        return self.mu0 / self.mu_scale

    def dose(self, x: np.ndarray) -> np.ndarray:
        """Course dose (Gy, float64) of every row at scaled MU ``x`` (the last one is remembered: checks ask for it repeatedly)."""
        x = np.asarray(x, dtype=np.float64)
        key = x.tobytes()
        if self._last_dose is None or self._last_dose[0] != key:
            d = np.asarray(self.a @ (x * self.mu_scale), dtype=np.float64).reshape(-1) * self.fractions
            d.flags.writeable = False
            self._last_dose = (key, d)
        return self._last_dose[1]

    def rows_dose(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Course dose (Gy) of some rows at scaled MU ``x``."""
        return np.asarray(self.a[rows] @ (x * self.mu_scale), dtype=np.float64).reshape(-1) * self.fractions

    def feasible(self, x: np.ndarray) -> bool:
        """``x`` satisfies the MU box and the beam limits."""
        return bool(np.all(x >= self.lb - 1e-9) and np.all(np.abs(x[self.dropped]) <= 1e-9) and np.all(self.beam_matrix @ x <= self.beam_cap + 1e-9))

    def slacks(self, x: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """Each bound's shortfall (prescription units, >= 0) at ``x`` against ``levels`` (Gy) moved ``margin`` inward."""
        d = self.dose(x)
        out = np.zeros(len(self.bounds))
        for k, (s, sv) in enumerate(self.bounds):
            v = bound_value(s, structure_doses(d, sv), sv) / self.rx
            req = self.requirement(k, s, levels)
            out[k] = max(0.0, v - req) if s.sense == "upper" else max(0.0, req - v)
        return out

    def requirement(self, k: int, s: Surrogate, levels: np.ndarray) -> float:
        """Bound ``k``'s level (prescription units) moved ``margin`` inward."""
        return levels[k] / self.rx - self.margin if s.sense == "upper" else levels[k] / self.rx + self.margin

    def mean_row(self, k: int) -> np.ndarray:
        """``c`` with ``c·x`` the mean dose (prescription units) of bound ``k``'s structure."""
        sv = self.bounds[k][1]
        w = sv.weight_array()
        return np.asarray(self.a[sv.rows].T @ (w / w.sum())).reshape(-1) * self.fractions * self.mu_scale / self.rx


def _build(setup: Setup, cw: np.ndarray, caps: np.ndarray, lvls: np.ndarray) -> dict:
    """The cvxpy programme over the current cuts (``C x - E s ≤ r``, built anew: the cuts change every time); its handles in a dict.

    Slack weights ``cw``, caps and requirements ``lvls`` (prescription units), shape (n_bounds,).
    """
    import cvxpy as cp

    n, nb = setup.mu0.size, max(len(setup.bounds), 1)
    pad = (lambda v: np.zeros(nb) if v.size == 0 else v)  # noqa: E731 - one slack at least
    cw, caps = pad(cw), pad(caps)
    # a bound neither minimised nor capped yet plays no part: no cuts, slack 0 (a huge free slack would only hurt the scaling)
    idle = (cw <= 0) & (caps >= _BIG)
    cuts = [(k, c) for k, c in setup.cuts if not idle[k]]
    m = len(cuts)
    x = cp.Variable(n, name="mu")
    s = cp.Variable(nb, nonneg=True, name="slack")
    cons = [x >= setup.lb, setup.beam_matrix @ x <= setup.beam_cap, s <= np.where(idle, 0.0, np.maximum(caps, 0.0))]
    if m:
        cmat, rhs = np.zeros((m, n)), np.zeros(m)
        emat = sp.csr_matrix((np.ones(m), (np.arange(m), [k for k, _ in cuts])), shape=(m, nb))
        for i, (k, c) in enumerate(cuts):
            sign = 1.0 if setup.bounds[k][0].sense == "upper" else -1.0
            cmat[i], rhs[i] = sign * c, sign * lvls[k]
        cons.append(cmat @ x - emat @ s <= rhs)
    if setup.dropped.any():
        cons.append(x[np.flatnonzero(setup.dropped)] == 0)
    # ‖x - x0‖² without its constant: cvxpy then passes the square as P, with no auxiliary variables
    obj = cw @ s + setup.regularization / n * (cp.sum_squares(x) - 2.0 * setup.x0 @ x)
    problem = cp.Problem(cp.Minimize(obj), cons)
    return {"problem": problem, "x": x, "s": s, "n_variables": int(problem.size_metrics.num_scalar_variables)}


def _solve(setup: Setup, cw: np.ndarray, caps: np.ndarray, lvls: np.ndarray) -> tuple[str, np.ndarray | None, np.ndarray, dict]:
    """Solve once with slack weights ``cw``, caps and requirements ``lvls`` (prescription units) over the current cuts."""
    import cvxpy as cp

    nb = max(len(setup.bounds), 1)
    setup.programme = prog = _build(setup, cw, caps, lvls)
    # no time limit inside a solve: it ends by the solver's own iteration limit, so the same inputs give the same
    # MU on any machine and under any load (the stage's deadline is checked between solves, _priority_stage)
    opts = dict(setup.solver_options)
    t0 = time.perf_counter()
    try:
        prog["problem"].solve(solver=setup.solver, **opts)
        status = str(prog["problem"].status)
    except cp.SolverError as exc:
        status = f"failed: {exc}"
    stats = prog["problem"].solver_stats
    info = {"solve_time_s": float(getattr(stats, "solve_time", 0.0) or 0.0), "wall_time_s": time.perf_counter() - t0}
    x, s = prog["x"].value, prog["s"].value
    if x is None or status not in ("optimal", "optimal_inaccurate"):
        return status, None, np.zeros(nb), info
    return status, np.maximum(np.asarray(x, dtype=np.float64), setup.lb), np.maximum(np.asarray(s, dtype=np.float64), 0.0), info


def _row(setup: Setup, row: int) -> np.ndarray:
    """Row ``row`` of the matrix as ``c`` with ``c·x`` its course dose in prescription units."""
    r = setup.a[row]
    return np.asarray(r.toarray() if sp.issparse(r) else r, dtype=np.float64).reshape(-1) * (setup.fractions * setup.mu_scale / setup.rx)


def _add_cuts(setup: Setup, k: int, d: np.ndarray, positions: np.ndarray, allowed: float) -> bool:
    """Cut off the current point for bound ``k`` (doses ``d`` of its ``positions``, prescription units); True when a cut was added.

    A mean is its exact row; a CVaR the tail weights ``q`` of the current dose (``q·d ≤`` the
    CVaR for every dose, so the cut never removes a feasible point). A voxel holding the
    whole tail (always so for a max/min) is a cut by itself: then up to ``_CUTS_PER_ROUND``
    of the voxels beyond ``allowed`` are added at once, which speeds up small tails.
    """
    s, sv = setup.bounds[k]
    w = sv.weight_array()
    rows = sv.rows[positions]
    scale = setup.fractions * setup.mu_scale / setup.rx
    if s.form == "mean":
        setup.cuts.append((k, setup.mean_row(k)))
        return True
    need = s.fraction * float(w.sum())
    viol = d - allowed if s.sense == "upper" else allowed - d
    single = np.flatnonzero((viol > 0) & (w[positions] >= need * (1 - 1e-12)))
    single = single[np.argsort(-viol[single])[:_CUTS_PER_ROUND]]
    for i in single:
        setup.cuts.append((k, _row(setup, int(rows[i]))))
    if s.form == "cvar" and single.size == 0:
        q = _tail_weights(s, d, w[positions], float(w.sum()))
        nz = np.flatnonzero(q)
        setup.cuts.append((k, np.asarray(setup.a[rows[nz]].T @ q[nz]).reshape(-1) * scale))
        return True
    return single.size > 0


def _violation(setup: Setup, k: int, d: np.ndarray, positions: np.ndarray, allowed: float) -> float:
    """How far (prescription units) bound ``k`` on doses ``d`` of its ``positions`` is beyond ``allowed``; inf when the positions cannot hold its tail."""
    s, sv = setup.bounds[k]
    w = sv.weight_array()
    if positions.size == w.size:
        v = bound_value(s, d, sv)
    elif s.form == "cvar":
        f = s.fraction * w.sum() / w[positions].sum()
        if f >= 1.0:
            return np.inf
        v = surrogate_value(Surrogate(s.goal_index, s.structure, s.sense, "cvar", f, s.level_gy), d, w[positions])
    else:
        v = surrogate_value(s, d, w[positions])
    return v - allowed if s.sense == "upper" else allowed - v


def _cut_round(setup: Setup, x: np.ndarray, s: np.ndarray, relevant: list[int], lvls: np.ndarray, tol: float, full: bool) -> bool:
    """Check the ``relevant`` bounds at ``x`` (solver slacks ``s``) on their watched voxels (``full``: every voxel, widening
    the watch where a bound is missed) and add a cut for each one beyond ``tol``; True when anything was added."""
    d_all = setup.dose(x) / setup.rx if full else None
    added = False
    for k in relevant:
        b, sv = setup.bounds[k]
        allowed = lvls[k] + s[k] if b.sense == "upper" else lvls[k] - s[k]
        if full:
            pos = np.arange(sv.rows.size)
            d = structure_doses(d_all, sv)
        else:
            pos = setup.watch[k]
            d = setup.watch_dose(k, x)
        viol = _violation(setup, k, d, pos, allowed)
        if viol == np.inf:
            setup.watch[k] = np.arange(sv.rows.size)
            added = True
            continue
        if viol <= tol:
            continue
        if full:
            extra = candidate_positions(b, d * setup.rx, sv.weight_array(), 3.0)
            beyond = np.flatnonzero(d > allowed if b.sense == "upper" else d < allowed) if b.form == "extreme" else extra
            setup.watch[k] = np.union1d(setup.watch[k], np.union1d(extra, beyond))
        added |= _add_cuts(setup, k, d, pos, allowed)
    return added


def _age_cuts(setup: Setup, x: np.ndarray, s: np.ndarray, lvls: np.ndarray) -> None:
    """Forget cuts that were slack (by more than 1 % of the prescription) at ``_MAX_IDLE`` solutions in a row."""
    keep, ages = [], []
    for (k, c), age in zip(setup.cuts, setup.cut_idle + [0] * (len(setup.cuts) - len(setup.cut_idle))):
        b = setup.bounds[k][0]
        allowed = lvls[k] + s[k] if b.sense == "upper" else lvls[k] - s[k]
        gap = allowed - c @ x if b.sense == "upper" else c @ x - allowed
        age = age + 1 if gap > 0.01 else 0
        if age < _MAX_IDLE:
            keep.append((k, c))
            ages.append(age)
    setup.cuts, setup.cut_idle = keep, ages


def _stage(setup: Setup, name: str, prio: int | None, ks: list[int], x: np.ndarray | None, caps: np.ndarray, lvls: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray | None, dict]:
    """One stage: minimise the slacks ``ks`` (skipped when ``x`` already meets them), then cap them at what was achieved.

    Cutting planes: solve over the current cuts, add a cut for each bound (of this stage or
    capped by an earlier one) that the solution misses by more than half the margin on its
    watched voxels, repeat; when none is missed there, check every voxel once (widening the
    watch) and stop when nothing is missed.
    """
    log = {"name": name, "priority": prio, "status": "skipped", "solve_time_s": 0.0, "wall_time_s": 0.0, "iterations": 0}
    tol = 0.5 * setup.margin
    if x is not None and (not ks or np.all(setup.slacks(x, levels)[ks] <= tol)):
        caps[ks] = 0.0
        return x, log
    cw = np.zeros(len(setup.bounds))
    cw[ks] = 1.0
    relevant = [k for k in range(len(setup.bounds)) if cw[k] > 0 or caps[k] < _BIG]
    x_new = None
    for it in range(_MAX_ITER):
        if time.perf_counter() > setup.deadline:
            log["status"] = "time limit"
            return x, log
        status, x_new, s, info = _solve(setup, cw, caps, lvls)
        log.update(status=status, iterations=it + 1, n_variables=setup.programme["n_variables"], cuts=len(setup.cuts))
        log["solve_time_s"] += info["solve_time_s"]
        log["wall_time_s"] += info["wall_time_s"]
        if x_new is None:
            return x, log
        _age_cuts(setup, x_new, s, lvls)
        if not _cut_round(setup, x_new, s, relevant, lvls, tol, full=False) and not _cut_round(setup, x_new, s, relevant, lvls, tol, full=True):
            break
    else:
        log["status"] = "iteration limit"  # not verified on every voxel: keep the last verified MU
        return (x if x is not None else x_new), log
    achieved = setup.slacks(x_new, levels)[ks]
    caps[ks] = np.where(achieved <= tol, 0.0, achieved * 1.01 + setup.level_tolerance)
    return x_new, log


def run_pass(setup: Setup, x_start: np.ndarray, levels: np.ndarray, *, label: str = "") -> tuple[np.ndarray, list[dict], str]:
    """The lexicographic stages (priority 1 first, stretch values last) from ``x_start`` with bound ``levels`` (Gy).

    Returns
    -------
    x : ndarray, (n,)
        Scaled MU after the last completed stage.
    stages : list of dict
    status : {"ok", "time limit", "solver problem"}

    Raises
    ------
    OptimizationError
        When no stage gives MU and ``x_start`` breaks the MU limits.
    """
    caps = np.full(len(setup.bounds), _BIG)
    lvls = np.array([setup.requirement(k, s, levels) for k, (s, _) in enumerate(setup.bounds)])
    x = x_start if setup.feasible(x_start) else None
    prio = [int(setup.goal_priority[s.goal_index]) for s, _ in setup.bounds]
    order = sorted({p for p, (s, _) in zip(prio, setup.bounds) if not s.stretch})
    stages_plan = [(f"priority {p}", p, [k for k, (s, _) in enumerate(setup.bounds) if not s.stretch and prio[k] == p]) for p in order]
    stages_plan.append(("stretch", None, [k for k, (s, _) in enumerate(setup.bounds) if s.stretch]))
    stages, status = [], "ok"
    for name, p, ks in stages_plan:
        x_new, log = _stage(setup, label + name, p, ks, x, caps, lvls, levels)
        stages.append(log)
        if x_new is None:
            raise OptimizationError(f"segment MU: the solver {setup.solver} gave no MU in stage {label + name!r} ({log['status']})")
        x = x_new
        if log["status"] not in ("skipped", "optimal", "optimal_inaccurate"):
            status = "time limit" if log["status"] == "time limit" else "solver problem"
            break
    return x, stages, status
