"""The evaluated dose of a plan: one dose, on the export grid, from which every reported number comes.

A plan's *final dose* is computed by the dose engine named by ``engine`` (pencil beam ``"pb"`` by
default, collapsed cone ``"ccc"``: :mod:`art.dose.engines`) from its MLC segments directly on
the **export grid** (:func:`final_grid`: isotropic, ``DEFAULT_FINAL_GRID_MM`` = 2.5 mm by
default, covering the CT to its outer voxel edges), never interpolated from the coarser
optimisation grid. That same dose is written as RT Dose, and every goal, DVH,
normalisation, recommendation and exit code is computed on it from the structures'
RTSTRUCT **polygons** (:func:`art.evaluate.polygons.polygon_samples`), exactly as
``art check`` and a planning system compute them from the exported files.

Structures drawn by a mask only (today's AI and propagated contours) are measured by the
polygons the RTSTRUCT writer will export for them (:func:`evaluation_structures`, the
writer's tracing, rounded as the file stores them).

When a priority-1 goal is missed on the final dose, :func:`correct_segment_mu` re-optimises
the segments' MU (apertures fixed; :mod:`art.optimize.segment_mu`, cvxpy/Clarabel) on the
final grid and keeps the result only if the final dose, recomputed by the engine, is
better by priority.

Units: dose in Gy (course), MU per fraction, lengths in mm, LPS, arrays (z, y, x).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from art.errors import InputError
from art.geometry import Grid, Volume
from art.plan import Plan
from art.structures import Structure, StructureSet

__all__ = [
    "DEFAULT_FINAL_GRID_MM", "EVALUATION_MODE", "final_grid", "evaluation_structures", "final_dose",
    "normalisation_factor", "normalisation", "Normalisation", "normalisation_warnings", "V_METRIC_SCALE_RANGE", "scaled_dose", "scale_plan",
    "normalise", "normalise_deliverable", "evaluate", "goals_key", "correct_segment_mu",
]  # fmt: skip

#: Default export-grid spacing (mm, isotropic) of every plan's final dose.
DEFAULT_FINAL_GRID_MM = 2.5

#: How every reported goal is evaluated: from the structures' polygons, dose interpolated at the sample points.
EVALUATION_MODE = "polygons"

#: Normalisation aims this fraction above the prescription goal's level (0.2 %: 0.1 Gy on 50 Gy), so that a DVH tool
#: that samples the structures a little differently (other sub-cell size, end caps, interpolation) still finds the
#: goal met; such tools differed from art by up to 0.05 Gy on the commissioning cases (docs/commissioning.md).
NORMALISATION_MARGIN = 0.002

#: The final grid may be chosen between these spacings (mm).
FINAL_GRID_RANGE_MM = (0.5, 5.0)


def final_grid(ct_grid: Grid, spacing_mm: float = DEFAULT_FINAL_GRID_MM) -> Grid:
    """The export grid: isotropic ``spacing_mm``, the CT's orientation, covering the CT beyond its outer voxel edges.

    Parameters
    ----------
    ct_grid : Grid
        The image the plan is on.
    spacing_mm : float
        Voxel size, mm, within ``FINAL_GRID_RANGE_MM``.

    Returns
    -------
    Grid
        :meth:`art.geometry.Grid.covering` of the CT grid, one voxel wider on each side in-plane.
    """
    try:
        s = float(spacing_mm)
    except (TypeError, ValueError):
        raise InputError(f"final_grid_mm must be a number (mm), got {spacing_mm!r}") from None
    lo, hi = FINAL_GRID_RANGE_MM
    if not (np.isfinite(s) and lo <= s <= hi):
        raise InputError(f"final_grid_mm must be between {lo:g} and {hi:g} mm, got {spacing_mm!r}")
    # one more voxel on each side in-plane: a contour traced along the image's edge (a BODY
    # filling the field of view) is smoothed up to half a pixel beyond the outer voxel edge
    return ct_grid.covering((s, s, s)).pad((0, 1, 1))


def evaluation_structures(structures: StructureSet) -> StructureSet:
    """The structures as the RTSTRUCT export draws them: polygons given, or traced from the mask.

    A structure with ``contours`` is kept as it is; one without gets the polygons the
    writer traces for it (:func:`art.io.rtstruct_trace.traced_polygons`), so that a goal
    evaluated on this set is the goal a DVH tool computes from the exported RTSTRUCT.
    Empty structures are kept without polygons.
    """
    from art.io.rtstruct_trace import traced_polygons

    out = []
    for s in structures:
        if s.contours is not None or s.is_empty:
            out.append(s)
            continue
        polys = tuple(p for _, p in traced_polygons(s.mask, s.grid))
        out.append(dataclasses.replace(s, contours=polys) if polys else s)
    return StructureSet(structures.grid, out)


def final_dose(ct: Volume, plan: Plan, machine: Any, structures: StructureSet, grid: Grid, *, engine: str = "pb") -> Volume:
    """Course dose (Gy, float32) of the plan's segments on ``grid``, inside the BODY/EXTERNAL (0 outside), as RT Dose stores it.

    ``engine`` names the dose engine (:data:`art.dose.engines.ENGINES`: ``"pb"`` pencil beam,
    ``"ccc"`` collapsed-cone convolution/superposition); an unknown name is an InputError listing them.
    """
    from art.dose.engines import get_engine
    from art.io.rtdose import stored_dose

    plan_dose = get_engine(engine, parameter="final engine")
    return stored_dose(plan_dose(ct, plan, machine, dose_grid=grid, structures=structures))


def normalisation_factor(dose: Volume, structures: StructureSet, protocol: Any) -> float:
    """The MU scale applied by :func:`normalisation` (see there): the prescription goal's, as far as the guard allows."""
    return normalisation(dose, structures, protocol).factor


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """How the final MU were scaled (:func:`normalisation`).

    Attributes
    ----------
    factor : float
        The scale applied to every segment's MU.
    needed : float
        The scale the prescription goal needs (``NORMALISATION_MARGIN`` above its level).
    goal : str
        The prescription goal, e.g. ``"PTV D95% ≥ 57 Gy (priority 1)"``.
    limited_by : tuple of str
        Goals of the prescription goal's priority or higher, met before scaling, that the
        full scale would break (the factor stops before they break).
    clamped : bool
        A volume-metric prescription goal whose scale lay outside the searched range
        ``V_METRIC_SCALE_RANGE`` (``needed`` is then the range's end).
    warnings : tuple of str
        One clear sentence per event above (empty when the scale was applied in full).
    """

    factor: float
    needed: float
    goal: str
    limited_by: tuple[str, ...] = ()
    clamped: bool = False
    warnings: tuple[str, ...] = ()

    def record(self) -> dict:
        """The summary.json record (``normalisation_factor`` and ``normalisation``)."""
        return {"normalisation_factor": round(self.factor, 5), "normalisation": {
            "goal": self.goal, "needed_factor": round(self.needed, 5), "limited_by": list(self.limited_by),
            "clamped": self.clamped, "warnings": list(self.warnings)}}  # fmt: skip


