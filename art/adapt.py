"""The daily adaptive re-plan (``art replan``) as a sequence of stages.

::

    rigid registration → AI contours on the CBCT → deformable registration (guided by the AI organs)
    → contour propagation → synthetic CT of the day → scheduled plan (reference segments and MU on
    today's anatomy) → adapted plan (re-optimised, warm-started, sequenced) → evaluation of both
    → independent check (the adapted plan recomputed by a second algorithm: gamma and dose differences)

Units: dose in Gy (course totals), MU per fraction, lengths in mm, LPS, arrays (z, y, x).

Today's structures (on the CBCT grid): organs-at-risk come from the AI model where its
confidence passes the threshold, otherwise from the deformable propagation (and the
structure is flagged for review); targets (CTV, PTV, prostate, seminal vesicles) are
always propagated through the deformation. An organ cut by the CBCT's field of view
(:mod:`art.contouring.truncation`) is completed from its propagated contour near and beyond
the edge, its confidence discounted, and flagged for review; it does not guide the
deformable registration (the network's contour near the edge would pull the propagated
one with it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from art.geometry import Volume
from art.io.image_series import check_daily_position
from art.plan import Plan
from art.progress import Stages
from art.structures import TARGET_TYPES, Structure, StructureSet


@dataclass
class AdaptResult:
    """What the daily re-plan produced (see module docstring)."""

    rigid: Any
    deformable: Any
    contours: Any
    daily_structures: StructureSet
    structure_sources: dict
    propagated: StructureSet
    synthetic_ct: Volume
    isocenter_lps: np.ndarray
    scheduled_plan: Plan
    scheduled_dose: Volume
    scheduled_goals: list
    adapted: Any  # PlanResult
    check: Any  # art.independent_check.DoseCheck
    contour_qa: list = field(default_factory=list)
    flagged: list = field(default_factory=list)

    @property
    def independent_dose(self) -> Volume:
        """The independent check's dose of the adapted plan (course, Gy, on the export grid)."""
        return self.check.dose

    @property
    def gamma(self) -> Any:
        """The independent check's gamma (:class:`art.evaluate.gamma.GammaResult`)."""
        return self.check.gamma


def _mapped_point(matrix_cbct_to_ct: np.ndarray, point_ct: np.ndarray) -> np.ndarray:
    """A planning-CT point in CBCT (today's) coordinates: inverse of the rigid CBCT→CT map."""
    m = np.asarray(matrix_cbct_to_ct, dtype=np.float64)
    p = np.append(np.asarray(point_ct, dtype=np.float64), 1.0)
    return (np.linalg.inv(m) @ p)[:3]


def _shift_plan(plan: Plan, isocenter_lps: np.ndarray) -> Plan:
    """The same beams, segments and MU about another isocentre (the couch-shift correction)."""
    beams = [dataclasses.replace(b, isocenter_lps=tuple(isocenter_lps), fluence=None, fluence_grid=None) for b in plan.beams]
    return dataclasses.replace(plan, beams=beams)


def daily_structures(
    reference: StructureSet,
    propagated: StructureSet,
    contours: Any,
    *,
    confidence_threshold: float,
    field_of_view: np.ndarray | None = None,
) -> tuple[StructureSet, dict, list[dict], list[str]]:
    """Assemble today's structure set from AI contours and propagated ones.

    Parameters
    ----------
    field_of_view : ndarray of bool, (z, y, x), optional, keyword-only
        The CBCT's reconstructed field of view on the propagated structures' grid; when
        given, an AI organ cut by it is completed from the propagated contour
        (:func:`art.contouring.truncation.complete_truncated`), its confidence
        discounted, and flagged.

    Returns
    -------
    structures : StructureSet on the CBCT grid
    sources : dict name → "ai" | "ai+propagated" (completed beyond the field of view) | "propagated"
    qa : list of dicts {structure, source, confidence, dice_ai_vs_propagated, flagged, truncated, review}
        ``confidence`` is the network's, discounted for a truncated structure
        (``network_confidence`` then keeps the network's own); ``truncated`` the
        :meth:`~art.contouring.truncation.Truncation.to_dict` record or None;
        ``review`` why a flagged structure must be reviewed.
    flagged : list of structure names a person must review
    """
    grid = propagated.grid
    ai = {s.name.lower(): s for s in (contours.structures if contours is not None else [])}
    conf = {k.lower(): float(v) for k, v in (contours.confidence.items() if contours is not None else [])}
    ai_flagged = {n.lower() for n in (contours.flagged if contours is not None else [])}
    out, sources, qa, flagged = [], {}, [], []
    for s in propagated:
        ref = reference.find(s.name)
        roi_type = ref.roi_type if ref is not None else s.roi_type
        a = ai.get(s.name.lower())
        row = {"structure": s.name, "source": "propagated", "confidence": None, "dice_ai_vs_propagated": None, "flagged": False,
               "truncated": None}  # fmt: skip
        mask = s.mask
        if a is not None and roi_type.upper() not in TARGET_TYPES and roi_type.upper() != "EXTERNAL":
            usable = conf.get(s.name.lower(), 0.0) >= confidence_threshold and s.name.lower() not in ai_flagged
            mask = _organ_today(row, a.mask, s.mask, conf.get(s.name.lower(), 0.0), usable, field_of_view, grid)
        if mask is s.mask:
            out.append(s)
        else:
            out.append(Structure(s.name, mask, grid, roi_type, color=ref.color if ref is not None else a.color))
        if row["flagged"]:
            flagged.append(s.name)
        sources[s.name] = row["source"]
        qa.append(row)
    return StructureSet(grid, out), sources, qa, flagged


