"""``art course``: a reference and the finished ``art replan`` folders of the treated fractions → the accumulated course.

:func:`course_job` reads and checks everything first (:mod:`art.course.fraction`: a fraction
given twice, of another patient, registered to another planning CT, without its ``DREG.dcm``
… is an :class:`~art.errors.InputError` naming the folder, and nothing is written), then
accumulates the doses on the planning CT (:mod:`art.course.accumulate`) and writes, atomically
(:func:`art.outputs.atomic_output_dir`):

* ``RTDOSE.dcm`` — the cumulative dose delivered so far (Gy) on the planning CT's export grid, in
  its frame of reference, DoseSummationType ``MULTI_PLAN``, ReferencedRTPlanSequence listing every
  delivered plan once (each fraction's adapted RTPLAN, or the reference RTPLAN for a scheduled
  day), DoseComment ``accumulated over N fractions by <method>``;
* ``summary.json`` — per fraction, cumulative and projected goals, organ volumes, target
  shifts, the uncertainty between the two methods, warnings (docs/course.md);
* ``report.html`` — :func:`art.course.report.write_course_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from art.errors import InputError
from art.outputs import check_output_dir
from art.progress import Stages

__all__ = ["course_job", "parse_delivered", "write_accumulated_rtdose"]

#: Integral doses of the two methods differing by more than this (percent) are flagged.
INTEGRAL_WARNING_PERCENT = 2.0

#: An inverted deformation further than this (mm) from an exact inverse is flagged.
RESIDUAL_WARNING_MM = 0.5


def parse_delivered(items: Any, n_fractions: int) -> dict[int, str]:
    """``{index: plan}`` from a mapping or from ``"N=adapted"``/``"N=scheduled"`` texts (1-based fraction positions)."""
    from art.course.fraction import DELIVERED

    if items is None:
        return {}
    pairs = list(items.items()) if isinstance(items, dict) else []
    if not isinstance(items, dict):
        for text in items:
            k, sep, plan = str(text).partition("=")
            if not sep:
                raise InputError(f"delivered: expected N=adapted or N=scheduled, got {text!r}")
            pairs.append((k.strip(), plan.strip()))
    out: dict[int, str] = {}
    for k, plan in pairs:
        try:
            idx = int(k)
        except (TypeError, ValueError):
            raise InputError(f"delivered: fraction number must be an integer, got {k!r}") from None
        if not 1 <= idx <= n_fractions:
            raise InputError(f"delivered: fraction {idx} is not one of the {n_fractions} fractions given")
        if plan not in DELIVERED:
            raise InputError(f"delivered: fraction {idx}: plan must be 'adapted' or 'scheduled', got {plan!r}")
        if idx in out:
            raise InputError(f"delivered: fraction {idx} is given twice")
        out[idx] = str(plan)
    return out


def _read_inputs(reference_dir: Path, fraction_dirs: list, delivered: dict, stages: Stages) -> tuple[Any, list, Any, dict]:
    """Reference, fractions (checked), machine and the input hashes."""
    from art.course.fraction import check_course, check_folders, read_fraction
    from art.dose import load_machine
    from art.provenance import hash_inputs
    from art.reference import load_reference

    reference = load_reference(reference_dir)
    check_folders(fraction_dirs)
    machine = load_machine()
    fractions = []
    for k, folder in enumerate(fraction_dirs, start=1):
        fractions.append(read_fraction(folder, reference, index=k, delivered=delivered.get(k), machine=machine))
    check_course(fractions)
    stages.note(f"{len(fractions)} fraction(s): " + ", ".join(f"{f.folder.name} {f.delivered}" for f in fractions))
    hashes = hash_inputs(ct=reference.paths["ct"], structures=reference.paths["rtstruct"], plan=reference.paths["rtplan"],
                          protocol=reference.paths["protocol"])  # fmt: skip
    hashes.update(hash_inputs(**{f"fraction_{f.index:02d}": f.folder for f in fractions}))
    return reference, fractions, machine, hashes


def write_accumulated_rtdose(path: Path, course: Any) -> Any:
    """``RTDOSE.dcm`` of the cumulative dose (see the module docstring); returns the dataset."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from art.io.dicom_common import save_dataset
    from art.io.rtdose import RT_PLAN_STORAGE, dose_to_dataset

    n = len(course.fractions)
    comment = f"accumulated over {n} fraction{'s' if n != 1 else ''} by {course.method}"
    ds = dose_to_dataset(course.dose, course.reference.ct, summation="MULTI_PLAN", comment=comment)
    items = []
    for uid in dict.fromkeys(f.plan_sop_instance_uid for f in course.fractions if f.plan_sop_instance_uid):
        it = Dataset()
        it.ReferencedSOPClassUID = RT_PLAN_STORAGE
        it.ReferencedSOPInstanceUID = uid
        items.append(it)
    ds.ReferencedRTPlanSequence = Sequence(items)
    save_dataset(ds, Path(path))
    return ds