#: The scales searched when the prescription goal is a volume metric (V<x>Gy ≥ v %); a goal that
#: needs a scale outside it is clamped to its end, with a warning.
V_METRIC_SCALE_RANGE = (0.5, 2.0)


def normalisation(dose: Volume, structures: StructureSet, protocol: Any) -> Normalisation:
    """The MU scale that makes the prescription goal hold, as far as no goal of its priority or higher breaks.

    The prescription goal is the highest-priority ``at_least`` goal on the prescription
    target (e.g. ``PTV D95% ≥ 57 Gy``), as in :func:`art.optimize.normalize.prescription_goal`;
    the scale aims ``NORMALISATION_MARGIN`` above its level, checked on the scaled dose as the
    RT Dose file stores it (:func:`art.io.rtdose.stored_dose`: 16-bit steps).

    The guard: every other goal with a priority number at most the prescription goal's that
    is met on ``dose`` must stay met, so the scale stops where the first of them would break
    (e.g. a priority-1 organ ``Dmax`` when scaling up, a priority-1 ``CTV D98%`` when scaling
    down). The prescription goal may then be missed: the plan's goals show it (exit code 3
    for a priority-1 goal) and :attr:`Normalisation.warnings` says why; nothing is traded
    silently. Goals already missed before scaling do not limit it.

    Parameters
    ----------
    dose : Volume
        The final dose (Gy, course) on the export grid.
    structures : StructureSet
        With polygons (:func:`evaluation_structures`).
    protocol : Protocol

    Returns
    -------
    Normalisation
    """
    from art.optimize.normalize import prescription_goal

    goal = prescription_goal(list(protocol.goals), protocol.prescription)
    needed, clamped = _prescription_scale(dose, structures, goal)
    text = f"{goal.structure} {goal.metric.text} ≥ {goal.at_least:g} {goal.metric.output_unit} (priority {goal.priority})"
    warnings = []
    if clamped:
        lo, hi = V_METRIC_SCALE_RANGE
        result = "the goal is not met" if needed >= hi else "the target is left above the goal's level"
        warnings.append(f"normalisation to {text}: the goal needs a scale outside ×{lo:g}–×{hi:g}; clamped at ×{needed:.4g}, {result}")
    factor, limited_by = _guarded_scale(dose, structures, protocol, goal, needed)
    if limited_by:
        left = "the prescription goal is left short" if needed > 1.0 else "the target is left above the prescription goal's level"
        warnings.append(
            f"normalisation to {text} stopped at ×{factor:.4f} (×{needed:.4f} needed): scaling further would break "
            f"{', '.join(limited_by)}, met before scaling; {left} rather than traded for it"
        )
    return Normalisation(float(factor), float(needed), text, tuple(limited_by), bool(clamped), tuple(warnings))


