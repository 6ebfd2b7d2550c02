"""Checks of exported DICOM files: the standard (``dciodvfy``) and what treatment systems need.

* :func:`run_dciodvfy` runs ``dciodvfy`` (Debian package ``dicom3tools``) on a
  file and returns its error lines (warnings ignored).
* :func:`check_rtplan_attributes` lists the attributes an RT Plan needs to be
  imported by a treatment management system although the standard leaves them
  optional (type 2 or 3) or conditional — issue 5, item 2.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

from art.errors import ArtError, InputError

__all__ = ["dciodvfy_available", "run_dciodvfy", "check_rtplan_attributes"]


def dciodvfy_available() -> bool:
    """True when the ``dciodvfy`` program is on PATH."""
    return shutil.which("dciodvfy") is not None


def run_dciodvfy(path: str | Path, *, required: bool = False, timeout_s: float = 120.0) -> list[str] | None:
    """Validate a DICOM file against its IOD with ``dciodvfy``.

    Parameters
    ----------
    path : str or Path
        The file.
    required : bool, keyword-only
        When True, a missing ``dciodvfy`` is an error; when False (default) the
        function returns None so callers (tests) can skip.
    timeout_s : float, keyword-only

    Returns
    -------
    list of str or None
        The lines starting with ``Error`` (empty: valid); None when ``dciodvfy``
        is not installed and ``required`` is False.

    Notes
    -----
    ``dciodvfy`` aborts on 32-bit uncompressed RT Dose pixel data; ``art`` writes
    16-bit dose.  An abnormal end (a signal, or a non-zero exit without error
    lines) is reported as an error line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file to validate not found", path=path)
    exe = shutil.which("dciodvfy")
    if exe is None:
        if required:
            raise ArtError("dciodvfy is not installed (Debian package dicom3tools)")
        return None
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout_s)
    out = (res.stdout or "") + (res.stderr or "")
    errors = [line.strip() for line in out.splitlines() if line.strip().startswith("Error")]
    if res.returncode < 0 or (res.returncode != 0 and not errors):
        errors.append(f"Error - dciodvfy ended abnormally (exit status {res.returncode})")
    return errors


def _has(item: Any, keyword: str) -> bool:
    v = item.get(keyword, None) if item is not None else None
    if v is None:
        return False
    try:
        return len(v) > 0 if not isinstance(v, (int, float)) else True
    except TypeError:
        return True


def check_rtplan_attributes(ds: Any) -> list[str]:
    """Problems with the attributes treatment systems need in an RT Plan (empty list: none).

    Checked (beyond the standard's type 1): RTPlanLabel (1-16 characters),
    RTPlanDate/Time, FrameOfReferenceUID, RTPlanGeometry ``PATIENT`` with a
    ReferencedStructureSetSequence, a TARGET DoseReferenceSequence item with
    TargetPrescriptionDose, PatientSetupSequence with PatientPosition,
    FractionGroupSequence with NumberOfFractionsPlanned and, per beam,
    BeamMeterset; a BeamDose only as the dose at a point: with a
    ReferencedDoseReferenceUID naming a ``COORDINATES`` or ``POINT`` dose
    reference; per beam: BeamName, BeamType (``DYNAMIC`` when the jaws or leaves
    change between control points, ``STATIC`` only when they do not), RadiationType
    ``PHOTON``, TreatmentMachineName, PrimaryDosimeterUnit ``MU``,
    SourceAxisDistance, TreatmentDeliveryType ``TREATMENT``, ASYMX/ASYMY/MLCX
    devices with LeafPositionBoundaries, control points (even number, jaws and
    MLC on the first, equal MLC within each step-and-shoot pair, weights
    non-decreasing from 0 to FinalCumulativeMetersetWeight; a
    CumulativeDoseReferenceCoefficient, when given, from 0 to 1 and
    non-decreasing), NominalBeamEnergy, gantry/collimator/couch angles and
    rotation directions, IsocenterPosition; ApprovalStatus; every DS value at
    most 16 characters.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An RT Plan.

    Returns
    -------
    list of str
        One message per problem, naming the attribute and beam.
    """
    problems: list[str] = []
    add = problems.append
    _check_plan_level(ds, add)
    beam_numbers_fg = _check_fraction_groups(ds, add)
    beams = list(ds.get("BeamSequence", []) or [])
    if not beams:
        add("BeamSequence missing")
    for b in beams:
        _check_beam(b, beam_numbers_fg, add)
    problems.extend(_long_ds(ds))
    return problems


