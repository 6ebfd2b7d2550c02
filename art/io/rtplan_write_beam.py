"""Writing one beam of an RT Plan: its devices and control points (used by :mod:`art.io.rtplan_write`).

Also the :class:`BeamDoseReference` the writer takes: the point where each beam's dose was
computed and those doses (BeamDose, CumulativeDoseReferenceCoefficient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from art.io.dicom_common import format_ds, format_ds_list, set_ds_values
from art.io.rtplan_common import energy_to_dicom
from art.plan import Beam, Segment

#: DoseReferenceNumber of the target volume and of the beam dose point.
_TARGET_REF, _POINT_REF = 1, 2


@dataclass(frozen=True)
class BeamDoseReference:
    """The point where each beam's dose was computed, and those doses (written as BeamDose).

    Attributes
    ----------
    point_lps : (3,) floats
        The dose reference point, LPS mm (e.g. the isocentre, inside the target).
    segment_dose_gy : mapping of str to sequence of float
        Per beam name: the dose at the point of each of its segments with MU > 0, in
        order, Gy per fraction (the beam's BeamDose is their sum).
    description : str
        DoseReferenceDescription of the point (at most 64 characters).
    """

    point_lps: Sequence[float]
    segment_dose_gy: Mapping[str, Sequence[float]]
    description: str = "beam dose point"


def _cumulative_coefficients(b: Beam, segs: list[Segment], dose_reference: BeamDoseReference | None) -> list[float] | None:
    """CumulativeDoseReferenceCoefficient after each segment (None without a dose reference).

    The beam's dose at the point delivered once the segment is done, over the beam's
    total there; a beam that gives the point no dose (< 1e-9 Gy) uses meterset fractions.
    """
    if dose_reference is None:
        return None
    d = np.asarray(dose_reference.segment_dose_gy[b.name], dtype=np.float64)
    if float(d.sum()) < 1e-9:
        d = np.array([s.mu for s in segs], dtype=np.float64)
    c = np.cumsum(d) / float(d.sum())
    c[-1] = 1.0
    return [float(v) for v in c]


def _is_dynamic(segs: list[Segment]) -> bool:
    """True when the jaws or leaves of the beam's segments differ (their positions change between control points)."""
    first = segs[0]
    return any(s.jaws != first.jaws or not np.array_equal(s.leaf_positions, first.leaf_positions) for s in segs[1:])


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
        set_ds_values(it, "LeafJawPositions", format_ds_list(values))
        items.append(it)
    return Sequence(items)


def _beam_item(b: Beam, number: int, machine: Any, bnd: np.ndarray, dose_reference: BeamDoseReference | None = None) -> Any:
    """One BeamSequence item: devices, beam type (``DYNAMIC`` when the apertures change), control points.

    Parameters
    ----------
    b : Beam
        With at least one segment of MU > 0 (segments of 0 MU are left out).
    number : int
        BeamNumber.
    machine : art.dose.Machine
    bnd : ndarray, shape (n_pairs + 1,)
        MLC leaf boundaries, mm.
    dose_reference : BeamDoseReference, optional
        When given, every control point references the dose point with its cumulative coefficient.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    segs = [s for s in b.segments if s.mu > 0]
    it = Dataset()
    it.Manufacturer = ""
    it.TreatmentMachineName = str(machine.name)[:16]
    it.PrimaryDosimeterUnit = "MU"
    it.SourceAxisDistance = format_ds(machine.sad_mm)
    it.BeamLimitingDeviceSequence = Sequence([_bld_item("ASYMX", 1), _bld_item("ASYMY", 1), _bld_item("MLCX", bnd.size - 1, bnd)])
    it.BeamNumber = number
    it.BeamName = b.name
    it.BeamType = "DYNAMIC" if _is_dynamic(segs) else "STATIC"
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
    it.FinalCumulativeMetersetWeight = format_ds(1.0)
    cps = _control_points(b, segs, machine, energy_mv, _cumulative_coefficients(b, segs, dose_reference))
    it.NumberOfControlPoints = len(cps)
    it.ControlPointSequence = Sequence(cps)
    it.ReferencedPatientSetupNumber = 1
    return it


def _control_points(b: Beam, segs: list[Segment], machine: Any, energy_mv: float, coeffs: list[float] | None) -> list:
    """Two control points per segment (same jaws and leaves), meterset weights from 0 to 1.

    The first carries the energy, dose rate, angles (rotation ``NONE``), table top and
    isocentre. ``coeffs`` (one per segment: the cumulative dose fraction at the dose
    point once the segment is delivered) add a ReferencedDoseReferenceSequence item to
    every control point.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    total = float(sum(s.mu for s in segs))
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
            if coeffs is not None:
                rdr = Dataset()
                rdr.ReferencedDoseReferenceNumber = _POINT_REF
                rdr.CumulativeDoseReferenceCoefficient = format_ds(1.0 if last else (coeffs[k] if end else (coeffs[k - 1] if k else 0.0)))
                cp.ReferencedDoseReferenceSequence = Sequence([rdr])
            cps.append(cp)
    return cps