def _goal_value(dose: Volume, structures: StructureSet, goal: Any, scale: float) -> float:
    """The goal's metric on ``dose`` × ``scale`` as stored (polygons)."""
    (r,) = _stored_goals(dose, structures, [goal], scale)
    return float(r.value)


def _prescription_scale(dose: Volume, structures: StructureSet, goal: Any) -> tuple[float, bool]:
    """The scale that puts the prescription goal ``NORMALISATION_MARGIN`` above its level, and whether it was clamped.

    Dose metrics are linear in the scale (up to the sampling: pooled dose bins, 16-bit steps):
    computed, checked and stepped again if short. A volume metric (V<x>Gy ≥ v %) is monotone in
    the scale: bisection within ``V_METRIC_SCALE_RANGE``; outside it, the range's end, clamped.
    """
    aim = float(goal.at_least) * (1.0 + NORMALISATION_MARGIN)
    v1 = _goal_value(dose, structures, goal, 1.0)
    if not np.isfinite(v1) or v1 <= 0:
        raise InputError(f"cannot normalise: {goal.structure} {goal.metric} is {v1} on the plan dose")
    if goal.metric.kind in ("D", "mean", "min", "max"):
        scale = aim / v1 * (1.0 + 1e-6)
        for _ in range(8):
            v = _goal_value(dose, structures, goal, scale)
            if v >= aim:
                return scale, False
            scale *= aim / v * (1.0 + 1e-5)
        raise InputError(f"cannot normalise: {goal.structure} {goal.metric} does not reach {aim:.4g} by scaling the dose")
    aim = min(aim, 100.0) if goal.metric.output_unit == "%" else aim
    lo, hi = V_METRIC_SCALE_RANGE
    if _goal_value(dose, structures, goal, hi) < aim:
        return hi, True
    if _goal_value(dose, structures, goal, lo) >= aim:
        return lo, True
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if _goal_value(dose, structures, goal, mid) >= aim else (mid, hi)
    return hi, False


def _guarded_scale(dose: Volume, structures: StructureSet, protocol: Any, goal: Any, needed: float) -> tuple[float, list[str]]:
    """``needed``, limited so that the goals of ``goal``'s priority or higher met at scale 1 stay met; and the goals that limit it.

    Each guarded goal's limit comes from its polygon samples (:func:`art.optimize.normalize.scale_limits`:
    dose metrics scale linearly, ``V<x>Gy`` by the dose to its bound's volume); the scaled dose as
    stored is then checked and the scale moved towards 1 while a guarded goal is missed there.
    """
    from art.evaluate.dvh import structure_samples
    from art.optimize.normalize import scale_limits

    guarded = [g for g in protocol.goals if g.priority <= goal.priority and g is not goal]
    guarded = [g for g, r in zip(guarded, _stored_goals(dose, structures, guarded, 1.0)) if r.met] if guarded else []
    if not guarded:
        return needed, []
    samples = {}
    for i, g in enumerate(guarded):
        d, v, _ = structure_samples(dose, _find(structures, g.structure), name=g.structure, mode="polygons")
        samples[i] = (d, v)
    limits = [scale_limits([g], {0: samples[i]}, max_priority=g.priority) for i, g in enumerate(guarded)]
    lo = max([1.0] if needed >= 1.0 else [lim[0] for lim in limits] + [0.0])
    hi = min([1.0] if needed < 1.0 else [lim[1] for lim in limits] + [float("inf")])
    scale = float(np.clip(needed, min(lo, 1.0), max(hi, 1.0)))
    if scale == needed and all(r.met for r in _stored_goals(dose, structures, guarded, scale)):
        return scale, []
    for k in range(8):  # the limits come from unpooled samples: confirm on the stored dose, else move towards 1
        if all(r.met for r in _stored_goals(dose, structures, guarded, scale)):
            break
        scale = 1.0 + (scale - 1.0) * (1.0 - 1e-3 * 2**k)
    else:
        scale = 1.0
    broken = [g for g, r in zip(guarded, _stored_goals(dose, structures, guarded, needed)) if not r.met]
    return scale, [f"{g.structure} {g.metric.text} {_bound_text(g)} (priority {g.priority})" for g in broken]


