"""Writing an RT Plan (RTPLAN): a photon step-and-shoot IMRT :class:`~art.plan.Plan` for treatment systems.

Public entry: :func:`art.io.rtplan.write_rtplan` and :func:`art.io.rtplan.plan_to_dataset`;
one beam's devices and control points: :mod:`art.io.rtplan_write_beam`.

One RT Plan Storage file for a :class:`~art.plan.Plan` whose beams carry MLC
segments (MU per fraction).  The patient, study and frame of reference are the
CT's; the plan has its own series.  What is written (PS3.3 RT Plan IOD):

* RT General Plan: RTPlanLabel (<= 16 characters), RTPlanName, RTPlanDate/Time
  (now unless given), RTPlanGeometry ``PATIENT`` with
  ReferencedStructureSetSequence (the RTSTRUCT given), PlanIntent ``CURATIVE``.
* RT Prescription: DoseReferenceSequence item 1, type ``TARGET``: the target
  ROI of the structure set (``VOLUME`` + ReferencedROINumber) when
  ``target_name`` is found in it, else ``SITE``; TargetPrescriptionDose =
  ``prescription_gy`` (total over the course, Gy); DeliveryMaximumDose only when
  ``delivery_maximum_gy`` is given (art's protocols define none, so art leaves it out).
  With ``dose_reference`` (:class:`BeamDoseReference`), item 2: type ``TARGET``,
  ``COORDINATES`` with DoseReferencePointCoordinates, the point where each beam's
  dose was computed.
* RT Patient Setup: PatientPosition = the plan's (:attr:`Plan.patient_position`), which must be
  the image's when the image has one; setup technique ``ISOCENTRIC``.
* RT Fraction Scheme: NumberOfFractionsPlanned; per beam BeamMeterset (MU per
  fraction). BeamDose only with ``dose_reference``: the beam's computed dose at its
  point (Gy per fraction), with ReferencedDoseReferenceUID naming dose reference 2
  (BeamDoseSpecificationPoint is retired; BeamDoseMeaning is left out because the
  dciodvfy in use, dicom3tools 2022, does not know it in the IOD). Without it
  BeamDose is left out (type 3): a number that is not a dose at a stated point
  would mislead a treatment management system's dose tracking.
* RT Beams: BeamType ``STATIC`` for a beam of one aperture, ``DYNAMIC`` when the
  jaws or leaves change between its control points (step-and-shoot with several
  segments), RadiationType ``PHOTON``, TreatmentMachineName
  and SourceAxisDistance from the machine, PrimaryDosimeterUnit ``MU``,
  TreatmentDeliveryType ``TREATMENT``, BeamLimitingDeviceSequence ``ASYMX``,
  ``ASYMY`` and ``MLCX`` (LeafPositionBoundaries from the machine); two control
  points per segment with the same jaws and leaves, CumulativeMetersetWeight
  increasing from 0 to FinalCumulativeMetersetWeight = 1 (segments with 0 MU
  are left out); every control point repeats energy-independent positions
  (jaws and MLC), the first also NominalBeamEnergy, DoseRateSet, angles with
  rotation directions ``NONE``, table top positions (empty) and IsocenterPosition.
  With ``dose_reference``, every control point has a ReferencedDoseReferenceSequence
  item (dose reference 2) whose CumulativeDoseReferenceCoefficient is the fraction of
  the beam's dose at the point delivered by then (0 at the first, 1 at the last;
  PS3.3 C.8.8.14.7); a beam that gives the point no dose gets its meterset fractions.
* Approval: ApprovalStatus ``UNAPPROVED`` (a person approves in the treatment system).

Every DS value is formatted to at most 16 characters
(:func:`~art.io.dicom_common.format_ds`).
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import InputError
from art.io.dicom_common import (
    RT_STRUCTURE_SET_STORAGE,
    dicom_date,
    dicom_time,
    format_ds,
    format_ds_list,
    new_file_dataset,
    read_dataset,
    save_dataset,
    sequence_items,
    set_character_set,
    set_general_study,
    set_patient,
    set_rt_series,
)
from art.io.image_series import ImageSeries
from art.io.rtplan_common import RT_PLAN_STORAGE, energy_to_dicom
from art.io.rtplan_write_beam import _POINT_REF, _TARGET_REF, BeamDoseReference, _beam_item
from art.io.uids import check_uid, is_valid_uid, new_uid, object_uids
from art.plan import Plan

__all__ = ["write_rtplan", "plan_to_dataset", "BeamDoseReference"]


def _structure_set_ref(structure_set: Any) -> tuple[str, Any]:
    """(SOPInstanceUID, dataset or None) of an RTSTRUCT given as a path, a dataset or a UID."""
    if isinstance(structure_set, (str, Path)) and not (isinstance(structure_set, str) and is_valid_uid(structure_set)):
        ds = read_dataset(Path(structure_set), stop_before_pixels=True, what="RTSTRUCT file")
        if str(ds.get("Modality", "")) != "RTSTRUCT" and str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE:
            raise InputError("structure_set_path_or_ds is not an RTSTRUCT", path=structure_set)
        return str(ds.SOPInstanceUID), ds
    if isinstance(structure_set, str):
        return structure_set, None
    uid = getattr(structure_set, "SOPInstanceUID", None)
    if uid is None:
        raise InputError(
            f"structure_set_path_or_ds must be an RTSTRUCT path, dataset or SOP instance UID, got {type(structure_set).__name__}"
        )
    return str(uid), structure_set


def _roi_number(rs_ds: Any, name: str | None) -> int | None:
    if rs_ds is None or not name:
        return None
    for it in sequence_items(rs_ds, "StructureSetROISequence"):
        if str(it.get("ROIName", "")).strip().lower() == name.strip().lower():
            try:
                return int(it.ROINumber)
            except (AttributeError, TypeError, ValueError):
                return None
    return None


def plan_to_dataset(
    plan: Plan,
    image: ImageSeries,
    structure_set_path_or_ds: Any,
    *,
    machine: Any,
    label: str = "art",
    name: str = "",
    prescription_gy: float | None = None,
    target_name: str | None = None,
    dose_reference: BeamDoseReference | None = None,
    delivery_maximum_gy: float | None = None,
    patient_position: str | None = None,
    plan_date: _dt.date | str | None = None,
    plan_time: _dt.time | str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 1,
) -> Any:
    """Build the RT Plan dataset (not written); see :func:`write_rtplan` for the parameters."""
    from pydicom.sequence import Sequence

    patient_position = _check_plan_header(plan, image, machine, label, name, patient_position, prescription_gy)
    bnd = _check_beams(plan, machine, dose_reference)
    _check_positive(delivery_maximum_gy, "delivery_maximum_gy")
    series_uid, sop_uid = object_uids(series_instance_uid, sop_instance_uid, kind="RTPLAN")
    now = _dt.datetime.now()
    date = dicom_date(plan_date if plan_date is not None else now.date())
    time = dicom_time(plan_time if plan_time is not None else now.time())
    rs_uid, rs_ds = _structure_set_ref(structure_set_path_or_ds)
    check_uid(rs_uid, "structure set SOPInstanceUID")

    ds = new_file_dataset(RT_PLAN_STORAGE, sop_uid)
    set_character_set(ds, image.patient.name, label, name, *(b.name for b in plan.beams), target_name or "")
    set_patient(ds, image.patient)
    set_general_study(ds, image.study_instance_uid, image.study_date, image.study_time)
    # RT series, frame of reference (the CT's), equipment
    set_rt_series(ds, "RTPLAN", series_uid, series_number, image.frame_of_reference_uid)
    _set_general_plan(ds, label, name, date, time, rs_uid)
    drefs = [_dose_reference(sop_uid, rs_ds, target_name, prescription_gy, delivery_maximum_gy)]
    if dose_reference is not None:
        drefs.append(_point_reference(sop_uid, dose_reference))
    ds.DoseReferenceSequence = Sequence(drefs)
    ds.PatientSetupSequence = Sequence([_patient_setup(patient_position)])
    ds.FractionGroupSequence = Sequence([_fraction_group(plan, dose_reference, drefs[-1].DoseReferenceUID)])
    # RT beams
    ds.BeamSequence = Sequence([_beam_item(b, number, machine, bnd, dose_reference) for number, b in enumerate(plan.beams, start=1)])
    # approval
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _check_plan_header(
    plan: Plan, image: ImageSeries, machine: Any, label: str, name: str, patient_position: str | None, prescription_gy: float | None
) -> str:
    """Refuse plan-level arguments of :func:`plan_to_dataset` that cannot be written (:class:`InputError`).

    Parameters
    ----------
    plan : Plan
    image : ImageSeries
    machine : art.dose.Machine
        Must have an MLC.
    label : str
        RTPlanLabel: 1-16 characters without backslash.
    name : str
        RTPlanName: at most 64 characters without backslash.
    patient_position : str or None
        None, or the plan's position.
    prescription_gy : float or None
        Positive and finite when given (Gy, course).

    Returns
    -------
    str
        The PatientPosition to write: the plan's, which must be the image's when the image has one.
    """
    if not isinstance(plan, Plan):
        raise InputError(f"plan must be an art.plan.Plan, got {type(plan).__name__}")
    if not isinstance(image, ImageSeries):
        raise InputError(f"image must be an ImageSeries, got {type(image).__name__}")
    if machine is None or not hasattr(machine, "mlc"):
        raise InputError("machine must be an art.dose.Machine (its name, SAD and MLC are written)")
    if not isinstance(label, str) or not label or len(label) > 16 or "\\" in label:
        raise InputError(f"label must be 1-16 characters without backslash (RTPlanLabel), got {label!r}")
    if len(name) > 64 or "\\" in name:
        raise InputError("name must be at most 64 characters without backslash (RTPlanName)")
    if patient_position is not None and patient_position != plan.patient_position:
        raise InputError(f"patient_position {patient_position!r} differs from the plan's ({plan.patient_position})")
    if image.patient_position and image.patient_position != plan.patient_position:
        raise InputError(
            f"the plan is for patient position {plan.patient_position} but the image's PatientPosition is {image.patient_position!r}"
        )
    _check_positive(prescription_gy, "prescription_gy")
    return plan.patient_position


def _check_positive(value: float | None, what: str) -> None:
    """Refuse a value that is given but not a positive finite number (:class:`InputError` naming ``what``)."""
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(float(value)) and float(value) > 0):
        raise InputError(f"{what} must be a positive number, got {value!r}")


def _check_beams(plan: Plan, machine: Any, dose_reference: BeamDoseReference | None) -> np.ndarray:
    """Refuse beams that cannot be written for ``machine`` (:class:`InputError`).

    Each beam needs a name of at most 64 characters without backslash, a
    segment with MU > 0, the machine's number of leaf pairs in every segment,
    the machine's SAD and a known energy; ``dose_reference``, when given, must
    have a finite point and, for every beam, one finite non-negative dose per
    segment with MU > 0.

    Returns
    -------
    ndarray of float64, shape (n_pairs + 1,)
        The machine's MLC leaf boundaries, mm.
    """
    bnd = np.asarray(machine.mlc.boundaries_mm, dtype=np.float64)
    n_pairs = bnd.size - 1
    for b in plan.beams:
        if len(b.name) > 64 or "\\" in b.name:
            raise InputError(f"beam name {b.name!r} must be at most 64 characters without backslash (BeamName)")
        segs = [s for s in b.segments if s.mu > 0]
        if not segs:
            raise InputError(f"beam {b.name!r} has no segment with MU > 0: sequence the plan before export")
        for n, s in enumerate(b.segments):
            if s.leaf_positions.shape[1] != n_pairs:
                raise InputError(
                    f"beam {b.name!r} segment {n}: {s.leaf_positions.shape[1]} leaf pairs, machine {machine.name!r} has {n_pairs}"
                )
        if abs(float(b.sad_mm) - float(machine.sad_mm)) > 1e-6:
            raise InputError(f"beam {b.name!r}: SAD {b.sad_mm} mm differs from machine {machine.name!r} ({machine.sad_mm} mm)")
        energy_to_dicom(b.energy)
    if dose_reference is not None:
        _check_dose_reference(plan, dose_reference)
    return bnd


def _check_dose_reference(plan: Plan, ref: BeamDoseReference) -> None:
    """Refuse a :class:`BeamDoseReference` that does not fit ``plan`` (:class:`InputError` naming the beam)."""
    if not isinstance(ref, BeamDoseReference):
        raise InputError(f"dose_reference must be a BeamDoseReference, got {type(ref).__name__}")
    p = np.asarray(ref.point_lps, dtype=np.float64)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"dose_reference.point_lps must be 3 finite numbers (LPS mm), got {ref.point_lps!r}")
    for b in plan.beams:
        if b.name not in ref.segment_dose_gy:
            raise InputError(f"dose_reference.segment_dose_gy lacks beam {b.name!r}")
        d = np.asarray(ref.segment_dose_gy[b.name], dtype=np.float64)
        n = sum(1 for s in b.segments if s.mu > 0)
        if d.shape != (n,) or not np.all(np.isfinite(d)) or np.any(d < 0):
            raise InputError(f"dose_reference.segment_dose_gy[{b.name!r}] must hold {n} finite doses >= 0 (Gy), one per segment with MU > 0")


def _set_general_plan(ds: Any, label: str, name: str, date: str, time: str, rs_uid: str) -> None:
    """Set the RT General Plan module: label, name, date/time, intent, geometry and the structure set referenced.

    Parameters
    ----------
    ds : pydicom.dataset.FileDataset
        The plan dataset.
    label, name : str
        RTPlanLabel and RTPlanName (left out when empty).
    date, time : str
        RTPlanDate and RTPlanTime (DICOM DA / TM).
    rs_uid : str
        SOPInstanceUID of the RTSTRUCT (ReferencedStructureSetSequence).
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds.InstanceNumber = 1
    ds.RTPlanLabel = label
    if name:
        ds.RTPlanName = name
    ds.RTPlanDate = date
    ds.RTPlanTime = time
    ds.PlanIntent = "CURATIVE"
    ds.RTPlanGeometry = "PATIENT"
    rs_ref = Dataset()
    rs_ref.ReferencedSOPClassUID = RT_STRUCTURE_SET_STORAGE
    rs_ref.ReferencedSOPInstanceUID = rs_uid
    ds.ReferencedStructureSetSequence = Sequence([rs_ref])


