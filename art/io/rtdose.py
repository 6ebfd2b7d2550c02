"""RT Dose (RTDOSE): a 3-D dose grid in Gy, written and read.

Writing (:func:`write_rtdose`)
------------------------------
One multi-frame RT Dose Storage file: DoseUnits ``GY``, DoseType ``PHYSICAL``,
DoseSummationType ``PLAN`` (or as given), 16-bit unsigned pixels with
DoseGridScaling = max dose / 65535, so one pixel step is 1/65535 of the
maximum (0.0015 %; far below the 0.1 % asked of export, and 16-bit data is what
``dciodvfy`` validates).  GridFrameOffsetVector is relative (first value 0),
along the slice normal ``row × column``; a left-handed grid is written with
its frames reversed, so reading back gives the same dose on the equivalent
right-handed grid.  ReferencedRTPlanSequence names the plan when one is given
(required for ``PLAN`` summation by treatment systems).  Patient, study and
frame of reference are the image's; the dose has its own series.  Negative
doses are refused below -1e-6 × max (numerical noise above that is written as 0).

Reading (:func:`read_rtdose`)
-----------------------------
Ours and other systems' single-dose files: 16- or 32-bit, signed or unsigned,
GridFrameOffsetVector relative (first value 0) or absolute (axial
orientation only), frames in either order (sorted along the normal), even
spacing (within 1 % or 0.01 mm) required.  Doses in ``RELATIVE`` units are
refused unless ``allow_relative=True``.  The result is float32 Gy (or the
file's relative unit) on a right-handed grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io.dicom_common import (
    format_ds,
    format_ds_list,
    new_file_dataset,
    read_dataset,
    save_dataset,
    set_general_study,
    set_patient,
    set_rt_series,
)
from art.io.image_series import ImageSeries
from art.io.uids import is_valid_uid, object_uids

__all__ = ["RT_DOSE_STORAGE", "write_rtdose", "dose_to_dataset", "read_rtdose", "stored_dose"]

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
_SUMMATIONS = ("PLAN", "MULTI_PLAN", "FRACTION", "BEAM", "BRACHY", "FRACTION_SESSION", "BEAM_SESSION", "BRACHY_SESSION", "CONTROL_POINT", "RECORD")


def dose_to_dataset(
    dose: Volume,
    image: ImageSeries,
    *,
    plan_ds_or_uid: Any = None,
    summation: str = "PLAN",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 1,
    comment: str = "",
) -> Any:
    """Build the RT Dose dataset (not written); see :func:`write_rtdose`."""
    arr, top = _checked_dose(dose, image, summation)
    arr, origin, d = _right_handed_frames(arr, dose.grid)
    pixels, scaling_s = _quantise_uint16(arr, top)
    plan_uid = _plan_uid(plan_ds_or_uid)
    series_uid, sop_uid = object_uids(series_instance_uid, sop_instance_uid, kind="RTDOSE")

    ds = new_file_dataset(RT_DOSE_STORAGE, sop_uid)
    set_patient(ds, image.patient)
    set_general_study(ds, image.study_instance_uid, image.study_date, image.study_time)
    set_rt_series(ds, "RTDOSE", series_uid, series_number, image.frame_of_reference_uid)
    ds.InstanceNumber = 1
    if comment:
        ds.DoseComment = comment[:64]
    _set_dose_frames(ds, dose.grid, d, origin, arr.shape)
    _set_rt_dose(ds, summation, arr.shape[0], dose.grid.spacing[0], scaling_s, plan_uid)
    ds.PixelData = np.ascontiguousarray(pixels).astype("<u2").tobytes()
    return ds


def _checked_dose(dose: Volume, image: ImageSeries, summation: str) -> tuple[np.ndarray, float]:
    """Refuse what cannot be written (:class:`InputError`); return the dose clipped at 0 and its maximum.

    Parameters
    ----------
    dose : Volume
        Dose in Gy, shape (z, y, x): finite, not below -1e-6 x its maximum.
    image : ImageSeries
        Must be an :class:`ImageSeries`.
    summation : str
        Must be a DoseSummationType.

    Returns
    -------
    arr : ndarray of float64, shape (z, y, x)
        The dose (Gy), negative noise set to 0.
    top : float
        Its maximum (Gy; 0 for an empty array).
    """
    if not isinstance(dose, Volume):
        raise InputError(f"dose must be an art.geometry.Volume, got {type(dose).__name__}")
    if not isinstance(image, ImageSeries):
        raise InputError(f"image must be an ImageSeries, got {type(image).__name__}")
    if summation not in _SUMMATIONS:
        raise InputError(f"summation must be one of {', '.join(_SUMMATIONS)}, got {summation!r}")
    return _dose_values(dose)


def _dose_values(dose: Volume) -> tuple[np.ndarray, float]:
    """The dose as float64 (Gy), refused when not finite or negative beyond -1e-6 × its maximum, noise clipped at 0; and its maximum."""
    if not isinstance(dose, Volume):
        raise InputError(f"dose must be an art.geometry.Volume, got {type(dose).__name__}")
    arr = np.asarray(dose.array, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError("dose has non-finite values")
    top = float(arr.max()) if arr.size else 0.0
    if arr.size and float(arr.min()) < -1e-6 * max(top, 1e-12):
        raise InputError(f"dose has negative values (min {float(arr.min()):.4g} Gy)")
    return np.clip(arr, 0.0, None), top


def _right_handed_frames(arr: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dose frames along the slice normal ``row x column``.

    Parameters
    ----------
    arr : ndarray, shape (z, y, x)
        Dose on ``grid`` (Gy).
    grid : Grid
        The dose grid, any orthonormal direction.

    Returns
    -------
    arr : ndarray, shape (z, y, x)
        Unchanged, or with its frames reversed when ``grid`` is left-handed.
    origin : ndarray, shape (3,)
        ImagePositionPatient of the first frame, LPS mm.
    d : ndarray, shape (3, 3)
        Direction matrix (columns: row, column, slice directions), slice axis
        negated for a left-handed grid.
    """
    d = grid.direction_matrix
    if np.linalg.det(d) < 0:  # left-handed: reverse the frames and the slice axis
        arr = arr[::-1]
        origin = np.asarray(grid.origin) + d[:, 2] * grid.spacing[0] * (grid.shape[0] - 1)
        d = d.copy()
        d[:, 2] = -d[:, 2]
    else:
        origin = np.asarray(grid.origin, dtype=np.float64)
    return arr, origin, d