def _stored_goals(dose: Volume, structures: StructureSet, goals: list, scale: float) -> list:
    """``goals`` evaluated on ``dose`` × ``scale`` as stored (polygons)."""
    from art.evaluate import evaluate_goals

    return evaluate_goals(scaled_dose(dose, scale), structures, goals, mode=EVALUATION_MODE)


def _bound_text(goal: Any) -> str:
    """``≥ 57 Gy``, ``≤ 20 %`` or both, as the goal states them."""
    unit = goal.metric.output_unit
    parts = ([f"≥ {goal.at_least:g} {unit}"] if goal.at_least is not None else []) + ([f"≤ {goal.at_most:g} {unit}"] if goal.at_most is not None else [])
    return " and ".join(parts)


def scaled_dose(dose: Volume, scale: float) -> Volume:
    """``dose`` × ``scale`` as the RT Dose file stores it (:func:`art.io.rtdose.stored_dose`), float32."""
    from art.io.rtdose import stored_dose

    return stored_dose(Volume((np.asarray(dose.array, np.float32) * np.float32(scale)).astype(np.float32), dose.grid))


def scale_plan(plan: Plan, factor: float) -> Plan:
    """The plan with every segment's MU multiplied by ``factor`` (fluences kept)."""
    if not np.isfinite(factor) or factor <= 0:
        raise InputError(f"normalisation factor must be positive, got {factor}")
    return _with_mu(plan, lambda mu: mu * factor)


def _with_mu(plan: Plan, new_mu: Any) -> Plan:
    """The plan with each segment's MU replaced by ``new_mu(mu)`` (apertures and fluences kept)."""
    from art.plan import Segment

    beams = [dataclasses.replace(b, segments=[Segment(s.leaf_positions, s.jaws, new_mu(s.mu)) for s in b.segments]) for b in plan.beams]
    return dataclasses.replace(plan, beams=beams)


def normalise(plan: Plan, dose: Volume, structures: StructureSet, protocol: Any) -> tuple[Plan, Volume, float]:
    """Plan and dose scaled by :func:`normalisation` (the prescription goal, guarded); returns the factor too.

    The dose returned is the one the RT Dose file stores (16-bit steps), so that every
    number evaluated on it is the number a reader of the file gets.
    """
    plan, dose, norm = _normalised(plan, dose, structures, protocol)
    return plan, dose, norm.factor


def _normalised(plan: Plan, dose: Volume, structures: StructureSet, protocol: Any) -> tuple[Plan, Volume, Normalisation]:
    norm = normalisation(dose, structures, protocol)
    return scale_plan(plan, norm.factor), scaled_dose(dose, norm.factor), norm


def normalise_deliverable(ct: Volume, plan: Plan, dose: Volume, structures: StructureSet, protocol: Any, machine: Any, *,
                          engine: str = "pb") -> tuple[Plan, Volume, dict]:  # fmt: skip
    """:func:`normalise`, then every segment the scaling left below the machine's minimum MU lifted to it.

    Lifting only adds dose; when any segment was lifted the final dose is computed again by
    the engine (``engine``, the one of ``dose``) for the lifted plan (so the reported dose is the dose of the exported MU).
    Returns the plan, its final dose and a record ``{"normalisation_factor",
    "normalisation": {goal, needed_factor, limited_by, clamped, warnings},
    "segments_lifted_to_min_mu"}`` (:meth:`Normalisation.record`).
    """
    plan, dose, norm = _normalised(plan, dose, structures, protocol)
    mu_min = float(machine.min_mu_per_segment)
    lifted = sum(1 for b in plan.beams for s in b.segments if 0 < s.mu < mu_min)
    if lifted:
        plan = _with_mu(plan, lambda mu: max(mu, mu_min))
        dose = final_dose(ct, plan, machine, structures, dose.grid, engine=engine)
    return plan, dose, {**norm.record(), "segments_lifted_to_min_mu": lifted}


