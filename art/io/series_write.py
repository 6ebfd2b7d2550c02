"""Writing a CT (and CBCT) image series: a :class:`~art.geometry.Volume` as one CT Image Storage file per slice.

Public entry: :func:`art.io.series.write_image_series` (re-exported by :mod:`art.io`).

One CT Image Storage file per slice, named ``CT.<SOPInstanceUID>.dcm``,
explicit VR little endian, with every type 1 and type 2 attribute of the CT
Image IOD modules (Patient, General Study, General Series, Frame of Reference,
General Equipment, General Image, Image Plane, Image Pixel, CT Image, SOP
Common).  Pixels are int16 with RescaleSlope 1 and RescaleIntercept 0 (values
rounded to the nearest HU) unless the volume exceeds the int16 range, when a
larger slope is chosen.  DS values are formatted with
:func:`pydicom.valuerep.format_number_as_ds`.  Given the same UIDs and dates
the files are byte-for-byte identical: SOP instance UIDs are derived from the
series UID and slice index (:func:`art.io.uids.new_uid` with entropy), and
dates/times are empty (type 2) unless given.  A grid whose direction is
left-handed (slice axis opposite to ``row x column``) is written with its
slices in reverse order, so that what is read back is the same volume on the
equivalent right-handed grid.

A derived series (``derivation=``, e.g. the synthetic CT of an adapted plan,
:mod:`art.io.derived_series`) is written with ImageType ``DERIVED\\SECONDARY\\AXIAL``,
DerivationDescription and, per slice, a SourceImageSequence (General Reference
module, PS3.3 C.12.4) naming the images it was made from, each with
SpatialLocationsPreserved and the purpose code (121322, DCM, "Source image for
image processing operation").
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from art.errors import InputError
from art.geometry import Grid, Volume
from art.io.dicom_common import (
    CT_IMAGE_STORAGE,
    PatientInfo,
    dicom_date,
    dicom_time,
    format_ds,
    format_ds_list,
    new_file_dataset,
    save_dataset,
    set_character_set,
    set_equipment,
    set_general_study,
    set_patient,
)
from art.io.image_series import ImageSeries
from art.io.uids import check_uid, new_uid
from art.plan import check_patient_position

__all__ = ["write_image_series", "Derivation", "SourceImage", "stored_image"]

#: CID 7202 "Source Image Purposes of Reference": the purpose code of every SourceImageSequence item.
SOURCE_IMAGE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")


@dataclass(frozen=True)
class SourceImage:
    """One image a derived slice was made from (an item of its SourceImageSequence).

    Attributes
    ----------
    sop_class_uid, sop_instance_uid : str
        ReferencedSOPClassUID and ReferencedSOPInstanceUID of the source slice.
    spatial_locations_preserved : str
        ``"YES"`` when the derived slice lies on the source's pixels (same grid),
        ``"NO"`` when it was resampled from it through a transformation.
    """

    sop_class_uid: str
    sop_instance_uid: str
    spatial_locations_preserved: str = "NO"


@dataclass(frozen=True)
class Derivation:
    """What a derived image series was made from (written with :func:`write_image_series`).

    Attributes
    ----------
    description : str
        DerivationDescription (ST, at most 1024 characters): how the images were made.
    sources : sequence of sequences of SourceImage
        Per slice of the volume given to :func:`write_image_series` (array order),
        the images that slice was made from (its SourceImageSequence).
    """

    description: str
    sources: tuple

    def check(self, n_slices: int) -> None:
        """Refuse (:class:`InputError`) a derivation that cannot be written for ``n_slices`` slices."""
        if not isinstance(self.description, str) or not self.description.strip() or len(self.description) > 1024:
            raise InputError("derivation description must be a non-empty text of at most 1024 characters (DICOM ST)")
        if len(self.sources) != n_slices:
            raise InputError(f"derivation has sources for {len(self.sources)} slices, the volume has {n_slices}")
        for items in self.sources:
            for it in items:
                if not isinstance(it, SourceImage) or it.spatial_locations_preserved not in ("YES", "NO"):
                    raise InputError("derivation sources must be SourceImage items with SpatialLocationsPreserved YES or NO")
                check_uid(it.sop_class_uid, "source image SOP class UID")
                check_uid(it.sop_instance_uid, "source image SOP instance UID")


def stored_image(volume: Volume) -> Volume:
    """The image as :func:`write_image_series` stores it (int16 steps of the rescale slope), float32 HU, same grid.

    Computing with this volume gives what any reader of the written series gets.
    """
    if not isinstance(volume, Volume):
        raise InputError(f"volume must be a Volume, got {type(volume).__name__}")
    arr = np.asarray(volume.array, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError("volume holds NaN or infinite values")
    return Volume(_quantise_int16(arr)[1], volume.grid)


@dataclass(frozen=True)
class _SeriesHeader:
    """The values every slice file of the written series shares.

    Attributes
    ----------
    patient : PatientInfo
        Patient module (never print it).
    study_uid, series_uid, for_uid : str
        StudyInstanceUID, SeriesInstanceUID, FrameOfReferenceUID.
    date, time : str
        DICOM DA / TM strings (empty when not given).
    description : str
        SeriesDescription.
    image_type : list of str
        ImageType values.
    series_number : int
        SeriesNumber.
    patient_position : str
        PatientPosition (HFS, FFS, ...).
    """

    patient: PatientInfo
    study_uid: str
    series_uid: str
    for_uid: str
    date: str
    time: str
    description: str
    image_type: list
    series_number: int
    patient_position: str


def write_image_series(
    volume: Volume,
    folder: str | Path,
    *,
    patient: PatientInfo,
    frame_of_reference_uid: str | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    modality: str = "CT",
    series_description: str = "",
    series_number: int = 1,
    study_date: _dt.date | str | None = None,
    study_time: _dt.time | str | None = None,
    is_cbct: bool = False,
    patient_position: str = "HFS",
    derivation: Derivation | None = None,
) -> ImageSeries:
    """Write a volume as a CT Image Storage series, one file per slice.

    Parameters
    ----------
    volume : Volume
        Image in HU, shape (z, y, x) with ``z >= 2``; any orthonormal direction.
    folder : str or Path
        Output folder (created if needed); files are named
        ``CT.<SOPInstanceUID>.dcm`` and overwrite files of the same name.
    patient : PatientInfo, keyword-only
        Patient module values.
    frame_of_reference_uid, study_instance_uid, series_instance_uid : str, optional
        UIDs to use; new random ones when ``None``.  SOP instance UIDs are
        derived deterministically from the series UID and the slice index.
    modality : str
        Only ``"CT"`` is supported (a CBCT is written as CT).
    series_description : str
        SeriesDescription; defaults to ``"CBCT"`` when ``is_cbct``.
    series_number : int
        SeriesNumber.
    study_date, study_time : date/str, optional
        StudyDate/StudyTime (also used as content/series date and time);
        empty when ``None`` so that the output is deterministic.
    is_cbct : bool
        Marks a cone-beam CT: ImageType ``ORIGINAL\\PRIMARY\\AXIAL\\CBCT``.
    patient_position : {"HFS", "FFS", "HFP", "FFP"}
        PatientPosition: how the patient lay on the couch. The image geometry is carried by
        ImageOrientationPatient/ImagePositionPatient; the position sets the beam geometry of
        a plan on this image (docs/coordinates.md).
    derivation : Derivation, optional
        A derived series and, per slice, its source images (see module notes).

    Returns
    -------
    ImageSeries
        The series as written (volume values quantised as stored; slices
        reversed for a left-handed grid), with its files.
    """
    arr = _checked_array(volume, modality, patient, series_number)
    derivation = _written_derivation(derivation, volume.grid)
    header = _series_header(
        patient, frame_of_reference_uid=frame_of_reference_uid, study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid, series_description=series_description, series_number=series_number,
        study_date=study_date, study_time=study_time, is_cbct=is_cbct, patient_position=patient_position,
        derived=derivation is not None,
    )  # fmt: skip
    arr, grid, m = _right_handed(arr, volume.grid)
    pixels, stored, slope, intercept = _quantise_int16(arr)
    folder = _create_folder(folder)
    sop_uids, files = _write_slices(folder, header, grid, m, pixels, slope, intercept, derivation)
    return ImageSeries(
        volume=Volume(stored, grid), modality="CT", patient=patient, study_instance_uid=header.study_uid,
        series_instance_uid=header.series_uid, frame_of_reference_uid=header.for_uid, sop_class_uid=CT_IMAGE_STORAGE,
        sop_instance_uids=sop_uids, files=files, series_description=header.description, study_date=header.date,
        study_time=header.time, image_type=tuple(header.image_type), patient_position=header.patient_position,
    )  # fmt: skip


def _written_derivation(derivation: Derivation | None, grid: Grid) -> Derivation | None:
    """The derivation checked (:class:`InputError`), its sources in written slice order (reversed for a left-handed grid)."""
    if derivation is None:
        return None
    if not isinstance(derivation, Derivation):
        raise InputError(f"derivation must be a Derivation, got {type(derivation).__name__}")
    derivation.check(grid.shape[0])
    if np.linalg.det(grid.direction_matrix) < 0:  # slices written in reverse order (_right_handed)
        return Derivation(derivation.description, tuple(derivation.sources)[::-1])
    return derivation


def _checked_array(volume: Volume, modality: str, patient: PatientInfo, series_number: int) -> np.ndarray:
    """Refuse what cannot be written; return the image values.

    Parameters
    ----------
    volume : Volume
        Image in HU, shape (z, y, x); at least two slices, finite values.
    modality : str
        Must be ``"CT"``.
    patient : PatientInfo
        Validated (:meth:`PatientInfo.validate`).
    series_number : int
        Must be an integer (not a bool).

    Returns
    -------
    ndarray of float64, shape (z, y, x)
        The volume's values, HU.

    Raises
    ------
    InputError
        For any of the above (no patient data in the message).
    """
    if not isinstance(volume, Volume):
        raise InputError(f"volume must be a Volume, got {type(volume).__name__}")
    if modality != "CT":
        raise InputError(f"modality must be 'CT' (only CT Image Storage is written), got {modality!r}")
    if not isinstance(patient, PatientInfo):
        raise InputError(f"patient must be a PatientInfo, got {type(patient).__name__}")
    patient.validate()
    grid = volume.grid
    if grid.shape[0] < 2:
        raise InputError(f"volume must have at least two slices, got shape {grid.shape}")
    arr = np.asarray(volume.array, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError("volume holds NaN or infinite values")
    if not isinstance(series_number, (int, np.integer)) or isinstance(series_number, bool):
        raise InputError(f"series_number must be an integer, got {series_number!r}")
    return arr


def _series_header(
    patient: PatientInfo,
    *,
    frame_of_reference_uid: str | None,
    study_instance_uid: str | None,
    series_instance_uid: str | None,
    series_description: str,
    series_number: int,
    study_date: _dt.date | str | None,
    study_time: _dt.time | str | None,
    is_cbct: bool,
    patient_position: str,
    derived: bool = False,
) -> _SeriesHeader:
    """The UIDs (checked, or new random ones), dates and descriptions of the series.

    Parameters are those of :func:`write_image_series`.

    Returns
    -------
    _SeriesHeader
        With DICOM DA/TM strings (empty when not given), SeriesDescription
        ``"CBCT"`` for a CBCT without one, and the ImageType values
        (``DERIVED\\SECONDARY\\AXIAL`` when ``derived``).
    """
    study_uid = check_uid(study_instance_uid, "study_instance_uid") if study_instance_uid else new_uid()
    series_uid = check_uid(series_instance_uid, "series_instance_uid") if series_instance_uid else new_uid()
    for_uid = check_uid(frame_of_reference_uid, "frame_of_reference_uid") if frame_of_reference_uid else new_uid()
    date = dicom_date(study_date)
    time = dicom_time(study_time)
    description = series_description or ("CBCT" if is_cbct else "")
    image_type = ["DERIVED", "SECONDARY", "AXIAL"] if derived else ["ORIGINAL", "PRIMARY", "AXIAL"] + (["CBCT"] if is_cbct else [])
    patient_position = check_patient_position(patient_position)
    return _SeriesHeader(patient, study_uid, series_uid, for_uid, date, time, description, image_type, series_number, patient_position)


def _right_handed(arr: np.ndarray, grid: Grid) -> tuple[np.ndarray, Grid, np.ndarray]:
    """The volume on a right-handed grid: slice axis along ``row x column``.

    Parameters
    ----------
    arr : ndarray, shape (z, y, x)
        Image values on ``grid``.
    grid : Grid
        Any orthonormal direction.

    Returns
    -------
    arr : ndarray, shape (z, y, x)
        Unchanged, or with its slices reversed when ``grid`` is left-handed.
    grid : Grid
        ``grid``, or the equivalent right-handed grid (origin at the last
        slice, slice axis negated).
    m : ndarray, shape (3, 3)
        Direction matrix of the returned grid (columns: row, column, slice directions).
    """
    m = grid.direction_matrix
    if np.linalg.det(m) < 0:
        arr = arr[::-1]
        origin = grid.index_to_lps(np.array([grid.shape[0] - 1, 0, 0], dtype=np.float64))
        m = m.copy()
        m[:, 2] = -m[:, 2]
        grid = Grid(shape=grid.shape, spacing=grid.spacing, origin=tuple(origin), direction=tuple(m.ravel()))
    return arr, grid, m


def _quantise_int16(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """int16 pixels of the image: rounded to the nearest HU unless the range needs a larger slope.

    Parameters
    ----------
    arr : ndarray of float64, shape (z, y, x)
        Image values, HU.

    Returns
    -------
    pixels : ndarray of little-endian int16, shape (z, y, x)
        Stored values.
    stored : ndarray of float32, shape (z, y, x)
        The HU values the pixels stand for (``pixels * slope + intercept``).
    slope, intercept : float
        RescaleSlope (1, or the smallest multiple of 0.001 that fits the
        range) and RescaleIntercept (0).
    """
    lo, hi = float(arr.min()), float(arr.max())
    slope = 1.0
    if lo < -32768 or hi > 32767:
        slope = float(np.ceil(max(abs(lo) / 32768, abs(hi) / 32767) * 1000) / 1000)
    intercept = 0.0
    pixels = np.clip(np.rint((arr - intercept) / slope), -32768, 32767).astype("<i2")
    stored = (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)
    return pixels, stored, slope, intercept


def _create_folder(folder: str | Path) -> Path:
    """Create the output folder (and its parents) if needed; refuse with :class:`InputError` when impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder: {exc.strerror or exc}", path=folder) from exc
    return folder


