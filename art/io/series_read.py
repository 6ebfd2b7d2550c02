"""Reading a CT (and CBCT) image series: a folder of slices into an :class:`~art.io.image_series.ImageSeries`.

Public entry: :func:`art.io.series.read_image_series` (re-exported by :mod:`art.io`).
The consistency and geometry checks of the slices are in :mod:`art.io.series_checks`.

Reading (:func:`read_image_series`)
-----------------------------------
* Every regular file directly inside the folder is considered (sub-folders are
  not searched); names and order do not matter.
* A file that is not DICOM (no ``DICM`` preamble, and does not parse as a
  raw dataset) is skipped silently: READMEs, ``.txt``, thumbnails.  A file
  that *claims* to be DICOM (``DICM`` preamble or a ``.dcm`` name) but cannot
  be parsed is an error naming the file.  pydicom reads truncated files
  without complaint, so truncation is detected by its effects: a file that
  claims to be DICOM but lacks SOPClassUID/SOPInstanceUID, a CT/MR/PET image
  that lacks its geometry, or pixel data shorter than Rows x Columns, is an
  error naming the file.
* DICOM files that are not images (RTSTRUCT, RTPLAN, ...), localiser images
  (ImageType value 3 ``LOCALIZER``) and images of other modalities are left
  out, and so is a DICOMDIR; if nothing of the requested modalities
  remains, the error says which modalities were found.
* Several series of the requested modalities and no ``series_uid``: error
  listing every series UID with its modality and slice count (no patient data).
* Slices are sorted by the projection of ImagePositionPatient on the slice
  normal ``row x column`` (cross product of the two ImageOrientationPatient
  vectors).  The grid direction has columns (row direction, column direction,
  normal) and is therefore always right-handed; the origin is the position of
  the first sorted slice; the slice spacing is the mean step between positions.
* Refused, with a :class:`~art.errors.DicomError` naming the folder or file:
  fewer than two slices; multi-frame images; inconsistent orientation, pixel
  spacing, rows/columns, frame of reference or study between slices; gantry
  tilt (``GantryDetectorTilt`` not 0, or positions not along the normal);
  uneven slice spacing (any step differing from the median step by more than
  ``max(0.01 mm, 1 %)``, named with its position: usually a missing slice);
  two *distinct* SOP instances at the same position.  Two files carrying the
  *same* SOPInstanceUID at the same position are one instance stored twice:
  one copy is kept (the first file name in sorted order) — this is the decision
  documented here.  Non-finite values after rescaling are refused.
* PatientPosition (0018,5100) is kept as stored (``ImageSeries.patient_position``,
  ``""`` when absent) and must be the same in every slice; whether a plan can be made
  for it is checked where the plan needs it (:meth:`ImageSeries.require_patient_position`).
* Pixel values become HU with RescaleSlope/RescaleIntercept (or a Modality
  LUT) per slice, through :func:`pydicom.pixels.apply_modality_lut`; missing
  slope/intercept mean 1 and 0.  The volume is float32.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io.dicom_common import looks_like_dicom, patient_from_dataset, read_dataset
from art.io.image_series import ImageSeries
from art.io.series_checks import (
    _SliceGeometry,
    _as_list,
    _check_along_normal,
    _check_slices,
    _drop_duplicates,
    _even_slice_step,
    _orthonormal_axes,
    _sort_along_normal,
)

__all__ = ["read_image_series"]

_VOLUME_IMAGE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
        "1.2.840.10008.5.1.4.1.1.128",  # PET Image Storage
        "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
    }
)  # images that always carry a position: missing geometry means a damaged file
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: skipped


@dataclass
class _Header:
    path: Path
    ds: Any
    series_uid: str
    modality: str
    sop_uid: str


def _scan_folder(folder: Path) -> tuple[list[_Header], dict[str, int]]:
    """Headers of the image files in ``folder`` (any modality) and counts of other DICOM objects."""
    headers: list[_Header] = []
    others: dict[str, int] = defaultdict(int)
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        claims_dicom = looks_like_dicom(path) or path.suffix.lower() in (".dcm", ".dicom")
        if claims_dicom:
            ds = read_dataset(path, stop_before_pixels=True)
        else:
            ds = _try_raw_dataset(path)
            if ds is None:
                continue  # not DICOM: skipped silently
        meta = getattr(ds, "file_meta", None)
        if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _MEDIA_DIRECTORY:
            others["DICOMDIR"] += 1
            continue
        if claims_dicom and ("SOPClassUID" not in ds or "SOPInstanceUID" not in ds):
            raise DicomError("incomplete DICOM file (no SOPClassUID/SOPInstanceUID): truncated?", path=path)
        modality = str(ds.get("Modality", "") or "").upper()
        is_image = "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and "Rows" in ds
        if not is_image and str(ds.get("SOPClassUID", "")) in _VOLUME_IMAGE_CLASSES:
            raise DicomError(
                "image file lacks Rows, ImageOrientationPatient or ImagePositionPatient: truncated?", path=path
            )
        image_type = [str(v).upper() for v in _as_list(ds.get("ImageType", []))]
        if not is_image or (len(image_type) > 2 and image_type[2] == "LOCALIZER"):
            others[modality or "unknown"] += 1
            continue
        series_uid = str(ds.get("SeriesInstanceUID", "") or "")
        sop_uid = str(ds.get("SOPInstanceUID", "") or "")
        if not series_uid or not sop_uid:
            raise DicomError("image file lacks SeriesInstanceUID or SOPInstanceUID", path=path)
        headers.append(_Header(path, ds, series_uid, modality, sop_uid))
    return headers, dict(others)


def _try_raw_dataset(path: Path) -> Any | None:
    """A dataset from a file without preamble, or None when it is not DICOM."""
    import warnings

    import pydicom

    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return None
    if head not in (b"\x08\x00", b"\x02\x00"):  # a raw little-endian dataset starts with group 0008 (or 0002)
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
            for _ in ds.iterall():
                pass
            for _ in getattr(ds, "file_meta", None) or ():
                pass
    except Exception:
        return None
    if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
        return None
    return ds


def read_image_series(
    folder: str | Path,
    *,
    series_uid: str | None = None,
    modalities: Sequence[str] = ("CT",),
) -> ImageSeries:
    """Read one image series from a folder of single-frame DICOM files.

    Parameters
    ----------
    folder : str or Path
        Folder holding the slices (not searched recursively); may also hold
        other files and other series.
    series_uid : str, optional, keyword-only
        SeriesInstanceUID to read; required when the folder holds several
        series of the requested modalities.
    modalities : sequence of str, keyword-only
        DICOM Modality values to accept (default ``("CT",)``).

    Returns
    -------
    ImageSeries
        float32 HU volume of shape (z, y, x) with its grid, UIDs and files.

    Raises
    ------
    DicomError
        See the module documentation for every case refused; messages name
        the folder or file and never contain patient data.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError("image series folder does not exist or is not a folder", path=folder)
    wanted = tuple(str(m).upper() for m in modalities)
    if not wanted:
        raise InputError("modalities must name at least one DICOM modality")

    headers, others = _scan_folder(folder)
    chosen = [h for h in headers if h.modality in wanted]
    if not chosen:
        found = defaultdict(int)
        for h in headers:
            found[h.modality or "unknown"] += 1
        desc = ", ".join(f"{m} image x{n}" for m, n in sorted(found.items()))
        desc_other = ", ".join(f"{m} x{n}" for m, n in sorted(others.items()))
        what = "; ".join(x for x in (desc, desc_other) if x) or "no readable DICOM file"
        raise DicomError(f"no {'/'.join(wanted)} image in folder (found: {what})", path=folder)

    slices = _choose_series(folder, chosen, wanted, series_uid)

    try:
        return _read_slices(folder, slices)
    except DicomError:
        raise
    except (AttributeError, KeyError, ValueError, TypeError, IndexError, OverflowError) as exc:
        # a malformed header value that the checks above did not anticipate: refuse clearly
        where = getattr(exc, "_art_path", None) or folder
        raise DicomError(f"malformed image header ({type(exc).__name__}: {exc})", path=where) from exc


