"""Independent dose recalculation of a given RT Plan on a CT (``art dose``).

:func:`recalculate` reads a CT series, an RT Plan (ours or another system's,
see :func:`art.io.rtplan.read_rtplan`) and optionally an RTSTRUCT, recomputes the
course dose with ``art``'s engine (:func:`art.dose.dose`), each beam with the machine
of the library (:func:`art.dose.load_library`: the shipped 6X, 10X and 6FFF machines
and MLC models, plus the files given, ``art dose --machine FILE``) that serves its
energy, TreatmentMachineName and MLC, and writes, atomically into ``out``:

* ``RTDOSE.dcm`` — the dose on the dose grid (Gy, course, summation ``PLAN``,
  referencing the plan);
* ``summary.json`` — provenance (software version, SHA-256 of every input),
  plan label, fractions, MU per beam (per fraction) and the machine file (and MLC
  model) each beam was computed with (name, file, SHA-256), dose maximum and mean (in
  the BODY/EXTERNAL structure when given, else over the dose grid) and per
  structure: volume, Dmean, Dmax (D0.03cc), Dmin, D98%, D95%, D50%, D2%
  (Gy), plus V100% of the prescription when the plan has one; timings.

Refused with a clear :class:`~art.errors.ArtError`: a plan whose
FrameOfReferenceUID differs from the CT's (a plan without one is accepted with
a warning in the summary), beams of an energy no machine file of the library
serves (the message names the beam and the plan file and says to give one with
``--machine FILE``), whose SAD differs from the machine's or whose MLC no machine
or MLC model has, plans ``read_rtplan`` cannot represent.
When the structures include a BODY/EXTERNAL ROI the dose is computed inside it
only (0 outside).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from art.errors import GeometryError, InputError

if TYPE_CHECKING:
    from art.geometry import Volume

__all__ = ["recalculate", "recalculate_dose"]

_METRICS = ("Dmean", "Dmax", "Dmin", "D98%", "D95%", "D50%", "D2%")


def _finite(v: float) -> float | None:
    return round(float(v), 4) if math.isfinite(float(v)) else None


def recalculate_dose(ct: Any, plan: Any, machine: Any = None, *, structures: Any = None, dose_grid_mm: float | None = 3.0, plan_path: Any = None,
                     engine: str = "pb"):  # fmt: skip
    """Check a plan against the CT and machine(s), then compute its course dose with ``engine``.

    Parameters
    ----------
    ct : ImageSeries
        The CT (HU).
    plan : Plan
        As returned by :func:`~art.io.rtplan.read_rtplan` (its ``frame_of_reference_uid`` is
        checked when present); its ``patient_position`` must be the CT's PatientPosition.
    machine : Machine, list of Machine, MachineLibrary or None
        As :func:`art.dose.resolve_machines` takes it (default: the shipped library).
    structures : StructureSet, optional, keyword-only
        On the CT grid; a BODY/EXTERNAL ROI restricts the calculation to the body.
    dose_grid_mm : float or None, keyword-only
        Dose grid spacing (mm); None = the CT grid.
    plan_path : path, optional, keyword-only
        Named in error messages.
    engine : {"pb", "ccc"}, keyword-only
        Dose engine (:mod:`art.dose.engines`): pencil beam or collapsed cone.

    Returns
    -------
    Volume
        Course dose, Gy, float32, on the dose grid.
    """
    from art.dose import resolve_machines
    from art.dose.engines import get_engine
    from art.dose._setup import body_structure
    from art.io.image_series import check_plan_position

    plan_for = getattr(plan, "frame_of_reference_uid", "") or ""
    if plan_for and ct.frame_of_reference_uid and plan_for != ct.frame_of_reference_uid:
        raise GeometryError(
            f"the plan's frame of reference ({plan_for}) is not the CT's ({ct.frame_of_reference_uid}): "
            "the plan was made on another image; register and transfer it first",
            path=plan_path,
        )
    compute_dose = get_engine(engine)
    machines = resolve_machines(plan, machine, path=plan_path)
    check_plan_position(plan, ct, plan_path=plan_path)
    use_body = structures is not None and body_structure(structures, None) is not None
    return compute_dose(ct.volume, plan, machines, dose_grid_mm=dose_grid_mm, structures=structures if use_body else None)


def recalculate(
    ct_dir: str | Path,
    plan_path: str | Path,
    out: str | Path,
    *,
    structures_path: str | Path | None = None,
    machine_path: str | Path | Sequence[str | Path] | None = None,
    dose_grid_mm: float | None = 3.0,
    engine: str = "pb",
    show_progress: bool = False,
) -> dict:
    """``art dose``: recompute the dose of an RT Plan on a CT; write ``RTDOSE.dcm`` and ``summary.json``.

    Parameters
    ----------
    ct_dir : str or Path
        CT series folder.
    plan_path : str or Path
        RT Plan file.
    out : str or Path
        Result folder, written atomically (nothing left there on failure).
    structures_path : str or Path, optional, keyword-only
        RTSTRUCT on the CT: DVH metrics per structure; its BODY limits the calculation.
    machine_path : str or Path, or a sequence of them, optional, keyword-only
        Machine files and MLC model files added to the shipped library, each replacing the shipped
        entries of its energy (a machine) or leaf boundaries (an MLC model), see
        :func:`art.dose.load_library`; default: the shipped library.
    dose_grid_mm : float or None, keyword-only
        Dose grid spacing, mm.
    engine : {"pb", "ccc"}, keyword-only
        Dose engine: ``"pb"`` pencil beam (default), ``"ccc"`` collapsed-cone convolution/superposition.
    show_progress : bool, keyword-only
        Stage progress on stderr.

    Returns
    -------
    dict
        The summary (as written to ``summary.json``).
    """
    from art.progress import Stages
    from art.provenance import provenance, sha256_file, sha256_tree

    from art.dose.engines import ENGINE_LABELS, engine_name, get_engine

    ct_dir, plan_path = Path(ct_dir), Path(plan_path)
    engine = engine_name(engine)
    get_engine(engine)  # an engine that cannot be imported stops before any reading
    stages = Stages(show=show_progress)
    with stages.stage("read inputs"):
        library, ct, plan, structures, warnings_out = _read_inputs(ct_dir, plan_path, structures_path, machine_path)
        from art.dose import resolve_machines

        machines = resolve_machines(plan, library, path=plan_path)
    with stages.stage("dose"):
        dose = recalculate_dose(ct, plan, machines, structures=structures, dose_grid_mm=dose_grid_mm, plan_path=plan_path, engine=engine)
    with stages.stage("evaluate"):
        body, dose_mean = _mean_dose(dose, structures)
        per_structure = _structure_metrics(dose, structures, plan.prescription["dose_gy"] if plan.prescription else None)
    inputs = {"ct": sha256_tree(ct.files), "rtplan": sha256_file(plan_path)}
    if structures_path is not None:
        inputs["rtstruct"] = sha256_file(structures_path)
    inputs.update(_machine_inputs(machines))
    names = ", ".join(dict.fromkeys(m.name for m in machines))
    summary = {
        "command": "dose",
        "provenance": provenance(inputs=inputs, parameters={"dose_grid_mm": dose_grid_mm, "machine": names, "engine": engine}),
        "engine": {"name": engine, "label": ENGINE_LABELS[engine]},
        "plan": _plan_record(plan, machines),
        "dose": _dose_record(dose, dose_mean, body),
        "structures": per_structure,
        "warnings": warnings_out,
        "timings_s": stages.timings,
    }
    _write_outputs(out, dose, ct, plan, plan_path, summary)
    return summary


def _dose_record(dose: Volume, dose_mean: float, body: Any) -> dict:
    """summary.json's ``dose``: units, grid, maximum and mean (Gy; the mean over BODY when there is one)."""
    return {
        "units": "Gy (course)",
        "grid": dose.grid.to_dict(),
        "max_gy": round(float(dose.array.max()), 4),
        "mean_gy": round(dose_mean, 4),
        "mean_over": "BODY" if body is not None else "dose grid",
    }