def normalisation_warnings(record: dict) -> list[str]:
    """The normalisation warnings of a plan's record (``PlanResult.sequencing``; empty when the scale was applied in full)."""
    return list((record or {}).get("normalisation", {}).get("warnings", []))


def evaluate(dose: Volume, structures: StructureSet, protocol: Any) -> list:
    """The protocol's goals on the final dose, from the structures' polygons (:data:`EVALUATION_MODE`)."""
    from art.evaluate import evaluate_goals

    return evaluate_goals(dose, structures, protocol, mode=EVALUATION_MODE)


def goals_key(goals: list) -> tuple:
    """Goals met per priority (ascending), then minus the summed relative shortfall: the larger, the better plan."""
    met: dict[int, int] = {}
    short = 0.0
    for g in goals:
        p = int(g.priority) if g.priority is not None else 99
        met[p] = met.get(p, 0) + int(bool(g.met))
        for bound, sign in ((g.at_least, 1.0), (g.at_most, -1.0)):
            if bound is not None and np.isfinite(g.value):
                short += max(0.0, sign * (float(bound) - float(g.value))) / max(abs(float(bound)), 1e-6)
    return tuple(met[p] for p in sorted(met)) + (-short,)


def correct_segment_mu(
    ct: Volume, plan: Plan, dose: Volume, goals: list, structures: StructureSet, protocol: Any, *, machine: Any, influence: Any,
    time_limit_s: float = 120.0, engine: str = "pb",
) -> tuple[Plan, Volume, list, dict]:  # fmt: skip
    """The correction stage: segment MU re-optimised against the goals on the final grid.

    The per-segment dose on the final-grid voxels of the goal structures is the influence
    matrix's (``influence``, optimisation grid) interpolated trilinearly and scaled voxel by
    voxel so that at the current MU it equals the final dose exactly; the segment-MU
    optimiser then meets the goals on that model, and the engine recomputes the final dose
    of the new MU, which is normalised and evaluated. The new plan is kept only when it is
    better by :func:`goals_key`.

    Parameters
    ----------
    ct, plan, dose, goals
        The CT (HU), the normalised plan, its final dose (Gy, on the final grid) and its goals.
    structures : StructureSet
        With polygons (:func:`evaluation_structures`).
    protocol, machine, influence
        The protocol, the machine and the plan's :class:`~art.dose.influence.InfluenceMatrix`.
    time_limit_s : float, keyword-only
        Wall-time budget of the segment-MU stage, checked between its solves (:func:`art.optimize.segment_mu.optimize_segment_mu`);
        generous, so that a loaded machine does not cut the stage short and change the plan (the demo's stage takes ~10–20 s).
    engine : str, keyword-only
        The dose engine of ``dose`` (:func:`final_dose`), which recomputes the new MU's final dose.

    Returns
    -------
    plan, dose, goals, record
        The kept plan, final dose and goals, and what the stage did (``record["kept"]``).
    """
    from art.delivery import segment_beamlet_matrix
    from art.optimize.segment_mu import optimize_plan_segment_mu

    matrix, svs = _segment_model(plan, dose, structures, protocol, machine=machine, influence=influence,
                                 segment_beamlets=segment_beamlet_matrix(plan, influence, machine))  # fmt: skip
    new_plan, res = optimize_plan_segment_mu(plan, matrix, svs, protocol, machine=machine, time_limit_s=time_limit_s)
    new_dose = final_dose(ct, new_plan, machine, structures, dose.grid, engine=engine)
    new_plan, new_dose, norm = normalise_deliverable(ct, new_plan, new_dose, structures, protocol, machine, engine=engine)
    new_goals = evaluate(new_dose, structures, protocol)
    kept = goals_key(new_goals) > goals_key(goals)
    record = {
        "ran": True, "kept": bool(kept), "status": res.status, "solver_time_s": round(float(res.time_s), 2),
        "n_segments": int(res.n_variables), **norm,
        "goals_met_before": sum(bool(g.met) for g in goals), "goals_met_after": sum(bool(g.met) for g in new_goals),
    }  # fmt: skip
    return (new_plan, new_dose, new_goals, record) if kept else (plan, dose, goals, record)