def _write_slices(
    folder: Path, header: _SeriesHeader, grid: Grid, m: np.ndarray, pixels: np.ndarray, slope: float, intercept: float,
    derivation: Derivation | None = None,
) -> tuple[list[str], list[Path]]:
    """Write one CT Image Storage file per slice, ``CT.<SOPInstanceUID>.dcm``.

    Parameters
    ----------
    folder : Path
        Existing output folder.
    header : _SeriesHeader
        The series' shared values.
    grid : Grid
        Right-handed grid of the image, shape (z, y, x), spacing mm.
    m : ndarray, shape (3, 3)
        Its direction matrix.
    pixels : ndarray of int16, shape (z, y, x)
        Stored values.
    slope, intercept : float
        RescaleSlope and RescaleIntercept.
    derivation : Derivation or None
        Its ``sources`` in written slice order.

    Returns
    -------
    sop_uids : list of str
        SOP instance UIDs, one per slice (derived from the series UID and slice index).
    files : list of Path
        The files written, in slice order.
    """
    iop = format_ds_list(list(m[:, 0]) + list(m[:, 1]))
    pixel_spacing = format_ds_list([grid.spacing[1], grid.spacing[2]])
    nz, ny, nx = grid.shape
    sop_uids, files = [], []
    for k in range(nz):
        sop_uid = new_uid(entropy=(header.series_uid, "CT-slice", k))
        ds = new_file_dataset(CT_IMAGE_STORAGE, sop_uid)
        _set_header_modules(ds, header, k)
        _set_image_plane(ds, grid, m, k, iop, pixel_spacing)
        _set_ct_pixels(ds, pixels[k], ny, nx, slope, intercept)
        if derivation is not None:
            _set_derivation(ds, derivation, k)
        path = folder / f"CT.{sop_uid}.dcm"
        save_dataset(ds, path)
        sop_uids.append(sop_uid)
        files.append(path)
    return sop_uids, files