def _dose_reference(sop_uid: str, rs_ds: Any, target_name: str | None, prescription_gy: float | None, delivery_maximum_gy: float | None) -> Any:
    """DoseReferenceSequence item 1 (RT Prescription): the TARGET.

    Parameters
    ----------
    sop_uid : str
        The plan's SOP instance UID (the DoseReferenceUID is derived from it).
    rs_ds : pydicom Dataset or None
        The RTSTRUCT, where the target ROI is looked up.
    target_name : str or None
        The target's ROI name: ``VOLUME`` with its ReferencedROINumber when
        found in ``rs_ds``, else ``SITE``.
    prescription_gy : float or None
        Total prescribed dose (Gy, course): TargetPrescriptionDose.
    delivery_maximum_gy : float or None
        DeliveryMaximumDose (Gy, course), written only when given.

    Returns
    -------
    pydicom.dataset.Dataset
    """
    from pydicom.dataset import Dataset

    dref = Dataset()
    dref.DoseReferenceNumber = _TARGET_REF
    dref.DoseReferenceUID = new_uid(entropy=(sop_uid, "dose reference"))
    roi = _roi_number(rs_ds, target_name)
    if roi is not None:
        dref.DoseReferenceStructureType = "VOLUME"
        dref.ReferencedROINumber = roi
    else:
        dref.DoseReferenceStructureType = "SITE"
    dref.DoseReferenceDescription = (target_name or "target")[:64]
    dref.DoseReferenceType = "TARGET"
    if delivery_maximum_gy is not None:
        dref.DeliveryMaximumDose = format_ds(float(delivery_maximum_gy))
    if prescription_gy is not None:
        dref.TargetPrescriptionDose = format_ds(float(prescription_gy))
    return dref


