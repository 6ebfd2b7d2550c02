"""Jobs: files on disk in, a complete result folder out (what the ``art`` commands run).

Each job reads and checks its inputs, runs the stages, and writes its result
folder atomically (:func:`art.outputs.atomic_output_dir`): on any error nothing
is left in ``--out``. Patient names and IDs are never printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from art.outputs import check_output_dir
from art.privacy import identifiers
from art.progress import Stages


def _check_references(folder: Path, images: list) -> None:
    """Refuse an export whose objects do not reference each other and the images correctly."""
    from art.errors import InputError
    from art.io.references import check_result_references

    problems = check_result_references(folder, images=images)
    if problems:
        raise InputError(f"exported objects fail the reference check ({len(problems)} problem(s)): {problems[0]}; nothing exported")


def _announce_patient(stages: Stages, patient: Any) -> None:
    """Name the patient on the terminal only with ``--verbose-phi``."""
    from art.privacy import identifiers

    ids = identifiers(patient)
    if ids:
        stages.note(", ".join(f"{k}: {v}" for k, v in ids.items()))


def _machine_record(machine: Any) -> dict:
    from art.provenance import sha256_file

    path = getattr(machine, "path", None) or getattr(machine, "source", None)
    rec = {"name": machine.name}
    if path and Path(path).is_file():
        rec["sha256"] = sha256_file(path)
        rec["file"] = Path(path).name
    return rec


def plan_job(
    ct_dir: Path,
    structures_path: Path,
    protocol_path: Path,
    out: Path,
    *,
    show: bool = True,
    machine_path: Path | None = None,
    optimizer_options: dict | None = None,
    final_grid_mm: float | None = None,
    final_engine: str = "pb", check_engine: str | None = None, pdf: bool = True,
) -> dict:
    """``art plan``: planning CT + RTSTRUCT + protocol → RTPLAN, RTDOSE, RTSTRUCT, report.html (+ .pdf), summary.json.

    ``final_engine`` computes the final dose; ``check_engine`` its independent check (default: the other algorithm).
    ``pdf=False``: no report.pdf (``art demo`` prints it itself, beside the re-plan).
    Returns the summary (dict, also written as ``summary.json``).
    """
    from art.dose import load_machine
    from art.independent_check import checked_engines, staged_check
    from art.io import read_image_series, read_rtstruct
    from art.protocol import load_protocol
    from art.outputs import atomic_output_dir
    from art.provenance import hash_inputs, provenance
    from art.results import write_plan_files
    from art.summary import delivery_table, goal_table, write_summary
    from art.workflow import check_structures, make_plan

    stages = Stages(show=show)
    check_output_dir(out)
    final_engine, check_engine = checked_engines(final_engine, check_engine)  # before any work
    with stages.stage("read inputs"):
        protocol = load_protocol(protocol_path)
        ct = read_image_series(ct_dir)
        position = ct.require_patient_position()  # HFS, FFS, HFP or FFP: the beams' geometry
        structures = read_rtstruct(structures_path, ct)
        check_structures(protocol, structures, where=Path(structures_path).name)
        _announce_patient(stages, ct.patient)
        machine = load_machine(machine_path)
        hashes = hash_inputs(ct=ct_dir, structures=structures_path, protocol=protocol_path, machine=machine_path)
    result = make_plan(ct.volume, structures, protocol, machine=machine, stages=stages, optimizer_options=optimizer_options,
                       final_grid_mm=final_grid_mm, patient_position=position, final_engine=final_engine)  # fmt: skip
    check = staged_check(ct.volume, result, result.structures or structures, protocol, machine, engine=check_engine, stages=stages)
    dvh = _prefetch_dvh([result.dose], result.structures or structures)
    with atomic_output_dir(out) as tmp:
        with stages.stage("export"):
            write_plan_files(tmp, plan=result.plan, dose=result.dose, ct=ct, structures=structures, protocol=protocol, machine=machine, label="REFERENCE")
            _check_references(tmp, [ct])
        summary = {
            "kind": "reference",
            "provenance": provenance(inputs=hashes, parameters={**result.parameters, "machine": _machine_record(machine)}),
            "protocol": {"name": protocol.name, "source": Path(protocol_path).name, "text": Path(protocol_path).read_text(encoding="utf-8")},
            "plans": {"reference": {"goals": goal_table(result.goals), "fluence_goals": goal_table(result.fluence_goals), "delivery": delivery_table(result.plan)}},
            "evaluation": evaluation_record(result.dose, result.engine),
            "independent_check": check.record(),
            "priority1_met": result.priority1_met,
            "optimization": result.optimization.to_dict() if hasattr(result.optimization, "to_dict") else {},
            "sequencing": result.sequencing,
            "warnings": plan_warnings(result) + ([check.warning] if check.warning else []),
            "timings_s": dict(stages.timings),
        }
        with stages.stage("report"):
            from art.report import plan_report_model, write_report
            from art.report.build import position_text
            from art.report.pdf import print_pdf_or_note

            dvh.exception()  # waits for the DVH samples taken during the export
            model = plan_report_model(
                ct.volume, result.structures or structures, result.dose, result.goals, plan=result.plan, title="Reference plan QA report",
                identifiers={**identifiers(ct.patient), "Patient position": position_text(result.plan)},
                provenance=summary["provenance"], timings=stages.timings, warnings=summary["warnings"],
                check_dose=check.dose, gamma=check.gamma, independent_check=check.table(), check_label=check.label,
            )
            model.evaluation = evaluation_text(result.dose, result.engine)
            write_report(model, tmp / "report.html")
            if pdf:
                print_pdf_or_note(tmp / "report.html", stages)
        summary["timings_s"] = dict(stages.timings)
        write_summary(summary, tmp / "summary.json")
    return summary


def replan_job(reference_dir: Path, cbct_dir: Path, out: Path, *, show: bool = True, contour_model: Path | None = None,
               final_grid_mm: float | None = None, registration: Path | None = None, final_engine: str = "pb",
               check_engine: str | None = None) -> dict:  # fmt: skip
    """``art replan``: reference folder + today's CBCT → adapted RTPLAN, RTDOSE, daily RTSTRUCT, REG, report, summary.

    The summary compares the scheduled plan (the reference segments and MU on today's
    anatomy) with the adapted plan goal by goal and recommends one. A CBCT in its own
    frame of reference needs the Spatial Registration linking it to the planning CT
    (``registration``, or the one REG file in the CBCT folder); every daily object is
    then in the CBCT's frame. ``final_engine`` computes the scheduled and adapted final doses,
    ``check_engine`` the independent check (default: the other algorithm).
    """
    from art.adapt import adapt
    from art.independent_check import checked_engines
    from art.outputs import atomic_output_dir
    from art.results import write_plan_files
    from art.summary import recommend, write_summary

    stages = Stages(show=show)
    check_output_dir(out)
    final_engine, check_engine = checked_engines(final_engine, check_engine)
    with stages.stage("read inputs"):
        reference, cbct, link, machine, model, hashes = _read_replan_inputs(reference_dir, cbct_dir, contour_model, stages, registration)
    result = adapt(reference, cbct, machine=machine, stages=stages, contour_model=model, final_grid_mm=final_grid_mm,
                   frame_link=None if link is None else link.matrix_4x4, final_engine=final_engine, check_engine=check_engine)  # fmt: skip
    rec = recommend(result.scheduled_goals, result.adapted.goals)
    dvh = _prefetch_dvh([result.scheduled_dose, result.adapted.dose], result.adapted.structures or result.daily_structures)
    with atomic_output_dir(out) as tmp:
        with stages.stage("export"):
            sct = _write_synthetic_ct(tmp, result, reference, cbct)
            write_plan_files(
                tmp, plan=result.adapted.plan, dose=result.adapted.dose, ct=cbct, structures=result.daily_structures,
                protocol=reference.protocol, machine=machine, label="ADAPTED", rtstruct_label="daily", dose_image=sct,
            )  # fmt: skip
            _write_registration(tmp, result, reference, cbct)
            _check_references(tmp, [cbct, reference.ct])
        summary = _replan_summary(result, reference, machine, hashes, rec, stages)
        summary["synthetic_ct"] = _synthetic_ct_record(sct)
        summary["registration"]["frame_link"] = _frame_link_record(link)
        with stages.stage("report"):
            dvh.exception()
            _write_replan_report(tmp, result, summary, reference, cbct, stages)
        summary["timings_s"] = dict(stages.timings)
        summary["total_time_s"] = stages.total_s
        write_summary(summary, tmp / "summary.json")
    return summary


def _read_replan_inputs(reference_dir: Path, cbct_dir: Path, contour_model: Path | None, stages: Stages, registration: Path | None) -> tuple:
    """Reference folder, today's CBCT (the plan's patient position, overlapping the CT; in its frame, or linked by a REG), machine and contour model.

    Returns ``(reference, cbct, frame link or None, machine, model or None, input hashes)``.
    """
    from art.dose import load_machine
    from art.errors import InputError
    from art.io import read_image_series
    from art.io.image_series import check_daily_position
    from art.io.registration_frames import frame_link_for
    from art.provenance import hash_inputs
    from art.reference import load_reference

    reference = load_reference(reference_dir)
    cbct = read_image_series(cbct_dir)
    check_daily_position(reference.plan, cbct)  # before anything runs; adapt checks it again for library callers
    link = frame_link_for(cbct, reference.ct, cbct_dir=cbct_dir, registration=registration)
    if link is not None:
        stages.note(f"CBCT in its own frame of reference: linked to the planning CT by {link.path.name}")
    if _overlap_fraction(reference.ct.grid, cbct.grid, None if link is None else link.matrix_4x4) < 0.2:
        raise InputError("the CBCT does not overlap the planning CT (less than 20 % of its volume)", path=cbct_dir)
    _announce_patient(stages, reference.ct.patient)
    machine = load_machine()
    model = None
    if contour_model is not None:
        from art.contouring import load_model

        model = load_model(contour_model)
    hashes = hash_inputs(
        ct=reference.paths["ct"], structures=reference.paths["rtstruct"], plan=reference.paths["rtplan"],
        protocol=reference.paths["protocol"], cbct=cbct_dir, registration=None if link is None else link.path,
    )  # fmt: skip
    return reference, cbct, link, machine, model, hashes


def _replan_summary(result: Any, reference: Any, machine: Any, hashes: dict, rec: dict, stages: Stages) -> dict:
    """summary.json of ``art replan``: provenance, protocol, scheduled vs adapted goals, recommendation, QA records."""
    from art.provenance import provenance
    from art.summary import delivery_table, goal_table

    protocol = reference.protocol
    return {
        "kind": "adaptive",
        "provenance": provenance(inputs=hashes, parameters={"machine": _machine_record(machine), **result.adapted.parameters}),
        "protocol": {"name": protocol.name, "source": reference.paths["protocol"].name, "text": reference.paths["protocol"].read_text(encoding="utf-8")},
        "plans": {
            "scheduled": {"goals": goal_table(result.scheduled_goals), "delivery": delivery_table(result.scheduled_plan)},
            "adapted": {"goals": goal_table(result.adapted.goals), "delivery": delivery_table(result.adapted.plan),
                        "fluence_goals": goal_table(result.adapted.fluence_goals)},
        },
        "recommendation": rec,
        "priority1_met": rec["adapted_priority1_met"],
        "evaluation": evaluation_record(result.adapted.dose, result.adapted.engine),
        "registration": _registration_record(result),
        "contours": {"structures": result.contour_qa, "flagged": result.flagged,
                     "truncated": [r["structure"] for r in result.contour_qa if r.get("truncated")]},
        "independent_check": result.check.record(),
        "sequencing": result.adapted.sequencing,
        "warnings": plan_warnings(result.adapted, "adapted plan: ") + ([result.check.warning] if result.check.warning else []),
        "timings_s": dict(stages.timings),
    }  # fmt: skip


def _write_replan_report(tmp: Path, result: Any, summary: dict, reference: Any, cbct: Any, stages: Stages) -> None:
    """The adaptive QA report (``report.html``, and ``report.pdf`` where Chromium is available) with its warnings."""
    from art.report import adaptive_report_model, write_report
    from art.report.build import position_text
    from art.report.pdf import print_pdf_or_note

    rec = summary["recommendation"]
    why = {r["structure"]: r.get("review") for r in result.contour_qa}
    warnings = [f"{n}: {why.get(n) or 'AI contour below the confidence threshold or implausible; the propagated contour was used'} — review it"
                for n in result.flagged]  # fmt: skip
    q = result.deformable.quality
    folded = int(q.get("folded_voxels_cbct", 0)) + int(q.get("folded_voxels_ct", 0))
    if folded:
        warnings.append(f"deformable registration folds {folded} voxels (Jacobian determinant ≤ 0): review the registration before using the adapted plan")
    warnings += summary["warnings"]
    model = adaptive_report_model(
        result.synthetic_ct, result.adapted.structures or result.daily_structures, result.scheduled_dose, result.adapted.dose,
        result.scheduled_goals, result.adapted.goals, scheduled_plan=result.scheduled_plan, adapted_plan=result.adapted.plan,
        point_lps=result.isocenter_lps, fixed_image=cbct.volume, moving_resampled=result.synthetic_ct,
        registration=_registration_display(summary["registration"]), contour_qa=_contour_rows(result.contour_qa),
        check_dose=result.check.dose, gamma=result.check.gamma, independent_check=result.check.table(), check_label=result.check.label,
        recommendation=f"{rec['plan']} plan: {rec['reason']}", provenance=summary["provenance"],
        identifiers={**identifiers(reference.ct.patient), "Patient position": position_text(result.adapted.plan)},
        timings=stages.timings, warnings=warnings,
    )  # fmt: skip
    model.evaluation = evaluation_text(result.adapted.dose, result.adapted.engine)
    sct = summary.get("synthetic_ct")
    if sct:
        model.evaluation += (
            f" The scheduled and adapted doses are computed on the synthetic CT (the planning CT deformably registered to "
            f"today's CBCT), exported as the CT series {sct['folder']}/ ({sct['files']} slices, DERIVED, the CBCT's grid and "
            "frame of reference) and referenced by the RTPLAN and RTDOSE: recompute with "
            f"`{sct['recompute']}`."
        )
    write_report(model, tmp / "report.html")
    print_pdf_or_note(tmp / "report.html", stages)


def plan_warnings(result: Any, prefix: str = "") -> list[str]:
    """What a person must know about a plan (summary.json ``warnings``, the report's warnings): a normalisation
    that stopped short or was clamped (:func:`art.final_dose.normalisation`), priority-1 goals not met."""
    from art.final_dose import normalisation_warnings

    out = normalisation_warnings(result.sequencing)
    out += [f"priority-1 goal not met: {g.structure} {g.metric} {g.goal}" for g in result.goals if g.priority == 1 and not g.met]
    return [prefix + w for w in out]


def _contour_rows(qa: list) -> list[dict]:
    """The contour QA rows as the report's table shows them: the field-of-view record as text, the review reason left to the warnings."""
    rows = []
    for r in qa:
        row = {k: v for k, v in r.items() if k != "review"}
        t = row.get("truncated")
        if isinstance(t, dict):
            row["truncated"] = f"{', '.join(t['edges'])}: {t['added_from_propagated_percent']:g} % added from propagated"
        rows.append(row)
    return rows


def evaluation_record(dose: Any, engine: str = "pb") -> dict:
    """summary.json's record of how the goals were evaluated: the final dose's engine, grid and the method."""
    from art.dose.engines import ENGINE_LABELS

    g = dose.grid
    return {
        "dose": f"final dose computed by the {ENGINE_LABELS[engine]} engine on the export grid (the RTDOSE written)",
        "engine": engine, "engine_name": ENGINE_LABELS[engine],
        "grid_spacing_mm": [round(float(v), 4) for v in g.spacing], "grid_shape_zyx": list(g.shape),
        "structures": "RTSTRUCT polygons (given, or traced as exported), 0.25 mm in-plane sub-cells, half-slice end caps",
        "dose_sampling": "trilinear at the sample points",
    }  # fmt: skip


def evaluation_text(dose: Any, engine: str = "pb") -> str:
    """The report's line on how every goal and DVH was computed (by which engine, on which grid)."""
    from art.dose.engines import ENGINE_LABELS

    sp = dose.grid.spacing
    return (
        f"Every goal and DVH is computed on the exported RT Dose: the final dose computed by the {ENGINE_LABELS[engine]} engine ({engine}) on a "
        f"{sp[2]:g} × {sp[1]:g} × {sp[0]:g} mm grid (x × y × z, {dose.grid.shape[2]} × {dose.grid.shape[1]} × {dose.grid.shape[0]} voxels), "
        "structures from their RTSTRUCT polygons (0.25 mm in-plane sub-cells, half-slice end caps), dose interpolated trilinearly. "
        "Dmax is the near-maximum D0.03cc. `art check` on the exported files gives the same values."
    )


def _overlap_fraction(a: Any, b: Any, b_to_a: Any = None) -> float:
    """Fraction of grid ``b``'s bounding box (LPS, axis-aligned) inside grid ``a``'s; ``b_to_a`` (4 × 4) maps ``b``'s frame into ``a``'s."""
    import numpy as np

    pa, pb = a.corners_lps(), b.corners_lps()
    if b_to_a is not None:
        pb = pb @ np.asarray(b_to_a)[:3, :3].T + np.asarray(b_to_a)[:3, 3]
    alo, ahi, blo, bhi = pa.min(axis=0), pa.max(axis=0), pb.min(axis=0), pb.max(axis=0)
    inter = np.clip(np.minimum(ahi, bhi) - np.maximum(alo, blo), 0, None)
    return float(np.prod(inter) / np.prod(np.maximum(bhi - blo, 1e-9)))


def _registration_record(result: Any) -> dict:
    import numpy as np

    rig, de = result.rigid, result.deformable
    q = dict(getattr(de, "quality", {}) or {})
    return {
        "couch_shift_mm": np.round(np.asarray(rig.couch_shift_mm, float), 2).tolist(),
        "rotation_deg": np.round(np.asarray(rig.rotation_deg, float), 2).tolist(),
        "matrix_cbct_to_ct": np.asarray(rig.matrix_4x4, float).tolist(),
        "deformable_quality": q,
        "deformable_attempts": list(getattr(de, "info", {}).get("attempts", [])),
    }


def _frame_link_record(link: Any) -> dict | None:
    """summary.json's record of the REG that linked a CBCT in its own frame to the planning CT (None: one frame)."""
    if link is None:
        return None
    return {"file": link.path.name, "matrix_cbct_to_ct": [[round(float(v), 6) for v in row] for row in link.matrix_4x4],
            "use": "starting point of the rigid registration (CBCT frame LPS mm -> planning CT LPS mm)"}  # fmt: skip


def _registration_display(rec: dict) -> dict:
    """The summary's registration record as shown in the report (plain numbers and text)."""
    import numpy as np

    out = {
        "couch shift (mm, LPS x/y/z)": ", ".join(f"{v:+.1f}" for v in rec["couch_shift_mm"]),
        "rotation (deg)": ", ".join(f"{v:+.2f}" for v in rec["rotation_deg"]),
    }
    if rec.get("frame_link"):
        out["CBCT frame linked to the planning CT by"] = f"{rec['frame_link']['file']} (couch shift and rotation measured from it)"
    for k, v in rec["deformable_quality"].items():
        out[k] = round(float(v), 3) if isinstance(v, (int, float, np.floating, np.integer)) else v
    return out


#: Sub-folder of an ``art replan`` result holding the synthetic CT the adapted dose was computed on.
SYNTHETIC_CT_FOLDER = "sCT"


def _write_synthetic_ct(folder: Path, result: Any, reference: Any, cbct: Any) -> Any:
    """The synthetic CT of the day as a derived CT series in ``folder/sCT`` (:func:`art.io.derived_series.write_synthetic_ct`)."""
    from art.io.derived_series import write_synthetic_ct
    from art.registration.synthetic_ct import source_slices

    # the treatment position: the adapted plan's, which the CBCT shares (checked by adapt)
    return write_synthetic_ct(
        result.synthetic_ct, cbct, reference.ct, folder / SYNTHETIC_CT_FOLDER,
        ct_slices=source_slices(reference.ct.grid, result.deformable), patient_position=result.adapted.plan.patient_position,
    )  # fmt: skip


def _synthetic_ct_record(sct: Any) -> dict:
    """summary.json's record of the exported synthetic CT."""
    g = sct.grid
    return {
        "folder": SYNTHETIC_CT_FOLDER,
        "files": len(sct.files),
        "description": sct.series_description,
        "what": "the planning CT deformably registered to the daily CBCT, on the CBCT's grid and frame of reference "
                "(DICOM CT, ImageType DERIVED\\SECONDARY\\AXIAL); the adapted RTPLAN and RTDOSE were computed on it "
                "and reference its slices (ReferencedImageSequence)",
        "grid_shape_zyx": list(g.shape),
        "grid_spacing_mm": [round(float(v), 4) for v in g.spacing],
        "recompute": "art dose --ct sCT --plan RTPLAN.dcm --structures RTSTRUCT.dcm",
    }  # fmt: skip


def _write_registration(folder: Path, result: Any, reference: Any, cbct: Any) -> None:
    """``REG.dcm`` and ``DREG.dcm`` (DICOM PS3.3 C.20.2 / C.20.3; docs/registration.md).

    REG: registered RCS = the planning CT's frame, the CBCT's item carries the rigid CBCT → CT
    matrix. DREG: registered RCS = the CBCT's frame (the daily objects' frame), source = the
    planning CT; grid = the CBCT grid, Pre Deformation Matrix = the rigid CBCT → CT matrix, the
    vectors the rest of ``cbct_to_ct`` — the map that pulled the planning CT and contours onto today.
    """
    from art.io.registration import write_deformable_registration, write_spatial_registration

    write_spatial_registration(result.rigid.matrix_4x4, reference.ct, cbct, folder / "REG.dcm")
    field = result.deformable.cbct_to_ct
    write_deformable_registration(
        field.array if hasattr(field, "array") else field, cbct.grid, folder / "DREG.dcm", registered=cbct, source=reference.ct,
        pre_matrix=result.rigid.matrix_4x4, description="daily CBCT <- planning CT (samples the CT into the CBCT frame)",
    )  # fmt: skip


#: The demo fraction: a visibly different day (full bladder, rectal gas, prostate shift).
DEMO_FRACTION = {
    "bladder_filling": 0.6,
    "rectal_gas": True,
    "rectal_filling": 0.25,
    "prostate_shift_mm": (1.0, -5.0, -4.0),
    "setup_shift_mm": (3.0, -2.0, 2.0),
}


def demo_job(out: Path, *, seed: int = 0, show: bool = True, fraction_options: dict | None = None, spacing: tuple | None = None,
             final_grid_mm: float | None = None, final_engine: str = "pb", check_engine: str | None = None) -> dict:  # fmt: skip
    """``art demo``: digital patient → reference plan → daily CBCT → adapted plan.

    Writes ``patient/`` (the phantom with ground truth), ``reference/`` (planning CT,
    RTSTRUCT, RTPLAN, RTDOSE, protocol, report, summary) and ``adapted/`` (the
    ``art replan`` result) into ``out``, atomically. ``final_engine`` and ``check_engine``
    are passed to both (:func:`plan_job`, :func:`replan_job`).
    """
    import shutil

    from art.outputs import atomic_output_dir
    from art.independent_check import checked_engines
    from art.summary import write_summary
    from art.report.pdf import print_pdf_beside
    from art_phantoms.write import start_phantom

    final_engine, check_engine = checked_engines(final_engine, check_engine)  # before any work
    stages = Stages(show=show)
    options = dict(DEMO_FRACTION)
    options.update(fraction_options or {})
    with atomic_output_dir(out) as tmp:
        patient = tmp / "patient"
        with stages.stage("demo patient"):
            kw = {"spacing": tuple(spacing)} if spacing is not None else {}
            warm = _warm_up_in_background()  # the digital patient keeps one core busy; the other prepares the engines
            # the planning files now; the day's CBCT and truth on a thread while the reference plan is made
            phantom = start_phantom(patient, seed=seed, fractions=1, fraction_options={1: options}, **kw)
            warm.exception()  # waits; a failed warm-up is met again where its result is needed
        engines = {"final_engine": final_engine, "check_engine": check_engine}
        try:
            plan_summary = plan_job(patient / "CT", patient / "RTSTRUCT.dcm", patient / "protocol.toml", tmp / "reference", show=show,
                                    final_grid_mm=final_grid_mm, pdf=False, **engines)  # fmt: skip
        except BaseException:
            phantom.abandon()
            raise
        with stages.stage("demo patient: daily CBCT"):
            phantom.finish()
        shutil.copytree(patient / "CT", tmp / "reference" / "CT")
        shutil.copy2(patient / "protocol.toml", tmp / "reference" / "protocol.toml")
        cbct = sorted(p for p in patient.iterdir() if p.name.startswith("CBCT"))[0]
        reference_pdf = print_pdf_beside(tmp / "reference" / "report.html")  # Chromium, its own process, beside the re-plan's first stages
        try:
            replan_summary = replan_job(tmp / "reference", cbct, tmp / "adapted", show=show, final_grid_mm=final_grid_mm, **engines)
        except BaseException:
            reference_pdf(None)
            raise
        with stages.stage("reference: report.pdf"):
            reference_pdf(stages)
        summary = {
            "kind": "demo",
            "seed": seed,
            "fraction": options,
            "reference": {k: plan_summary[k] for k in ("plans", "priority1_met", "timings_s", "independent_check")},
            "adaptive": {k: replan_summary[k] for k in ("plans", "recommendation", "priority1_met", "timings_s", "registration", "contours", "independent_check")},
            "outputs": {"patient": "patient", "reference": "reference", "adapted": "adapted"},
            "written": {name: written_files(tmp / name) for name in ("reference", "adapted")},
        }
        summary["timings_s"] = {**{f"reference: {k}": v for k, v in plan_summary["timings_s"].items()},
                                **{f"replan: {k}": v for k, v in replan_summary["timings_s"].items()}, **stages.timings}
        summary["total_time_s"] = round(sum(summary["timings_s"].values()), 1)
        write_summary(summary, tmp / "summary.json")
    return summary


def _in_background(name: str, work: Any) -> Any:
    """``work()`` started on a thread (:func:`art.threads.in_background`); the returned future's
    ``exception()`` waits for it. Its failure is left to the stage that needs the result (it meets
    the error again there and raises it with its own message)."""
    from art.threads import in_background

    return in_background(work, name=name)


def _prefetch_dvh(doses: list, structures: Any) -> Any:
    """A started thread sampling the report's DVH structures in ``doses`` into the sample cache
    (:func:`art.evaluate.polygons.prefetch_samples`) while the export runs (mostly pydicom, one core);
    the report joins it and takes the samples from the cache (the same numbers)."""

    def work() -> None:
        from art.evaluate.polygons import prefetch_samples
        from art.report.build import dvh_structures_of

        prefetch_samples(doses, dvh_structures_of(structures))

    return _in_background("art-dvh-prefetch", work)


def _warm_up_in_background() -> Any:
    """A started thread fitting the shipped machine's pencil-beam kernel and importing torch: what the plan and
    the re-plan need first (~1.3 s each, cached for the process)."""

    def work() -> None:
        from art.dose import load_machine
        from art.dose.kernel import fit_kernel

        fit_kernel(load_machine())
        import torch  # noqa: F401 - imported once for the AI contours

    return _in_background("art-warm-up", work)


def written_files(folder: Path) -> list[str]:
    """The names in a result folder, sorted (sub-folders with a trailing ``/``): what was actually written (e.g. no ``report.pdf`` without Chromium)."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in Path(folder).iterdir())


def goal_comparison_table(summary: dict) -> str:
    """Plain-text table: scheduled vs adapted, goal by goal (for the terminal)."""
    plans = summary["plans"] if "plans" in summary else summary["adaptive"]["plans"]
    sched, adap = plans["scheduled"]["goals"], plans["adapted"]["goals"]
    lines = [f"{'P':>2} {'structure':<16} {'metric':<10} {'goal':<12} {'scheduled':>14} {'adapted':>14}"]
    for s, a in zip(sched, adap):
        def cell(g):
            return f"{g['value']:.2f} {g['unit']} {'ok' if g['met'] else 'FAIL'}"

        lines.append(f"{s['priority']:>2} {s['structure']:<16} {s['metric']:<10} {s['goal']:<12} {cell(s):>14} {cell(a):>14}")
    return "\n".join(lines)
