"""Build a :class:`~art.report.model.ReportModel` from the raw objects of a run.

:func:`plan_report_model` serves ``art plan`` (one plan, label
``"reference"``); :func:`adaptive_report_model` serves ``art replan``
(``"scheduled"`` vs ``"adapted"``). Both compute the DVHs and figures, so the
workflow calls one function and then :func:`art.report.write_report`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from art.errors import GeometryError, InputError
from art.geometry import Volume
from art.report import figures as F
from art.report.model import ReportFigure, ReportModel, goal_row
from art.structures import TARGET_TYPES, StructureSet

__all__ = ["dvh_curves", "recommend", "plan_report_model", "adaptive_report_model", "position_text"]


def dvh_curves(
    dose: Volume,
    structures: StructureSet,
    *,
    names: Sequence[str] | None = None,
    max_points: int = 400,
    warnings: list[str] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Cumulative DVH curves of several structures, for :func:`art.report.figures.dvh_figure`.

    Parameters
    ----------
    dose : Volume
        Dose in Gy.
    structures : StructureSet
    names : sequence of str, optional, keyword-only
        Structures to include (default: every non-empty structure except the
        EXTERNAL one).
    max_points : int, keyword-only
        Curves are thinned to about this many points.
    warnings : list, optional, keyword-only
        Structures that cannot be evaluated (empty, or outside the dose grid)
        are skipped with a message appended here.

    Returns
    -------
    dict structure -> (dose_gy, volume_percent)
        1-D float arrays of equal length; a structure with RTSTRUCT polygons is measured
        by them (as the goals are), one without by its voxel mask.
    """
    from art.evaluate import dvh
    from art.evaluate.polygons import prefetch_samples

    chosen = dvh_structures_of(structures, names)
    top = float(np.nanmax(dose.array)) if np.size(dose.array) else 0.0
    width = max(top / 1000.0, 0.01)
    prefetch_samples(dose, chosen)  # the polygon samples on two threads (the same numbers, sooner)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in chosen:
        try:
            h = dvh(dose, s, bin_width_gy=width, mode="polygons" if s.contours is not None else "mask")
        except (GeometryError, InputError) as exc:
            if warnings is not None:
                warnings.append(f"DVH of {s.name} not shown: {exc}")
            continue
        d, v = h.dose_gy, h.volume_pct
        step = max(1, int(np.ceil(len(d) / max_points)))
        sel = np.arange(0, len(d), step)
        if sel[-1] != len(d) - 1:
            sel = np.append(sel, len(d) - 1)
        out[s.name] = (d[sel], v[sel])
    return out


def recommend(goals: Mapping[str, Sequence[Any]], *, candidates: tuple[str, str] = ("scheduled", "adapted")) -> str:
    """Decision-support text: which plan meets more goals, compared priority by priority.

    The plans are compared lexicographically on the number of goals met at
    priority 1, then 2, and so on; the first difference decides. On a tie the
    first candidate (the scheduled plan, already verified) is recommended.

    Parameters
    ----------
    goals : mapping label -> goal rows (GoalResult or dict)
    candidates : (str, str), keyword-only
        The two labels compared.

    Returns
    -------
    str
    """
    a, b = candidates
    if a not in goals or b not in goals:
        raise InputError(f"recommend needs goal results for {a!r} and {b!r}, got {list(goals)}")
    rows = {k: [goal_row(r) for r in goals[k]] for k in (a, b)}
    prios = sorted({r["priority"] for rs in rows.values() for r in rs if r["priority"] is not None})

    def met(label: str, p: int) -> tuple[int, int]:
        sel = [r for r in rows[label] if r["priority"] == p]
        return sum(r["met"] for r in sel), len(sel)

    winner, reason = a, f"the {b} plan meets no more goals than the {a} plan at any priority"
    for p in prios:
        ma, na = met(a, p)
        mb, nb = met(b, p)
        if ma != mb:
            winner = a if ma > mb else b
            reason = f"at priority {p} it meets {max(ma, mb)} of {nb if winner == b else na} goals ({a}: {ma}/{na}, {b}: {mb}/{nb})"
            break
    failed_p1 = [f"{r['structure']} {r['metric']}" for r in rows[winner] if r["priority"] == 1 and not r["met"]]
    text = f"Recommended: the {winner} plan; {reason}."
    if failed_p1:
        text += f" Attention: the {winner} plan still fails priority-1 goal(s): {', '.join(failed_p1)}."
    return text