def _organ_today(row: dict, ai_mask: np.ndarray, propagated_mask: np.ndarray, confidence: float, usable: bool,
                 field_of_view: np.ndarray | None, grid: Any) -> np.ndarray:  # fmt: skip
    """Today's mask of an organ the network contoured, and its QA ``row`` filled in.

    The network's mask when ``usable`` (confident, not flagged by the network), completed
    from the propagated mask when cut by the field of view (flagged, confidence
    discounted); the propagated mask otherwise (flagged).
    """
    from art.contouring.truncation import EDGE_MARGIN_MM, complete_truncated
    from art.registration.metrics import dice

    row.update(confidence=round(confidence, 3), dice_ai_vs_propagated=round(dice(ai_mask, propagated_mask), 3))
    cut = complete_truncated(ai_mask, propagated_mask, field_of_view, grid, confidence=confidence) if field_of_view is not None else None
    if cut is not None:
        row["truncated"] = cut.to_dict()
    edges = " and ".join(cut.edges) if cut is not None else ""
    if not usable:
        row.update(flagged=True, review="AI contour below the confidence threshold or implausible; the propagated contour was used")
        if cut is not None:
            row["review"] += f" (it is also cut by the CBCT's field of view: {edges})"
        return propagated_mask
    if cut is None:
        row["source"] = "ai"
        return ai_mask
    row.update(source="ai+propagated", flagged=True, confidence=round(cut.confidence, 3), network_confidence=round(confidence, 3),
               review=f"cut by the CBCT's field of view ({edges}): completed with the propagated contour within "
                      f"{EDGE_MARGIN_MM:g} mm of the edge and beyond ({100 * cut.added_fraction:.0f} % of the contour added, "
                      f"{100 * cut.edge_fraction:.0f} % near the edge); review the contour and its seam")  # fmt: skip
    return cut.mask