def stored_dose(dose: Volume) -> Volume:
    """The dose exactly as an RT Dose file of :func:`write_rtdose` stores it and :func:`read_rtdose` reads it back.

    16-bit pixels in steps of DoseGridScaling (the maximum / 65535, as written), times that
    scaling, as float32 on the same grid: evaluating this dose gives the numbers any reader
    of the exported file gets.

    Parameters
    ----------
    dose : Volume
        Dose in Gy, finite, not negative (beyond -1e-6 × its maximum).

    Returns
    -------
    Volume
        float32, same grid.
    """
    arr, top = _dose_values(dose)
    pixels, scaling_s = _quantise_uint16(arr, top)
    return Volume((pixels.astype(np.float64) * float(scaling_s)).astype(np.float32), dose.grid)


def _quantise_uint16(arr: np.ndarray, top: float) -> tuple[np.ndarray, str]:
    """16-bit unsigned pixels of the dose, one step being ``top / 65535``.

    Parameters
    ----------
    arr : ndarray of float64, shape (z, y, x)
        Dose, Gy, not negative.
    top : float
        Its maximum, Gy.

    Returns
    -------
    pixels : ndarray of uint16, shape (z, y, x)
        Stored values (all 0 when ``top`` is 0).
    scaling_s : str
        DoseGridScaling as written (DS, at most 16 characters): Gy per pixel step.
    """
    scaling = top / 65535.0 if top > 0 else 1.0
    pixels = np.rint(arr / scaling).astype(np.uint16) if top > 0 else np.zeros(arr.shape, np.uint16)
    scaling_s = format_ds(scaling)
    # the written scaling (<= 16 characters) must still map the maximum within range
    if float(scaling_s) * 65535.0 < top * (1 - 1e-9):
        pixels = np.rint(arr / float(scaling_s)).clip(0, 65535).astype(np.uint16)
    return pixels, scaling_s