def _point_reference(sop_uid: str, ref: BeamDoseReference) -> Any:
    """DoseReferenceSequence item 2: the point (``COORDINATES``, LPS mm) where the beams' doses were computed, type TARGET."""
    from pydicom.dataset import Dataset

    dref = Dataset()
    dref.DoseReferenceNumber = _POINT_REF
    dref.DoseReferenceUID = new_uid(entropy=(sop_uid, "beam dose point"))
    dref.DoseReferenceStructureType = "COORDINATES"
    dref.DoseReferenceDescription = str(ref.description)[:64]
    dref.DoseReferencePointCoordinates = format_ds_list([float(v) for v in ref.point_lps])
    dref.DoseReferenceType = "TARGET"
    return dref


def _patient_setup(patient_position: str) -> Any:
    """The one PatientSetupSequence item: ``patient_position`` (HFS, ...), ISOCENTRIC setup number 1."""
    from pydicom.dataset import Dataset

    setup = Dataset()
    setup.PatientPosition = patient_position
    setup.PatientSetupNumber = 1
    setup.SetupTechnique = "ISOCENTRIC"
    return setup


def _fraction_group(plan: Plan, dose_reference: BeamDoseReference | None, point_uid: str) -> Any:
    """The one FractionGroupSequence item (RT Fraction Scheme).

    Parameters
    ----------
    plan : Plan
        Fractions and beams (MU per fraction).
    dose_reference : BeamDoseReference or None
        The beams' doses at the dose reference point; None: no BeamDose.
    point_uid : str
        DoseReferenceUID of the point (ReferencedDoseReferenceUID of each beam's BeamDose).

    Returns
    -------
    pydicom.dataset.Dataset
        NumberOfFractionsPlanned, per beam BeamMeterset (MU per fraction) and, with
        ``dose_reference``, BeamDose (Gy per fraction at the point) with the reference
        to the point; the dose references used.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = int(plan.fractions)
    fg.NumberOfBeams = len(plan.beams)
    fg.NumberOfBrachyApplicationSetups = 0
    rbs = []
    for number, b in enumerate(plan.beams, start=1):
        rb = Dataset()
        rb.ReferencedBeamNumber = number
        if dose_reference is not None:
            rb.ReferencedDoseReferenceUID = point_uid
            rb.BeamDose = format_ds(float(np.sum(dose_reference.segment_dose_gy[b.name])))
        rb.BeamMeterset = format_ds(b.total_mu)
        rbs.append(rb)
    fg.ReferencedBeamSequence = Sequence(rbs)
    rdrs = []
    for number in (_TARGET_REF, _POINT_REF)[: 1 if dose_reference is None else 2]:
        rdr = Dataset()
        rdr.ReferencedDoseReferenceNumber = number
        rdrs.append(rdr)
    fg.ReferencedDoseReferenceSequence = Sequence(rdrs)
    return fg


def write_rtplan(
    plan: Plan,
    image: ImageSeries,
    structure_set_path_or_ds: Any,
    path: str | Path,
    *,
    machine: Any,
    label: str = "art",
    prescription_gy: float | None = None,
    target_name: str | None = None,
    **options: Any,
) -> Any:
    """Write a step-and-shoot photon plan as an RT Plan file (see module notes for the content).

    Parameters
    ----------
    plan : Plan
        Beams with MLC segments; MU per fraction.
    image : ImageSeries
        The CT the plan is on: patient, study and frame of reference.
    structure_set_path_or_ds : str, Path, pydicom Dataset or UID str
        The RTSTRUCT referenced (ReferencedStructureSetSequence).
    path : str or Path
        Output file; an existing folder gets ``RP.<SOPInstanceUID>.dcm`` inside it.
    machine : art.dose.Machine, keyword-only
        TreatmentMachineName, SAD, MLC leaf boundaries (segments must match its pairs), dose rate.
    label : str, keyword-only
        RTPlanLabel, 1-16 characters.
    prescription_gy : float, optional, keyword-only
        Total prescribed dose to the target (Gy, course).
    target_name : str, optional, keyword-only
        The target's ROI name in the structure set.
    **options
        ``name`` (RTPlanName), ``dose_reference`` (:class:`BeamDoseReference`: the point and
        the beams' doses there, written as BeamDose), ``delivery_maximum_gy`` (DeliveryMaximumDose,
        Gy, course), ``patient_position`` (None: the plan's; another than the plan's is refused), ``plan_date``, ``plan_time``,
        ``series_instance_uid``, ``sop_instance_uid``, ``series_number``.

    Returns
    -------
    pydicom.dataset.FileDataset
        The dataset written.
    """
    ds = plan_to_dataset(
        plan, image, structure_set_path_or_ds, machine=machine, label=label, prescription_gy=prescription_gy, target_name=target_name, **options
    )
    path = Path(path)
    if path.is_dir():
        path = path / f"RP.{ds.SOPInstanceUID}.dcm"
    save_dataset(ds, path)
    return ds