def _fraction_rows(course: Any, goals: dict) -> list[dict]:
    from art.course.accumulate import fraction_record

    rows = []
    for f, g, res in zip(course.fractions, goals["fractions"], course.residuals_mm):
        rows.append({
            "index": f.index, "folder": f.folder.name, "delivered_plan": f.delivered,
            "recommended_plan": (f.summary.get("recommendation") or {}).get("plan"),
            "plan_sop_instance_uid": f.plan_sop_instance_uid, "plan_label": f.plan_label, "goals": g,
            **fraction_record(f, course.reference), "dose_warp_residual_mm": None if res != res else round(float(res), 4),
        })  # fmt: skip
    return rows


def _warnings(course: Any, n_planned: int) -> list[str]:
    out = []
    n = len(course.fractions)
    if n > n_planned:
        out.append(f"{n} fractions delivered, more than the {n_planned} planned: the projection is the cumulative dose")
    n_plan = int(course.reference.plan.fractions)
    if n_plan != n_planned:
        out.append(f"the reference RTPLAN is for {n_plan} fractions, the protocol for {n_planned}: the planned values are scaled to {n_planned}")
    d = course.integral_difference_percent
    if d == d and abs(d) > INTEGRAL_WARNING_PERCENT:
        out.append(f"the integral doses of the two accumulation methods differ by {d:+.1f} %: review the deformations")
    for f, res in zip(course.fractions, course.residuals_mm):
        q = ((f.summary.get("registration") or {}).get("deformable_quality") or {})
        folded = int(q.get("folded_voxels_cbct", 0) or 0) + int(q.get("folded_voxels_ct", 0) or 0)
        if folded:
            out.append(f"fraction {f.index} ({f.folder.name}): its deformation folds {folded} voxels; the mapped dose is less certain there")
        if res == res and res > RESIDUAL_WARNING_MM:
            out.append(f"fraction {f.index} ({f.folder.name}): the deformation inverts only within {res:.2f} mm")
        rec = (f.summary.get("recommendation") or {}).get("plan")
        if rec in ("adapted", "scheduled") and rec != f.delivered:
            out.append(f"fraction {f.index} ({f.folder.name}): the {f.delivered} plan was delivered (the re-plan recommended the {rec} plan)")
    return out


def _summary(course: Any, goals: dict, *, hashes: dict, parameters: dict, n_planned: int) -> dict:
    from art.provenance import provenance

    return {
        "kind": "course", "provenance": provenance(inputs=hashes, parameters=parameters),
        "method": course.method, "other_method": course.other_method, "projection_basis": parameters["projection"],
        "fractions_planned": n_planned, "fractions_delivered": len(course.fractions),
        "fractions": _fraction_rows(course, goals),
        "cumulative": goals["cumulative"], "projection": goals["projection"],
        "uncertainty": {"integral_dose_difference_percent": _rounded(course.integral_difference_percent, 3),
                        "between": [course.method, course.other_method] if course.other_method else [course.method]},
        "dose": {"grid_spacing_mm": [round(float(v), 4) for v in course.grid.spacing], "grid_shape_zyx": list(course.grid.shape),
                 "max_gy": round(float(course.dose.array.max(initial=0.0)), 3), "frame": "the planning CT's",
                 "file": "RTDOSE.dcm (MULTI_PLAN)"},
        "warnings": _warnings(course, n_planned),
    }  # fmt: skip


