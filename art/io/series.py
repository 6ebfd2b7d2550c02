"""CT (and CBCT) image series: read a folder of slices into a :class:`Volume`, write one back.

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
* Pixel values become HU with RescaleSlope/RescaleIntercept (or a Modality
  LUT) per slice, through :func:`pydicom.pixels.apply_modality_lut`; missing
  slope/intercept mean 1 and 0.  The volume is float32.

Writing (:func:`write_image_series`)
------------------------------------
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
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io.dicom_common import (
    CT_IMAGE_STORAGE,
    PatientInfo,
    dicom_date,
    dicom_time,
    format_ds,
    format_ds_list,
    looks_like_dicom,
    new_file_dataset,
    patient_from_dataset,
    read_dataset,
    save_dataset,
    set_character_set,
    set_equipment,
    set_general_study,
    set_patient,
)
from art.io.uids import check_uid, new_uid

__all__ = ["PatientInfo", "ImageSeries", "read_image_series", "write_image_series"]

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
_ORIENT_TOL = 1e-4  # direction cosines
_POS_TOL_MM = 0.01  # absolute tolerance on positions, mm
_REL_TOL = 0.01  # relative tolerance on spacings


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


# =====================================================================  reading
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


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _floats(ds: Any, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword, None)
    try:
        arr = np.array([float(v) for v in _as_list(value)], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{keyword} is not numeric", path=path) from exc
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise DicomError(f"{keyword} must hold {n} finite numbers, found {arr.size}", path=path)
    return arr


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

    by_series: dict[str, list[_Header]] = defaultdict(list)
    for h in chosen:
        by_series[h.series_uid].append(h)
    if series_uid is not None:
        if series_uid not in by_series:
            raise DicomError(
                f"series {series_uid} is not in the folder; available: {_series_listing(by_series)}", path=folder
            )
        slices = by_series[series_uid]
    elif len(by_series) > 1:
        raise DicomError(
            f"folder holds {len(by_series)} {'/'.join(wanted)} series; choose one with series_uid: "
            f"{_series_listing(by_series)}",
            path=folder,
        )
    else:
        slices = next(iter(by_series.values()))

    try:
        return _read_slices(folder, slices)
    except DicomError:
        raise
    except (AttributeError, KeyError, ValueError, TypeError, IndexError, OverflowError) as exc:
        # a malformed header value that the checks above did not anticipate: refuse clearly
        where = getattr(exc, "_art_path", None) or folder
        raise DicomError(f"malformed image header ({type(exc).__name__}: {exc})", path=where) from exc


def _check_slice(h: "_Header", first: "_Header", iop0, ps0, rows0: int, cols0: int, for_uid: str, study_uid: str) -> np.ndarray:
    """Check one slice against the first; return its ImagePositionPatient (mm)."""
    ds, path = h.ds, h.path
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomError("multi-frame (enhanced) images are not supported; export single-frame slices", path=path)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError("only greyscale images (SamplesPerPixel 1) are supported", path=path)
    iop = _floats(ds, "ImageOrientationPatient", 6, path)
    if not np.allclose(iop, iop0, atol=_ORIENT_TOL):
        raise DicomError(
            f"ImageOrientationPatient differs between slices of the series ({_fmt(iop)} vs {_fmt(iop0)} in {first.path.name})",
            path=path,
        )
    ps = _floats(ds, "PixelSpacing", 2, path)
    if not np.allclose(ps, ps0, rtol=1e-4, atol=1e-5):
        raise DicomError(
            f"PixelSpacing differs between slices of the series ({_fmt(ps)} vs {_fmt(ps0)} in {first.path.name})",
            path=path,
        )
    if (int(ds.Rows), int(ds.Columns)) != (rows0, cols0):
        raise DicomError(
            f"image size {int(ds.Rows)}x{int(ds.Columns)} differs from {rows0}x{cols0} in {first.path.name}",
            path=path,
        )
    if str(ds.get("FrameOfReferenceUID", "") or "") != for_uid:
        raise DicomError(f"FrameOfReferenceUID differs from that of {first.path.name}", path=path)
    if str(ds.get("StudyInstanceUID", "") or "") != study_uid:
        raise DicomError(f"StudyInstanceUID differs from that of {first.path.name}", path=path)
    tilt = ds.get("GantryDetectorTilt", None)
    if tilt not in (None, "") and abs(float(tilt)) > 1e-6:
        raise DicomError(
            f"gantry tilt of {float(tilt):g} degrees: tilted series are not supported (resample it first)", path=path
        )
    return _floats(ds, "ImagePositionPatient", 3, path)


def _series_listing(by_series: dict[str, list[_Header]]) -> str:
    return "; ".join(f"{uid} ({hs[0].modality}, {len(hs)} slices)" for uid, hs in sorted(by_series.items()))


def _read_slices(folder: Path, slices: list[_Header]) -> ImageSeries:
    first = slices[0]
    # ---- per-slice geometry, consistency
    iop0 = _floats(first.ds, "ImageOrientationPatient", 6, first.path)
    ps0 = _floats(first.ds, "PixelSpacing", 2, first.path)
    rows0, cols0 = int(first.ds.Rows), int(first.ds.Columns)
    for_uid = str(first.ds.get("FrameOfReferenceUID", "") or "")
    study_uid = str(first.ds.get("StudyInstanceUID", "") or "")
    positions = []
    for h in slices:
        try:
            positions.append(_check_slice(h, first, iop0, ps0, rows0, cols0, for_uid, study_uid))
        except (AttributeError, KeyError, ValueError, TypeError, IndexError, OverflowError) as exc:
            exc._art_path = h.path  # type: ignore[attr-defined]
            raise
    if not for_uid:
        raise DicomError("image lacks FrameOfReferenceUID", path=first.path)
    if ps0.min() <= 0:
        raise DicomError(f"PixelSpacing must be positive, got {_fmt(ps0)}", path=first.path)

    row, col, normal = _orthonormal_axes(iop0, first.path)
    pos = np.array(positions)
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    slices = [slices[i] for i in order]
    pos, d = pos[order], d[order]

    # ---- duplicates: same SOP instance stored twice -> keep one; distinct instances -> error
    keep = [0]
    for i in range(1, len(slices)):
        prev = keep[-1]
        if abs(d[i] - d[prev]) <= _POS_TOL_MM:
            if slices[i].sop_uid == slices[prev].sop_uid:
                continue
            raise DicomError(
                f"two distinct images at the same slice position {d[i]:.3f} mm along the normal: "
                f"{slices[prev].path.name} and {slices[i].path.name}",
                path=folder,
            )
        keep.append(i)
    if len(keep) != len(slices):
        slices = [slices[i] for i in keep]
        pos, d = pos[keep], d[keep]
    sop_uids = [h.sop_uid for h in slices]
    if len(set(sop_uids)) != len(sop_uids):
        raise DicomError("the same SOPInstanceUID appears at two different slice positions", path=folder)

    if len(slices) < 2:
        raise DicomError("series has a single slice: a 3-D volume needs at least two", path=folder)

    # ---- tilt / shear: positions must lie along the normal
    in_plane = (pos - pos[0]) - np.outer(d - d[0], normal)
    off = np.linalg.norm(in_plane, axis=1)
    worst = int(np.argmax(off))
    if off[worst] > max(_POS_TOL_MM, 1e-3 * abs(d[worst] - d[0])):
        raise DicomError(
            f"slice positions are not along the slice normal (offset {off[worst]:.3f} mm at slice "
            f"{slices[worst].path.name}): gantry tilt or sheared series is not supported",
            path=folder,
        )

    # ---- even spacing
    steps = np.diff(d)
    median = float(np.median(steps))
    tol = max(_POS_TOL_MM, _REL_TOL * median)
    bad = np.nonzero(np.abs(steps - median) > tol)[0]
    if bad.size:
        b = int(bad[0])
        raise DicomError(
            f"uneven slice spacing: step of {steps[b]:.3f} mm between slices at {d[b]:.3f} mm and {d[b + 1]:.3f} mm "
            f"along the normal (LPS {_fmt(pos[b])} -> {_fmt(pos[b + 1])}), expected {median:.3f} mm: "
            f"missing slice(s)? ({bad.size} uneven step(s) in all)",
            path=folder,
        )
    dz = float((d[-1] - d[0]) / (len(d) - 1))

    # ---- pixels
    arr = np.empty((len(slices), rows0, cols0), dtype=np.float32)
    for k, h in enumerate(slices):
        arr[k] = _read_pixels(h.path, rows0, cols0)
    if not np.all(np.isfinite(arr)):
        bad_k = int(np.argmax(~np.isfinite(arr).reshape(len(slices), -1).all(axis=1)))
        raise DicomError("pixel values are not finite after rescaling (RescaleSlope/RescaleIntercept)", path=slices[bad_k].path)

    direction = np.column_stack([row, col, normal]).ravel()
    grid = Grid(
        shape=arr.shape,
        spacing=(dz, float(ps0[0]), float(ps0[1])),
        origin=tuple(pos[0]),
        direction=tuple(direction),
    )
    ds0 = slices[0].ds
    return ImageSeries(
        volume=Volume(arr, grid),
        modality=slices[0].modality,
        patient=patient_from_dataset(ds0),
        study_instance_uid=study_uid,
        series_instance_uid=slices[0].series_uid,
        frame_of_reference_uid=for_uid,
        sop_class_uid=str(ds0.get("SOPClassUID", "") or ""),
        sop_instance_uids=sop_uids,
        files=[h.path for h in slices],
        series_description=str(ds0.get("SeriesDescription", "") or ""),
        study_date=str(ds0.get("StudyDate", "") or ""),
        study_time=str(ds0.get("StudyTime", "") or ""),
        image_type=tuple(str(v) for v in _as_list(ds0.get("ImageType", []))),
    )


def _orthonormal_axes(iop: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row, col = iop[:3].copy(), iop[3:].copy()
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if abs(nr - 1) > 1e-3 or abs(nc - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise DicomError(f"ImageOrientationPatient is not two orthogonal unit vectors: {_fmt(iop)}", path=path)
    row /= nr
    col -= (col @ row) * row  # Gram-Schmidt: remove rounding of the written cosines
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


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


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in np.asarray(values).ravel()) + ")"


# =====================================================================  writing
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
    patient_position : str
        PatientPosition (HFS, FFS, HFP, ...); informative only, the geometry
        is carried by ImageOrientationPatient/ImagePositionPatient.

    Returns
    -------
    ImageSeries
        The series as written (volume values quantised as stored; slices
        reversed for a left-handed grid), with its files.
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

    study_uid = check_uid(study_instance_uid, "study_instance_uid") if study_instance_uid else new_uid()
    series_uid = check_uid(series_instance_uid, "series_instance_uid") if series_instance_uid else new_uid()
    for_uid = check_uid(frame_of_reference_uid, "frame_of_reference_uid") if frame_of_reference_uid else new_uid()
    date = dicom_date(study_date)
    time = dicom_time(study_time)
    description = series_description or ("CBCT" if is_cbct else "")
    image_type = ["ORIGINAL", "PRIMARY", "AXIAL"] + (["CBCT"] if is_cbct else [])

    # right-handed: slice axis along row x column; otherwise reverse the slices
    m = grid.direction_matrix
    if np.linalg.det(m) < 0:
        arr = arr[::-1]
        origin = grid.index_to_lps(np.array([grid.shape[0] - 1, 0, 0], dtype=np.float64))
        m = m.copy()
        m[:, 2] = -m[:, 2]
        grid = Grid(shape=grid.shape, spacing=grid.spacing, origin=tuple(origin), direction=tuple(m.ravel()))

    # int16 quantisation
    lo, hi = float(arr.min()), float(arr.max())
    slope = 1.0
    if lo < -32768 or hi > 32767:
        slope = float(np.ceil(max(abs(lo) / 32768, abs(hi) / 32767) * 1000) / 1000)
    intercept = 0.0
    pixels = np.clip(np.rint((arr - intercept) / slope), -32768, 32767).astype("<i2")
    stored = (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder: {exc.strerror or exc}", path=folder) from exc

    iop = format_ds_list(list(m[:, 0]) + list(m[:, 1]))
    pixel_spacing = format_ds_list([grid.spacing[1], grid.spacing[2]])
    nz, ny, nx = grid.shape
    win_c, win_w = ("40", "400")
    sop_uids, files = [], []
    for k in range(nz):
        sop_uid = new_uid(entropy=(series_uid, "CT-slice", k))
        ds = new_file_dataset(CT_IMAGE_STORAGE, sop_uid)
        set_character_set(ds, patient.name, description)
        ds.ImageType = image_type
        # SOP common: SOPClassUID/SOPInstanceUID set above
        if date:
            ds.InstanceCreationDate = date
        if time:
            ds.InstanceCreationTime = time
        # patient
        set_patient(ds, patient)
        # general study
        set_general_study(ds, study_uid, date, time)
        # general series
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = int(series_number)
        if date:
            ds.SeriesDate = date
        if time:
            ds.SeriesTime = time
        ds.SeriesDescription = description
        ds.Laterality = ""
        ds.PatientPosition = patient_position
        # frame of reference
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        # general equipment
        set_equipment(ds)
        # general image
        ds.InstanceNumber = k + 1
        ds.PatientOrientation = ""
        ds.ContentDate = date
        ds.ContentTime = time
        ds.AcquisitionNumber = 1
        # image plane
        ipp = grid.index_to_lps(np.array([k, 0, 0], dtype=np.float64))
        ds.PixelSpacing = pixel_spacing
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = format_ds_list(ipp)
        ds.SliceThickness = format_ds(grid.spacing[0])
        ds.SliceLocation = format_ds(float(ipp @ m[:, 2]))
        # image pixel + CT image
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
        ds.PixelData = pixels[k].tobytes()
        ds["PixelData"].VR = "OW"
        path = folder / f"CT.{sop_uid}.dcm"
        save_dataset(ds, path)
        sop_uids.append(sop_uid)
        files.append(path)

    return ImageSeries(
        volume=Volume(stored, grid),
        modality="CT",
        patient=patient,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        frame_of_reference_uid=for_uid,
        sop_class_uid=CT_IMAGE_STORAGE,
        sop_instance_uids=sop_uids,
        files=files,
        series_description=description,
        study_date=date,
        study_time=time,
        image_type=tuple(image_type),
    )
