"""Evaluation of a protocol's clinical goals on a dose distribution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from art.errors import InputError
from art.evaluate.dvh import occupancy, structure_samples
from art.evaluate.metrics import evaluate_metric
from art.evaluate.polygons import prefetch_samples
from art.geometry import Volume
from art.protocol import Goal, Protocol, format_number
from art.structures import Structure, StructureSet

__all__ = ["GoalResult", "evaluate_goals", "metric_label", "METRIC_LABELS"]


@dataclass(frozen=True)
class GoalResult:
    """The outcome of one clinical goal.

    Attributes
    ----------
    structure : str
        Structure name as in the protocol.
    metric : str
        Canonical metric text, e.g. ``"D95%"``.
    goal : str
        The goal in words, e.g. ``"≥ 57 Gy"`` or ``"≤ 20 %"``.
    at_least, at_most, stretch : float or None
        The goal's numbers, in ``unit``.
    value : float
        The achieved value, in ``unit``.
    met : bool
        ``value >= at_least`` and ``value <= at_most`` (exact comparison).
    stretch_met : bool or None
        Whether the stretch value is also reached (None without a stretch).
    priority : int
    unit : str
        ``"Gy"``, ``"%"`` or ``"cc"``.
    """

    structure: str
    metric: str
    goal: str
    at_least: float | None
    at_most: float | None
    stretch: float | None
    value: float
    met: bool
    stretch_met: bool | None
    priority: int
    unit: str

    def to_dict(self) -> dict:
        """JSON-serialisable dictionary (plain floats, bools and strings)."""
        return {
            "structure": self.structure,
            "metric": self.metric,
            "goal": self.goal,
            "at_least": self.at_least,
            "at_most": self.at_most,
            "stretch": self.stretch,
            "value": float(self.value),
            "met": bool(self.met),
            "stretch_met": self.stretch_met,
            "priority": int(self.priority),
            "unit": self.unit,
        }

    def __str__(self) -> str:
        mark = "met" if self.met else "NOT met"
        return f"P{self.priority} {self.structure} {self.metric} {self.goal}: {format_number(round(self.value, 3))} {self.unit} ({mark})"


#: How tables spell the near-extreme metrics out (the value is the near-max/min over 0.03 cc, not a voxel's).
METRIC_LABELS = {"dmax": "Dmax (D0.03cc)", "dmin": "Dmin (coldest 0.03cc)"}


def metric_label(metric: str) -> str:
    """The metric as a goal table shows it: ``Dmax`` as ``Dmax (D0.03cc)``, ``Dmin`` as ``Dmin (coldest 0.03cc)``, others unchanged."""
    return METRIC_LABELS.get(str(metric).strip().lower(), str(metric))


def _lookup(structures: Any, name: str) -> Structure:
    if isinstance(structures, StructureSet):
        s = structures.find(name)
        if s is None:
            raise InputError(f"no structure named {name!r} for the goals; available: {', '.join(structures.names) or 'none'}")
        return s
    if isinstance(structures, Mapping):
        if name in structures:
            return structures[name]
        low = {k.lower(): v for k, v in structures.items()}
        if name.lower() in low:
            return low[name.lower()]
        raise InputError(f"no structure named {name!r} for the goals; available: {', '.join(structures) or 'none'}")
    for s in structures:
        if s.name == name or s.name.lower() == name.lower():
            return s
    raise InputError(f"no structure named {name!r} for the goals")


def _samples(dose: Volume, s: Structure, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Dose (Gy) and volume (cc) samples of structure ``s`` in ``dose``, hottest first, by ``mode`` (see :func:`evaluate_goals`)."""
    if mode == "polygons":
        d, v, _ = structure_samples(dose, s, name=s.name, mode="polygons")
    elif mode == "occupancy" and not s.grid.same_as(dose.grid):
        if s.is_empty:
            raise InputError(f"structure {s.name!r} is empty: no dose-volume metric can be computed")
        w = occupancy(s, dose.grid)
        d, v, _ = structure_samples(dose, s, weights=w, name=s.name)
    else:
        d, v, _ = structure_samples(dose, s)
    return d, v


def _found(structures: Any, goal_list: list) -> list[Structure]:
    """The distinct structures the goals name that can be found (the others fail later, in goal order)."""
    out: dict[str, Structure] = {}
    for g in goal_list:
        try:
            s = _lookup(structures, g.structure)
        except (InputError, AttributeError):
            continue
        out.setdefault(s.name, s)
    return list(out.values())


def evaluate_goals(
    dose: Volume,
    structures: StructureSet | Mapping[str, Structure] | Iterable[Structure],
    goals: Protocol | Iterable[Goal],
    *,
    mode: str = "resample",
) -> list[GoalResult]:
    """Evaluate clinical goals on a dose.

    Parameters
    ----------
    dose : Volume
        Dose in Gy (total over the course).
    structures : StructureSet, mapping name -> Structure, or iterable of Structure
        Looked up by exact name, then case-insensitively.
    goals : Protocol or iterable of Goal
        The goals, evaluated in the given order.
    mode : {"resample", "occupancy", "polygons"}, keyword-only
        How a structure on another grid than the dose meets it:
        ``"resample"`` (default) interpolates the dose linearly at the
        structure's voxel centres; ``"occupancy"`` weights each dose voxel by the
        fraction of it inside the structure (:func:`art.evaluate.dvh.occupancy`).
        On the same grid both give the same result. ``"polygons"`` weights each
        dose voxel by the fraction of it inside the structure's RTSTRUCT
        polygons (:func:`art.evaluate.polygons.polygon_occupancy`), on any grid:
        the DVH a planning system computes from the files; every structure a
        goal names must then have ``contours``.

    Returns
    -------
    list of GoalResult
        One per goal, in order.

    Raises
    ------
    InputError
        For a missing or empty structure (named), or a metric that is undefined
        for the structure (e.g. ``D2cc`` of a 1 cc structure); in mode
        ``"polygons"`` also a structure without polygons or with bad ones.
    GeometryError
        A structure reaching outside the dose grid (named).
    """
    if not isinstance(dose, Volume):
        raise InputError(f"dose must be a Volume (array and grid), got {type(dose).__name__}")
    if mode not in ("resample", "occupancy", "polygons"):
        raise InputError(f"mode must be 'resample', 'occupancy' or 'polygons', got {mode!r}")
    goal_list = list(goals.goals if isinstance(goals, Protocol) else goals)
    if mode == "polygons":
        prefetch_samples(dose, _found(structures, goal_list))  # the goals' structures on two threads
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out: list[GoalResult] = []
    for g in goal_list:
        if not isinstance(g, Goal):
            raise InputError(f"goals must be Goal objects, got {type(g).__name__}")
        s = _lookup(structures, g.structure)
        if s.name not in cache:
            cache[s.name] = _samples(dose, s, mode)
        d, v = cache[s.name]
        value = evaluate_metric(g.metric, d, v, name=s.name)
        met = (g.at_least is None or value >= g.at_least) and (g.at_most is None or value <= g.at_most)
        stretch_met = None
        if g.stretch is not None:
            stretch_met = bool(value >= g.stretch) if g.at_least is not None else bool(value <= g.stretch)
        out.append(
            GoalResult(
                structure=g.structure,
                metric=g.metric.text,
                goal=g.describe(),
                at_least=g.at_least,
                at_most=g.at_most,
                stretch=g.stretch,
                value=float(value),
                met=bool(met),
                stretch_met=stretch_met,
                priority=g.priority,
                unit=g.unit,
            )
        )
    return out