def _planned_engine(fractions: list) -> str:
    """The dose engine of the planned dose: the one of every fraction's final doses, pencil beam when they differ or none is given."""
    from art.course.fraction import fraction_engine
    from art.dose.engines import DEFAULT_ENGINE

    found = {fraction_engine(f.summary) for f in fractions}
    return found.pop() if len(found) == 1 else DEFAULT_ENGINE


def _rounded(v: float, nd: int) -> float | None:
    return None if v != v else round(float(v), nd)


def course_job(reference_dir: str | Path, fraction_dirs: list, out: str | Path, *, method: str = "pull", projection: str = "mean",
               delivered: Any = None, grid_mm: float = 2.5, show: bool = True) -> dict:  # fmt: skip
    """``art course``: accumulate the treated fractions on the planning CT; write RTDOSE, summary.json, report.html.

    Parameters
    ----------
    reference_dir : str or Path
        The reference folder the fractions were re-planned from (CT, RTSTRUCT, RTPLAN, protocol.toml).
    fraction_dirs : list of str or Path
        Finished ``art replan`` folders, in treatment order.
    out : str or Path
        Result folder (atomic: nothing is left there on error).
    method : {"pull", "energy"}, keyword-only
    projection : {"mean", "last"}, keyword-only
    delivered : dict or list of str, optional, keyword-only
        The plan delivered on given fractions: ``{2: "scheduled"}`` or ``["2=scheduled"]``
        (1-based positions); the others delivered their summary's recommended plan.
    grid_mm : float, keyword-only
        The planning CT's export-grid spacing of the accumulated dose (mm).
    show : bool, keyword-only
        Progress on stderr.

    Returns
    -------
    dict
        The summary (also ``summary.json``).
    """
    from art.course.accumulate import METHODS, PROJECTIONS, accumulate, course_goals, dvh_curves, planned_dose
    from art.course.report import write_course_report
    from art.outputs import atomic_output_dir
    from art.summary import write_summary

    stages = Stages(show=show)
    if method not in METHODS or projection not in PROJECTIONS:
        raise InputError(f"method must be one of {', '.join(METHODS)} and projection one of {', '.join(PROJECTIONS)}, got {method!r}, {projection!r}")
    fraction_dirs = [Path(p) for p in fraction_dirs]
    which = parse_delivered(delivered, len(fraction_dirs))
    check_output_dir(out)
    with stages.stage("read inputs"):
        reference, fractions, machine, hashes = _read_inputs(Path(reference_dir), fraction_dirs, which, stages)
    with stages.stage("accumulate"):
        course = accumulate(reference, fractions, method=method, grid_mm=grid_mm)
    n_planned = int(reference.protocol.prescription.fractions)
    engine = _planned_engine(fractions)
    with stages.stage("planned dose"):
        planned = planned_dose(reference, course.grid, machine=machine, engine=engine)
    with stages.stage("goals"):
        goals = course_goals(course, fractions_planned=n_planned, projection=projection, planned=planned)
    parameters = {"method": method, "projection": projection, "grid_mm": float(grid_mm), "delivered": {str(k): v for k, v in which.items()},
                  "planned_dose_engine": engine}  # fmt: skip
    summary = _summary(course, goals, hashes=hashes, parameters=parameters, n_planned=n_planned)
    with atomic_output_dir(out) as tmp:
        with stages.stage("export"):
            write_accumulated_rtdose(tmp / "RTDOSE.dcm", course)
        with stages.stage("report"):
            write_course_report(tmp / "report.html", {**summary, "dvh": dvh_curves(course, planned)})
        summary["timings_s"] = dict(stages.timings)
        write_summary(summary, tmp / "summary.json")
    return summary