def _plan_uid(plan_ds_or_uid: Any) -> str | None:
    """The SOP instance UID of the RT Plan given as a dataset or a UID (None when none is given; :class:`InputError` when invalid)."""
    plan_uid = None
    if plan_ds_or_uid is not None:
        plan_uid = str(plan_ds_or_uid) if isinstance(plan_ds_or_uid, str) else str(getattr(plan_ds_or_uid, "SOPInstanceUID", ""))
        if not is_valid_uid(plan_uid):
            raise InputError("plan_ds_or_uid must be an RT Plan dataset or its SOP instance UID")
    return plan_uid


def _set_dose_frames(ds: Any, grid: Grid, d: np.ndarray, origin: np.ndarray, shape: tuple[int, int, int]) -> None:
    """Set the Image Plane, Image Pixel and Multi-frame attributes.

    Parameters
    ----------
    ds : pydicom.dataset.FileDataset
        The dose dataset.
    grid : Grid
        The dose grid (spacing (dz, dy, dx) mm).
    d : ndarray, shape (3, 3)
        Right-handed direction matrix (see :func:`_right_handed_frames`).
    origin : ndarray, shape (3,)
        Position of the first frame, LPS mm.
    shape : (nz, ny, nx)
        Frames, rows, columns.
    """
    from pydicom.tag import Tag

    nz, ny, nx = shape
    # image plane
    dx, dy, dz = grid.spacing[2], grid.spacing[1], grid.spacing[0]
    ds.PixelSpacing = format_ds_list([dy, dx])  # row spacing, column spacing
    ds.ImageOrientationPatient = format_ds_list(list(d[:, 0]) + list(d[:, 1]))
    ds.ImagePositionPatient = format_ds_list(origin)
    ds.SliceThickness = format_ds(dz)
    # image pixel + multi-frame
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = Tag(0x3004, 0x000C)
    ds.Rows = ny
    ds.Columns = nx
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0


