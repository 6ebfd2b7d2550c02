"""RT Plan (RTPLAN): photon step-and-shoot IMRT plans, written for treatment systems and read back.

Writing (:func:`write_rtplan`, :func:`plan_to_dataset`)
-------------------------------------------------------
One RT Plan Storage file for a :class:`~art.plan.Plan` whose beams carry MLC
segments (MU per fraction).  The patient, study and frame of reference are the
CT's; the plan has its own series.  What is written (PS3.3 RT Plan IOD):

* RT General Plan: RTPlanLabel (<= 16 characters), RTPlanName, RTPlanDate/Time
  (now unless given), RTPlanGeometry ``PATIENT`` with
  ReferencedStructureSetSequence (the RTSTRUCT given), PlanIntent ``CURATIVE``.
* RT Prescription: one DoseReferenceSequence item, type ``TARGET``: the target
  ROI of the structure set (``VOLUME`` + ReferencedROINumber) when
  ``target_name`` is found in it, else ``SITE``; TargetPrescriptionDose =
  ``prescription_gy`` (total over the course, Gy).
* RT Patient Setup: PatientPosition (default ``HFS``), setup technique ``ISOCENTRIC``.
* RT Fraction Scheme: NumberOfFractionsPlanned; per beam BeamMeterset (MU per
  fraction) and BeamDose (Gy per fraction at the dose reference: given with
  ``beam_dose_gy``, else the per-fraction prescription shared in proportion to
  the beams' MU — an estimate whose sum is the prescribed fraction dose).
* RT Beams: BeamType ``STATIC``, RadiationType ``PHOTON``, TreatmentMachineName
  and SourceAxisDistance from the machine, PrimaryDosimeterUnit ``MU``,
  TreatmentDeliveryType ``TREATMENT``, BeamLimitingDeviceSequence ``ASYMX``,
  ``ASYMY`` and ``MLCX`` (LeafPositionBoundaries from the machine); two control
  points per segment with the same jaws and leaves, CumulativeMetersetWeight
  increasing from 0 to FinalCumulativeMetersetWeight = 1 (segments with 0 MU
  are left out); every control point repeats energy-independent positions
  (jaws and MLC), the first also NominalBeamEnergy, DoseRateSet, angles with
  rotation directions ``NONE``, table top positions (empty) and IsocenterPosition.
* Approval: ApprovalStatus ``UNAPPROVED`` (a person approves in the treatment system).

Every DS value is formatted to at most 16 characters
(:func:`~art.io.dicom_common.format_ds`).

Reading (:func:`read_rtplan`)
-----------------------------
Ours and other systems' photon plans.  The state of each control point is the
previous one's updated with what it lists (DICOM lists only changes).  Every
interval between consecutive control points with a positive meterset
increment becomes segments:

* same jaws and leaves at both ends (step-and-shoot, ``STATIC`` or ``DYNAMIC``
  beam type): one segment;
* leaves or jaws moving during the interval (sliding window, ``DYNAMIC`` only):
  the interval is cut into equal-meterset sub-intervals with at most 1 mm of
  travel of any leaf or jaw, each a segment at its mid-positions (DICOM
  interpolates positions linearly in meterset, so this converges to the
  delivered fluence);
* gantry, collimator or couch moving while the beam is on (arcs): refused.

Segment MU = BeamMeterset × (weight increment) / FinalCumulativeMetersetWeight.
Jaws: ``ASYMX``/``X`` and ``ASYMY``/``Y``; a machine without X jaws (``ASYMY``
only, e.g. Agility-type heads) gets X "jaws" just outside the leaf envelope,
one without Y jaws gets the MLC's outer boundaries.  Without an MLC the leaves
are put at the X jaws (the open field is the jaw rectangle) on the machine's
leaf boundaries, which needs ``machine``.  With ``machine`` the plan's leaf
boundaries must equal the machine's.  Refused with a :class:`~art.errors.DicomError`
naming the file and beam: non-photon beams, MLCY, non-monotonic meterset
weights, a leaf beyond its opposite leaf, a jaw pair crossed, missing
BeamMeterset, and beams with no MU.

The returned :class:`~art.plan.Plan` carries extra attributes for the caller:
``frame_of_reference_uid`` (``""`` when the file has none),
``sop_instance_uid``, ``patient_position`` (of the first setup, default ``HFS``),
``structure_set_uid`` (``""`` when none) and ``source_path``.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from art.errors import DicomError, InputError
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
from art.io.series import ImageSeries
from art.io.uids import check_uid, is_valid_uid, new_uid
from art.plan import Beam, Plan, Segment

__all__ = ["RT_PLAN_STORAGE", "write_rtplan", "plan_to_dataset", "read_rtplan", "energy_to_dicom", "energy_from_dicom"]

RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
_MAX_TRAVEL_MM = 1.0  # dynamic intervals are cut so no leaf/jaw moves more than this per segment
_PATIENT_POSITIONS = ("HFS", "HFP", "FFS", "FFP", "HFDR", "HFDL", "FFDR", "FFDL")


# =====================================================================  energy
def energy_to_dicom(energy: str) -> tuple[float, str | None]:
    """``"6X"`` -> (6.0, None); ``"10FFF"`` -> (10.0, "FFF") (NominalBeamEnergy in MV, fluence mode ID)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(X|MV|FFF|SRS)?\s*", str(energy), flags=re.IGNORECASE)
    if not m:
        raise InputError(f"beam energy must look like '6X' or '10FFF', got {energy!r}")
    mode = (m.group(2) or "X").upper()
    return float(m.group(1)), (None if mode in ("X", "MV") else mode)