def _set_header_modules(ds, header: _SeriesHeader, k: int) -> None:
    """Set the SOP common, patient, study, series, frame of reference, equipment and general image attributes.

    Parameters
    ----------
    ds : pydicom.dataset.FileDataset
        The slice's dataset (SOPClassUID/SOPInstanceUID already set).
    header : _SeriesHeader
        The series' shared values.
    k : int
        Slice index (InstanceNumber ``k + 1``).
    """
    date, time = header.date, header.time
    set_character_set(ds, header.patient.name, header.description)
    ds.ImageType = header.image_type
    # SOP common: SOPClassUID/SOPInstanceUID set above
    if date:
        ds.InstanceCreationDate = date
    if time:
        ds.InstanceCreationTime = time
    # patient
    set_patient(ds, header.patient)
    # general study
    set_general_study(ds, header.study_uid, date, time)
    # general series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = header.series_uid
    ds.SeriesNumber = int(header.series_number)
    if date:
        ds.SeriesDate = date
    if time:
        ds.SeriesTime = time
    ds.SeriesDescription = header.description
    ds.Laterality = ""
    ds.PatientPosition = header.patient_position
    # frame of reference
    ds.FrameOfReferenceUID = header.for_uid
    ds.PositionReferenceIndicator = ""
    # general equipment
    set_equipment(ds)
    # general image
    ds.InstanceNumber = k + 1
    ds.PatientOrientation = ""
    ds.ContentDate = date
    ds.ContentTime = time
    ds.AcquisitionNumber = 1


