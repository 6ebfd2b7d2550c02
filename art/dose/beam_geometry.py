"""Beam geometry: IEC 61217 machine angles → DICOM patient coordinates (LPS).

All rotations are right-handed (IEC 61217, as DICOM states): a positive angle turns
counter-clockwise when seen from the positive end of the rotation axis.

Systems
-------
* IEC FIXED (f): origin at the isocentre, X_f to the right of an observer at the foot
  of the couch facing the gantry, Y_f towards the gantry, Z_f up.
* IEC GANTRY (g): the fixed system turned about Y_f by the gantry angle; the source is
  on +Z_g at SAD. Gantry 0: source above the couch; gantry 90: source on +X_f.
* IEC BEAM LIMITING DEVICE (b): the gantry system turned about Z_g by the collimator
  angle; jaws X1/X2 and MLC leaves move along X_b, leaf pairs are stacked along Y_b.
* IEC PATIENT SUPPORT (s): the fixed system turned about Z_f by the couch angle.
* Patient (LPS), by DICOM PatientPosition (the patient on the support, couch at 0):

  ========  ==================  ==================  ==================
  position  X_s (right of an    Y_s (towards the    Z_s (up)
            observer facing     gantry)
            the gantry)
  ========  ==================  ==================  ==================
  HFS       left (+x)           superior (+z)       anterior (−y)
  FFS       right (−x)          inferior (−z)       anterior (−y)
  HFP       right (−x)          superior (+z)       posterior (+y)
  FFP       left (+x)           inferior (−z)       posterior (+y)
  ========  ==================  ==================  ==================

  (IEC 61217's patient system coincides with the support system for HFS and is turned
  180° about Z_s for FFS, about Y_s for HFP, about X_s for FFP.)

So for an HFS patient, gantry 0 puts the source anterior (beam travels towards +y,
posterior), gantry 90 puts the source on the patient's left (+x), gantry 270 on the
right (−x), gantry 180 posterior. For FFS gantry 90 is on the patient's right, for HFP
gantry 0 is posterior and gantry 90 on the right, for FFP gantry 0 is posterior and
gantry 90 on the left. Decubitus positions are refused (:func:`art.plan.check_patient_position`).

The BEV coordinates used in ``art.dose``: ``(u, v)`` = (X_b, Y_b) of the ray's
intersection with the isocentre plane (mm), and ``z`` = distance from the source
along the central axis (mm; ``z = SAD`` at the isocentre plane).
"""

from __future__ import annotations

import numpy as np

from art.plan import check_patient_position

# columns: LPS vectors of the patient-support axes X_s, Y_s, Z_s
_PATIENT_FROM_SUPPORT = {
    "HFS": np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]),
    "HFP": np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]),
    "FFS": np.array([[-1.0, 0, 0], [0, 0, -1.0], [0, -1.0, 0]]),
    "FFP": np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),
}


def _rot_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def bev_to_lps_matrix(gantry_deg: float, collimator_deg: float = 0.0, couch_deg: float = 0.0, *, patient_position: str = "HFS") -> np.ndarray:
    """Rotation taking beam-limiting-device vectors (X_b, Y_b, Z_b) to LPS vectors.

    Parameters
    ----------
    gantry_deg, collimator_deg, couch_deg : float
        IEC 61217 angles, degrees.
    patient_position : {"HFS", "HFP", "FFS", "FFP"}, keyword-only
        DICOM PatientPosition (see the table in the module notes); others raise :class:`~art.errors.InputError`.

    Returns
    -------
    ndarray, shape (3, 3)
        Columns are the LPS unit vectors of X_b, Y_b and Z_b (Z_b points to the source).
    """
    m = _PATIENT_FROM_SUPPORT[check_patient_position(patient_position)]
    f_from_b = _rot_y(gantry_deg) @ _rot_z(collimator_deg)
    s_from_f = _rot_z(couch_deg).T
    return m @ s_from_f @ f_from_b


class BeamFrame:
    """Geometry of one beam: source position and BEV projection.

    Parameters
    ----------
    gantry_deg, collimator_deg, couch_deg : float
    isocenter_lps : (3,) mm
    sad_mm : float
    patient_position : str, keyword-only
    """

    def __init__(self, gantry_deg: float, collimator_deg: float, couch_deg: float, isocenter_lps, sad_mm: float, *, patient_position: str = "HFS"):
        self.rotation = bev_to_lps_matrix(gantry_deg, collimator_deg, couch_deg, patient_position=patient_position)
        self.isocenter = np.asarray(isocenter_lps, dtype=np.float64).reshape(3)
        self.sad = float(sad_mm)
        self.source = self.isocenter + self.sad * self.rotation[:, 2]

    @classmethod
    def of(cls, beam, *, patient_position: str = "HFS") -> "BeamFrame":
        """The frame of an :class:`art.plan.Beam`."""
        return cls(beam.gantry_deg, beam.collimator_deg, beam.couch_deg, beam.isocenter_lps, beam.sad_mm, patient_position=patient_position)

    @property
    def direction(self) -> np.ndarray:
        """LPS unit vector of the central axis, from the source towards the isocentre."""
        return -self.rotation[:, 2]

    def to_bev(self, points_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project LPS points (n, 3) to BEV ``(u, v)`` at the isocentre plane and axial distance ``z`` (mm)."""
        p = np.asarray(points_lps, dtype=np.float64) - self.isocenter
        b = p @ self.rotation  # (n, 3) coordinates in X_b, Y_b, Z_b
        z = self.sad - b[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(z > 1e-6, self.sad / z, np.nan)
        return b[:, 0] * scale, b[:, 1] * scale, z

    def from_bev(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_bev`: LPS points, shape (..., 3)."""
        u, v, z = np.broadcast_arrays(np.asarray(u, float), np.asarray(v, float), np.asarray(z, float))
        f = z / self.sad
        b = np.stack([u * f, v * f, self.sad - z], axis=-1)
        return b @ self.rotation.T + self.isocenter
