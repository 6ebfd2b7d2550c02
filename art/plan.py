"""Treatment plan data model shared by dose calculation, optimisation, sequencing and export.

Units and conventions
---------------------
* Angles in degrees, IEC 61217 (gantry, collimator = beam limiting device, couch = patient support).
* Isocentre in DICOM patient coordinates (LPS), mm.
* MLC leaf positions and jaw positions in mm **projected to the isocentre plane**, in the IEC
  BEAM LIMITING DEVICE system: leaves travel along X_b, leaf pairs are stacked along Y_b.
* MU and segments are **per fraction** (as DICOM BeamMeterset); dose computed from a
  :class:`Plan` for the course is ``per-fraction dose × Plan.fractions`` (Gy).
* The patient position (DICOM PatientPosition: HFS, FFS, HFP, FFP) says how the patient lies
  on the couch; with it the IEC 61217 angles become directions in LPS
  (:mod:`art.dose.beam_geometry`, docs/coordinates.md). Decubitus positions are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from art.errors import InputError

#: The patient positions art plans for (DICOM PatientPosition, IEC 61217): head first (towards the
#: gantry) or feet first, supine or prone.
PATIENT_POSITIONS = ("HFS", "FFS", "HFP", "FFP")

#: The decubitus positions (lying on the side): DICOM defined terms that art recognises and refuses.
DECUBITUS_POSITIONS = ("HFDR", "HFDL", "FFDR", "FFDL")

#: The other defined terms of PatientPosition (PS3.3 C.7.3.1.1.2: left/right first, anterior/posterior first).
_OTHER_DICOM_POSITIONS = ("LFP", "LFS", "RFP", "RFS", "AFDR", "AFDL", "PFDR", "PFDL")


def check_patient_position(value: Any, *, what: str = "patient_position", path: Any = None, error: type = InputError) -> str:
    """A patient position art can plan for, or a clear error.

    Parameters
    ----------
    value : object
        The position as given (a DICOM PatientPosition value, or ``None``/``""`` when absent).
    what : str, keyword-only
        How the error names the value (e.g. ``"PatientPosition (0018,5100)"``).
    path : str or Path, optional, keyword-only
        The file the value comes from (prefixed to the message).
    error : type, keyword-only
        The :class:`~art.errors.InputError` subclass raised (e.g. ``DicomError`` for a file).

    Returns
    -------
    str
        One of :data:`PATIENT_POSITIONS`.

    Raises
    ------
    InputError (or ``error``)
        Absent, decubitus, another defined term art does not plan for, or not a patient position at all.
    """
    v = "" if value is None else str(value).strip()
    supported = ", ".join(PATIENT_POSITIONS)
    if v in PATIENT_POSITIONS:
        return v
    if not v:
        problem = f"{what} is missing: the patient position on the couch is unknown (art plans for {supported})"
    elif v in DECUBITUS_POSITIONS:
        problem = f"{what} {v} is a decubitus position (lying on the side), which art does not plan for (only {supported})"
    elif v in _OTHER_DICOM_POSITIONS:
        problem = f"{what} {v} is not supported (art plans for {supported})"
    else:
        problem = f"{what} {v[:20]!r} is not a DICOM patient position (art plans for {supported})"
    raise error(problem, path=path) if path is not None else error(problem)


@dataclass
class Segment:
    """One static MLC aperture (a control-point pair of a step-and-shoot beam).

    Parameters
    ----------
    leaf_positions : ndarray, shape (2, n_pairs), mm
        Leaf tip positions at the isocentre plane along X_b: row 0 is bank X1 (the
        left bank, usually negative values), row 1 bank X2 (right bank). Pair ``k``
        covers the ``k``-th leaf boundary interval of the machine's MLC (from -Y_b to +Y_b).
        Open where ``leaf_positions[0, k] < x < leaf_positions[1, k]``.
    jaws : (x1, x2, y1, y2), mm
        Jaw positions at the isocentre plane (x1 < x2, y1 < y2; x1, y1 usually negative).
    mu : float
        Monitor units of this segment, per fraction.
    """

    leaf_positions: np.ndarray
    jaws: tuple[float, float, float, float]
    mu: float

    def __post_init__(self) -> None:
        lp = np.asarray(self.leaf_positions, dtype=np.float64)
        if lp.ndim != 2 or lp.shape[0] != 2:
            raise InputError(f"leaf_positions must have shape (2, n_pairs), got {lp.shape}")
        if not np.all(np.isfinite(lp)):
            raise InputError("leaf_positions must be finite")
        if np.any(lp[0] > lp[1] + 1e-6):
            k = int(np.argmax(lp[0] > lp[1] + 1e-6))
            raise InputError(f"leaf pair {k}: bank X1 ({lp[0, k]} mm) is beyond bank X2 ({lp[1, k]} mm)")
        self.leaf_positions = lp
        try:
            jaws = tuple(float(v) for v in self.jaws)
        except (TypeError, ValueError) as exc:
            raise InputError(f"jaws must be four numbers (x1, x2, y1, y2), got {self.jaws!r}") from exc
        if len(jaws) != 4 or not all(np.isfinite(jaws)) or jaws[0] >= jaws[1] or jaws[2] >= jaws[3]:
            raise InputError(f"jaws must be (x1, x2, y1, y2) with x1 < x2 and y1 < y2, got {self.jaws!r}")
        self.jaws = jaws  # type: ignore[assignment]
        mu = float(self.mu)
        if not np.isfinite(mu) or mu < 0:
            raise InputError(f"segment mu must be a non-negative number, got {self.mu!r}")
        self.mu = mu


@dataclass
class Beam:
    """One treatment beam (static gantry).

    Parameters
    ----------
    name : str
        Beam name.
    gantry_deg, collimator_deg, couch_deg : float
        IEC 61217 angles in degrees.
    isocenter_lps : (3,) floats
        Isocentre in LPS mm.
    energy : str
        Nominal energy, e.g. ``"6X"``.
    segments : list of Segment
        MLC apertures with their MU (per fraction); empty for a fluence-only beam.
    fluence : ndarray, shape (ny, nx), optional
        Beamlet weights (MU-equivalent fluence, per fraction) on the BEV grid
        ``fluence_grid``.
    fluence_grid : dict, optional
        ``{"x_edges_mm": (nx+1,), "y_edges_mm": (ny+1,)}`` at the isocentre plane (BEV, IEC b).
    sad_mm : float
        Source-axis distance, mm.
    leaf_boundaries_mm : ndarray, shape (n_pairs + 1,), optional
        The MLC's leaf-pair boundaries along Y_b at the isocentre plane (mm, increasing), as an RT Plan
        states them (set by :func:`art.io.rtplan.read_rtplan`); None (art's own plans): the machine's MLC.
    """

    name: str
    gantry_deg: float
    collimator_deg: float = 0.0
    couch_deg: float = 0.0
    isocenter_lps: Any = (0.0, 0.0, 0.0)
    energy: str = "6X"
    segments: list[Segment] = field(default_factory=list)
    fluence: Optional[np.ndarray] = None
    fluence_grid: Optional[dict] = None
    sad_mm: float = 1000.0
    leaf_boundaries_mm: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        for attr in ("gantry_deg", "collimator_deg", "couch_deg", "sad_mm"):
            v = getattr(self, attr)
            try:
                v = float(v)
            except (TypeError, ValueError) as exc:
                raise InputError(f"beam {self.name!r}: {attr} must be a number, got {v!r}") from exc
            if not np.isfinite(v):
                raise InputError(f"beam {self.name!r}: {attr} must be finite")
            setattr(self, attr, v)
        if self.sad_mm <= 0:
            raise InputError(f"beam {self.name!r}: sad_mm must be positive")
        iso = np.asarray(self.isocenter_lps, dtype=np.float64).reshape(-1)
        if iso.shape != (3,) or not np.all(np.isfinite(iso)):
            raise InputError(f"beam {self.name!r}: isocenter_lps must be three finite numbers (x, y, z) mm")
        self.isocenter_lps = iso
        self.segments = list(self.segments)
        for s in self.segments:
            if not isinstance(s, Segment):
                raise InputError(f"beam {self.name!r}: segments must be Segment objects")
        if self.fluence is not None:
            f = np.asarray(self.fluence, dtype=np.float64)
            if f.ndim != 2 or self.fluence_grid is None:
                raise InputError(f"beam {self.name!r}: fluence must be 2-D (ny, nx) with a fluence_grid")
            ex = np.asarray(self.fluence_grid.get("x_edges_mm"), dtype=np.float64)
            ey = np.asarray(self.fluence_grid.get("y_edges_mm"), dtype=np.float64)
            if ex.shape != (f.shape[1] + 1,) or ey.shape != (f.shape[0] + 1,):
                raise InputError(f"beam {self.name!r}: fluence_grid edges do not match fluence shape {f.shape}")
            if np.any(f < 0) or not np.all(np.isfinite(f)):
                raise InputError(f"beam {self.name!r}: fluence must be finite and non-negative")
            self.fluence = f
        if self.leaf_boundaries_mm is not None:
            self.leaf_boundaries_mm = self._checked_boundaries(self.leaf_boundaries_mm)

    def _checked_boundaries(self, value: Any) -> np.ndarray:
        """``value`` as increasing finite float64 boundaries (at least two) matching the segments' leaf pairs."""
        try:
            bnd = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InputError(f"beam {self.name!r}: leaf_boundaries_mm must be numbers") from exc
        if bnd.size < 2 or not np.all(np.isfinite(bnd)) or np.any(np.diff(bnd) <= 0):
            raise InputError(f"beam {self.name!r}: leaf_boundaries_mm must be at least two increasing finite values (mm)")
        for s in self.segments:
            if s.leaf_positions.shape[1] != bnd.size - 1:
                raise InputError(f"beam {self.name!r}: a segment has {s.leaf_positions.shape[1]} leaf pairs, leaf_boundaries_mm {bnd.size - 1}")
        return bnd

    @property
    def total_mu(self) -> float:
        """Sum of the segments' MU (per fraction)."""
        return float(sum(s.mu for s in self.segments))


@dataclass
class Plan:
    """A treatment plan: beams (per-fraction MU) and the number of fractions.

    Parameters
    ----------
    beams : list of Beam
    fractions : int
        Number of fractions; course dose = per-fraction dose × fractions.
    machine_name : str
        Name of the machine model the plan was made for.
    label : str
    prescription : dict, optional
        Free-form prescription (e.g. ``{"target": "PTV", "dose_gy": 60.0}``, total dose).
    patient_position : {"HFS", "FFS", "HFP", "FFP"}
        How the patient lies on the couch (DICOM PatientPosition, the planning CT's); turns the
        beams' IEC 61217 angles into LPS directions and is written to the RT Plan's
        PatientSetupSequence.
    """

    beams: list[Beam]
    fractions: int
    machine_name: str
    label: str = ""
    prescription: Optional[dict] = None
    patient_position: str = "HFS"

    def __post_init__(self) -> None:
        self.beams = list(self.beams)
        if not self.beams or not all(isinstance(b, Beam) for b in self.beams):
            raise InputError("a plan needs at least one Beam")
        try:
            fr = int(self.fractions)
        except (TypeError, ValueError) as exc:
            raise InputError(f"fractions must be a positive integer, got {self.fractions!r}") from exc
        if fr < 1 or fr != self.fractions:
            raise InputError(f"fractions must be a positive integer, got {self.fractions!r}")
        self.fractions = fr
        names = [b.name for b in self.beams]
        if len(set(names)) != len(names):
            raise InputError(f"beam names must be unique, got {names}")
        self.patient_position = check_patient_position(self.patient_position)

    @property
    def total_mu(self) -> dict[str, float]:
        """MU per beam (per fraction), by beam name."""
        return {b.name: b.total_mu for b in self.beams}
