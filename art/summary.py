"""``summary.json``: goal tables, delivery figures, the recommendation, provenance.

The summary (docs/workflow.md, "summary.json") holds at least the software version, input file hashes,
the protocol, per-goal ``{structure, metric, goal, value, met}`` for each plan
(``reference``, or ``scheduled`` and ``adapted``), total MU per beam and timings
per stage. Dose in Gy (course), MU per fraction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def goal_table(goals: Iterable[Any]) -> list[dict]:
    """Goal results (:class:`art.evaluate.GoalResult`) as JSON rows, in protocol order."""
    return [g.to_dict() for g in goals]


def delivery_table(plan: Any) -> dict:
    """The patient position, MU (per fraction) and segment count per beam, and totals."""
    beams = [
        {
            "name": b.name,
            "gantry_deg": float(b.gantry_deg),
            "collimator_deg": float(b.collimator_deg),
            "couch_deg": float(b.couch_deg),
            "mu": round(float(b.total_mu), 2),
            "segments": len(b.segments),
        }
        for b in plan.beams
    ]
    return {
        "fractions": int(plan.fractions),
        "patient_position": str(plan.patient_position),
        "beams": beams,
        "total_mu": round(sum(b["mu"] for b in beams), 2),
        "total_segments": int(sum(b["segments"] for b in beams)),
    }


def priority_score(goals: Iterable[Any]) -> list[tuple[int, int, int]]:
    """Per priority (ascending): (priority, goals met, goals total)."""
    by: dict[int, list[bool]] = {}
    for g in goals:
        by.setdefault(int(g.priority), []).append(bool(g.met))
    return [(p, sum(v), len(v)) for p, v in sorted(by.items())]


def recommend(scheduled: list[Any], adapted: list[Any]) -> dict:
    """Which plan to treat with today, and why: goals met, compared priority by priority.

    The first priority level at which the two plans meet a different number of goals
    decides. When they meet the same goals everywhere, the scheduled plan is
    recommended (no new plan needs checking).

    Returns
    -------
    dict
        ``{"plan": "adapted"|"scheduled", "reason": str, "adapted_priority1_met": bool,
        "scheduled_priority1_met": bool}``
    """
    s = {p: (m, n) for p, m, n in priority_score(scheduled)}
    a = {p: (m, n) for p, m, n in priority_score(adapted)}
    choice, reason = "scheduled", "both plans meet the same goals at every priority; the scheduled plan needs no new plan check"
    for p in sorted(set(s) | set(a)):
        ms, ns = s.get(p, (0, 0))
        ma, na = a.get(p, (0, 0))
        if ma != ms:
            choice = "adapted" if ma > ms else "scheduled"
            better, worse = (ma, ms) if ma > ms else (ms, ma)
            reason = f"at priority {p} the {choice} plan meets {better} of {max(na, ns)} goals, the other {worse}"
            break
    p1 = lambda goals: all(g.met for g in goals if int(g.priority) == 1)  # noqa: E731
    return {
        "plan": choice,
        "reason": reason,
        "scheduled_priority1_met": p1(scheduled),
        "adapted_priority1_met": p1(adapted),
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(summary: dict) -> str:
    """The summary as JSON text (NumPy values converted, non-finite numbers → null)."""
    return json.dumps(_jsonable(summary), indent=2, ensure_ascii=False, allow_nan=False)


def write_summary(summary: dict, path: str | Path) -> None:
    """Write ``summary.json`` (UTF-8)."""
    Path(path).write_text(dumps(summary) + "\n", encoding="utf-8")