def _check_plan_level(ds: Any, add: Callable[[str], None]) -> None:
    """Check the plan-level attributes: label, dates, UIDs, geometry, structure set, target prescription, setup, approval.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An RT Plan.
    add : callable
        Called with one message per problem.
    """
    label = str(ds.get("RTPlanLabel", "") or "")
    if not (1 <= len(label) <= 16):
        add(f"RTPlanLabel must have 1-16 characters, got {len(label)}")
    for kw in ("RTPlanDate", "RTPlanTime", "FrameOfReferenceUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not _has(ds, kw):
            add(f"{kw} missing or empty")
    if str(ds.get("RTPlanGeometry", "")) != "PATIENT":
        add("RTPlanGeometry must be PATIENT")
    if not _has(ds, "ReferencedStructureSetSequence"):
        add("ReferencedStructureSetSequence missing")
    drs = list(ds.get("DoseReferenceSequence", []) or [])
    if not any(str(d.get("DoseReferenceType", "")) == "TARGET" and _has(d, "TargetPrescriptionDose") for d in drs):
        add("DoseReferenceSequence lacks a TARGET item with TargetPrescriptionDose")
    setups = list(ds.get("PatientSetupSequence", []) or [])
    if not setups or not all(_has(s, "PatientPosition") for s in setups):
        add("PatientSetupSequence with PatientPosition missing")
    if str(ds.get("ApprovalStatus", "")) not in ("UNAPPROVED", "APPROVED", "REJECTED"):
        add("ApprovalStatus missing")


def _check_fraction_groups(ds: Any, add: Callable[[str], None]) -> set[int]:
    """Check FractionGroupSequence: NumberOfFractionsPlanned, BeamMeterset per beam, a BeamDose only at a point.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An RT Plan.
    add : callable
        Called with one message per problem.

    Returns
    -------
    set of int
        The beam numbers referenced by the fraction groups (-1 for one that is not a number).
    """
    fgs = list(ds.get("FractionGroupSequence", []) or [])
    points = {str(d.get("DoseReferenceUID", "")) for d in ds.get("DoseReferenceSequence", []) or []
              if str(d.get("DoseReferenceStructureType", "")) in ("COORDINATES", "POINT")}  # fmt: skip
    beam_numbers_fg: set[int] = set()
    if not fgs:
        add("FractionGroupSequence missing")
    for fg in fgs:
        if not _has(fg, "NumberOfFractionsPlanned"):
            add("NumberOfFractionsPlanned missing")
        for rb in fg.get("ReferencedBeamSequence", []) or []:
            n = rb.get("ReferencedBeamNumber", "?")
            beam_numbers_fg.add(int(n) if str(n).isdigit() else -1)
            if not _has(rb, "BeamMeterset"):
                add(f"beam {n}: BeamMeterset missing in the fraction group")
            if _has(rb, "BeamDose") and str(rb.get("ReferencedDoseReferenceUID", "")) not in points:
                add(f"beam {n}: BeamDose without a ReferencedDoseReferenceUID naming a COORDINATES or POINT dose reference (a dose at no stated point)")
    return beam_numbers_fg


def _check_beam(b: Any, beam_numbers_fg: set[int], add: Callable[[str], None]) -> None:
    """Check one BeamSequence item: reference by a fraction group, beam attributes, devices, first control point.

    Parameters
    ----------
    b : pydicom.dataset.Dataset
        The BeamSequence item.
    beam_numbers_fg : set of int
        Beam numbers referenced by the fraction groups.
    add : callable
        Called with one message per problem (naming the beam).
    """
    bn = b.get("BeamNumber", "?")
    who = f"beam {bn} ({b.get('BeamName', '')})"
    if int(bn) not in beam_numbers_fg:
        add(f"{who}: not referenced by the fraction group")
    for kw in ("BeamName", "BeamType", "TreatmentMachineName", "SourceAxisDistance", "FinalCumulativeMetersetWeight"):
        if not _has(b, kw):
            add(f"{who}: {kw} missing")
    for kw, want in (("RadiationType", "PHOTON"), ("PrimaryDosimeterUnit", "MU"), ("TreatmentDeliveryType", "TREATMENT")):
        if str(b.get(kw, "")) != want:
            add(f"{who}: {kw} must be {want}")
    devs = {str(d.get("RTBeamLimitingDeviceType", "")): d for d in b.get("BeamLimitingDeviceSequence", []) or []}
    for kind in ("ASYMX", "ASYMY", "MLCX"):
        if kind not in devs:
            add(f"{who}: BeamLimitingDeviceSequence lacks {kind}")
    n_pairs = None
    if "MLCX" in devs:
        if not _has(devs["MLCX"], "LeafPositionBoundaries"):
            add(f"{who}: MLCX lacks LeafPositionBoundaries")
        else:
            n_pairs = len(devs["MLCX"].LeafPositionBoundaries) - 1
    cps = list(b.get("ControlPointSequence", []) or [])
    if len(cps) < 2 or len(cps) % 2:
        add(f"{who}: step-and-shoot needs an even number (>= 2) of control points, got {len(cps)}")
    if cps:
        first = cps[0]
        for kw in ("NominalBeamEnergy", "GantryAngle", "GantryRotationDirection", "BeamLimitingDeviceAngle",
                   "BeamLimitingDeviceRotationDirection", "PatientSupportAngle", "PatientSupportRotationDirection",
                   "IsocenterPosition", "BeamLimitingDevicePositionSequence"):  # fmt: skip
            if not _has(first, kw):
                add(f"{who}: first control point lacks {kw}")
    _check_control_points(who, b, cps, n_pairs, add)
    _check_beam_type(who, b, cps, add)
    _check_dose_coefficients(who, cps, add)


def _check_control_points(who: str, b: Any, cps: list, n_pairs: int | None, add: Callable[[str], None]) -> None:
    """Check a beam's control points: weights from 0, non-decreasing, ending at FinalCumulativeMetersetWeight; MLC per pair.

    Parameters
    ----------
    who : str
        ``"beam <number> (<name>)"`` (in the messages).
    b : pydicom.dataset.Dataset
        The BeamSequence item.
    cps : list of pydicom.dataset.Dataset
        Its control points.
    n_pairs : int or None
        Number of MLC leaf pairs (from LeafPositionBoundaries), None when unknown.
    add : callable
        Called with one message per problem.
    """
    weights = []
    mlc_prev = None
    for i, cp in enumerate(cps):
        try:
            weights.append(float(cp.CumulativeMetersetWeight))
        except (AttributeError, TypeError, ValueError):
            add(f"{who}: control point {i} lacks CumulativeMetersetWeight")
        mlc = None
        for p in cp.get("BeamLimitingDevicePositionSequence", []) or []:
            if str(p.get("RTBeamLimitingDeviceType", "")) == "MLCX":
                mlc = [float(v) for v in p.LeafJawPositions]
                if n_pairs is not None and len(mlc) != 2 * n_pairs:
                    add(f"{who}: control point {i}: {len(mlc)} MLC positions for {n_pairs} pairs")
                elif n_pairs is not None and any(mlc[k] > mlc[k + n_pairs] for k in range(n_pairs)):
                    add(f"{who}: control point {i}: a leaf is beyond its opposite leaf")
        if i % 2 == 1 and mlc is not None and mlc_prev is not None and mlc != mlc_prev:
            add(f"{who}: control points {i - 1} and {i} (one segment) have different MLC positions")
        mlc_prev = mlc if mlc is not None else mlc_prev
    if weights:
        if weights[0] != 0.0:
            add(f"{who}: first CumulativeMetersetWeight must be 0")
        if any(b2 < a2 for a2, b2 in zip(weights, weights[1:])):
            add(f"{who}: CumulativeMetersetWeight decreases")
        if _has(b, "FinalCumulativeMetersetWeight") and weights[-1] != float(b.FinalCumulativeMetersetWeight):
            add(f"{who}: last CumulativeMetersetWeight differs from FinalCumulativeMetersetWeight")


def _check_beam_type(who: str, b: Any, cps: list, add: Callable[[str], None]) -> None:
    """BeamType ``STATIC`` only when no jaw or leaf position changes between the control points (else ``DYNAMIC``)."""
    state: dict[str, list[str]] = {}
    changes = False
    for i, cp in enumerate(cps):
        for p in cp.get("BeamLimitingDevicePositionSequence", []) or []:
            kind, pos = str(p.get("RTBeamLimitingDeviceType", "")), [str(v) for v in (p.get("LeafJawPositions", []) or [])]
            changes |= i > 0 and kind in state and [float(v) for v in state[kind]] != [float(v) for v in pos]
            state[kind] = pos
    beam_type = str(b.get("BeamType", ""))
    if changes and beam_type != "DYNAMIC":
        add(f"{who}: BeamType {beam_type or 'missing'} but the jaws or leaves change between control points (DYNAMIC)")
    elif not changes and beam_type == "DYNAMIC":
        add(f"{who}: BeamType DYNAMIC but no jaw or leaf changes between control points (STATIC)")


def _check_dose_coefficients(who: str, cps: list, add: Callable[[str], None]) -> None:
    """CumulativeDoseReferenceCoefficient per dose reference: 0 at the first control point, non-decreasing, 1 at the last."""
    by_ref: dict[str, list[float]] = {}
    for cp in cps:
        for r in cp.get("ReferencedDoseReferenceSequence", []) or []:
            v = r.get("CumulativeDoseReferenceCoefficient", None)
            by_ref.setdefault(str(r.get("ReferencedDoseReferenceNumber", "?")), []).append(float("nan") if v in (None, "") else float(v))
    for ref, c in by_ref.items():
        if len(c) != len(cps):
            add(f"{who}: dose reference {ref} is referenced by {len(c)} of {len(cps)} control points")
        elif not (c[0] == 0.0 and abs(c[-1] - 1.0) <= 1e-6 and all(b2 >= a2 for a2, b2 in zip(c, c[1:]))):
            add(f"{who}: CumulativeDoseReferenceCoefficient of dose reference {ref} must run from 0 to 1 without decreasing")


def _long_ds(ds: Any, where: str = "") -> list[str]:
    """DS values longer than 16 characters, anywhere in the dataset."""
    out = []
    for elem in ds:
        if elem.VR == "SQ":
            for n, item in enumerate(elem.value):
                out.extend(_long_ds(item, f"{where}{elem.keyword}[{n}]."))
        elif elem.VR == "DS" and elem.value is not None:
            values = elem.value if elem.VM > 1 else [elem.value]
            for v in values:
                s = getattr(v, "original_string", None) or str(v)
                if len(s) > 16:
                    out.append(f"{where}{elem.keyword}: DS value {s!r} longer than 16 characters")
    return out