def _set_image_plane(ds, grid: Grid, m: np.ndarray, k: int, iop: list[str], pixel_spacing: list[str]) -> None:
    """Set the Image Plane attributes of slice ``k``.

    Parameters
    ----------
    ds : pydicom.dataset.FileDataset
        The slice's dataset.
    grid : Grid
        Right-handed grid, spacing (dz, dy, dx) mm.
    m : ndarray, shape (3, 3)
        Its direction matrix (column 2: the slice normal).
    k : int
        Slice index.
    iop, pixel_spacing : list of str
        ImageOrientationPatient and PixelSpacing, formatted as DS.
    """
    ipp = grid.index_to_lps(np.array([k, 0, 0], dtype=np.float64))
    ds.PixelSpacing = pixel_spacing
    ds.ImageOrientationPatient = iop
    ds.ImagePositionPatient = format_ds_list(ipp)
    ds.SliceThickness = format_ds(grid.spacing[0])
    ds.SliceLocation = format_ds(float(ipp @ m[:, 2]))


def _set_ct_pixels(ds, slice_pixels: np.ndarray, ny: int, nx: int, slope: float, intercept: float) -> None:
    """Set the Image Pixel and CT Image attributes and the pixel data of one slice.

    Parameters
    ----------
    ds : pydicom.dataset.FileDataset
        The slice's dataset.
    slice_pixels : ndarray of little-endian int16, shape (ny, nx)
        The slice's stored values.
    ny, nx : int
        Rows and Columns.
    slope, intercept : float
        RescaleSlope and RescaleIntercept (HU = stored * slope + intercept).
    """
    win_c, win_w = ("40", "400")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ny
    ds.Columns = nx
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = format_ds(intercept)
    ds.RescaleSlope = format_ds(slope)
    ds.RescaleType = "HU"
    ds.KVP = ""
    ds.WindowCenter = win_c
    ds.WindowWidth = win_w
    ds.PixelData = slice_pixels.tobytes()
    ds["PixelData"].VR = "OW"


def _set_derivation(ds, derivation: Derivation, k: int) -> None:
    """General Reference module of a derived slice: DerivationDescription and SourceImageSequence (slice ``k``'s sources)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds.DerivationDescription = derivation.description
    items = []
    for src in derivation.sources[k]:
        it = Dataset()
        it.ReferencedSOPClassUID = src.sop_class_uid
        it.ReferencedSOPInstanceUID = src.sop_instance_uid
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = SOURCE_IMAGE_PURPOSE
        it.PurposeOfReferenceCodeSequence = Sequence([code])
        it.SpatialLocationsPreserved = src.spatial_locations_preserved
        items.append(it)
    if items:
        ds.SourceImageSequence = Sequence(items)