def _choose_series(folder: Path, chosen: list[_Header], wanted: tuple[str, ...], series_uid: str | None) -> list[_Header]:
    """The slices of the one series to read.

    Parameters
    ----------
    folder : Path
        The folder read (named in the errors).
    chosen : list of _Header
        The image headers of the wanted modalities, in file-name order.
    wanted : tuple of str
        The wanted modalities (upper case; named in the error).
    series_uid : str or None
        The SeriesInstanceUID asked for; None: the folder must hold one series.

    Returns
    -------
    list of _Header
        The headers of that series, in file-name order.

    Raises
    ------
    DicomError
        The series asked for is absent, or several series and none asked for
        (the message lists every series with its modality and slice count).
    """
    by_series: dict[str, list[_Header]] = defaultdict(list)
    for h in chosen:
        by_series[h.series_uid].append(h)
    if series_uid is not None:
        if series_uid not in by_series:
            raise DicomError(
                f"series {series_uid} is not in the folder; available: {_series_listing(by_series)}", path=folder
            )
        return by_series[series_uid]
    elif len(by_series) > 1:
        raise DicomError(
            f"folder holds {len(by_series)} {'/'.join(wanted)} series; choose one with series_uid: "
            f"{_series_listing(by_series)}",
            path=folder,
        )
    else:
        return next(iter(by_series.values()))


def _series_listing(by_series: dict[str, list[_Header]]) -> str:
    return "; ".join(f"{uid} ({hs[0].modality}, {len(hs)} slices)" for uid, hs in sorted(by_series.items()))


