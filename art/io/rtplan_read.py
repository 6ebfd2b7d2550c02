"""Reading an RT Plan (RTPLAN): ours and other systems' photon plans into a :class:`~art.plan.Plan`.

Public entry: :func:`art.io.rtplan.read_rtplan`.  This module reads the plan
level (fraction group, patient setups, which beams are treatment beams,
prescription); one beam's control points become segments in
:mod:`art.io.rtplan_read_beam`.

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
leaf boundaries, which needs ``machine``.  Each beam keeps its MLC's leaf
boundaries (``Beam.leaf_boundaries_mm``).  With a ``machine`` (an
:class:`art.dose.Machine`) the plan's leaf boundaries must equal the machine's;
with a machine library (:class:`art.dose.MachineLibrary`) every beam is checked
by the library (a machine of its energy and fluence mode, preferring the beam's
TreatmentMachineName, and an MLC of its leaf boundaries), beam by beam.  Refused with a :class:`~art.errors.DicomError`
naming the file and beam: non-photon beams, MLCY, non-monotonic meterset
weights, a leaf beyond its opposite leaf, a jaw pair crossed, missing
BeamMeterset, and beams with no MU.

The returned :class:`~art.plan.Plan` carries extra attributes for the caller:
``frame_of_reference_uid`` (``""`` when the file has none),
``sop_instance_uid``, ``structure_set_uid`` (``""`` when none) and ``source_path``;
the beams' one patient position is :attr:`Plan.patient_position`.

Patient position: every treatment beam's ReferencedPatientSetupNumber (optional when
PatientSetupSequence has one item) must name a PatientSetupSequence item whose
PatientPosition (0018,5100) is HFS, FFS, HFP or FFP, the same for every beam. A plan
without PatientSetupSequence, a missing or malformed PatientPosition, a decubitus
position or beams in different positions are refused (:class:`~art.errors.DicomError`
naming the file and the attribute) — never taken as HFS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from art.errors import DicomError
from art.io.dicom_common import read_dataset, sequence_items
from art.io.rtplan_common import RT_PLAN_STORAGE
from art.io.rtplan_read_beam import _read_beam, machine_boundaries
from art.plan import Beam, Plan, check_patient_position

__all__ = ["read_rtplan"]


def read_rtplan(path: str | Path, *, machine: Any = None) -> Plan:
    """Read a photon RT Plan (ours or another system's) into a :class:`~art.plan.Plan`.

    Parameters
    ----------
    path : str or Path
        The RTPLAN file.
    machine : art.dose.Machine or art.dose.MachineLibrary, optional, keyword-only
        A machine: the plan's MLC boundaries must be the machine's, and beams
        without an MLC get the machine's leaves opened to the jaws. A library:
        each beam must be one the library can compute
        (:meth:`~art.dose.MachineLibrary.for_beam`, :class:`~art.errors.InputError`
        naming the beam and the file otherwise); beams without an MLC get the
        leaves of the library's machine for their energy. None: each beam keeps
        its MLC; beams without one are refused.

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
    fg = _single_fraction_group(ds, path)
    fractions = _fractions_planned(fg, path)
    meterset = _beam_metersets(fg, path)
    setups = _patient_setups(ds, path)

    beams, machine_names, positions = _read_beams(beams_ds, fg, meterset, setups, path, machine)

    label = str(ds.get("RTPlanLabel", "") or "")
    rx = _prescription(ds)
    plan = Plan(beams=beams, fractions=fractions, machine_name=",".join(sorted(machine_names)), label=label, prescription=rx,
                patient_position=positions.pop())  # fmt: skip
    plan.frame_of_reference_uid = str(ds.get("FrameOfReferenceUID", "") or "")  # type: ignore[attr-defined]
    plan.sop_instance_uid = str(ds.get("SOPInstanceUID", "") or "")  # type: ignore[attr-defined]
    rs = sequence_items(ds, "ReferencedStructureSetSequence")
    plan.structure_set_uid = str(rs[0].get("ReferencedSOPInstanceUID", "")) if rs else ""  # type: ignore[attr-defined]
    plan.source_path = path  # type: ignore[attr-defined]
    return plan


def _single_fraction_group(ds: Any, path: Path) -> Any:
    """The plan's one FractionGroupSequence item; :class:`DicomError` when none or several."""
    fgs = sequence_items(ds, "FractionGroupSequence")
    if not fgs:
        raise DicomError("RT Plan has no FractionGroupSequence (number of fractions and MU unknown)", path=path)
    if len(fgs) > 1:
        raise DicomError(f"RT Plan has {len(fgs)} fraction groups; only single-group plans are supported", path=path)
    fg = fgs[0]
    return fg


def _fractions_planned(fg: Any, path: Path) -> int:
    """NumberOfFractionsPlanned of the fraction group ``fg`` (at least 1, else :class:`DicomError`)."""
    try:
        fractions = int(fg.NumberOfFractionsPlanned)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomError("fraction group lacks a valid NumberOfFractionsPlanned", path=path) from exc
    if fractions < 1:
        raise DicomError(f"NumberOfFractionsPlanned must be at least 1, got {fractions}", path=path)
    return fractions


def _beam_metersets(fg: Any, path: Path) -> dict[int, float]:
    """BeamMeterset (MU per fraction) of the fraction group ``fg``, by ReferencedBeamNumber.

    Beams listed without a BeamMeterset (or with an empty one) are left out;
    an item without a ReferencedBeamNumber is a :class:`DicomError`.
    """
    meterset: dict[int, float] = {}
    for rb in sequence_items(fg, "ReferencedBeamSequence"):
        try:
            num = int(rb.ReferencedBeamNumber)
        except (AttributeError, TypeError, ValueError) as exc:
            raise DicomError("ReferencedBeamSequence item lacks ReferencedBeamNumber", path=path) from exc
        mu = rb.get("BeamMeterset", None)
        if mu is not None and mu != "":
            meterset[num] = float(mu)
    return meterset


def _patient_setups(ds: Any, path: Path) -> dict[int, str]:
    """PatientPosition by PatientSetupNumber, each one art plans for.

    Raises
    ------
    DicomError
        No PatientSetupSequence, an item without a valid PatientSetupNumber, or a
        PatientPosition that is missing, decubitus or not a supported position (named with
        the file, the attribute and the setup number).
    """
    items = sequence_items(ds, "PatientSetupSequence")
    if not items:
        raise DicomError("RT Plan has no PatientSetupSequence: the patient position (PatientPosition) is unknown", path=path)
    setups = {}
    for i, st in enumerate(items, start=1):
        try:
            number = int(st.PatientSetupNumber)
        except (AttributeError, TypeError, ValueError):
            raise DicomError(f"PatientSetupSequence item {i} lacks a valid PatientSetupNumber", path=path) from None
        what = f"PatientPosition (0018,5100) of PatientSetupSequence item {i} (setup {number})"
        setups[number] = check_patient_position(st.get("PatientPosition", None), what=what, path=path, error=DicomError)
    return setups


def _setup_of(item: Any, name: str, setups: dict[int, str], path: Path) -> str:
    """The patient position of a beam: its ReferencedPatientSetupNumber's (the only setup when it has none)."""
    ref = item.get("ReferencedPatientSetupNumber", None)
    if ref in (None, ""):
        if len(setups) == 1:
            return next(iter(setups.values()))
        raise DicomError(f"beam {name!r} lacks ReferencedPatientSetupNumber and the plan has {len(setups)} patient setups", path=path)
    number = int(ref)
    if number not in setups:
        raise DicomError(f"beam {name!r}: ReferencedPatientSetupNumber {number} is not in PatientSetupSequence", path=path)
    return setups[number]


def _read_beams(
    beams_ds: list, fg: Any, meterset: dict[int, float], setups: dict[int, str], path: Path, machine: Any
) -> tuple[list[Beam], set[str], set[str]]:
    """The treatment beams of the fraction group, read into :class:`~art.plan.Beam` objects.

    Parameters
    ----------
    beams_ds : list of pydicom Dataset
        BeamSequence items, in file order.
    fg : pydicom Dataset
        The fraction group.
    meterset : dict of int to float
        BeamMeterset (MU per fraction) by beam number.
    setups : dict of int to str
        PatientPosition by PatientSetupNumber.
    path : Path
        The file (named in the errors).
    machine : Machine, MachineLibrary or None
        What the beams are checked against (see :func:`read_rtplan`).

    Returns
    -------
    beams : list of Beam
        In file order; set-up beams and beams outside the fraction group left
        out; repeated names made unique with `` (<position>)``.
    machine_names : set of str
        TreatmentMachineName of the beams read.
    positions : set of str
        Their one patient position.

    Raises
    ------
    DicomError
        No treatment beam, beams with different patient positions, or a beam
        that cannot be represented.
    """
    beams = []
    machine_names = set()
    positions = set()
    for item in beams_ds:
        name = str(item.get("BeamName", "") or "").strip() or f"Beam {item.get('BeamNumber', len(beams) + 1)}"
        try:
            number = int(item.BeamNumber)
        except (AttributeError, TypeError, ValueError) as exc:
            raise DicomError(f"beam {name!r} lacks a valid BeamNumber", path=path) from exc
        if not _is_treatment_beam(item, name, number, meterset, fg, path):
            continue
        _check_beam_kind(item, name, path)
        tmn = str(item.get("TreatmentMachineName", "") or "")
        machine_names.add(tmn)
        positions.add(_setup_of(item, name, setups, path))
        beam = _read_beam(item, name, meterset[number], path, *machine_boundaries(machine, item, name, tmn, path))
        if hasattr(machine, "for_beam"):
            machine.for_beam(beam, machine_name=tmn, path=path)  # the library can compute it, or a clear error
        beams.append(beam)
    if not beams:
        raise DicomError("RT Plan has no treatment beam in its fraction group", path=path)
    if len(positions) > 1:
        raise DicomError(f"beams use different patient positions {sorted(positions)}", path=path)
    names = [b.name for b in beams]
    for i, n in enumerate(names):
        if names.count(n) > 1:
            beams[i].name = f"{n} ({i + 1})"
    return beams, machine_names, positions


def _is_treatment_beam(item: Any, name: str, number: int, meterset: dict[int, float], fg: Any, path: Path) -> bool:
    """True for a TREATMENT beam of the fraction group (set-up and verification beams deliver no dose).

    Raises :class:`DicomError` for a beam the fraction group lists without a BeamMeterset.
    """
    if str(item.get("TreatmentDeliveryType", "TREATMENT") or "TREATMENT") != "TREATMENT":
        return False  # set-up / verification beams deliver no treatment dose
    if number not in meterset:
        if number in [int(rb.ReferencedBeamNumber) for rb in sequence_items(fg, "ReferencedBeamSequence")]:
            raise DicomError(f"beam {name!r}: no BeamMeterset in the fraction group", path=path)
        return False  # not part of the fraction group
    return True


def _check_beam_kind(item: Any, name: str, path: Path) -> None:
    """Refuse (:class:`DicomError`) non-photon beams, a dosimeter unit other than MU, wedges, compensators, blocks and boli."""
    rad = str(item.get("RadiationType", "PHOTON") or "PHOTON")
    if rad != "PHOTON":
        raise DicomError(f"beam {name!r}: RadiationType {rad} is not supported (photons only)", path=path)
    unit = str(item.get("PrimaryDosimeterUnit", "MU") or "MU")
    if unit != "MU":
        raise DicomError(f"beam {name!r}: PrimaryDosimeterUnit {unit} is not supported (MU only)", path=path)
    for kw in ("NumberOfWedges", "NumberOfCompensators", "NumberOfBlocks", "NumberOfBoli"):
        if int(item.get(kw, 0) or 0) > 0:
            raise DicomError(f"beam {name!r}: {kw} > 0 is not supported (wedges, compensators, blocks, boli)", path=path)


def _prescription(ds: Any) -> dict | None:
    """``{"target": description, "dose_gy": Gy}`` of the first TARGET dose reference with a TargetPrescriptionDose, else None."""
    rx = None
    for dr in sequence_items(ds, "DoseReferenceSequence"):
        if str(dr.get("DoseReferenceType", "")) == "TARGET" and dr.get("TargetPrescriptionDose", None) not in (None, ""):
            rx = {"target": str(dr.get("DoseReferenceDescription", "") or ""), "dose_gy": float(dr.TargetPrescriptionDose)}
            break
    return rx