def _read_inputs(ct_dir: Path, plan_path: Path, structures_path: str | Path | None, machine_path: Any) -> tuple:
    """Machine library, CT series, RT Plan (each beam checked against the library) and (optional)
    structures; warnings about the plan's references.

    Returns ``(library, ct, plan, structures or None, warnings)``.
    """
    from art.dose import load_library
    from art.io import read_image_series, read_rtstruct
    from art.io.rtplan import read_rtplan

    warnings_out: list[str] = []
    paths = [machine_path] if isinstance(machine_path, (str, Path)) else list(machine_path or [])
    library = load_library(paths)
    ct = read_image_series(ct_dir)
    plan = read_rtplan(plan_path, machine=library)
    structures = read_rtstruct(structures_path, ct) if structures_path is not None else None
    if not getattr(plan, "frame_of_reference_uid", ""):
        warnings_out.append("the plan has no FrameOfReferenceUID: assumed to be the CT's")
    rs_uid = getattr(plan, "structure_set_uid", "")
    if structures_path is not None and rs_uid:
        from art.io.dicom_common import read_dataset

        got = str(read_dataset(Path(structures_path), stop_before_pixels=True).get("SOPInstanceUID", ""))
        if got != rs_uid:
            warnings_out.append("the RTSTRUCT given is not the one the plan references")
    return library, ct, plan, structures, warnings_out


