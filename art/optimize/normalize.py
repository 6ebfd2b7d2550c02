"""Plan normalisation: scale beamlet weights so that the prescription goal holds exactly.

The *prescription goal* of a protocol is the goal on the prescription target
that states its coverage: the goal with an ``at_least`` bound and a ``D``
(``%``/``cc``), ``V``, ``Dmin`` or ``Dmean`` metric, with the smallest priority
number (file order breaks ties) — e.g. ``PTV D95% ≥ 57 Gy``. Normalising
scales the whole dose (it is linear in the weights) so that this metric equals
its ``at_least`` value exactly. Without such a goal the median dose (D50%) of
the prescription target is set to the prescription dose (ICRU 83).
"""

from __future__ import annotations

import numpy as np

from art.errors import InputError
from art.protocol import Goal, Metric, Prescription

__all__ = ["prescription_goal", "normalize_to_prescription", "scale_limits", "metric_scale_factor", "metric_value"]


def metric_value(metric: Metric, doses: np.ndarray, volumes_cc: np.ndarray | float, *, name: str = "structure") -> float:
    """Exact value of ``metric`` for voxel doses (Gy) and volumes (cc), via :mod:`art.evaluate.metrics`."""
    from art.evaluate.metrics import evaluate_metric, prepare_samples

    d, v = prepare_samples(doses, volumes_cc, name=name)
    return float(evaluate_metric(metric, d, v, name=name))


def prescription_goal(goals: list[Goal] | tuple[Goal, ...], prescription: Prescription) -> Goal:
    """The goal that defines normalisation (see the module docstring).

    Parameters
    ----------
    goals : sequence of Goal
    prescription : Prescription

    Returns
    -------
    Goal
        A goal from ``goals``, or ``D50% ≥ dose_gy`` on the target when none fits.
    """
    tname = prescription.target.lower()
    cands = [
        (g.priority, i, g)
        for i, g in enumerate(goals)
        if g.structure.lower() == tname and g.at_least is not None and g.metric.kind in ("D", "V", "min", "mean")
    ]
    if cands:
        return min(cands, key=lambda c: (c[0], c[1]))[2]
    return Goal(prescription.target, Metric("D", 50.0, "%", "Gy"), at_least=float(prescription.dose_gy), priority=1)


def _dose_metric_for(goal: Goal, level_volume: float) -> Metric:
    m = goal.metric
    return Metric("D", level_volume, "%" if m.output_unit == "%" else "cc", "Gy")


def metric_scale_factor(goal: Goal, bound: float, doses: np.ndarray, volumes_cc: np.ndarray) -> float:
    """The factor ``f`` such that the goal's metric of ``f * doses`` equals ``bound``.

    Dose metrics scale linearly with the dose; for ``V<d>Gy`` the factor makes
    the dose to the bound's volume equal ``d``.

    Returns
    -------
    float
        ``inf`` when the metric is zero (no finite factor reaches the bound).
    """
    m = goal.metric
    if m.kind == "V":
        dv = metric_value(_dose_metric_for(goal, bound), doses, volumes_cc, name=goal.structure) if bound > 0 else float(np.max(doses))
        return float(m.parameter) / dv if dv > 0 else float("inf")
    val = metric_value(m, doses, volumes_cc, name=goal.structure)
    return bound / val if val > 0 else float("inf")


def scale_limits(goals: list[Goal], values: dict[int, tuple[np.ndarray, np.ndarray]], *, max_priority: int) -> tuple[float, float]:
    """Range of dose scale factors that keep met goals met.

    Parameters
    ----------
    goals : list of Goal
    values : dict of int to (doses, volumes_cc)
        Voxel doses and volumes of each goal's structure, keyed by goal index.
    max_priority : int
        Only goals with ``priority <= max_priority`` constrain the factor.

    Returns
    -------
    (f_min, f_max) : floats
        ``f_min`` from ``at_least`` bounds, ``f_max`` from ``at_most`` bounds of
        goals met at factor 1.
    """
    lo, hi = 0.0, float("inf")
    for i, g in enumerate(goals):
        if g.priority > max_priority or i not in values:
            continue
        d, v = values[i]
        if d.size == 0:
            continue
        val = metric_value(g.metric, d, v, name=g.structure)
        if g.at_most is not None and val <= g.at_most:
            f = metric_scale_factor(g, g.at_most, d, v)
            if g.metric.kind == "V":
                f = f * (1 - 1e-9)
            hi = min(hi, f)
        if g.at_least is not None and val >= g.at_least:
            lo = max(lo, metric_scale_factor(g, g.at_least, d, v))
    return lo, hi


def normalize_to_prescription(
    weights: np.ndarray,
    dose: np.ndarray,
    target_rows: np.ndarray,
    prescription_goal: Goal,
    *,
    voxel_volumes_cc: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Scale weights and dose so that the prescription goal holds exactly.

    Parameters
    ----------
    weights : ndarray, shape (n_beamlets,)
        Beamlet weights.
    dose : ndarray, shape (n_voxels,)
        Dose of those weights, Gy (``matrix @ weights``).
    target_rows : array of int
        Rows of ``dose`` in the prescription target.
    prescription_goal : Goal
        From :func:`prescription_goal`; its ``at_least`` value is reached exactly.
    voxel_volumes_cc : array, shape (len(target_rows),), or float, keyword-only
        Volume of each target voxel (cc); default 1 (only ``cc`` metrics need it).

    Returns
    -------
    weights, dose : ndarray
        Scaled copies (same dtypes).
    factor : float
        The scale factor applied.

    Raises
    ------
    InputError
        When the goal has no ``at_least`` or the target receives no dose.
    """
    g = prescription_goal
    if g.at_least is None:
        raise InputError("the prescription goal needs an 'at_least' value")
    rows = np.asarray(target_rows, dtype=np.int64)
    d = np.asarray(dose, dtype=np.float64)[rows]
    v = np.broadcast_to(np.asarray(1.0 if voxel_volumes_cc is None else voxel_volumes_cc, dtype=np.float64), d.shape)
    f = metric_scale_factor(g, g.at_least, d, v)
    if not np.isfinite(f):
        raise InputError(f"cannot normalise: {g.structure} {g.metric.text} is zero (the target receives no dose)")
    w = np.asarray(weights)
    return (w * f).astype(w.dtype, copy=False), (np.asarray(dose) * f).astype(np.asarray(dose).dtype, copy=False), float(f)