def adapt(
    reference: Any,
    cbct: Any,
    *,
    machine: Any = None,
    stages: Stages | None = None,
    contour_model: Any = None,
    confidence_threshold: float | None = None,
    optimizer_options: dict | None = None,
    final_grid_mm: float | None = None,
    frame_link: np.ndarray | None = None,
    final_engine: str = "pb", check_engine: str | None = None,
) -> AdaptResult:
    """Re-plan today's fraction.

    Parameters
    ----------
    reference : art.reference.Reference
        Planning CT, structures, reference plan and protocol.
    cbct : ImageSeries
        Today's CBCT (HU as stored).
    machine : Machine, optional, keyword-only
    stages : Stages, optional, keyword-only
    contour_model : optional, keyword-only
        A loaded segmentation model (default: the shipped one).
    confidence_threshold : float, optional, keyword-only
        AI contours below it are flagged, replaced by the propagated ones and kept from guiding
        the deformable registration (default :data:`art.contouring.CONFIDENCE_THRESHOLD`).
    final_grid_mm : float, optional, keyword-only
        Export-grid spacing of the final doses (default :data:`art.final_dose.DEFAULT_FINAL_GRID_MM`).
    frame_link : ndarray (4, 4), optional, keyword-only
        A CBCT in its own frame: the imaging system's rigid link CBCT LPS → planning-CT LPS (mm),
        the rigid registration's start; today's objects are then in the CBCT's frame.
    final_engine, check_engine : {"pb", "ccc"}, keyword-only
        The dose engine of the scheduled and adapted final doses; the one of the adapted plan's
        independent check (default None: the other algorithm, :mod:`art.independent_check`).

    Returns
    -------
    AdaptResult
    """
    from art.contouring import CONFIDENCE_THRESHOLD, segment
    from art.dose import load_machine
    from art.independent_check import checked_engines
    from art.io.series_write import stored_image
    from art.registration import propagate_structures, register_rigid, synthetic_ct
    from art.registration.rigid import field_of_view

    stages = stages if stages is not None else Stages(show=False)
    confidence_threshold = CONFIDENCE_THRESHOLD if confidence_threshold is None else float(confidence_threshold)
    machine = machine if machine is not None else load_machine()
    engines = checked_engines(final_engine, check_engine, machine=machine)
    position = check_daily_position(reference.plan, cbct)
    ct, ref_ss, protocol = reference.ct.volume, reference.structures, reference.protocol
    cbct_vol = cbct.volume
    body = ref_ss.external()

    with stages.stage("rigid registration"):
        rigid = register_rigid(ct, cbct_vol, ct_body=body.volume if body is not None else None, initial_matrix=frame_link)
        stages.note(f"couch shift {np.round(rigid.couch_shift_mm, 1).tolist()} mm")
    with stages.stage("AI contours"):
        contours = segment(cbct_vol, model=contour_model, threshold=confidence_threshold)
    with stages.stage("deformable registration"):
        deformable = _register_deformable(ct, cbct_vol, rigid, ref_ss, contours, confidence_threshold=confidence_threshold, stages=stages)
    with stages.stage("contour propagation"):
        propagated = propagate_structures(ref_ss, deformable, target_grid=cbct_vol.grid)
        daily, sources, qa, flagged = daily_structures(ref_ss, propagated, contours, confidence_threshold=confidence_threshold,
                                                       field_of_view=field_of_view(cbct_vol))  # fmt: skip
    with stages.stage("synthetic CT"):
        # as the exported sCT series stores it (whole HU), so that the exported plan recomputes on it
        sct = stored_image(synthetic_ct(ct, cbct_vol, deformable))

    iso_today = _mapped_point(rigid.matrix_4x4, np.asarray(reference.plan.beams[0].isocenter_lps, dtype=np.float64))
    scheduled, scheduled_dose, scheduled_goals, adapted, check = _todays_plans(
        reference.plan, iso_today, sct, daily, protocol, machine, position, stages, optimizer_options, final_grid_mm, engines
    )
    return AdaptResult(rigid=rigid, deformable=deformable, contours=contours, daily_structures=daily, structure_sources=sources,
                       propagated=propagated, synthetic_ct=sct, isocenter_lps=iso_today, scheduled_plan=scheduled,
                       scheduled_dose=scheduled_dose, scheduled_goals=scheduled_goals, adapted=adapted, check=check,
                       contour_qa=qa, flagged=flagged)  # fmt: skip


def _guide_structures(ref_ss: StructureSet, contours: Any, confidence_threshold: float, field_of_view: np.ndarray | None = None) -> dict:
    """Organ pairs (planning mask, today's AI mask) that guide the deformable registration.

    Confident, unflagged AI contours of organs (not targets, not the body) that the
    planning structure set also has, keyed by the planning structure's name; with the
    CBCT's ``field_of_view``, not those reaching its edge band (cut by it: the network's
    contour there is unreliable, :mod:`art.contouring.truncation`).
    """
    from art.contouring.truncation import reaches_edge_band

    guide = {}
    for s in contours.structures:
        r = ref_ss.find(s.name)
        if r is not None and s.name not in contours.flagged and r.roi_type.upper() not in (*TARGET_TYPES, "EXTERNAL"):
            if float(contours.confidence.get(s.name, 0.0)) >= confidence_threshold:
                if field_of_view is None or not reaches_edge_band(s.mask, field_of_view, s.grid):
                    guide[r.name] = (r.volume, s.volume)
    return guide