def _machine_record(machine: Any) -> dict:
    """A beam's machine as summary.json states it: name, energy, file name, SHA-256, and the MLC model
    that replaced the file's own MLC (None when the file's own MLC was used)."""
    mlc = machine.mlc
    model = {"name": mlc.name, "file": Path(mlc.source).name, "sha256": mlc.digest, "n_pairs": mlc.n_pairs} if mlc.source else None
    return {"name": machine.name, "energy": machine.energy, "file": Path(machine.source).name, "sha256": machine.digest, "mlc_model": model}


def _machine_inputs(machines: list) -> dict:
    """Provenance inputs: ``machine`` (the SHA-256 of the one machine file, or of each, comma-separated)
    and ``machine_files`` (file name → SHA-256 of every machine file and MLC model used)."""
    files: dict[str, str] = {}
    for m in machines:
        files[Path(m.source).name] = m.digest
        if m.mlc.source:
            files[Path(m.mlc.source).name] = m.mlc.digest
    return {"machine": ",".join(dict.fromkeys(m.digest for m in machines)), "machine_files": files}


def _mean_dose(dose: Volume, structures: Any) -> tuple[Any, float]:
    """The BODY structure (or None) and the mean dose (Gy) over it, or over the whole dose grid without one."""
    from art.evaluate import structure_samples

    body = None
    if structures is not None:
        from art.dose._setup import body_structure

        body = body_structure(structures, None)
    if body is not None:
        d, v, _ = structure_samples(dose, body)
        return body, float(np.sum(d * v) / np.sum(v))
    return body, float(dose.array.mean())


def _structure_metrics(dose: Volume, structures: Any, rx: float | None) -> list[dict]:
    """Per structure: volume (cc), the standard metrics (Gy) and, with a prescription ``rx`` (Gy), V<rx>Gy (%)."""
    from art.evaluate import structure_samples
    from art.evaluate.metrics import evaluate_metric

    per_structure: list[dict] = []
    if structures is None:
        return per_structure
    for s in structures:
        if not s.mask.any():
            per_structure.append({"structure": s.name, "empty": True})
            continue
        d, v, _ = structure_samples(dose, s)
        row: dict[str, Any] = {"structure": s.name, "type": s.roi_type, "volume_cc": round(float(v.sum()), 3)}
        for m in _METRICS:
            row[m] = _finite(evaluate_metric(m, d, v, name=s.name))
        if rx:
            row[f"V{rx:g}Gy_pct"] = _finite(evaluate_metric(f"V{rx:g}Gy", d, v, name=s.name))
        per_structure.append(row)
    return per_structure


def _plan_record(plan: Any, machines: list) -> dict:
    """The plan as summary.json describes it: label, UID, fractions, prescription, position, beams with MU per
    fraction and the machine each was computed with (:func:`_machine_record`)."""
    return {
        "label": plan.label,
        "sop_instance_uid": getattr(plan, "sop_instance_uid", ""),
        "fractions": plan.fractions,
        "prescription": plan.prescription,
        "patient_position": plan.patient_position,
        "beams": [
            {
                "name": b.name,
                "gantry_deg": b.gantry_deg,
                "collimator_deg": b.collimator_deg,
                "couch_deg": b.couch_deg,
                "energy": b.energy,
                "mu": round(b.total_mu, 3),
                "segments": len(b.segments),
                "machine": _machine_record(m),
            }
            for b, m in zip(plan.beams, machines)
        ],
        "total_mu": round(sum(b.total_mu for b in plan.beams), 3),
    }


def _write_outputs(out: str | Path, dose: Volume, ct: Any, plan: Any, plan_path: Path, summary: dict) -> None:
    """``RTDOSE.dcm`` (referencing the plan) and ``summary.json`` into ``out``, atomically."""
    from art.io.rtdose import write_rtdose
    from art.io.uids import is_valid_uid
    from art.outputs import atomic_output_dir

    with atomic_output_dir(out) as tmp:
        plan_uid = getattr(plan, "sop_instance_uid", "")
        if not is_valid_uid(plan_uid):
            raise InputError(f"the plan's SOPInstanceUID {plan_uid!r} is not a valid UID: the RT Dose cannot reference it", path=plan_path)
        write_rtdose(dose, ct, tmp / "RTDOSE.dcm", plan_ds_or_uid=plan_uid, summation="PLAN", comment=f"art dose: independent recalculation ({summary['engine']['label']})")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