def energy_from_dicom(nominal_mv: float, fluence_mode_id: str | None = None) -> str:
    """NominalBeamEnergy (MV) and fluence mode ID back to ``"6X"`` / ``"10FFF"``."""
    v = float(nominal_mv)
    num = str(int(v)) if v == int(v) else f"{v:g}"
    return f"{num}{fluence_mode_id.upper()}" if fluence_mode_id else f"{num}X"


# =====================================================================  writing
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
    beam_dose_gy: Mapping[str, float] | None = None,
    patient_position: str = "HFS",
    plan_date: _dt.date | str | None = None,
    plan_time: _dt.time | str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 1,
) -> Any:
    """Build the RT Plan dataset (not written); see :func:`write_rtplan` for the parameters."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

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
    if patient_position not in _PATIENT_POSITIONS:
        raise InputError(f"patient_position must be one of {', '.join(_PATIENT_POSITIONS)}, got {patient_position!r}")
    if prescription_gy is not None and not (math.isfinite(float(prescription_gy)) and float(prescription_gy) > 0):
        raise InputError(f"prescription_gy must be a positive number, got {prescription_gy!r}")
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
    if beam_dose_gy is not None:
        missing = [b.name for b in plan.beams if b.name not in beam_dose_gy]
        if missing:
            raise InputError(f"beam_dose_gy lacks beams {missing}")

    series_uid = check_uid(series_instance_uid, "series_instance_uid") if series_instance_uid else new_uid()
    if sop_instance_uid:
        sop_uid = check_uid(sop_instance_uid, "sop_instance_uid")
    elif series_instance_uid:
        sop_uid = new_uid(entropy=(series_uid, "RTPLAN"))
    else:
        sop_uid = new_uid()
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
    # RT general plan
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

    # RT prescription
    dref = Dataset()
    dref.DoseReferenceNumber = 1
    dref.DoseReferenceUID = new_uid(entropy=(sop_uid, "dose reference"))
    roi = _roi_number(rs_ds, target_name)
    if roi is not None:
        dref.DoseReferenceStructureType = "VOLUME"
        dref.ReferencedROINumber = roi
    else:
        dref.DoseReferenceStructureType = "SITE"
    dref.DoseReferenceDescription = (target_name or "target")[:64]
    dref.DoseReferenceType = "TARGET"
    if prescription_gy is not None:
        dref.DeliveryMaximumDose = format_ds(float(prescription_gy) * 1.2)
        dref.TargetPrescriptionDose = format_ds(float(prescription_gy))
    ds.DoseReferenceSequence = Sequence([dref])

    # RT patient setup
    setup = Dataset()
    setup.PatientPosition = patient_position
    setup.PatientSetupNumber = 1
    setup.SetupTechnique = "ISOCENTRIC"
    ds.PatientSetupSequence = Sequence([setup])

    # RT fraction scheme
    total_mu = sum(b.total_mu for b in plan.beams)
    fx_dose = None if prescription_gy is None else float(prescription_gy) / plan.fractions
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = int(plan.fractions)
    fg.NumberOfBeams = len(plan.beams)
    fg.NumberOfBrachyApplicationSetups = 0
    rbs = []
    for number, b in enumerate(plan.beams, start=1):
        rb = Dataset()
        rb.ReferencedBeamNumber = number
        if beam_dose_gy is not None:
            rb.BeamDose = format_ds(float(beam_dose_gy[b.name]))
        elif fx_dose is not None:
            rb.BeamDose = format_ds(fx_dose * b.total_mu / total_mu)
        rb.BeamMeterset = format_ds(b.total_mu)
        rbs.append(rb)
    fg.ReferencedBeamSequence = Sequence(rbs)
    rdr = Dataset()
    rdr.ReferencedDoseReferenceNumber = 1
    fg.ReferencedDoseReferenceSequence = Sequence([rdr])
    ds.FractionGroupSequence = Sequence([fg])

    # RT beams
    ds.BeamSequence = Sequence([_beam_item(b, number, machine, bnd) for number, b in enumerate(plan.beams, start=1)])
    # approval
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _bld_item(kind: str, n: int, boundaries: np.ndarray | None = None) -> Any:
    from pydicom.dataset import Dataset

    it = Dataset()
    it.RTBeamLimitingDeviceType = kind
    it.NumberOfLeafJawPairs = n
    if boundaries is not None:
        it.LeafPositionBoundaries = format_ds_list(boundaries)
    return it


def _positions(seg: Segment) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    x1, x2, y1, y2 = seg.jaws
    items = []
    for kind, values in (("ASYMX", [x1, x2]), ("ASYMY", [y1, y2]), ("MLCX", list(seg.leaf_positions[0]) + list(seg.leaf_positions[1]))):
        it = Dataset()
        it.RTBeamLimitingDeviceType = kind
        it.LeafJawPositions = format_ds_list(values)
        items.append(it)
    return Sequence(items)


def _beam_item(b: Beam, number: int, machine: Any, bnd: np.ndarray) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    it = Dataset()
    it.Manufacturer = ""
    it.TreatmentMachineName = str(machine.name)[:16]
    it.PrimaryDosimeterUnit = "MU"
    it.SourceAxisDistance = format_ds(machine.sad_mm)
    it.BeamLimitingDeviceSequence = Sequence([_bld_item("ASYMX", 1), _bld_item("ASYMY", 1), _bld_item("MLCX", bnd.size - 1, bnd)])
    it.BeamNumber = number
    it.BeamName = b.name
    it.BeamType = "STATIC"
    it.RadiationType = "PHOTON"
    energy_mv, mode = energy_to_dicom(b.energy)
    fm = Dataset()
    if mode is None:
        fm.FluenceMode = "STANDARD"
    else:
        fm.FluenceMode = "NON_STANDARD"
        fm.FluenceModeID = mode
    it.PrimaryFluenceModeSequence = Sequence([fm])
    it.TreatmentDeliveryType = "TREATMENT"
    it.NumberOfWedges = 0
    it.NumberOfCompensators = 0
    it.NumberOfBoli = 0
    it.NumberOfBlocks = 0
    segs = [s for s in b.segments if s.mu > 0]
    total = float(sum(s.mu for s in segs))
    it.FinalCumulativeMetersetWeight = format_ds(1.0)
    cps = []
    cum = 0.0
    for k, s in enumerate(segs):
        for end in (0, 1):
            if end:
                cum += s.mu
            cp = Dataset()
            cp.ControlPointIndex = len(cps)
            if not cps:
                cp.NominalBeamEnergy = format_ds(energy_mv)
                cp.DoseRateSet = format_ds(machine.dose_rate_mu_per_min)
            cp.BeamLimitingDevicePositionSequence = _positions(s)
            if not cps:
                cp.GantryAngle = format_ds(b.gantry_deg % 360.0)
                cp.GantryRotationDirection = "NONE"
                cp.BeamLimitingDeviceAngle = format_ds(b.collimator_deg % 360.0)
                cp.BeamLimitingDeviceRotationDirection = "NONE"
                cp.PatientSupportAngle = format_ds(b.couch_deg % 360.0)
                cp.PatientSupportRotationDirection = "NONE"
                cp.TableTopEccentricAngle = format_ds(0.0)
                cp.TableTopEccentricRotationDirection = "NONE"
                cp.TableTopVerticalPosition = None
                cp.TableTopLongitudinalPosition = None
                cp.TableTopLateralPosition = None
                cp.IsocenterPosition = format_ds_list(b.isocenter_lps)
            last = k == len(segs) - 1 and end == 1
            cp.CumulativeMetersetWeight = format_ds(1.0 if last else min(cum / total, 1.0))
            cps.append(cp)
    it.NumberOfControlPoints = len(cps)
    it.ControlPointSequence = Sequence(cps)
    it.ReferencedPatientSetupNumber = 1
    return it


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
        ``name`` (RTPlanName), ``beam_dose_gy`` ({beam name: Gy per fraction}),
        ``patient_position`` (``"HFS"``), ``plan_date``, ``plan_time``,
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


# =====================================================================  reading
def _floats(value: Any, what: str, path: Path, beam: str) -> np.ndarray:
    try:
        seq = [value] if isinstance(value, (int, float, str)) else list(value)
        a = np.array([float(v) for v in seq], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"beam {beam!r}: {what} is not numeric", path=path) from exc
    if not np.all(np.isfinite(a)):
        raise DicomError(f"beam {beam!r}: {what} has non-finite values", path=path)
    return a


def _number(item: Any, keyword: str, path: Path, beam: str, default: float | None = None) -> float | None:
    v = item.get(keyword, None)
    if v is None or v == "":
        return default
    return float(_floats(v, keyword, path, beam)[0])


def read_rtplan(path: str | Path, *, machine: Any = None) -> Plan:
    """Read a photon RT Plan (ours or another system's) into a :class:`~art.plan.Plan`.

    Parameters
    ----------
    path : str or Path
        The RTPLAN file.
    machine : art.dose.Machine, optional, keyword-only
        When given, the plan's MLC boundaries must be the machine's, and plans
        without an MLC get the machine's leaves opened to the jaws.

    Returns
    -------
    Plan
        MU per fraction; see the module notes for the extra attributes
        (``frame_of_reference_uid``, ``patient_position``, ...).

    Raises
    ------
    DicomError
        Unreadable file, not an RT Plan, or a beam that cannot be represented
        (named with the file).
    """
    from art.io.dicom_common import malformed_as_dicom_error

    with malformed_as_dicom_error("RT Plan", path):
        return _read_rtplan(path, machine=machine)


def _read_rtplan(path: str | Path, *, machine: Any = None) -> Plan:
    """See :func:`read_rtplan`."""
    path = Path(path)
    ds = read_dataset(path, stop_before_pixels=True, what="RTPLAN file")
    if str(ds.get("Modality", "")) != "RTPLAN" and str(ds.get("SOPClassUID", "")) != RT_PLAN_STORAGE:
        raise DicomError(f"not an RT Plan (Modality {ds.get('Modality', 'missing')})", path=path)
    beams_ds = sequence_items(ds, "BeamSequence")
    if not beams_ds:
        raise DicomError("RT Plan has no BeamSequence (ion or brachytherapy plans are not supported)", path=path)
    fgs = sequence_items(ds, "FractionGroupSequence")
    if not fgs:
        raise DicomError("RT Plan has no FractionGroupSequence (number of fractions and MU unknown)", path=path)
    if len(fgs) > 1:
        raise DicomError(f"RT Plan has {len(fgs)} fraction groups; only single-group plans are supported", path=path)
    fg = fgs[0]
    try:
        fractions = int(fg.NumberOfFractionsPlanned)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomError("fraction group lacks a valid NumberOfFractionsPlanned", path=path) from exc
    if fractions < 1:
        raise DicomError(f"NumberOfFractionsPlanned must be at least 1, got {fractions}", path=path)
    meterset: dict[int, float] = {}
    for rb in sequence_items(fg, "ReferencedBeamSequence"):
        try:
            num = int(rb.ReferencedBeamNumber)
        except (AttributeError, TypeError, ValueError) as exc:
            raise DicomError("ReferencedBeamSequence item lacks ReferencedBeamNumber", path=path) from exc
        mu = rb.get("BeamMeterset", None)
        if mu is not None and mu != "":
            meterset[num] = float(mu)

    setups = {}
    for st in sequence_items(ds, "PatientSetupSequence"):
        try:
            setups[int(st.PatientSetupNumber)] = str(st.get("PatientPosition", "") or "HFS")
        except (AttributeError, TypeError, ValueError):
            continue

    bnd_machine = None if machine is None else np.asarray(machine.mlc.boundaries_mm, dtype=np.float64)
    beams = []
    machine_names = set()
    positions = set()
    for item in beams_ds:
        name = str(item.get("BeamName", "") or "").strip() or f"Beam {item.get('BeamNumber', len(beams) + 1)}"
        try:
            number = int(item.BeamNumber)
        except (AttributeError, TypeError, ValueError) as exc:
            raise DicomError(f"beam {name!r} lacks a valid BeamNumber", path=path) from exc
        if str(item.get("TreatmentDeliveryType", "TREATMENT") or "TREATMENT") != "TREATMENT":
            continue  # set-up / verification beams deliver no treatment dose
        if number not in meterset:
            if number in [int(rb.ReferencedBeamNumber) for rb in sequence_items(fg, "ReferencedBeamSequence")]:
                raise DicomError(f"beam {name!r}: no BeamMeterset in the fraction group", path=path)
            continue  # not part of the fraction group
        rad = str(item.get("RadiationType", "PHOTON") or "PHOTON")
        if rad != "PHOTON":
            raise DicomError(f"beam {name!r}: RadiationType {rad} is not supported (photons only)", path=path)
        unit = str(item.get("PrimaryDosimeterUnit", "MU") or "MU")
        if unit != "MU":
            raise DicomError(f"beam {name!r}: PrimaryDosimeterUnit {unit} is not supported (MU only)", path=path)
        for kw in ("NumberOfWedges", "NumberOfCompensators", "NumberOfBlocks", "NumberOfBoli"):
            if int(item.get(kw, 0) or 0) > 0:
                raise DicomError(f"beam {name!r}: {kw} > 0 is not supported (wedges, compensators, blocks, boli)", path=path)
        machine_names.add(str(item.get("TreatmentMachineName", "") or ""))
        positions.add(setups.get(int(item.get("ReferencedPatientSetupNumber", 1) or 1), "HFS"))
        beams.append(_read_beam(item, name, meterset[number], path, bnd_machine))
    if not beams:
        raise DicomError("RT Plan has no treatment beam in its fraction group", path=path)
    if len(positions) > 1:
        raise DicomError(f"beams use different patient positions {sorted(positions)}", path=path)
    names = [b.name for b in beams]
    for i, n in enumerate(names):
        if names.count(n) > 1:
            beams[i].name = f"{n} ({i + 1})"

    label = str(ds.get("RTPlanLabel", "") or "")
    rx = None
    for dr in sequence_items(ds, "DoseReferenceSequence"):
        if str(dr.get("DoseReferenceType", "")) == "TARGET" and dr.get("TargetPrescriptionDose", None) not in (None, ""):
            rx = {"target": str(dr.get("DoseReferenceDescription", "") or ""), "dose_gy": float(dr.TargetPrescriptionDose)}
            break
    plan = Plan(beams=beams, fractions=fractions, machine_name=",".join(sorted(machine_names)), label=label, prescription=rx)
    plan.frame_of_reference_uid = str(ds.get("FrameOfReferenceUID", "") or "")  # type: ignore[attr-defined]
    plan.sop_instance_uid = str(ds.get("SOPInstanceUID", "") or "")  # type: ignore[attr-defined]
    plan.patient_position = positions.pop()  # type: ignore[attr-defined]
    rs = sequence_items(ds, "ReferencedStructureSetSequence")
    plan.structure_set_uid = str(rs[0].get("ReferencedSOPInstanceUID", "")) if rs else ""  # type: ignore[attr-defined]
    plan.source_path = path  # type: ignore[attr-defined]
    return plan


def _segment(lp: np.ndarray, x: np.ndarray, y: np.ndarray, mu: float, name: str, i: int, path: Path) -> Segment | None:
    """A segment; None when the jaws are closed (no open area, nothing delivered through the aperture)."""
    if x[1] - x[0] <= 1e-6 or y[1] - y[0] <= 1e-6:
        return None
    try:
        return Segment(lp, (x[0], x[1], y[0], y[1]), mu)
    except InputError as exc:
        raise DicomError(f"beam {name!r} control points {i}-{i + 1}: {exc}", path=path) from exc


def _read_beam(item: Any, name: str, beam_mu: float, path: Path, bnd_machine: np.ndarray | None) -> Beam:
    # ---- devices
    devices = {}
    for d in sequence_items(item, "BeamLimitingDeviceSequence"):
        devices[str(d.get("RTBeamLimitingDeviceType", ""))] = d
    if "MLCY" in devices:
        raise DicomError(f"beam {name!r}: MLCY (leaves moving along Y) is not supported", path=path)
    mlc_kw = "MLCX" if "MLCX" in devices else None
    bnd = None
    if mlc_kw:
        if "LeafPositionBoundaries" not in devices[mlc_kw]:
            raise DicomError(f"beam {name!r}: MLCX lacks LeafPositionBoundaries", path=path)
        bnd = _floats(devices[mlc_kw].LeafPositionBoundaries, "LeafPositionBoundaries", path, name)
        if bnd.size < 2 or np.any(np.diff(bnd) <= 0):
            raise DicomError(f"beam {name!r}: LeafPositionBoundaries must increase", path=path)
        if bnd_machine is not None and (bnd.size != bnd_machine.size or not np.allclose(bnd, bnd_machine, atol=0.01)):
            raise DicomError(
                f"beam {name!r}: its MLC ({bnd.size - 1} leaf pairs) is not the machine model's "
                f"({bnd_machine.size - 1} pairs); the dose cannot be computed with this machine",
                path=path,
            )
    elif bnd_machine is None:
        raise DicomError(f"beam {name!r} has no MLC: give the machine (its leaves are opened to the jaws)", path=path)
    else:
        bnd = bnd_machine
    n_pairs = bnd.size - 1
    xk = next((k for k in ("ASYMX", "X") if k in devices), None)
    yk = next((k for k in ("ASYMY", "Y") if k in devices), None)

    cps = sequence_items(item, "ControlPointSequence")
    if len(cps) < 2:
        raise DicomError(f"beam {name!r}: needs at least two control points, has {len(cps)}", path=path)
    final_w = _number(item, "FinalCumulativeMetersetWeight", path, name, None)
    beam_type = str(item.get("BeamType", "STATIC") or "STATIC")

    state: dict[str, Any] = {}
    states = []
    weights = []
    for i, cp in enumerate(cps):
        where = f"control point {i}"
        for kw, key in (("GantryAngle", "gantry"), ("BeamLimitingDeviceAngle", "coll"), ("PatientSupportAngle", "couch"), ("NominalBeamEnergy", "energy")):
            v = _number(cp, kw, path, name, None)
            if v is not None:
                state[key] = v
        if cp.get("IsocenterPosition", None) not in (None, ""):
            iso = _floats(cp.IsocenterPosition, "IsocenterPosition", path, name)
            if iso.size != 3:
                raise DicomError(f"beam {name!r} {where}: IsocenterPosition must have 3 values", path=path)
            state["iso"] = iso
        for fm in sequence_items(item, "PrimaryFluenceModeSequence")[:1]:
            if str(fm.get("FluenceMode", "")) == "NON_STANDARD":
                state["mode"] = str(fm.get("FluenceModeID", "") or "FFF")
        for p in sequence_items(cp, "BeamLimitingDevicePositionSequence"):
            kind = str(p.get("RTBeamLimitingDeviceType", ""))
            vals = _floats(p.get("LeafJawPositions", []), f"{kind} positions at {where}", path, name)
            if kind in ("ASYMX", "X", "ASYMY", "Y"):
                if vals.size != 2:
                    raise DicomError(f"beam {name!r} {where}: {kind} needs two positions, got {vals.size}", path=path)
                if vals[0] > vals[1]:
                    raise DicomError(f"beam {name!r} {where}: {kind} jaw 1 ({vals[0]} mm) is beyond jaw 2 ({vals[1]} mm)", path=path)
                state["x" if kind in ("ASYMX", "X") else "y"] = vals
            elif kind == "MLCX":
                if vals.size != 2 * n_pairs:
                    raise DicomError(f"beam {name!r} {where}: MLCX has {vals.size} positions for {n_pairs} leaf pairs", path=path)
                lp = vals.reshape(2, n_pairs)
                if np.any(lp[0] > lp[1] + 1e-6):
                    k = int(np.argmax(lp[0] > lp[1] + 1e-6))
                    raise DicomError(
                        f"beam {name!r} {where}: leaf pair {k + 1}: bank X1 ({lp[0, k]} mm) is beyond bank X2 ({lp[1, k]} mm)", path=path
                    )
                state["mlc"] = lp
        w = _number(cp, "CumulativeMetersetWeight", path, name, None)
        if w is None:
            raise DicomError(f"beam {name!r} {where}: no CumulativeMetersetWeight", path=path)
        if i == 0:
            for key, what in (("gantry", "GantryAngle"), ("energy", "NominalBeamEnergy"), ("iso", "IsocenterPosition")):
                if key not in state:
                    raise DicomError(f"beam {name!r}: first control point lacks {what}", path=path)
        weights.append(w)
        states.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()})
    wa = np.array(weights)
    if np.any(np.diff(wa) < 0):
        k = int(np.argmax(np.diff(wa) < 0))
        raise DicomError(f"beam {name!r}: CumulativeMetersetWeight decreases at control point {k + 1} ({wa[k]} -> {wa[k + 1]})", path=path)
    if final_w is None:
        final_w = float(wa[-1])
    if final_w <= 0:
        raise DicomError(f"beam {name!r}: FinalCumulativeMetersetWeight must be positive", path=path)
    if abs(wa[-1] - final_w) > 1e-6 * max(1.0, final_w) or wa[0] != 0:
        raise DicomError(f"beam {name!r}: meterset weights must run from 0 to FinalCumulativeMetersetWeight ({final_w})", path=path)
    if beam_mu <= 0 or not math.isfinite(beam_mu):
        raise DicomError(f"beam {name!r}: BeamMeterset must be positive, got {beam_mu}", path=path)

    def aperture(st: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if "mlc" in st:
            lp = st["mlc"]
        elif mlc_kw is not None:
            raise DicomError(f"beam {name!r}: MLCX declared but no leaf positions given", path=path)
        else:
            if "x" not in st:
                raise DicomError(f"beam {name!r}: no MLC and no X jaws: the field is undefined", path=path)
            lp = np.vstack([np.full(n_pairs, st["x"][0]), np.full(n_pairs, st["x"][1])])
        x = st.get("x")
        if x is None:  # no X jaws: just outside the leaf envelope
            x = np.array([float(lp[0].min()) - 1.0, float(lp[1].max()) + 1.0])
        y = st.get("y")
        if y is None:
            y = np.array([bnd[0], bnd[-1]])
        return lp, x, y

    segments = []
    for i in range(len(cps) - 1):
        dw = wa[i + 1] - wa[i]
        if dw <= 0:
            continue
        a, b = states[i], states[i + 1]
        for key, what in (("gantry", "gantry"), ("coll", "collimator"), ("couch", "couch")):
            if abs(a.get(key, 0.0) - b.get(key, 0.0)) > 1e-6:
                raise DicomError(
                    f"beam {name!r}: the {what} angle moves while the beam is on (control points {i}-{i + 1}): arcs are not supported",
                    path=path,
                )
        if abs(a["energy"] - b["energy"]) > 1e-9 or np.any(np.abs(a["iso"] - b["iso"]) > 1e-6):
            raise DicomError(f"beam {name!r}: energy or isocentre changes within the beam", path=path)
        lp0, x0, y0 = aperture(a)
        lp1, x1, y1 = aperture(b)
        travel = max(np.max(np.abs(lp1 - lp0)), np.max(np.abs(x1 - x0)), np.max(np.abs(y1 - y0)))
        mu = beam_mu * dw / final_w
        if travel <= 1e-6:
            segments.append(_segment(lp0, x0, y0, mu, name, i, path))
            continue
        if beam_type != "DYNAMIC":
            raise DicomError(
                f"beam {name!r}: leaves or jaws move while the beam is on (control points {i}-{i + 1}) in a {beam_type} beam", path=path
            )
        n_sub = int(math.ceil(travel / _MAX_TRAVEL_MM))
        for j in range(n_sub):
            t = (j + 0.5) / n_sub
            lp = (1 - t) * lp0 + t * lp1
            x = (1 - t) * x0 + t * x1
            y = (1 - t) * y0 + t * y1
            segments.append(_segment(lp, x, y, mu / n_sub, name, i, path))
    segments = [s for s in segments if s is not None]
    if not segments:
        raise DicomError(f"beam {name!r}: no meterset is delivered through an open aperture", path=path)
    st0 = states[0]
    sad = _number(item, "SourceAxisDistance", path, name, 1000.0)
    return Beam(
        name=name,
        gantry_deg=st0["gantry"],
        collimator_deg=st0.get("coll", 0.0),
        couch_deg=st0.get("couch", 0.0),
        isocenter_lps=st0["iso"],
        energy=energy_from_dicom(st0["energy"], st0.get("mode")),
        segments=segments,
        sad_mm=sad,
    )