def _register_deformable(ct: Any, cbct_vol: Any, rigid: Any, ref_ss: StructureSet, contours: Any, *, confidence_threshold: float, stages: Stages) -> Any:
    """Deformable registration of the CBCT to the CT, retried while it folds.

    Attempts in order: guided by the confident AI organs (when there are any), unguided,
    then unguided with 9 mm smoothing; the first without folded voxels is kept (else the
    last). The attempts are recorded in ``result.info["attempts"]``.
    """
    from art.registration import register_deformable

    from art.registration.rigid import field_of_view

    body = ref_ss.external()
    guide = _guide_structures(ref_ss, contours, confidence_threshold, field_of_view(cbct_vol))
    ai_body = next((s for s in contours.structures if s.roi_type.upper() == "EXTERNAL"), None)
    body_mask = ai_body.volume if ai_body is not None and ai_body.name not in contours.flagged else None
    attempts = [("guided" if guide else "unguided", dict(guide_structures=guide or None))]
    if guide:
        attempts.append(("unguided", dict(guide_structures=None)))
    attempts.append(("unguided, smoother (9 mm)", dict(guide_structures=None, smoothing_mm=9.0)))
    registration_log = []
    for label, extra in attempts:
        deformable = register_deformable(
            ct, cbct_vol, rigid=rigid, body_mask=body_mask, ct_body=body.volume if body is not None else None, **extra
        )
        folded = int(deformable.quality.get("folded_voxels_cbct", 0)) + int(deformable.quality.get("folded_voxels_ct", 0))
        registration_log.append({"variant": label, "folded_voxels": folded})
        if folded == 0:
            break
        stages.note(f"{label} registration folds {folded} voxels: trying again")
    deformable.info["attempts"] = registration_log
    stages.note(
        "Jacobian determinant {:.2f}..{:.2f}, folded voxels {}".format(
            float(deformable.quality.get("jacobian_min_cbct", float("nan"))),
            float(deformable.quality.get("jacobian_max_cbct", float("nan"))),
            deformable.quality.get("folded_voxels_cbct", "?"),
        )
    )
    return deformable


def _todays_plans(plan: Plan, iso_today: np.ndarray, sct: Any, daily: StructureSet, protocol: Any, machine: Any, position: str, stages: Stages,
                  optimizer_options: dict | None, final_grid_mm: float | None, engines: tuple[str, str | None]) -> tuple:  # fmt: skip
    """The scheduled plan and its goals, the adapted plan (warm-started from it) and the adapted plan's independent check.

    ``engines``: the final doses' engine and the check's (None: the other algorithm).
    Returns ``(scheduled plan, its final dose, its goals, adapted PlanResult, DoseCheck)``.
    """
    from art.independent_check import staged_check
    from art.workflow import make_plan

    scheduled, scheduled_dose, goals, evaluated, grid = _scheduled_plan(plan, iso_today, sct, daily, protocol, machine, final_grid_mm, stages,
                                                                        engines[0])  # fmt: skip
    adapted = make_plan(sct, evaluated, protocol, machine=machine, isocenter_lps=iso_today, stages=stages.child("adapted: "),
                        optimizer_options=optimizer_options, warm_start=scheduled, final_grid_mm=grid.spacing[0],
                        patient_position=position, final_engine=engines[0])  # fmt: skip
    check = staged_check(sct, adapted, evaluated, protocol, machine, engine=engines[1], stages=stages)
    return scheduled, scheduled_dose, goals, adapted, check


def _scheduled_plan(plan: Plan, iso_today: np.ndarray, sct: Any, daily: StructureSet, protocol: Any, machine: Any, final_grid_mm: float | None,
                    stages: Stages, engine: str = "pb") -> tuple[Plan, Any, list, StructureSet, Any]:  # fmt: skip
    """The reference plan moved to today's isocentre (LPS mm), its final dose (course, Gy, by ``engine``) on the export grid and its goals.

    Also returns today's structures as the daily RTSTRUCT will draw them (polygons traced
    from the masks, on which every goal of today is evaluated) and the export grid.
    """
    from art.final_dose import DEFAULT_FINAL_GRID_MM, evaluate, evaluation_structures, final_dose, final_grid

    with stages.stage("structure polygons"):
        evaluated = evaluation_structures(daily)
    grid = final_grid(sct.grid, DEFAULT_FINAL_GRID_MM if final_grid_mm is None else final_grid_mm)
    with stages.stage("scheduled plan dose"):
        scheduled = _shift_plan(plan, iso_today)
        scheduled.fractions = int(protocol.prescription.fractions)
        scheduled_dose = final_dose(sct, scheduled, machine, evaluated, grid, engine=engine)
        goals = evaluate(scheduled_dose, evaluated, protocol)
    return scheduled, scheduled_dose, goals, evaluated, grid

