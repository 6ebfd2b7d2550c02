"""The :class:`ImageSeries` record: an image volume with the DICOM identifiers needed to reference it.

Returned by :func:`art.io.series.read_image_series` and
:func:`art.io.series.write_image_series`; given to the RT writers
(RTSTRUCT, RTPLAN, RTDOSE, registration) for the patient, study, frame of
reference and slice UIDs they reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io.dicom_common import PatientInfo
from art.plan import check_patient_position

__all__ = ["ImageSeries", "check_plan_position", "check_daily_position"]


@dataclass
class ImageSeries:
    """An image series in memory: the volume and the identifiers needed to reference it.

    Attributes
    ----------
    volume : Volume
        float32 HU, shape (z, y, x), slices sorted along the slice normal.
    modality : str
        DICOM Modality (a CBCT is also ``"CT"``; see :attr:`is_cbct`).
    patient : PatientInfo
        Patient module (never print it).
    study_instance_uid, series_instance_uid, frame_of_reference_uid, sop_class_uid : str
        DICOM identifiers.
    sop_instance_uids : list of str
        One per slice, in array (k) order.
    files : list of Path
        One per slice, in array order (empty for a series built in memory).
    series_description, study_date, study_time : str
        As in the files (may be empty).
    image_type : tuple of str
        ImageType values of the first slice.
    patient_position : str
        PatientPosition (0018,5100) as stored (the same in every slice; ``""`` when absent).
        Checked where a plan needs it: :meth:`require_patient_position`.
    """

    volume: Volume
    modality: str
    patient: PatientInfo
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uids: list[str]
    files: list[Path] = field(default_factory=list)
    series_description: str = ""
    study_date: str = ""
    study_time: str = ""
    image_type: tuple[str, ...] = ()
    patient_position: str = ""

    def __post_init__(self) -> None:
        if len(self.sop_instance_uids) != self.volume.grid.shape[0]:
            raise InputError(
                f"sop_instance_uids has {len(self.sop_instance_uids)} entries for {self.volume.grid.shape[0]} slices"
            )
        if self.files and len(self.files) != self.volume.grid.shape[0]:
            raise InputError(f"files has {len(self.files)} entries for {self.volume.grid.shape[0]} slices")

    @property
    def grid(self) -> Grid:
        """The grid of :attr:`volume`."""
        return self.volume.grid

    @property
    def is_cbct(self) -> bool:
        """True when ImageType or the series description marks a cone-beam CT."""
        words = [w.upper() for w in self.image_type] + self.series_description.upper().replace("_", " ").split()
        return any("CBCT" in w or "CONEBEAM" in w for w in words) or "CONE BEAM" in self.series_description.upper()

    def require_patient_position(self) -> str:
        """The patient position for planning: one of :data:`art.plan.PATIENT_POSITIONS`.

        Raises
        ------
        DicomError
            PatientPosition absent, decubitus or not a position art plans for; the message
            names the series' first file (or the series UID) and the attribute.
        """
        where = self.files[0] if self.files else None
        what = "PatientPosition (0018,5100)" if where is not None else f"PatientPosition (0018,5100) of series {self.series_instance_uid}"
        return check_patient_position(self.patient_position, what=what, path=where, error=DicomError)


def check_plan_position(plan: Any, image: ImageSeries, *, plan_path: str | Path | None = None) -> str:
    """The patient position of a plan on an image: the image's PatientPosition, which the plan must share.

    Parameters
    ----------
    plan : art.plan.Plan
        E.g. read from an RT Plan (its PatientSetupSequence's position).
    image : ImageSeries
        The CT the plan is (re)computed on.
    plan_path : str or Path, optional, keyword-only
        The plan's file, named in the error.

    Returns
    -------
    str
        One of :data:`art.plan.PATIENT_POSITIONS`.

    Raises
    ------
    DicomError
        The image's PatientPosition is absent or not one art plans for (named with its file),
        or the plan's position differs from it (named with the plan's file).
    """
    position = image.require_patient_position()
    if plan.patient_position != position:
        raise DicomError(
            f"PatientPosition {plan.patient_position} of the plan's PatientSetupSequence differs from the CT's PatientPosition {position}",
            path=plan_path,
        )
    return position


def check_daily_position(plan: Any, image: ImageSeries) -> str:
    """The patient position of the day: the plan's, which today's image (the CBCT) must share.

    Returns
    -------
    str
        One of :data:`art.plan.PATIENT_POSITIONS`.

    Raises
    ------
    DicomError
        The image's PatientPosition is absent, not one art plans for, or not the plan's
        (named with the image's first file and the attribute).
    """
    today = image.require_patient_position()
    if today != plan.patient_position:
        where = image.files[0] if image.files else None
        raise DicomError(f"PatientPosition (0018,5100) {today} differs from the reference plan's {plan.patient_position}: "
                         "the daily image must be taken in the treatment position", path=where)  # fmt: skip
    return today
