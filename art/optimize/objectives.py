"""Convex surrogates of clinical goals (CVaR, mean, max/min) and their evaluation.

Every bound of a goal becomes one convex *surrogate* requirement on the dose
``d`` of the structure's voxels (weights ``ω``, summing to the structure
volume ``W``):

==========================  ====================================================
goal bound                  surrogate (conservative: it implies the goal)
==========================  ====================================================
``D<x>% ≥ a``               lower CVaR: mean of the coldest ``1 - x/100`` ≥ a
``D<x>% ≤ b``               upper CVaR: mean of the hottest ``x/100`` ≤ b
``D<x>cc``                  the same with the fraction ``x / volume_cc``
``V<d>Gy ≤ v``              upper CVaR of the hottest ``v`` (fraction) ≤ d
``V<d>Gy ≥ v``              lower CVaR of the coldest ``1 - v`` ≥ d
``Dmax ≤ b``                every voxel ≤ b
``Dmin ≥ a``                every voxel ≥ a
``Dmean ≤ b`` / ``≥ a``     the (weighted) mean
``Dmax ≥ a``, ``Dmin ≤ b``  the mean (the convex side; rare goals)
==========================  ====================================================

A tail fraction of 0 becomes the max (upper) or min (lower); a fraction of 1
becomes the mean. The CVaR of the hottest fraction β is
``min_t t + (1/β) Σ ω_i max(d_i - t, 0) / W`` (Rockafellar & Uryasev 2000), so
it is convex in ``d`` and enters a cvxpy problem as one extra scalar and a
hinge per voxel. Each surrogate has a slack ``s ≥ 0`` (Gy): the requirement is
``value ≤ b + s`` or ``value ≥ a - s``; the slack says by how much it is missed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from art.errors import InputError
from art.protocol import Goal
from art.optimize.voxels import StructureVoxels

__all__ = ["Surrogate", "goal_surrogates", "surrogate_value", "surrogate_slack"]


@dataclass(frozen=True)
class Surrogate:
    """One convex requirement derived from one bound of a goal.

    Attributes
    ----------
    goal_index : int
        Index of the goal in the caller's list.
    structure : str
    sense : {"upper", "lower"}
        ``"upper"``: value ≤ level (+ slack); ``"lower"``: value ≥ level (- slack).
    form : {"cvar", "mean", "extreme"}
        ``"extreme"`` is the max (upper) or min (lower) over voxels.
    fraction : float
        Tail fraction of the volume for ``"cvar"`` (0 < fraction < 1).
    level_gy : float
        The dose level, Gy.
    stretch : bool
        True for the surrogate of a goal's stretch value.
    """

    goal_index: int
    structure: str
    sense: str
    form: str
    fraction: float
    level_gy: float
    stretch: bool = False


def _tail(sense: str, fraction: float) -> tuple[str, float]:
    f = float(np.clip(fraction, 0.0, 1.0))
    if f <= 1e-9:
        return "extreme", 0.0
    if f >= 1.0 - 1e-9:
        return "mean", 1.0
    return "cvar", f


def _volume_fraction(goal: Goal, sv: StructureVoxels, amount: float, unit: str) -> float:
    if unit == "%":
        return amount / 100.0
    vol = sv.volume_cc
    if vol is None or vol <= 0:
        raise InputError(f"goal {goal.structure} {goal.metric.text}: a cc metric needs the structure's voxel volume (voxel_volume_cc)")
    return amount / vol


def goal_surrogates(goal: Goal, goal_index: int, sv: StructureVoxels) -> list[Surrogate]:
    """The surrogates of one goal (one per bound, plus one for ``stretch``).

    Parameters
    ----------
    goal : Goal
    goal_index : int
    sv : StructureVoxels
        The structure's voxels (for cc metrics, its volume).

    Returns
    -------
    list of Surrogate
    """
    m = goal.metric
    out: list[Surrogate] = []

    def make(sense: str, bound: float, stretch: bool) -> Surrogate:
        if m.kind == "mean":
            form, f, level = "mean", 1.0, bound
        elif m.kind == "max":
            form, f = ("extreme", 0.0) if sense == "upper" else ("mean", 1.0)
            level = bound
        elif m.kind == "min":
            form, f = ("extreme", 0.0) if sense == "lower" else ("mean", 1.0)
            level = bound
        elif m.kind == "D":
            hot = _volume_fraction(goal, sv, float(m.parameter), m.unit)
            form, f = _tail(sense, hot if sense == "upper" else 1.0 - hot)
            level = bound
        elif m.kind == "V":
            # bound is a volume (% or cc); the dose level is the metric's parameter
            v = _volume_fraction(goal, sv, bound, "%" if m.output_unit == "%" else "cc")
            level = float(m.parameter)
            # V_d <= v  <=>  D_v <= d (hottest v);  V_d >= v  <=>  D_v >= d (coldest 1 - v)
            sense = "upper" if sense == "upper" else "lower"
            form, f = _tail(sense, v if sense == "upper" else 1.0 - v)
        else:  # pragma: no cover - Metric is validated by the protocol
            raise InputError(f"unsupported metric {m.text!r}")
        return Surrogate(goal_index, goal.structure, sense, form, f, float(level), stretch)

    if goal.at_least is not None:
        out.append(make("lower", goal.at_least, False))
    if goal.at_most is not None:
        out.append(make("upper", goal.at_most, False))
    if goal.stretch is not None:
        out.append(make("lower" if goal.at_least is not None else "upper", goal.stretch, True))
    # V goals: "at_least" on a volume means the dose-level requirement is a lower one, and vice versa
    return out


def surrogate_value(s: Surrogate, dose: np.ndarray, weights: np.ndarray) -> float:
    """The surrogate's value (Gy) for voxel doses ``dose`` with volume weights ``weights``.

    Parameters
    ----------
    s : Surrogate
    dose : ndarray, shape (k,)
        Dose of the structure's voxels, Gy.
    weights : ndarray, shape (k,)
        Volume of each voxel (any unit).
    """
    d = np.asarray(dose, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if d.size == 0:
        return float("nan")
    if s.form == "mean":
        return float(np.dot(w, d) / w.sum())
    if s.form == "extreme":
        return float(d.max() if s.sense == "upper" else d.min())
    order = np.argsort(-d if s.sense == "upper" else d, kind="stable")
    ds, ws = d[order], w[order]
    need = s.fraction * ws.sum()
    cum = np.cumsum(ws)
    k = int(np.searchsorted(cum, need))
    k = min(k, ds.size - 1)
    prev = cum[k - 1] if k > 0 else 0.0
    total = np.dot(ws[:k], ds[:k]) + (need - prev) * ds[k]
    return float(total / need)


def surrogate_slack(s: Surrogate, value: float) -> float:
    """By how much (Gy, >= 0) the surrogate misses its level."""
    if not np.isfinite(value):
        return 0.0
    return max(0.0, value - s.level_gy) if s.sense == "upper" else max(0.0, s.level_gy - value)
