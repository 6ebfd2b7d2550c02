"""The data types of :func:`art.optimize.fmo.optimize_fluence`: its normal-tissue option and its result.

:class:`NormalTissue` describes the dose fall-off objective outside the targets;
:class:`OptimizationResult` is what an optimisation returns, with one
:class:`GoalReport` per clinical goal and one :class:`StageLog` per stage of the
priority hierarchy. :class:`OptimizationError` is raised when the solver fails
before any stage produced weights. :mod:`art.optimize.fmo` re-exports them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from art.errors import ArtError
from art.protocol import Goal

__all__ = ["NormalTissue", "GoalReport", "StageLog", "OptimizationResult", "OptimizationError"]


class OptimizationError(ArtError, RuntimeError):
    """The solver failed (numerically) before any stage produced a plan."""


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