def _read_slices(folder: Path, slices: list[_Header]) -> ImageSeries:
    """Check the slices of one series, sort them along the normal and read their pixels.

    Parameters
    ----------
    folder : Path
        The series folder (named in the errors).
    slices : list of _Header
        The headers of the series, in file-name order.

    Returns
    -------
    ImageSeries
        float32 HU volume of shape (z, y, x) on a right-handed grid (spacing
        mm, origin LPS mm at the first sorted slice), with UIDs and files.
    """
    geo = _check_slices(slices)
    row, col, normal = _orthonormal_axes(geo.iop, slices[0].path)
    slices, pos, d = _sort_along_normal(slices, geo.positions, normal)
    slices, pos, d = _drop_duplicates(folder, slices, pos, d)
    _check_along_normal(folder, slices, pos, d, normal)
    dz = _even_slice_step(folder, pos, d)
    arr = _read_volume(slices, geo.rows, geo.cols)

    direction = np.column_stack([row, col, normal]).ravel()
    grid = Grid(
        shape=arr.shape,
        spacing=(dz, float(geo.pixel_spacing[0]), float(geo.pixel_spacing[1])),
        origin=tuple(pos[0]),
        direction=tuple(direction),
    )
    return _series_from_slices(Volume(arr, grid), slices, geo)


def _read_volume(slices: list[_Header], rows: int, cols: int) -> np.ndarray:
    """The pixels of the sorted slices in HU.

    Parameters
    ----------
    slices : list of _Header
        The sorted slices (one file each).
    rows, cols : int
        Expected Rows and Columns of every slice.

    Returns
    -------
    ndarray of float32, shape (n_slices, rows, cols)
        HU after RescaleSlope/RescaleIntercept (or the Modality LUT).

    Raises
    ------
    DicomError
        Undecodable or wrongly sized pixel data, or non-finite values after rescaling.
    """
    arr = np.empty((len(slices), rows, cols), dtype=np.float32)
    for k, h in enumerate(slices):
        arr[k] = _read_pixels(h.path, rows, cols)
    if not np.all(np.isfinite(arr)):
        bad_k = int(np.argmax(~np.isfinite(arr).reshape(len(slices), -1).all(axis=1)))
        raise DicomError("pixel values are not finite after rescaling (RescaleSlope/RescaleIntercept)", path=slices[bad_k].path)
    return arr


def _read_pixels(path: Path, rows: int, cols: int) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    ds = read_dataset(path)
    try:
        raw = ds.pixel_array
    except Exception as exc:
        raise DicomError(f"cannot decode pixel data: {type(exc).__name__}: {exc}", path=path) from exc
    if raw.shape != (rows, cols):
        raise DicomError(f"pixel data has shape {raw.shape}, expected ({rows}, {cols})", path=path)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            hu = apply_modality_lut(raw, ds)
    except Exception as exc:
        raise DicomError(f"cannot apply the modality LUT / rescale: {exc}", path=path) from exc
    return np.asarray(hu, dtype=np.float32)


def _series_from_slices(volume: Volume, slices: list[_Header], geo: _SliceGeometry) -> ImageSeries:
    """The :class:`ImageSeries` of a volume read from sorted slices.

    Parameters
    ----------
    volume : Volume
        float32 HU, shape (z, y, x), in the order of ``slices``.
    slices : list of _Header
        The sorted slices; the first gives the patient, modality and descriptions.
    geo : _SliceGeometry
        The shared geometry (its frame of reference and study UIDs are used).

    Returns
    -------
    ImageSeries
        With one SOP instance UID and file per slice, in array order.
    """
    ds0 = slices[0].ds
    return ImageSeries(
        volume=volume,
        modality=slices[0].modality,
        patient=patient_from_dataset(ds0),
        study_instance_uid=geo.study_uid,
        series_instance_uid=slices[0].series_uid,
        frame_of_reference_uid=geo.frame_of_reference_uid,
        sop_class_uid=str(ds0.get("SOPClassUID", "") or ""),
        sop_instance_uids=[h.sop_uid for h in slices],
        files=[h.path for h in slices],
        series_description=str(ds0.get("SeriesDescription", "") or ""),
        study_date=str(ds0.get("StudyDate", "") or ""),
        study_time=str(ds0.get("StudyTime", "") or ""),
        image_type=tuple(str(v) for v in _as_list(ds0.get("ImageType", []))),
        patient_position=_patient_position(slices),
    )


def _patient_position(slices: list[_Header]) -> str:
    """PatientPosition (0018,5100) of the series, as stored (``""`` when absent).

    Raises
    ------
    DicomError
        Slices that disagree (named with the first slice that differs from the first).
    """
    values = [str(h.ds.get("PatientPosition", "") or "").strip() for h in slices]
    for h, v in zip(slices, values):
        if v != values[0]:
            raise DicomError(f"PatientPosition (0018,5100) {v!r} differs from the first slice's {values[0]!r}", path=h.path)
    return values[0]