def _set_rt_dose(ds: Any, summation: str, nz: int, dz: float, scaling_s: str, plan_uid: str | None) -> None:
    """Set the RT Dose module: units, type, summation, frame offsets, scaling and the plan referenced.

    Parameters
    ----------
    ds : pydicom.dataset.FileDataset
        The dose dataset.
    summation : str
        DoseSummationType.
    nz : int
        Number of frames.
    dz : float
        Frame spacing, mm (GridFrameOffsetVector ``0, dz, 2 dz, ...``).
    scaling_s : str
        DoseGridScaling (Gy per pixel step), as formatted.
    plan_uid : str or None
        The RT Plan's SOP instance UID (ReferencedRTPlanSequence).

    Raises
    ------
    InputError
        No plan for a ``PLAN``, ``FRACTION`` or ``BEAM`` summation.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation
    ds.GridFrameOffsetVector = format_ds_list(np.arange(nz) * dz)
    ds.DoseGridScaling = scaling_s
    ds.TissueHeterogeneityCorrection = "IMAGE"
    if plan_uid is not None:
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_PLAN_STORAGE
        ref.ReferencedSOPInstanceUID = plan_uid
        if summation in ("FRACTION", "BEAM"):
            fg = Dataset()
            fg.ReferencedFractionGroupNumber = 1
            ref.ReferencedFractionGroupSequence = Sequence([fg])
        ds.ReferencedRTPlanSequence = Sequence([ref])
    elif summation in ("PLAN", "FRACTION", "BEAM"):
        raise InputError(f"summation {summation} needs the plan (plan_ds_or_uid) for ReferencedRTPlanSequence")


def write_rtdose(
    dose: Volume,
    image: ImageSeries,
    path: str | Path,
    *,
    plan_ds_or_uid: Any = None,
    summation: str = "PLAN",
    **options: Any,
) -> Any:
    """Write a dose grid (Gy) as an RT Dose file.

    Parameters
    ----------
    dose : Volume
        Dose in Gy, shape (z, y, x), on any grid in the image's frame of
        reference (the CT grid or a coarser dose grid).
    image : ImageSeries
        The image the dose belongs to: patient, study and frame of reference.
    path : str or Path
        Output file; an existing folder gets ``RD.<SOPInstanceUID>.dcm`` inside it.
    plan_ds_or_uid : pydicom Dataset or str, keyword-only
        The RT Plan (dataset or SOP instance UID) for ReferencedRTPlanSequence;
        required for ``PLAN``, ``FRACTION`` and ``BEAM`` summations.
    summation : str, keyword-only
        DoseSummationType (default ``"PLAN"``: the course dose).
    **options
        ``series_instance_uid``, ``sop_instance_uid`` (deterministic output),
        ``series_number``, ``comment`` (DoseComment).

    Returns
    -------
    pydicom.dataset.FileDataset
        The dataset written.
    """
    ds = dose_to_dataset(dose, image, plan_ds_or_uid=plan_ds_or_uid, summation=summation, **options)
    path = Path(path)
    if path.is_dir():
        path = path / f"RD.{ds.SOPInstanceUID}.dcm"
    save_dataset(ds, path)
    return ds


def read_rtdose(path: str | Path, *, allow_relative: bool = False) -> Volume:
    """Read an RT Dose file into a float32 :class:`~art.geometry.Volume`.

    Parameters
    ----------
    path : str or Path
        The RTDOSE file.
    allow_relative : bool, keyword-only
        Accept DoseUnits ``RELATIVE`` (values are then not Gy).

    Returns
    -------
    Volume
        Dose (Gy) of shape (z, y, x) on a right-handed grid (frames sorted along the normal).

    Raises
    ------
    DicomError
        Not an RT Dose, units not GY, uneven frame spacing, pixel data missing or short.
    """
    from art.io.dicom_common import malformed_as_dicom_error

    with malformed_as_dicom_error("RT Dose", path):
        return _read_rtdose(path, allow_relative=allow_relative)


def _read_rtdose(path: str | Path, *, allow_relative: bool = False) -> Volume:
    """See :func:`read_rtdose`."""
    path = Path(path)
    ds = read_dataset(path, what="RTDOSE file")
    if str(ds.get("Modality", "")) != "RTDOSE" and str(ds.get("SOPClassUID", "")) != RT_DOSE_STORAGE:
        raise DicomError(f"not an RT Dose (Modality {ds.get('Modality', 'missing')})", path=path)
    units = str(ds.get("DoseUnits", "") or "").upper()
    if units != "GY" and not (allow_relative and units == "RELATIVE"):
        raise DicomError(f"DoseUnits {units or 'missing'} is not GY", path=path)
    for kw in ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "PixelData"):
        if kw not in ds:
            raise DicomError(f"RT Dose lacks {kw}", path=path)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError("RT Dose must have one sample per pixel", path=path)
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    try:
        pix = ds.pixel_array
    except Exception as exc:  # pydicom raises several kinds on short or odd pixel data
        raise DicomError(f"cannot decode the dose pixels: {type(exc).__name__}: {exc}", path=path) from exc
    pix = np.asarray(pix).reshape(nf, rows, cols)
    scaling = float(ds.get("DoseGridScaling", 1.0) or 1.0)
    arr = pix.astype(np.float64) * scaling
    iop = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    if nf > 1:
        if "GridFrameOffsetVector" not in ds:
            raise DicomError("multi-frame RT Dose lacks GridFrameOffsetVector", path=path)
        off = np.array([float(v) for v in ds.GridFrameOffsetVector], dtype=np.float64)
        if off.size != nf:
            raise DicomError(f"GridFrameOffsetVector has {off.size} values for {nf} frames", path=path)
        if off[0] != 0.0:  # absolute: z coordinates, defined for axial orientation only
            if not np.allclose(np.abs(normal), [0, 0, 1], atol=1e-4):
                raise DicomError("absolute GridFrameOffsetVector (first value not 0) with a non-axial orientation", path=path)
            off = (off - ipp[2]) * normal[2]
        order = np.argsort(off, kind="stable")
        off, arr = off[order], arr[order]
        steps = np.diff(off)
        dz = float(np.median(steps))
        if dz <= 0 or np.any(np.abs(steps - dz) > max(0.01, 0.01 * dz)):
            raise DicomError("dose frames are not evenly spaced along the normal", path=path)
        origin = ipp + normal * off[0]
    else:
        dz = float(ds.get("SliceThickness", 0) or 0) or 1.0
        origin = ipp
    direction = np.column_stack([row_dir, col_dir, normal])
    grid = Grid(shape=arr.shape, spacing=(dz, dy, dx), origin=tuple(origin), direction=tuple(direction.reshape(-1)))
    return Volume(arr.astype(np.float32), grid)
