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

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import sparse

from art.errors import ArtError, InputError
from art.optimize.normalize import metric_value, normalize_to_prescription, prescription_goal, scale_limits
from art.optimize.objectives import Surrogate, goal_surrogates, surrogate_slack, surrogate_value
from art.protocol import Goal, Prescription
from art.optimize.voxels import StructureVoxels, sample_voxels

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

SOLVERS = ("CLARABEL", "OSQP", "SCS")
_SLACK_CAP = 100.0  # slack cap (in units of the prescription dose) of goals not yet fixed


class OptimizationError(ArtError, RuntimeError):
    """The solver failed (numerically) before any stage produced a plan."""


def validate_solver(solver: str) -> str:
    """Normalise and check a solver name.

    Parameters
    ----------
    solver : str
        One of :data:`SOLVERS` (case-insensitive).

    Returns
    -------
    str
        The upper-case name.

    Raises
    ------
    InputError
        For an unknown name or a solver that is not installed.
    """
    if not isinstance(solver, str) or solver.strip().upper() not in SOLVERS:
        raise InputError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    name = solver.strip().upper()
    import cvxpy as cp

    if name not in cp.installed_solvers():
        raise InputError(f"solver {name} is not installed (installed: {', '.join(cp.installed_solvers())})")
    return name


@dataclass(frozen=True)
class NormalTissue:
    """Dose fall-off objective outside the targets.

    The allowed dose at distance ``r`` (mm) from the nearest target voxel is
    ``dose_gy * (end + (start - end) * exp(-r / falloff_mm))``; dose above it
    is penalised (linear hinge, volume-weighted mean) in the final stage.

    Parameters
    ----------
    start, end : float
        Fractions of the prescription dose at the target surface and far away.
    falloff_mm : float
        e-folding distance, mm.
    weight : float
        Weight in the final stage's objective.
    """

    start: float = 1.0
    end: float = 0.3
    falloff_mm: float = 10.0
    weight: float = 1.0

    def level(self, distance_mm: np.ndarray) -> np.ndarray:
        """Allowed dose as a fraction of the prescription, shape of ``distance_mm``."""
        r = np.maximum(np.asarray(distance_mm, dtype=np.float64), 0.0)
        return self.end + (self.start - self.end) * np.exp(-r / self.falloff_mm)


@dataclass
class GoalReport:
    """How one goal fares in the optimised plan (full-resolution dose).

    Attributes
    ----------
    index : int
        Index in the goal list given to :func:`optimize_fluence`.
    goal : Goal
    value : float
        The metric's exact value, in ``goal.unit``.
    met : bool
    shortfall : float
        By how much the goal is missed, in ``goal.unit`` (0 when met).
    surrogate_slack_gy : float
        Largest slack of the goal's surrogates on the optimised (sampled) voxels, Gy.
    """

    index: int
    goal: Goal
    value: float
    met: bool
    shortfall: float
    surrogate_slack_gy: float

    def describe(self) -> str:
        g = self.goal
        state = "met" if self.met else f"NOT met by {self.shortfall:.3g} {g.unit}"
        return f"P{g.priority} {g.structure} {g.metric.text} {g.describe()}: {self.value:.4g} {g.unit} ({state})"

    def to_dict(self) -> dict:
        return {
            **self.goal.to_dict(),
            "value": self.value,
            "met": self.met,
            "shortfall": self.shortfall,
            "surrogate_slack_gy": self.surrogate_slack_gy,
        }


@dataclass
class StageLog:
    """One stage of the hierarchy.

    Attributes
    ----------
    name : str
        ``"priority 1"``, ..., ``"final"``.
    priority : int or None
    status : str
        Solver status, ``"skipped"`` (goals already met) or ``"failed: ..."``.
    solve_time_s : float
        Solver time (cvxpy's report), s.
    wall_time_s : float
        Wall time of the stage including cvxpy, s.
    iterations : int
    slacks_gy : dict of int to float
        Achieved slack (Gy) of each goal of this stage (max over its bounds).
    """

    name: str
    priority: int | None
    status: str
    solve_time_s: float = 0.0
    wall_time_s: float = 0.0
    iterations: int = 0
    slacks_gy: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "priority": self.priority,
            "status": self.status,
            "solve_time_s": self.solve_time_s,
            "wall_time_s": self.wall_time_s,
            "iterations": self.iterations,
            "slacks_gy": {str(k): v for k, v in self.slacks_gy.items()},
        }


