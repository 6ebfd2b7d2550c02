"""One treated fraction: a finished ``art replan`` folder read as the dose delivered that day.

A fraction folder holds (``art replan``'s result, docs/workflow.md): ``RTPLAN.dcm`` (the
adapted plan), ``RTDOSE.dcm`` (its course dose, Gy, on the synthetic CT's export grid, in
the CBCT's frame), ``RTSTRUCT.dcm`` (today's structures on the CBCT), ``REG.dcm`` (rigid
CBCT → planning CT), ``DREG.dcm`` (the deformation: a point ``p`` of today's frame is the
planning-CT point ``p + u(p)``), ``sCT/`` (the synthetic CT, HU) and ``summary.json``.

:func:`read_fraction` returns the dose **of one fraction** (the course dose of the plan
delivered that day divided by its number of fractions) on that day's dose grid. Which plan
was delivered is ``summary.json``'s ``recommendation.plan`` unless given. The scheduled plan's
dose is not stored by ``art replan``: it is computed again as ``art replan`` computed it — the
reference RTPLAN moved to today's isocentre (the reference isocentre mapped by the inverse of
the rigid CBCT → CT matrix), on the synthetic CT, inside today's BODY, on the adapted RTDOSE's
grid, by the dose engine of the re-plan's final doses (``summary.json`` ``evaluation.engine``,
pencil beam for summaries without one; :func:`scheduled_dose`, :func:`fraction_engine`).

Checks (:class:`~art.errors.InputError` naming the folder or its file): a missing file, a
summary that is not an ``art replan`` summary, another patient than the reference's (PatientID
of the reference CT vs each DICOM object of the folder; compared, never shown), a deformation
whose source is not the reference's planning CT (frame of reference, or images not the
reference CT's), daily objects in different frames, an RTDOSE that does not reference the
folder's RTPLAN. :func:`check_folders` refuses the same fraction given twice before anything
is read in full; :func:`check_course` checks the fractions against each other.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import InputError
from art.geometry import Volume
from art.privacy import patient_key

__all__ = ["Fraction", "read_fraction", "scheduled_dose", "fraction_engine", "check_folders", "check_course", "patient_key", "DELIVERED", "FRACTION_FILES"]

#: The plans a fraction may have delivered.
DELIVERED = ("adapted", "scheduled")

#: The files a fraction folder must hold (and the synthetic CT folder ``sCT/``).
FRACTION_FILES = ("DREG.dcm", "RTDOSE.dcm", "RTPLAN.dcm", "RTSTRUCT.dcm", "summary.json")

_WHAT = {
    "DREG.dcm": "the deformable registration of the day",
    "RTDOSE.dcm": "the adapted plan's dose",
    "RTPLAN.dcm": "the adapted plan",
    "RTSTRUCT.dcm": "the daily structures",
    "summary.json": "the re-plan's summary",
}


@dataclass(frozen=True)
class Fraction:
    """One treated fraction (see the module docstring).

    Attributes
    ----------
    folder : Path
        The ``art replan`` result folder.
    index : int
        1-based position in the course (order given).
    delivered : {"adapted", "scheduled"}
        The plan delivered that day.
    dose : Volume
        The delivered plan's dose of that one fraction, Gy, float32, on the day's dose grid (the RTDOSE grid).
    density : Volume
        Relative electron density (water = 1) of the synthetic CT on the dose grid
        (:func:`art.course.warp.density_volume`; -1000 HU outside the sCT): the energy method's mass.
    deformation : DeformableRegistration
        ``DREG.dcm``: today's point ``p`` is the planning-CT point ``p + displacement(p)``.
    plan_sop_instance_uid, plan_label : str
        The delivered plan: the folder's RTPLAN (adapted) or the reference RTPLAN (scheduled).
    frame_of_reference_uid : str
        Today's frame (the CBCT's; the RTDOSE's and the deformation's registered frame).
    patient_key : str
        A digest of the PatientID (:func:`art.privacy.patient_key`), never the ID.
    structures_daily : StructureSet
        Today's structures (``RTSTRUCT.dcm``) on the synthetic CT's grid.
    summary : dict
        The fraction's ``summary.json``.
    plan_fractions : int
        Number of fractions of the delivered plan (the course dose was divided by it).
    rigid_cbct_to_ct : ndarray (4, 4)
        The rigid registration, today's LPS → planning-CT LPS (mm): ``REG.dcm``, else the summary's.
    folder_plan_uid : str
        SOP instance UID of the folder's own RTPLAN (the adapted plan), whichever plan was delivered.
    """

    folder: Path
    index: int
    delivered: str
    dose: Volume
    density: Volume
    deformation: Any
    plan_sop_instance_uid: str
    plan_label: str
    frame_of_reference_uid: str
    patient_key: str
    structures_daily: Any
    summary: dict
    plan_fractions: int = 1
    rigid_cbct_to_ct: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(4))
    folder_plan_uid: str = ""


def _header(path: Path, what: str) -> Any:
    from art.io.dicom_common import read_dataset

    return read_dataset(path, stop_before_pixels=True, what=what)


def _check_files(folder: Path) -> None:
    """The folder exists and holds every file of an ``art replan`` result (:class:`InputError` naming it)."""
    if not folder.is_dir():
        raise InputError("fraction folder does not exist or is not a folder", path=folder)
    for name in FRACTION_FILES:
        if not (folder / name).is_file():
            raise InputError(f"no {name} ({_WHAT[name]}): not a finished `art replan` result", path=folder)
    if not (folder / "sCT").is_dir():
        raise InputError("no sCT/ (the synthetic CT of the day): not a finished `art replan` result", path=folder)


def _read_summary(folder: Path) -> dict:
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"summary.json cannot be read: {exc}", path=folder) from exc
    if not isinstance(summary, dict) or summary.get("kind") != "adaptive":
        raise InputError("summary.json is not the summary of an `art replan` result (kind 'adaptive')", path=folder)
    return summary


def _delivered(delivered: str | None, summary: dict, folder: Path) -> str:
    if delivered is None:
        delivered = (summary.get("recommendation") or {}).get("plan")
        if delivered not in DELIVERED:
            raise InputError("summary.json names no recommended plan: say which plan was delivered (delivered=)", path=folder)
    if delivered not in DELIVERED:
        raise InputError(f"delivered must be 'adapted' or 'scheduled', got {delivered!r}", path=folder)
    return str(delivered)


def _check_identity(folder: Path, reference: Any, deformation: Any) -> tuple[str, str]:
    """Same patient as the reference in every object; the deformation from the reference CT onto today's frame.

    Returns ``(today's frame of reference UID, the folder's RTPLAN SOP instance UID)``.
    """
    want = patient_key(reference.ct.patient.id)
    headers = {name: _header(folder / name, name) for name in ("RTDOSE.dcm", "RTPLAN.dcm", "RTSTRUCT.dcm", "DREG.dcm")}
    for name, ds in headers.items():
        if patient_key(str(ds.get("PatientID", ""))) != want:
            raise InputError(f"{name} belongs to another patient than the reference (PatientID differs)", path=folder)
    ct_for = reference.ct.frame_of_reference_uid
    if deformation.source_frame_of_reference_uid != ct_for:
        raise InputError("DREG.dcm deforms another frame of reference than the reference's planning CT: "
                         "this fraction was registered to another planning CT", path=folder)  # fmt: skip
    refs = set(deformation.source_sop_instance_uids) - {""}
    if refs and not refs <= set(reference.ct.sop_instance_uids):
        raise InputError("DREG.dcm was registered to other planning-CT images than the reference's", path=folder)
    today = deformation.frame_of_reference_uid
    for name in ("RTDOSE.dcm", "RTPLAN.dcm", "RTSTRUCT.dcm"):
        if str(headers[name].get("FrameOfReferenceUID", "")) != today:
            raise InputError(f"{name} is in another frame of reference than DREG.dcm's registered (daily) frame", path=folder)
    plan_uid = str(headers["RTPLAN.dcm"].get("SOPInstanceUID", ""))
    dose_refs = [str(it.get("ReferencedSOPInstanceUID", "")) for it in headers["RTDOSE.dcm"].get("ReferencedRTPlanSequence", [])]
    if dose_refs and plan_uid not in dose_refs:
        raise InputError("RTDOSE.dcm does not reference the folder's RTPLAN.dcm", path=folder)
    return today, plan_uid


def _rigid(folder: Path, summary: dict) -> np.ndarray:
    """The rigid CBCT → planning-CT matrix: ``REG.dcm`` (the CBCT's item), else summary.json's ``registration.matrix_cbct_to_ct``."""
    if (folder / "REG.dcm").is_file():
        from art.io.registration import read_spatial_registration

        return read_spatial_registration(folder / "REG.dcm")
    m = np.asarray((summary.get("registration") or {}).get("matrix_cbct_to_ct", np.eye(4)), dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError("no REG.dcm and no usable registration.matrix_cbct_to_ct in summary.json", path=folder)
    return m


def fraction_engine(summary: dict) -> str:
    """The dose engine of a re-plan's final doses: its ``summary.json`` ``evaluation.engine`` (``"pb"`` when it names none)."""
    from art.dose.engines import DEFAULT_ENGINE

    return str((summary.get("evaluation") or {}).get("engine") or DEFAULT_ENGINE)


def scheduled_dose(reference: Any, sct: Any, structures: Any, grid: Any, rigid_cbct_to_ct: np.ndarray, *, machine: Any = None,
                   engine: str = "pb") -> tuple[Volume, Any]:  # fmt: skip
    """The scheduled plan's course dose of a day, as ``art replan`` computed it.

    The reference plan's beams (segments, MU) about today's isocentre — the reference
    isocentre mapped by the inverse of ``rigid_cbct_to_ct`` — for the protocol's number of
    fractions, computed by :func:`art.final_dose.final_dose` (dose engine ``engine``, the
    re-plan's) on ``sct`` (HU) inside today's BODY (``structures``) on ``grid`` (the adapted RTDOSE's).

    Returns
    -------
    dose : Volume
        Course dose, Gy, float32, as RT Dose would store it.
    plan : Plan
        The scheduled plan.
    """
    from art.dose import load_machine
    from art.final_dose import final_dose

    machine = load_machine() if machine is None else machine
    iso = np.append(np.asarray(reference.plan.beams[0].isocenter_lps, dtype=np.float64), 1.0)
    today = tuple(float(v) for v in (np.linalg.inv(np.asarray(rigid_cbct_to_ct, dtype=np.float64)) @ iso)[:3])
    beams = [dataclasses.replace(b, isocenter_lps=today, fluence=None, fluence_grid=None) for b in reference.plan.beams]
    plan = dataclasses.replace(reference.plan, beams=beams, fractions=int(reference.protocol.prescription.fractions))
    return final_dose(sct.volume, plan, machine, structures, grid, engine=engine), plan


def read_fraction(folder: str | Path, reference: Any, *, index: int, delivered: str | None = None, machine: Any = None) -> Fraction:
    """Read a finished ``art replan`` folder as one treated fraction of ``reference``'s course.

    Parameters
    ----------
    folder : str or Path
        The ``art replan`` result.
    reference : art.reference.Reference
        The reference the fraction was re-planned from (:func:`art.reference.load_reference`).
    index : int, keyword-only
        1-based position of the fraction in the course.
    delivered : {"adapted", "scheduled"}, optional, keyword-only
        The plan delivered that day (default: the summary's recommendation).
    machine : Machine, optional, keyword-only
        For the scheduled plan's dose (default :func:`art.dose.load_machine`).

    Returns
    -------
    Fraction
        The dose of one fraction (Gy) on the day's dose grid, with its deformation and checks done.

    Raises
    ------
    InputError
        Naming the folder (see the module docstring).
    """
    from art.course.warp import density_volume
    from art.io import read_deformable_registration, read_image_series, read_rtdose, read_rtplan, read_rtstruct

    folder = Path(folder)
    if not isinstance(index, int) or isinstance(index, bool) or index < 1:
        raise InputError(f"index must be a positive integer, got {index!r}", path=folder)
    _check_files(folder)
    summary = _read_summary(folder)
    delivered = _delivered(delivered, summary, folder)
    deformation = read_deformable_registration(folder / "DREG.dcm")
    today, folder_plan_uid = _check_identity(folder, reference, deformation)
    sct = read_image_series(folder / "sCT")
    if sct.frame_of_reference_uid != today:
        raise InputError("sCT/ is in another frame of reference than the daily objects", path=folder)
    structures = read_rtstruct(folder / "RTSTRUCT.dcm", sct)
    rigid = _rigid(folder, summary)
    course = read_rtdose(folder / "RTDOSE.dcm")
    if delivered == "adapted":
        plan = read_rtplan(folder / "RTPLAN.dcm")
        uid, label = folder_plan_uid, plan.label
    else:
        course, plan = scheduled_dose(reference, sct, structures, course.grid, rigid, machine=machine, engine=fraction_engine(summary))
        uid, label = str(getattr(reference.plan, "sop_instance_uid", "") or ""), reference.plan.label
    dose = Volume((np.asarray(course.array, np.float32) / np.float32(plan.fractions)).astype(np.float32), course.grid)
    density = density_volume(sct.volume, dose.grid)
    return Fraction(
        folder=folder, index=index, delivered=delivered, dose=dose, density=density, deformation=deformation,
        plan_sop_instance_uid=uid, plan_label=str(label or ""), frame_of_reference_uid=today,
        patient_key=patient_key(reference.ct.patient.id), structures_daily=structures, summary=summary,
        plan_fractions=int(plan.fractions), rigid_cbct_to_ct=np.asarray(rigid, dtype=np.float64), folder_plan_uid=folder_plan_uid,
    )  # fmt: skip


def check_folders(folders: list) -> None:
    """Refuse, before anything is read in full, a fraction given twice or a folder that is not a fraction.

    The same fraction twice: the same folder (resolved path), the same re-planned CBCT
    (``summary.json`` provenance input hash ``cbct``, or all input hashes when it has none),
    or the same RTPLAN (SOP instance UID: a copied folder). The error names the later folder.
    """
    if not folders:
        raise InputError("no fractions given")
    seen: dict[tuple, Path] = {}
    for folder in map(Path, folders):
        _check_files(folder)
        inputs = (_read_summary(folder).get("provenance") or {}).get("inputs") or {}
        keys = [("folder", str(folder.resolve())), ("plan", str(_header(folder / "RTPLAN.dcm", "RTPLAN.dcm").get("SOPInstanceUID", "")))]
        if inputs:
            keys.append(("cbct", str(inputs["cbct"])) if "cbct" in inputs else ("inputs", json.dumps(inputs, sort_keys=True)))
        for key in keys:
            if key in seen:
                why = {"folder": "the same folder", "plan": "the same RTPLAN (SOP instance UID)", "cbct": "a re-plan of the same CBCT",
                       "inputs": "the same re-plan inputs"}[key[0]]  # fmt: skip
                raise InputError(f"the same fraction is given twice: {why} as {seen[key]}", path=folder)
            seen[key] = folder


def check_course(fractions: list[Fraction]) -> None:
    """The fractions belong together: one patient, each deformation from the same planning CT frame (names the folder)."""
    if not fractions:
        raise InputError("no fractions given")
    first = fractions[0]
    for f in fractions[1:]:
        if f.patient_key != first.patient_key:
            raise InputError(f"belongs to another patient than {first.folder}", path=f.folder)
        if f.deformation.source_frame_of_reference_uid != first.deformation.source_frame_of_reference_uid:
            raise InputError(f"is registered to another planning frame of reference than {first.folder}", path=f.folder)