def _segment_model(plan: Plan, dose: Volume, structures: StructureSet, protocol: Any, *, machine: Any, influence: Any,
                   segment_beamlets: Any) -> tuple[Any, dict]:  # fmt: skip
    """Per-segment dose (Gy per MU per fraction) on the goal structures' final-grid voxels, and their StructureVoxels.

    Rows are the final-grid voxels that a goal structure's polygons occupy (for a structure
    of more than 200,000 voxels, e.g. the BODY, only those above 30 % of the prescription);
    the influence matrix is interpolated trilinearly onto them and each row scaled so that
    the model reproduces the final dose at the plan's MU.
    """
    import scipy.sparse as sp

    from art.evaluate import polygon_occupancy
    from art.optimize.voxels import StructureVoxels

    grid, fractions = dose.grid, int(plan.fractions)
    flat = dose.array.reshape(-1)
    names = sorted(set(protocol.structure_names) | {protocol.prescription.target})
    occ = {}
    for n in names:
        s = _find(structures, n)
        o = polygon_occupancy(s, grid).array.reshape(-1)
        rows = np.flatnonzero(o > 0)
        if rows.size > 200_000:
            rows = rows[flat[rows] >= 0.3 * float(protocol.prescription.dose_gy)]
        occ[n] = (s, rows, o[rows])
    union = np.unique(np.concatenate([r for _, r, _ in occ.values()]))
    interp = _trilinear_rows(grid, union, influence)
    m = (interp @ influence.matrix @ segment_beamlets).tocsr()
    mu0 = np.array([s.mu for b in plan.beams for s in b.segments])
    model0 = m @ mu0
    exact0 = flat[union].astype(np.float64) / fractions
    ratio = np.ones_like(exact0)
    ok = model0 > 1e-3 * max(float(model0.max(initial=0.0)), 1e-12)
    ratio[ok] = np.clip(exact0[ok] / model0[ok], 0.5, 2.0)
    m = (sp.diags(ratio) @ m).tocsr()
    svs = {}
    for n, (s, rows, w) in occ.items():
        svs[n] = StructureVoxels(np.searchsorted(union, rows).astype(np.int64), np.clip(w, 1e-6, 1.0), roi_type=s.roi_type,
                                 voxel_volume_cc=grid.voxel_volume_cc, name=n)  # fmt: skip
    return m, svs


def _find(structures: StructureSet, name: str) -> Structure:
    s = structures.find(name)
    if s is None:
        raise InputError(f"structure {name!r} is not in the structure set")
    return s


def _trilinear_rows(grid: Grid, flat_indices: np.ndarray, influence: Any) -> Any:
    """Sparse (len(flat_indices), influence rows): trilinear weights of each ``grid`` voxel centre on the influence matrix's voxels."""
    import scipy.sparse as sp

    g2 = influence.dose_grid
    kji = np.stack(np.unravel_index(flat_indices, grid.shape), axis=1).astype(np.float64)
    pos = g2.lps_to_index(grid.index_to_lps(kji))
    shape = np.asarray(g2.shape)
    base = np.floor(pos).astype(np.int64)
    frac = pos - base
    row_of = np.full(int(np.prod(shape)), -1, np.int64)
    row_of[influence.voxel_indices] = np.arange(influence.voxel_indices.size)
    rows, cols, vals = [], [], []
    for corner in range(8):
        off = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        idx = base + off
        w = np.prod(np.where(off == 1, frac, 1.0 - frac), axis=1)
        inside = np.all((idx >= 0) & (idx < shape), axis=1) & (w > 0)
        r = np.full(idx.shape[0], -1, np.int64)
        r[inside] = row_of[np.ravel_multi_index(tuple(idx[inside].T), tuple(shape))]
        keep = r >= 0
        rows.append(np.flatnonzero(keep))
        cols.append(r[keep])
        vals.append(w[keep])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(flat_indices.size, influence.voxel_indices.size))