@dataclass
class OptimizationResult:
    """The optimised plan.

    Attributes
    ----------
    weights : ndarray of float64, shape (n_beamlets,)
        Beamlet weights (non-negative), in the matrix's unit (per fraction
        when the matrix is per fraction).
    dose : ndarray of float32, shape (n_voxels,)
        ``fractions * matrix @ weights``, Gy over the course (all rows, not
        only the sampled ones).
    goals : list of GoalReport
        One per goal, in the order given.
    stages : list of StageLog
    solver : str
    time_s : float
        Wall time of the whole optimisation, s.
    setup_time_s : float
        Time to sample voxels and build the cvxpy problem, s.
    iterations : int
        Solver iterations summed over stages.
    n_voxels_used : int
        Rows of the matrix in the optimisation problem (after down-sampling).
    normalization_factor : float
        Scale applied to reach the prescription goal (1.0 when not normalised).
    normalization_note : str
        Why the factor was limited, if it was.
    status : str
        ``"ok"``, ``"goals not met"``, ``"time limit"`` or ``"solver problem"``.
    warm_started : bool
    raw_weights : ndarray of float64, shape (n_beamlets,)
        The optimiser's weights before normalisation (what a warm start uses).
    method : str
        ``"lbfgs"`` or ``"cvxpy"``.
    fractions : int
        The ``fractions`` the dose was computed with (``dose = fractions * matrix @ weights``).
    """

    weights: np.ndarray
    dose: np.ndarray
    goals: list[GoalReport]
    stages: list[StageLog]
    solver: str
    time_s: float
    setup_time_s: float
    iterations: int
    n_voxels_used: int
    normalization_factor: float = 1.0
    normalization_note: str = ""
    status: str = "ok"
    warm_started: bool = False
    raw_weights: np.ndarray | None = None
    method: str = "lbfgs"
    fractions: int = 1

    @property
    def failed(self) -> list[GoalReport]:
        """Goals not met, most important first."""
        return sorted((g for g in self.goals if not g.met), key=lambda g: (g.goal.priority, g.index))

    @property
    def priority1_met(self) -> bool:
        return all(g.met for g in self.goals if g.goal.priority == 1)

    def report(self) -> str:
        """A few lines: the status and every goal not met (which one, by how much)."""
        lines = [f"optimisation {self.status}: {len(self.goals) - len(self.failed)}/{len(self.goals)} goals met, {self.time_s:.1f} s, {self.iterations} iterations ({self.solver})"]
        for g in self.failed:
            lines.append("  " + g.describe())
        if self.normalization_note:
            lines.append("  normalisation: " + self.normalization_note)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-friendly summary (no arrays)."""
        return {
            "status": self.status,
            "solver": self.solver,
            "time_s": self.time_s,
            "setup_time_s": self.setup_time_s,
            "iterations": self.iterations,
            "n_voxels_used": self.n_voxels_used,
            "n_beamlets": int(self.weights.size),
            "normalization_factor": self.normalization_factor,
            "normalization_note": self.normalization_note,
            "warm_started": self.warm_started,
            "method": self.method,
            "fractions": self.fractions,
            "goals": [g.to_dict() for g in self.goals],
            "stages": [s.to_dict() for s in self.stages],
        }


# ----------------------------------------------------------------------------- helpers
def _check_inputs(matrix: Any, structures: Mapping[str, StructureVoxels], goals: Sequence[Goal], prescription: Prescription) -> tuple[sparse.csr_matrix, dict[str, StructureVoxels]]:
    if not sparse.issparse(matrix) or matrix.ndim != 2:
        raise InputError(f"matrix must be a 2-D scipy sparse matrix, got {type(matrix).__name__}")
    a = sparse.csr_matrix(matrix)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"matrix is empty (shape {a.shape})")
    if a.nnz and (not np.all(np.isfinite(a.data)) or a.data.min() < 0):
        raise InputError("matrix must hold finite, non-negative dose per unit weight")
    if not goals:
        raise InputError("goals: at least one goal is needed")
    lookup = {k.lower(): k for k in structures}
    svs: dict[str, StructureVoxels] = {}
    for k, sv in structures.items():
        if not isinstance(sv, StructureVoxels):
            raise InputError(f"structures[{k!r}] must be a StructureVoxels, got {type(sv).__name__}")
        if sv.rows.size and sv.rows.max() >= a.shape[0]:
            raise InputError(f"structure {k!r}: row {int(sv.rows.max())} outside the matrix ({a.shape[0]} rows)")
        svs[k] = sv
    for name in [prescription.target, *(g.structure for g in goals)]:
        key = name if name in svs else lookup.get(name.lower())
        if key is None:
            raise InputError(f"structure {name!r} (named by the protocol) has no voxels in the dose matrix; available: {', '.join(svs) or 'none'}")
        if svs[key].rows.size == 0:
            raise InputError(f"structure {name!r} is empty in the dose matrix")
    return a, svs


def _find(svs: Mapping[str, StructureVoxels], name: str) -> StructureVoxels:
    if name in svs:
        return svs[name]
    for k, v in svs.items():
        if k.lower() == name.lower():
            return v
    raise KeyError(name)  # pragma: no cover - checked before


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
    """Optimise beamlet weights for priority-ordered clinical goals.

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
    t_start = time.perf_counter()
    method = _validate_method(method)
    if method == "cvxpy":
        solver = validate_solver(solver)
    else:
        if not isinstance(solver, str) or solver.strip().upper() not in SOLVERS:
            raise InputError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        solver = "L-BFGS-B"
    if isinstance(fractions, bool) or not isinstance(fractions, (int, np.integer)) or fractions < 1:
        raise InputError(f"fractions must be a positive integer, got {fractions!r}")
    if max_iterations is not None and (isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1):
        raise InputError(f"max_iterations must be a positive integer, got {max_iterations!r}")
    goals = list(goals)
    a, svs = _check_inputs(matrix, structures, goals, prescription)
    n_vox, n_b = a.shape
    for pname, pval in (("smoothness", smoothness), ("oar_sparing", oar_sparing), ("hot_spot", hot_spot), ("goal_margin", goal_margin), ("tolerance", tolerance)):
        if not (np.isfinite(pval) and pval >= 0):
            raise InputError(f"{pname} must be a non-negative number, got {pval!r}")
    pairs = None
    if beamlet_neighbours is not None and smoothness > 0:
        pairs = np.asarray(beamlet_neighbours, dtype=np.int64).reshape(-1, 2)
        if pairs.size and (pairs.min() < 0 or pairs.max() >= n_b):
            raise InputError(f"beamlet_neighbours must index beamlets 0..{n_b - 1}")
        if pairs.size == 0:
            pairs = None
    dist = None
    if distance_to_target_mm is not None:
        dist = np.asarray(distance_to_target_mm, dtype=np.float64).reshape(-1)
        if dist.shape != (n_vox,):
            raise InputError(f"distance_to_target_mm must have one value per matrix row ({n_vox}), got {dist.shape}")
    w0 = None
    if warm_start is not None:
        if isinstance(warm_start, OptimizationResult):
            w0 = warm_start.raw_weights if warm_start.raw_weights is not None else warm_start.weights
        else:
            w0 = warm_start
        w0 = np.asarray(w0, dtype=np.float64)
        if w0.shape != (n_b,):
            raise InputError(f"warm_start has {w0.size} weights, the matrix {n_b} beamlets")
        w0 = np.maximum(w0, 0.0)
    rx = float(prescription.dose_gy)

    def report(msg: str, frac: float) -> None:
        if progress is not None:
            progress(msg, frac)

    # ---- surrogates
    surr: list[Surrogate] = []
    for i, g in enumerate(goals):
        for sg in goal_surrogates(g, i, _find(svs, g.structure)):
            shift = goal_margin * rx * (-1.0 if sg.sense == "upper" else 1.0)
            surr.append(dataclasses.replace(sg, level_gy=max(sg.level_gy + shift, 0.0)))
    goal_names = {_find_key(svs, g.structure) for g in goals}

    # ---- down-sampling
    target_rows_full = np.unique(np.concatenate([sv.rows for sv in svs.values() if sv.is_target] + [_find(svs, prescription.target).rows]))
    nt_rows_full = None
    if dist is not None:
        nt_rows_full = np.flatnonzero(dist > 0)
        nt_rows_full = np.setdiff1d(nt_rows_full, target_rows_full, assume_unique=True)
    used = {k: v for k, v in svs.items() if k in goal_names or v.is_target or v.roi_type in ("ORGAN", "AVOIDANCE")}
    used[_find_key(svs, prescription.target)] = _find(svs, prescription.target)
    # every voxel of a structure a goal is set on, unless it is large (then its rows are sampled,
    # and the hot or cold tail that matters lies near a target, where every voxel is kept anyway)
    keep_all = [k for k in used if k in goal_names and (max_voxels is None or used[k].rows.size <= max_voxels // 2)]
    sample = sample_voxels(
        used, n_vox, max_voxels=max_voxels, distance_to_target_mm=dist, keep_near_target_mm=keep_near_target_mm,
        extra_rows=nt_rows_full, keep_structures=keep_all, seed=seed,
    )
    rows = sample.rows
    sub = a[rows].astype(np.float64)
    if fractions != 1:
        sub = sub * float(fractions)  # course dose per unit weight
    svs_s = sample.structures

    # scale: x = w / c, with unit x giving about the prescription dose in the target
    t_rows = _find(svs_s, prescription.target).rows
    mean_unit = float(np.asarray(sub[t_rows].sum(axis=1)).mean())
    if not mean_unit > 0:
        raise InputError(f"the prescription target {prescription.target!r} receives no dose from any beamlet")
    c = rx / mean_unit
    b_mat = (sub * (c / rx)).tocsr()  # dose in units of the prescription per unit x

    # ---- numpy evaluation of surrogates on the sampled rows
    n_s = len(surr)

    def slacks_of(xv: np.ndarray) -> np.ndarray:
        dose = rx * (b_mat @ xv)
        out = np.zeros(n_s)
        for k, s in enumerate(surr):
            sv = _find(svs_s, s.structure)
            if sv.rows.size:
                out[k] = surrogate_slack(s, surrogate_value(s, dose[sv.rows], sv.weight_array()))
        return out

    setup_time = time.perf_counter() - t_start
    priorities = sorted({g.priority for g in goals})
    stretch_idx = [k for k, s in enumerate(surr) if s.stretch]
    xv = None if w0 is None else w0 / c
    stages: list[StageLog] = []
    status = "ok"
    if method == "lbfgs":
        xv, stages, timed_out = _solve_lbfgs(
            b_mat, surr, svs_s, rx, rows, sample.scale, dist, nt_rows_full, normal_tissue, pairs, prescription, priorities, stretch_idx, goals,
            x0=xv, smoothness=smoothness, oar_sparing=oar_sparing, hot_spot=hot_spot, tolerance=tolerance,
            max_iterations=max_iterations, warm=w0 is not None,
            deadline=None if max_time_s is None else t_start + max_time_s, progress=progress,
        )
        if timed_out:
            status = "time limit"
    else:
        # ---- cvxpy problem (DPP: stages only change parameter values)
        import cvxpy as cp

        n_s = len(surr)
        x = cp.Variable(n_b, nonneg=True, name="x")
        u = cp.Variable(rows.size, name="u")
        slack = cp.Variable(n_s, nonneg=True, name="slack")
        cap = cp.Parameter(n_s, nonneg=True, name="cap", value=np.full(n_s, _SLACK_CAP))
        cw = cp.Parameter(n_s, nonneg=True, name="weight", value=np.zeros(n_s))
        lam = cp.Parameter(5, nonneg=True, name="lam", value=np.zeros(5))  # nt, oar, hot, smooth, total fluence
        cons = [u == b_mat @ x, slack <= cap]
        for k, s in enumerate(surr):
            sv = _find(svs_s, s.structure)
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
        terms = [cw @ slack]
        zero = cp.Constant(0.0)
        nt_term = zero
        if dist is not None and normal_tissue is not None and nt_rows_full is not None and nt_rows_full.size:
            pos_in_sample = np.searchsorted(rows, nt_rows_full)
            pos_in_sample = np.clip(pos_in_sample, 0, rows.size - 1)
            ok = rows[pos_in_sample] == nt_rows_full
            nt_idx = pos_in_sample[ok]
            if nt_idx.size:
                om = sample.scale[nt_idx]
                om = om / om.sum()
                lvl = normal_tissue.level(dist[rows[nt_idx]])
                nt_term = normal_tissue.weight * (om @ cp.pos(u[nt_idx] - lvl))
        oar_list = [sv for k, sv in svs_s.items() if sv.roi_type in ("ORGAN", "AVOIDANCE") and sv.rows.size]
        oar_term = zero
        if oar_list:
            oar_term = sum((sv.weight_array() / sv.weight_array().sum()) @ u[sv.rows] for sv in oar_list) / len(oar_list)
        tsv = _find(svs_s, prescription.target)
        om_t = tsv.weight_array() / tsv.weight_array().sum()
        hot_term = om_t @ cp.pos(u[tsv.rows] - 1.0)
        smooth_term = zero
        if pairs is not None:
            smooth_term = cp.sum_squares(x[pairs[:, 0]] - x[pairs[:, 1]]) / pairs.shape[0]
        mu_term = cp.sum(x) / n_b
        objective = cp.Minimize(
            terms[0] + lam[0] * nt_term + lam[1] * oar_term + lam[2] * hot_term + lam[3] * smooth_term + lam[4] * mu_term
        )
        problem = cp.Problem(objective, cons)
        setup_time = time.perf_counter() - t_start

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

        goal_surr = {p: [k for k, s in enumerate(surr) if not s.stretch and goals[s.goal_index].priority == p] for p in priorities}
        tol = tolerance  # in units of the prescription dose
        n_stages = len(priorities) + 1
        reg = 1e-3  # regularisation weight in priority stages (keeps the stage solutions bounded and sensible)
        lam_full = np.array([0.0 if nt_term is zero else 1.0, oar_sparing, hot_spot, 0.0 if smooth_term is zero else smoothness, 1e-3])

        def solve_stage(name: str, prio: int | None, weights_vec: np.ndarray, lam_vec: np.ndarray) -> StageLog:
            nonlocal xv
            cw.value = weights_vec
            lam.value = lam_vec
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
                u.value = b_mat @ xv
            t0 = time.perf_counter()
            try:
                problem.solve(solver=solver, warm_start=xv is not None, **stage_opts)
                st = str(problem.status)
            except cp.SolverError as exc:
                st = f"failed: {exc}"
            wall = time.perf_counter() - t0
            stats = problem.solver_stats
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
            return log

        for si, p in enumerate(priorities):
            ks = goal_surr[p]
            report(f"priority {p} goals", si / n_stages)
            if max_time_s is not None and time.perf_counter() - t_start > max_time_s and xv is not None:
                status = "time limit"
                break
            cur = slacks_of(xv) if xv is not None else None
            if cur is not None and np.all(cur[ks] <= tol * rx):
                log = StageLog(f"priority {p}", p, "skipped")
            else:
                wv = np.zeros(n_s)
                wv[ks] = 1.0
                log = solve_stage(f"priority {p}", p, wv, reg * lam_full)
                if xv is None:
                    raise OptimizationError(f"the solver {solver} failed in the first stage ({log.status}); no plan")
                cur = slacks_of(xv)
            achieved = cur[ks] / rx  # in units of the prescription
            newcap = np.asarray(cap.value, dtype=np.float64).copy()
            newcap[ks] = achieved + tol + 0.01 * achieved
            cap.value = newcap
            for k in ks:
                gi = surr[k].goal_index
                log.slacks_gy[gi] = max(log.slacks_gy.get(gi, 0.0), float(cur[k]))
            stages.append(log)
            if log.status.startswith("failed"):
                status = "solver problem"
        else:
            report("final stage (stretch goals, OAR sparing, normal tissue, smoothness)", len(priorities) / n_stages)
            wv = np.zeros(n_s)
            wv[stretch_idx] = 1.0
            log = solve_stage("final", None, wv, lam_full)
            if xv is not None:
                cur = slacks_of(xv)
                log.slacks_gy = {surr[k].goal_index: float(cur[k]) for k in stretch_idx}
            stages.append(log)
            if log.status.startswith("failed"):
                status = "solver problem"
        if max_time_s is not None and time.perf_counter() - t_start > max_time_s and status == "ok":
            status = "time limit"

    assert xv is not None
    weights = xv * c
    raw_weights = weights.copy()
    dose = np.asarray(a @ weights, dtype=np.float64) * float(fractions)
    final_slacks = slacks_of(xv)

    # ---- normalisation
    factor, note = 1.0, ""
    if normalize:
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

    # ---- goal reports on the full dose
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
    if status == "ok" and any(not r.met for r in reports):
        status = "goals not met"
    report("done", 1.0)
    return OptimizationResult(
        weights=weights,
        dose=dose.astype(np.float32),
        goals=reports,
        stages=stages,
        solver=solver,
        time_s=time.perf_counter() - t_start,
        setup_time_s=setup_time,
        iterations=sum(s.iterations for s in stages),
        n_voxels_used=int(rows.size),
        normalization_factor=float(factor),
        normalization_note=note,
        status=status,
        warm_started=w0 is not None,
        raw_weights=raw_weights,
        method=method,
        fractions=int(fractions),
    )


METHODS = ("lbfgs", "cvxpy")


def _validate_method(method: str) -> str:
    if not isinstance(method, str) or method.strip().lower() not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return method.strip().lower()


def _solve_lbfgs(
    b_mat: sparse.csr_matrix,
    surr: list[Surrogate],
    svs_s: Mapping[str, StructureVoxels],
    rx: float,
    rows: np.ndarray,
    scale: np.ndarray,
    dist: np.ndarray | None,
    nt_rows_full: np.ndarray | None,
    normal_tissue: NormalTissue | None,
    pairs: np.ndarray | None,
    prescription: Prescription,
    priorities: list[int],
    stretch_idx: list[int],
    goals: list[Goal],
    *,
    x0: np.ndarray | None,
    smoothness: float,
    oar_sparing: float,
    hot_spot: float,
    tolerance: float,
    max_iterations: int | None,
    warm: bool,
    deadline: float | None,
    progress: Callable[[str, float], None] | None,
) -> tuple[np.ndarray, list[StageLog], bool]:
    """The L-BFGS-B method (see :mod:`art.optimize.lbfgs`) on the sampled, scaled problem."""
    from art.optimize.lbfgs import penalty_terms, run_stages

    n_b = b_mat.shape[1]
    terms = penalty_terms(surr, dict(svs_s), rx, _find)
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
    tsv = _find(svs_s, prescription.target)
    wt = tsv.weight_array()
    extra.update(hot_rows=tsv.rows, hot_omega=wt / wt.sum())
    lam[2] = hot_spot
    if pairs is not None:
        extra["pairs"] = pairs
        lam[3] = smoothness
    lam[4] = 1e-3
    stage_terms = [(p, [k for k, s in enumerate(surr) if not s.stretch and goals[s.goal_index].priority == p]) for p in priorities]
    if x0 is None:
        x0 = np.ones(n_b)
    iters = max_iterations if max_iterations is not None else (150 if warm else 400)
    final_iters = max_iterations if max_iterations is not None else (100 if warm else 250)
    x, lstages, timed_out = run_stages(
        b_mat, terms, stage_terms, stretch_idx, extra, lam, x0,
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


def _find_key(svs: Mapping[str, StructureVoxels], name: str) -> str:
    if name in svs:
        return name
    for k in svs:
        if k.lower() == name.lower():
            return k
    raise KeyError(name)  # pragma: no cover


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


optimize_fluence.__doc__ = (_optimize_fluence_once.__doc__ or "") + """
    continuation : int, keyword-only
        With ``method="lbfgs"``: when a goal is still missed and a stage stopped at its
        iteration limit, continue this many times from the result (warm, with the cold
        iteration budget) and keep the better plan by goals met per priority (default 1).
"""