def _default_point(image: Volume, structures: StructureSet | None, plans: Sequence[Any]) -> np.ndarray:
    for plan in plans:
        if plan is not None and getattr(plan, "beams", None):
            p = np.asarray(plan.beams[0].isocenter_lps, dtype=np.float64)
            if bool(image.grid.contains(p)):
                return p
    if structures is not None:
        for t in TARGET_TYPES:
            for s in structures:
                if s.roi_type == t and not s.is_empty:
                    p = s.centroid_lps()
                    if bool(image.grid.contains(p)):
                        return p
    return image.grid.index_to_lps((np.asarray(image.grid.shape, dtype=np.float64) - 1) / 2)


def _beam_tables(plans: Mapping[str, Any]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    mu: dict[str, dict[str, float]] = {}
    seg: dict[str, dict[str, int]] = {}
    for label, plan in plans.items():
        if plan is None:
            continue
        if any(b.segments for b in plan.beams):
            mu[label] = {b.name: float(b.total_mu) for b in plan.beams}
            seg[label] = {b.name: len(b.segments) for b in plan.beams}
    return mu, seg


def dvh_structures_of(structures: StructureSet, names: Sequence[str] | None = None) -> list:
    """The structures of :func:`dvh_curves`: ``names``, or every non-empty one but the EXTERNAL."""
    if names is None:
        return [s for s in structures if s.roi_type != "EXTERNAL" and not s.is_empty]
    return [structures[n] for n in names]


def _common(
    model: ReportModel,
    *,
    image: Volume,
    structures: StructureSet,
    doses: Mapping[str, Volume],
    plans: Mapping[str, Any],
    point_lps: Any,
    check_dose: Volume | None,
    check_of: str,
    gamma: Volume | None,
    gamma_criteria: str | None,
    dvh_structures: Sequence[str] | None,
    check_label: str | None = None,
) -> np.ndarray:
    curves = {}
    if len(doses) > 1:  # every dose's structures on the threads together, the largest first
        from art.evaluate.polygons import prefetch_samples

        prefetch_samples(list(doses.values()), dvh_structures_of(structures, dvh_structures))
    for label, d in doses.items():
        c = dvh_curves(d, structures, names=dvh_structures, warnings=model.warnings if not curves else None)
        if c:
            curves[label] = c
    if curves:
        model.figures["Dose-volume histograms"] = ReportFigure(
            F.dvh_figure(curves, colors=structures),
            "Cumulative DVH per structure" + (" (scheduled dashed, adapted solid)." if len(curves) > 1 else "."),
        )
    p = _default_point(image, structures, list(plans.values())) if point_lps is None else np.asarray(point_lps, dtype=np.float64)
    if p.shape == (3,) and np.all(np.isfinite(p)) and bool(image.grid.contains(p)):  # the planes pass through a voxel centre
        p = image.grid.index_to_lps(np.clip(np.round(image.grid.lps_to_index(p)), 0, np.asarray(image.grid.shape) - 1))
    dmax = max(float(np.nanmax(d.array)) for d in doses.values())
    where = f"planes through ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm LPS{_orientation_note(plans)}"
    for label, d in doses.items():
        model.figures[f"Dose: {label}"] = ReportFigure(
            F.dose_wash_figure(image, d, structures, p, dose_max=dmax),
            f"{label} dose (Gy) on {where}; colour scale 0 to {dmax:.1f} Gy shared by all dose figures, below 10 % not coloured.",
        )
    labels = list(doses)
    if len(labels) == 2:
        a, b = labels
        model.figures[f"Dose difference: {b} − {a}"] = ReportFigure(
            F.difference_figure(image, doses[a], doses[b], structures, p, labels=(a, b)),
            f"{b} minus {a} dose (Gy) on {where}; red where the {b} dose is higher.",
        )
    by = f" by the {check_label}" if check_label else ""
    if check_dose is not None:
        model.figures[f"Independent dose check: {check_of}"] = ReportFigure(
            F.difference_figure(image, doses[check_of], check_dose, structures, p, labels=(check_of, "check")),
            f"Independent recalculation{by} minus the {check_of} dose (Gy) on {where}.",
        )
    if gamma is not None and not isinstance(gamma, Volume) and isinstance(getattr(gamma, "gamma", None), Volume):
        gamma_criteria = _criteria(getattr(gamma, "parameters", None)) or gamma_criteria  # an art.evaluate.gamma.GammaResult
        gamma = gamma.gamma
    if gamma is not None:
        if not isinstance(gamma, Volume):
            raise InputError(f"gamma must be a Volume or a GammaResult, got {type(gamma).__name__}")
        model.figures["Gamma"] = ReportFigure(
            F.gamma_figure(image, gamma, structures, criteria=gamma_criteria),
            f"Gamma index of the {check_of} dose against the independent recalculation{by}"
            + (f" ({gamma_criteria})" if gamma_criteria else "")
            + "; planes through the worst voxel; pass rate over evaluated voxels.",
        )
    mu, seg = _beam_tables(plans)
    model.mu_per_beam.update(mu)
    model.segments_per_beam.update(seg)
    if mu:
        model.figures["Monitor units per beam"] = ReportFigure(F.mu_bar_figure(mu), "MU per fraction per beam.")
    return p


#: The patient positions in words (DICOM PatientPosition).
POSITION_WORDS = {"HFS": "head first, supine", "FFS": "feet first, supine", "HFP": "head first, prone", "FFP": "feet first, prone"}


def position_text(plan: Any) -> str:
    """The plan's patient position in words, e.g. ``"FFS (feet first, supine)"`` (``""`` without one)."""
    pos = str(getattr(plan, "patient_position", "") or "")
    return f"{pos} ({POSITION_WORDS[pos]})" if pos in POSITION_WORDS else pos


def _orientation_note(plans: Mapping[str, Any]) -> str:
    """The plans' patient position as a note for the figure captions (``""`` when no plan gives one).

    The planes are drawn in patient orientation whatever the position (labels R/L, A/P, S/I
    are the patient's: :mod:`art.report.figures`); the note says so, so that a prone or
    feet-first patient is not read as lying as drawn.
    """
    positions = {str(getattr(pl, "patient_position", "") or "") for pl in plans.values() if pl is not None} - {""}
    if len(positions) != 1:
        return ""
    (pos,) = positions
    return (f"; patient {pos} ({POSITION_WORDS.get(pos, pos)}), shown in patient orientation "
            "(axial from the feet, coronal from the front, sagittal from the patient's left)")  # fmt: skip


def _criteria(params: Any) -> str | None:
    """Criteria text from a GammaResult's parameters, e.g. ``"3 %/2 mm, 10 % threshold, global"``."""
    try:
        text = f"{float(params['dose_percent']):g} %/{float(params['distance_mm']):g} mm, {float(params['threshold_percent']):g} % threshold"
    except (TypeError, KeyError, ValueError):
        return None
    if "global_norm" in params:
        text += ", global" if params["global_norm"] else ", local"
    return text


def _check_inputs(image: Any, structures: Any, doses: Mapping[str, Any]) -> None:
    if not isinstance(image, Volume):
        raise InputError(f"image must be a Volume, got {type(image).__name__}")
    if not isinstance(structures, StructureSet):
        raise InputError(f"structures must be a StructureSet, got {type(structures).__name__}")
    for name, d in doses.items():
        if not isinstance(d, Volume):
            raise InputError(f"{name} must be a Volume, got {type(d).__name__}")


def plan_report_model(
    image: Volume,
    structures: StructureSet,
    dose: Volume,
    goal_results: Sequence[Any],
    *,
    plan: Any = None,
    point_lps: Sequence[float] | None = None,
    title: str = "Treatment plan QA report",
    label: str = "reference",
    identifiers: Mapping[str, str] | None = None,
    provenance: Mapping[str, Any] | None = None,
    recommendation: str | None = None,
    check_dose: Volume | None = None,
    gamma: Any = None,
    gamma_criteria: str | None = "3 %/2 mm, 10 % threshold",
    timings: Mapping[str, float] | None = None,
    warnings: Sequence[str] | None = None,
    dvh_structures: Sequence[str] | None = None,
    independent_check: Mapping[str, Any] | None = None,
    check_label: str | None = None,
) -> ReportModel:
    """The report of one plan (``art plan``).

    Parameters
    ----------
    image : Volume
        Planning CT (HU).
    structures : StructureSet
        Planning structures (colours used in every figure).
    dose : Volume
        Plan dose, Gy (total over the course).
    goal_results : sequence of GoalResult or dict
        From :func:`art.evaluate.evaluate_goals` (or their ``to_dict()``).
    plan : art.plan.Plan, optional, keyword-only
        Gives the isocentre (default plane position) and, when it has MLC
        segments, the MU and segment tables.
    point_lps : (x, y, z) mm, optional, keyword-only
        Plane position of the image figures (default: the plan's isocentre,
        else the target's centroid, else the image centre).
    title, label : str, keyword-only
        Report title; plan label in the goal table (``"reference"``).
    identifiers : mapping, optional, keyword-only
        Shown as given (no patient data unless the caller passes it).
    provenance : mapping, optional, keyword-only
        :func:`art.provenance.provenance` output.
    recommendation : str, optional, keyword-only
    check_dose : Volume, optional, keyword-only
        Independent recalculation of ``dose``: adds a difference figure.
    gamma : Volume or art.evaluate.gamma.GammaResult, optional, keyword-only
        Gamma index of ``dose`` against ``check_dose`` (NaN where not
        evaluated), e.g. ``gamma_index(dose, check_dose)``: adds the gamma
        figure. Not computed here (its cost depends on the failing voxels).
    gamma_criteria : str, optional, keyword-only
        Caption text for the gamma criteria (a GammaResult's own parameters
        take precedence).
    timings : mapping stage -> s, optional, keyword-only
    warnings : sequence of str, optional, keyword-only
    dvh_structures : sequence of str, optional, keyword-only
        Structures in the DVH (default: all but EXTERNAL).
    independent_check : mapping, optional, keyword-only
        The independent check's table (:meth:`art.independent_check.DoseCheck.table`): its own section.
    check_label : str, optional, keyword-only
        Which algorithm computed ``check_dose``, e.g. ``"second algorithm (collapsed-cone
        convolution/superposition)"`` (:attr:`art.independent_check.DoseCheck.label`): named in the check's captions.

    Returns
    -------
    ReportModel
    """
    _check_inputs(image, structures, {"dose": dose})
    model = _plan_model(goal_results, label, title, identifiers, provenance, recommendation, timings, warnings)
    model.independent_check = dict(independent_check) if independent_check else None
    _common(
        model, image=image, structures=structures, doses={label: dose}, plans={label: plan}, point_lps=point_lps,
        check_dose=check_dose, check_of=label, gamma=gamma, gamma_criteria=gamma_criteria, dvh_structures=dvh_structures,
        check_label=check_label,
    )  # fmt: skip
    return model


def _plan_model(
    goal_results: Sequence[Any],
    label: str,
    title: str,
    identifiers: Mapping[str, str] | None,
    provenance: Mapping[str, Any] | None,
    recommendation: str | None,
    timings: Mapping[str, float] | None,
    warnings: Sequence[str] | None,
) -> ReportModel:
    """The model of :func:`plan_report_model` with its tables, before any figure.

    Parameters
    ----------
    goal_results : sequence of GoalResult or dict
        The plan's goal results, in protocol order.
    label : str
        The plan's label in the goal table.
    title, identifiers, provenance, recommendation, timings, warnings
        As given to :func:`plan_report_model` (copied).

    Returns
    -------
    ReportModel
    """
    return ReportModel(
        title=title,
        identifiers=dict(identifiers or {}),
        provenance=dict(provenance or {}),
        recommendation=recommendation,
        goals={label: [goal_row(r) for r in goal_results]},
        timings=dict(timings or {}),
        warnings=list(warnings or []),
    )


def adaptive_report_model(
    image: Volume,
    structures: StructureSet,
    scheduled_dose: Volume,
    adapted_dose: Volume,
    scheduled_goals: Sequence[Any],
    adapted_goals: Sequence[Any],
    *,
    scheduled_plan: Any = None,
    adapted_plan: Any = None,
    point_lps: Sequence[float] | None = None,
    fixed_image: Volume | None = None,
    moving_resampled: Volume | None = None,
    registration: Mapping[str, Any] | None = None,
    contour_qa: Sequence[Mapping[str, Any]] | None = None,
    check_dose: Volume | None = None,
    gamma: Any = None,
    gamma_criteria: str | None = "3 %/2 mm, 10 % threshold",
    title: str = "Daily adaptive re-plan QA report",
    identifiers: Mapping[str, str] | None = None,
    provenance: Mapping[str, Any] | None = None,
    recommendation: str | None = None,
    timings: Mapping[str, float] | None = None,
    warnings: Sequence[str] | None = None,
    dvh_structures: Sequence[str] | None = None,
    independent_check: Mapping[str, Any] | None = None,
    check_label: str | None = None,
) -> ReportModel:
    """The report of a daily adaptive re-plan (``art replan``): scheduled vs adapted.

    Parameters
    ----------
    image : Volume
        Today's image the doses were computed on (synthetic CT), HU.
    structures : StructureSet
        Today's structures.
    scheduled_dose, adapted_dose : Volume
        Gy (total over the course, like the goals).
    scheduled_goals, adapted_goals : sequence of GoalResult or dict
        Goal results of each plan, in protocol order.
    scheduled_plan, adapted_plan : art.plan.Plan, optional, keyword-only
        For the MU and segment tables and the default plane position.
    point_lps : (x, y, z) mm, optional, keyword-only
        Plane position (default: the isocentre, else the target centroid).
    fixed_image, moving_resampled : Volume, optional, keyword-only
        Registration QA images (e.g. the CBCT and the deformed planning CT on
        its grid): adds the checkerboard figure when both are given.
    registration : mapping, optional, keyword-only
        Registration QA values (couch shift mm, Jacobian min/max, folded
        voxels, TRE mm ...), shown as given.
    contour_qa : sequence of mapping, optional, keyword-only
        Rows such as ``{"structure", "dice_ai_vs_propagated", "confidence",
        "flagged"}``.
    check_dose : Volume, optional, keyword-only
        Independent recalculation of the adapted dose (difference figure).
    gamma : Volume or art.evaluate.gamma.GammaResult, optional, keyword-only
        Gamma of the adapted dose against ``check_dose``.
    gamma_criteria : str, optional, keyword-only
    title, identifiers, provenance, timings, warnings, dvh_structures, independent_check, check_label : keyword-only
        See :func:`plan_report_model`.
    recommendation : str, optional, keyword-only
        Default: :func:`recommend` on the two goal tables.

    Returns
    -------
    ReportModel
    """
    _check_inputs(image, structures, {"scheduled_dose": scheduled_dose, "adapted_dose": adapted_dose})
    model = _adaptive_model(
        scheduled_goals, adapted_goals, title, identifiers, provenance, recommendation, registration, contour_qa, timings, warnings
    )
    model.independent_check = dict(independent_check) if independent_check else None
    p = _common(
        model, image=image, structures=structures, doses={"scheduled": scheduled_dose, "adapted": adapted_dose},
        plans={"scheduled": scheduled_plan, "adapted": adapted_plan}, point_lps=point_lps, check_dose=check_dose,
        check_of="adapted", gamma=gamma, gamma_criteria=gamma_criteria, dvh_structures=dvh_structures, check_label=check_label,
    )  # fmt: skip
    if fixed_image is not None and moving_resampled is not None:
        _add_checkerboard(model, fixed_image, moving_resampled, structures, p)
    return model


def _adaptive_model(
    scheduled_goals: Sequence[Any],
    adapted_goals: Sequence[Any],
    title: str,
    identifiers: Mapping[str, str] | None,
    provenance: Mapping[str, Any] | None,
    recommendation: str | None,
    registration: Mapping[str, Any] | None,
    contour_qa: Sequence[Mapping[str, Any]] | None,
    timings: Mapping[str, float] | None,
    warnings: Sequence[str] | None,
) -> ReportModel:
    """The model of :func:`adaptive_report_model` with its tables, before any figure.

    Parameters
    ----------
    scheduled_goals, adapted_goals : sequence of GoalResult or dict
        Goal results of each plan, in protocol order.
    title, identifiers, provenance, registration, contour_qa, timings, warnings
        As given to :func:`adaptive_report_model` (copied).
    recommendation : str or None
        None: :func:`recommend` on the two goal tables.

    Returns
    -------
    ReportModel
    """
    goals = {"scheduled": [goal_row(r) for r in scheduled_goals], "adapted": [goal_row(r) for r in adapted_goals]}
    return ReportModel(
        title=title,
        identifiers=dict(identifiers or {}),
        provenance=dict(provenance or {}),
        recommendation=recommendation if recommendation is not None else recommend(goals),
        goals=goals,
        registration=dict(registration) if registration else None,
        contour_qa=[dict(r) for r in (contour_qa or [])],
        timings=dict(timings or {}),
        warnings=list(warnings or []),
    )


def _add_checkerboard(model: ReportModel, fixed_image: Volume, moving_resampled: Volume, structures: StructureSet, p: np.ndarray) -> None:
    """Add the registration QA figure ``"Registration: checkerboard"`` to ``model``.

    Parameters
    ----------
    model : ReportModel
    fixed_image, moving_resampled : Volume
        The daily image and the deformed planning CT on its grid (HU).
    structures : StructureSet
        Outlined only when on the grid of ``fixed_image``.
    p : (3,) ndarray
        LPS point (mm) of the other image figures; the planes pass through it
        when it lies in ``fixed_image`` (else through its centre).
    """
    model.figures["Registration: checkerboard"] = ReportFigure(
        F.checkerboard_figure(
            fixed_image,
            moving_resampled,
            p if bool(fixed_image.grid.contains(p)) else None,
            structures=structures if structures.grid.same_as(fixed_image.grid) else None,
            labels=("CBCT", "deformed CT"),
        ),
        "Checkerboard (top) and colour overlay (bottom) of the daily image and the deformed planning CT; "
        "misaligned edges break at the squares' borders or show magenta/green fringes.",
    )
