"""Consistency and geometry checks of the slices of one image series (used by :mod:`art.io.series_read`).

Every refusal of :func:`art.io.series.read_image_series` that concerns the
slices themselves is here: slices that disagree with the first (orientation,
pixel spacing, size, frame of reference, study, multi-frame, tilt), an
orientation that is not two orthogonal unit vectors, two distinct images at one
position, too few slices, positions off the slice normal (tilt or shear) and
uneven slice spacing.  Each raises :class:`~art.errors.DicomError` naming the
folder or file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from art.errors import DicomError

if TYPE_CHECKING:
    from art.io.series_read import _Header

_ORIENT_TOL = 1e-4  # direction cosines
_POS_TOL_MM = 0.01  # absolute tolerance on positions, mm
_REL_TOL = 0.01  # relative tolerance on spacings


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


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in np.asarray(values).ravel()) + ")"


@dataclass(frozen=True)
class _SliceGeometry:
    """What every slice of the series must share with the first, and the positions found.

    Attributes
    ----------
    iop : ndarray, shape (6,)
        ImageOrientationPatient of the first slice (row then column direction cosines).
    pixel_spacing : ndarray, shape (2,)
        PixelSpacing of the first slice, mm (row spacing, column spacing).
    rows, cols : int
        Rows and Columns of the first slice.
    frame_of_reference_uid, study_uid : str
        FrameOfReferenceUID and StudyInstanceUID of the first slice.
    positions : list of ndarray, each of shape (3,)
        ImagePositionPatient of every slice (LPS mm), in the order given.
    """

    iop: np.ndarray
    pixel_spacing: np.ndarray
    rows: int
    cols: int
    frame_of_reference_uid: str
    study_uid: str
    positions: list


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


def _check_slices(slices: list["_Header"]) -> _SliceGeometry:
    """Check every slice against the first one.

    Parameters
    ----------
    slices : list of _Header
        The headers of one series (any order); the first is the reference.

    Returns
    -------
    _SliceGeometry
        The first slice's orientation, pixel spacing (mm), size and UIDs, and
        every slice's ImagePositionPatient (LPS mm) in the order given.

    Raises
    ------
    DicomError
        A slice that disagrees with the first, no FrameOfReferenceUID, or a
        non-positive pixel spacing.  A malformed header value (AttributeError,
        KeyError, ValueError, ...) is re-raised with the slice's path attached
        as ``_art_path``.
    """
    first = slices[0]
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
    return _SliceGeometry(iop0, ps0, rows0, cols0, for_uid, study_uid, positions)


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


def _sort_along_normal(
    slices: list["_Header"], positions: list, normal: np.ndarray
) -> tuple[list["_Header"], np.ndarray, np.ndarray]:
    """Sort the slices by the projection of their position on the slice normal.

    Parameters
    ----------
    slices : list of _Header
        The slices, in the order of ``positions``.
    positions : list of ndarray, each of shape (3,)
        ImagePositionPatient of each slice, LPS mm.
    normal : ndarray, shape (3,)
        Unit slice normal ``row x column``.

    Returns
    -------
    slices : list of _Header
        Sorted (stable sort: equal positions keep their order).
    pos : ndarray, shape (n, 3)
        Their positions, LPS mm.
    d : ndarray, shape (n,)
        Their positions along the normal, mm (non-decreasing).
    """
    pos = np.array(positions)
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    slices = [slices[i] for i in order]
    pos, d = pos[order], d[order]
    return slices, pos, d


def _drop_duplicates(
    folder: Path, slices: list["_Header"], pos: np.ndarray, d: np.ndarray
) -> tuple[list["_Header"], np.ndarray, np.ndarray]:
    """Keep one copy of a SOP instance stored twice; refuse two distinct images at one position.

    Parameters
    ----------
    folder : Path
        The series folder (named in the errors).
    slices, pos, d
        As returned by :func:`_sort_along_normal` (sorted along the normal;
        ``pos`` LPS mm of shape (n, 3), ``d`` mm of shape (n,)).

    Returns
    -------
    slices, pos, d
        The same, without the repeated copies (the first file of each kept).

    Raises
    ------
    DicomError
        Two distinct images at the same position, the same SOPInstanceUID at
        two positions, or fewer than two slices left.
    """
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
    return slices, pos, d


def _check_along_normal(folder: Path, slices: list["_Header"], pos: np.ndarray, d: np.ndarray, normal: np.ndarray) -> None:
    """Refuse positions that are not along the slice normal (gantry tilt or a sheared series).

    Parameters
    ----------
    folder : Path
        The series folder (named in the error).
    slices : list of _Header
        The sorted slices (the worst one is named).
    pos : ndarray, shape (n, 3)
        Their positions, LPS mm.
    d : ndarray, shape (n,)
        Their positions along the unit ``normal`` (shape (3,)), mm.
    """
    in_plane = (pos - pos[0]) - np.outer(d - d[0], normal)
    off = np.linalg.norm(in_plane, axis=1)
    worst = int(np.argmax(off))
    if off[worst] > max(_POS_TOL_MM, 1e-3 * abs(d[worst] - d[0])):
        raise DicomError(
            f"slice positions are not along the slice normal (offset {off[worst]:.3f} mm at slice "
            f"{slices[worst].path.name}): gantry tilt or sheared series is not supported",
            path=folder,
        )


def _even_slice_step(folder: Path, pos: np.ndarray, d: np.ndarray) -> float:
    """The slice spacing, after refusing uneven steps (usually a missing slice).

    Parameters
    ----------
    folder : Path
        The series folder (named in the error).
    pos : ndarray, shape (n, 3)
        Sorted positions, LPS mm (named in the error).
    d : ndarray, shape (n,)
        Sorted positions along the normal, mm.

    Returns
    -------
    float
        Mean step between positions, mm.

    Raises
    ------
    DicomError
        A step differing from the median step by more than ``max(0.01 mm, 1 %)``.
    """
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
    return float((d[-1] - d[0]) / (len(d) - 1))
