"""The :class:`ImageSeries` record: an image volume with the DICOM identifiers needed to reference it.

Returned by :func:`art.io.series.read_image_series` and
:func:`art.io.series.write_image_series`; given to the RT writers
(RTSTRUCT, RTPLAN, RTDOSE, registration) for the patient, study, frame of
reference and slice UIDs they reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from art.errors import InputError
from art.geometry import Grid, Volume
from art.io.dicom_common import PatientInfo

__all__ = ["ImageSeries"]


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
