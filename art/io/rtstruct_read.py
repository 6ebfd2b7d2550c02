"""Reading an RT Structure Set (RTSTRUCT): closed planar contours into boolean masks on an image grid.

Public entry: :func:`art.io.rtstruct.read_rtstruct` (re-exported by :mod:`art.io`)
and :func:`art.io.rtstruct.rasterise_contours`.

Reading (:func:`read_rtstruct`)
-------------------------------
* Each ROI of StructureSetROISequence becomes a :class:`~art.structures.Structure`
  with its ROIName, RTROIInterpretedType (missing -> ``""``; a value outside
  :data:`art.structures.ROI_TYPES` -> ``""`` with a warning) and
  ROIDisplayColor (missing -> a fixed default palette colour).  A missing
  ROIName becomes ``"ROI <number>"``; a name repeated (ignoring case) gets
  ``"_<ROINumber>"`` appended, with a warning.
* Only ``CLOSED_PLANAR`` (and ``CLOSEDPLANAR_XOR``) contours define area;
  ``POINT``, ``OPEN_PLANAR`` and ``OPEN_NONPLANAR`` contours are ignored, so an
  ROI made of them (e.g. an isocentre marker) has an empty mask.
* Contour points (LPS mm) are mapped to continuous grid indices with
  :meth:`Grid.lps_to_index`.  Each contour lies on a *plane* (its mean slice
  index).  Each image slice takes the contour plane nearest to it, within half
  a slice spacing; contours of the same plane are combined with the even-odd
  rule (XOR), so holes drawn as separate inner contours and several islands
  work.  When several planes fall within half a slice of the same image slice
  (contours drawn on a finer image), only the nearest plane is used — never
  an XOR across planes.  Contours outside the grid along the normal, or not
  parallel to the image slices (spread of more than half a slice), are
  skipped and counted in one warning.
* In-plane filling: a voxel is inside when its **centre** is inside the
  polygons (even-odd rule, vectorised scanline).  A point exactly on an edge
  counts as inside on the left/top boundary and outside on the right/bottom.
* With an :class:`~art.io.series.ImageSeries`, the RTSTRUCT's frame of
  reference (ReferencedFrameOfReferenceSequence, else the ROIs'
  ReferencedFrameOfReferenceUID) must be the image's, else
  :class:`~art.errors.DicomError` (a warning when ``strict_references=False``).
  With a bare :class:`~art.geometry.Grid` no check is possible and none is done.
* Each structure keeps its closed planar polygons as given
  (``Structure.contours``) and the frame of reference they are in
  (``Structure.frame_of_reference_uid``: the ROI's
  ReferencedFrameOfReferenceUID, else the file's one frame of reference), so
  that :func:`~art.io.rtstruct.write_rtstruct` can write them back unchanged.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import DicomError, InputError
from art.geometry import Grid
from art.io.dicom_common import RT_STRUCTURE_SET_STORAGE, ds_values, read_dataset, sequence_items
from art.io.image_series import ImageSeries
from art.structures import ROI_TYPES, Structure, StructureSet

__all__ = ["read_rtstruct", "rasterise_contours", "DEFAULT_COLORS"]

DEFAULT_COLORS = (
    (255, 0, 0), (0, 160, 0), (0, 0, 255), (255, 200, 0), (255, 0, 255), (0, 200, 200),
    (255, 128, 0), (128, 0, 255), (128, 128, 0), (0, 128, 255), (255, 128, 128), (128, 255, 128),
)  # fmt: skip
_AREA_TYPES = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR")


def read_rtstruct(path: str | Path, image: ImageSeries | Grid, *, strict_references: bool = True) -> StructureSet:
    """Read an RTSTRUCT file into boolean masks on an image grid.

    Parameters
    ----------
    path : str or Path
        The RTSTRUCT file.
    image : ImageSeries or Grid
        The image the structures are drawn on (its grid is used and its frame
        of reference checked), or a bare Grid (no frame-of-reference check).
    strict_references : bool, keyword-only
        When True (default), a frame of reference different from the image's
        is an error; when False, a warning.

    Returns
    -------
    StructureSet
        One structure per ROI, in file order, masks of shape ``grid.shape``
        (z, y, x).

    Raises
    ------
    DicomError
        Unreadable file, not an RTSTRUCT, malformed contours, or frame of
        reference mismatch (names the file).
    """
    path = Path(path)
    if isinstance(image, ImageSeries):
        grid, image_for = image.grid, image.frame_of_reference_uid
    elif isinstance(image, Grid):
        grid, image_for = image, None
    else:
        raise InputError(f"image must be an ImageSeries or a Grid, got {type(image).__name__}")

    ds = read_dataset(path, what="RTSTRUCT file")
    roi_items = _structure_set_rois(ds, path)
    if image_for is not None:
        _check_frame_of_reference(ds, roi_items, image_for, path, strict_references)
    contours_by_roi, types_by_roi = _roi_tables(ds, path)
    file_fors = {str(it.get("FrameOfReferenceUID", "") or "") for it in sequence_items(ds, "ReferencedFrameOfReferenceSequence")} - {""}
    file_for = next(iter(file_fors)) if len(file_fors) == 1 else None

    out = StructureSet(grid)
    skipped = {"off": 0, "oblique": 0}
    used_names: set[str] = set()
    for n, roi in enumerate(roi_items):
        s = _read_roi(n, roi, contours_by_roi, types_by_roi, used_names, grid, path, skipped)
        if s.contours is not None:
            s.frame_of_reference_uid = str(roi.get("ReferencedFrameOfReferenceUID", "") or "") or file_for
        out.add(s)
    if skipped["off"] or skipped["oblique"]:
        warnings.warn(
            f"{path}: skipped {skipped['off']} contour(s) outside the image slices and "
            f"{skipped['oblique']} contour(s) not parallel to them",
            stacklevel=2,
        )
    return out


def _structure_set_rois(ds: Any, path: Path) -> list:
    """The StructureSetROISequence items of an RTSTRUCT dataset; :class:`DicomError` when not an RTSTRUCT or the sequence is missing."""
    modality = str(ds.get("Modality", "") or "")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality != "RTSTRUCT" and sop_class != RT_STRUCTURE_SET_STORAGE:
        raise DicomError(f"not an RTSTRUCT (Modality {modality or 'missing'})", path=path)
    roi_items = sequence_items(ds, "StructureSetROISequence")
    if "StructureSetROISequence" not in ds:
        raise DicomError("RTSTRUCT lacks StructureSetROISequence", path=path)
    return roi_items


def _check_frame_of_reference(ds: Any, roi_items: list, image_for: str, path: Path, strict_references: bool) -> None:
    """Refuse (or warn about) an RTSTRUCT whose frame of reference is not the image's.

    Parameters
    ----------
    ds : pydicom Dataset
        The RTSTRUCT.
    roi_items : list of pydicom Dataset
        Its StructureSetROISequence items.
    image_for : str
        The image's FrameOfReferenceUID.
    path : Path
        The file (named in the message).
    strict_references : bool
        True: :class:`DicomError`; False: a warning (attributed to the caller of
        :func:`read_rtstruct`).
    """
    fors = {str(it.get("FrameOfReferenceUID", "")) for it in sequence_items(ds, "ReferencedFrameOfReferenceSequence")}
    fors |= {str(it.get("ReferencedFrameOfReferenceUID", "")) for it in roi_items}
    fors.discard("")
    if fors and image_for not in fors:
        msg = (
            f"RTSTRUCT frame of reference ({', '.join(sorted(fors))}) is not the image's ({image_for}): "
            "the contours belong to another image"
        )
        if strict_references:
            raise DicomError(msg, path=path)
        warnings.warn(f"{path}: {msg}", stacklevel=3)


def _roi_tables(ds: Any, path: Path) -> tuple[dict[int, Any], dict[int, str]]:
    """The ROIContourSequence items and the RT ROI interpreted types, by ROI number.

    Returns
    -------
    contours_by_roi : dict of int to pydicom Dataset
        ROIContourSequence item per ReferencedROINumber (an item without a valid
        one is a :class:`DicomError`).
    types_by_roi : dict of int to str
        RTROIInterpretedType (upper case, ``""`` when missing) per
        ReferencedROINumber (items without a valid one are skipped).
    """
    contours_by_roi: dict[int, Any] = {}
    for it in sequence_items(ds, "ROIContourSequence"):
        try:
            contours_by_roi[int(it.ReferencedROINumber)] = it
        except (AttributeError, TypeError, ValueError) as exc:
            raise DicomError("ROIContourSequence item lacks a valid ReferencedROINumber", path=path) from exc
    types_by_roi: dict[int, str] = {}
    for it in sequence_items(ds, "RTROIObservationsSequence"):
        try:
            types_by_roi[int(it.ReferencedROINumber)] = str(it.get("RTROIInterpretedType", "") or "").upper()
        except (AttributeError, TypeError, ValueError):
            continue
    return contours_by_roi, types_by_roi


def _read_roi(
    n: int,
    roi: Any,
    contours_by_roi: dict[int, Any],
    types_by_roi: dict[int, str],
    used_names: set[str],
    grid: Grid,
    path: Path,
    skipped: dict[str, int],
) -> Structure:
    """One ROI of the structure set as a :class:`~art.structures.Structure` on ``grid``.

    Parameters
    ----------
    n : int
        Index of the ROI in StructureSetROISequence (default colour).
    roi : pydicom Dataset
        Its StructureSetROISequence item.
    contours_by_roi, types_by_roi : dict
        See :func:`_roi_tables`.
    used_names : set of str
        Lower-case names of the ROIs read so far (updated; a repeated name
        gets ``"_<ROINumber>"`` appended, with a warning).
    grid : Grid
        The image grid, shape (z, y, x).
    path : Path
        The file (named in messages).
    skipped : dict
        Counts of contours ``"off"`` the grid and ``"oblique"`` (updated).

    Returns
    -------
    Structure
        Mask of shape ``grid.shape`` from the ROI's closed planar contours.
    """
    try:
        number = int(roi.ROINumber)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomError(f"StructureSetROISequence item {n + 1} lacks a valid ROINumber", path=path) from exc
    name = str(roi.get("ROIName", "") or "").strip() or f"ROI {number}"
    if name.lower() in used_names:
        new = f"{name}_{number}"
        warnings.warn(f"{path}: ROI name {name!r} repeated; ROI {number} renamed {new!r}", stacklevel=3)
        name = new
    used_names.add(name.lower())
    roi_type = types_by_roi.get(number, "")
    if roi_type not in ROI_TYPES:
        warnings.warn(f"{path}: ROI {name!r} has unknown RT ROI interpreted type {roi_type!r}; kept as ''", stacklevel=3)
        roi_type = ""
    rc = contours_by_roi.get(number)
    color = _color(rc, n)
    polys = []
    for c_item in sequence_items(rc, "ContourSequence") if rc is not None else []:
        gtype = str(c_item.get("ContourGeometricType", "") or "").upper()
        if gtype not in _AREA_TYPES:
            continue
        pts = _contour_points(c_item, path, name)
        if pts is not None:
            polys.append(pts)
    mask = rasterise_contours(polys, grid, _skipped=skipped)
    return Structure(name=name, mask=mask, grid=grid, roi_type=roi_type, color=color, contours=tuple(polys) if polys else None)


def _color(rc: Any, n: int) -> tuple[int, int, int]:
    value = None if rc is None else rc.get("ROIDisplayColor", None)
    try:
        c = [int(round(float(v))) for v in value] if value is not None else []
    except (TypeError, ValueError):
        c = []
    if len(c) != 3:
        return DEFAULT_COLORS[n % len(DEFAULT_COLORS)]
    return tuple(min(255, max(0, v)) for v in c)  # type: ignore[return-value]


def _contour_points(item: Any, path: Path, name: str) -> np.ndarray | None:
    try:
        values = ds_values(item, "ContourData")
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise DicomError(f"ROI {name!r}: ContourData is not numeric", path=path) from exc
    if values is None:
        return None
    if values.size % 3 != 0 or not np.all(np.isfinite(values)):
        raise DicomError(f"ROI {name!r}: ContourData must be finite (x, y, z) triplets, got {values.size} numbers", path=path)
    pts = values.reshape(-1, 3)
    if pts.shape[0] < 3:
        return None  # a closed polygon needs three points
    return pts


def rasterise_contours(polygons: list[np.ndarray], grid: Grid, *, _skipped: dict | None = None) -> np.ndarray:
    """Fill closed planar polygons (LPS points) into a boolean mask on ``grid``.

    Parameters
    ----------
    polygons : list of ndarray, each of shape (n, 3)
        Closed polygons, LPS mm, first point not repeated (a repeat is harmless).
    grid : Grid
        The target grid; polygons should lie on planes parallel to its slices.

    Returns
    -------
    ndarray of bool, shape ``grid.shape`` (z, y, x)
        Voxels whose centre is inside the polygons assigned to their slice
        (even-odd rule within a plane; nearest plane per slice; see module notes).
    """
    nz, ny, nx = grid.shape
    mask = np.zeros(grid.shape, dtype=bool)
    skipped = _skipped if _skipped is not None else {"off": 0, "oblique": 0}
    # ---- planes: contours grouped by their slice coordinate
    planes: dict[int, list[np.ndarray]] = {}
    plane_k: dict[int, float] = {}
    for pts in polygons:
        idx = grid.lps_to_index(pts)
        kk = idx[:, 0]
        if float(np.ptp(kk)) > 0.5:
            skipped["oblique"] += 1
            continue
        k_mean = float(kk.mean())
        if k_mean < -0.5 or k_mean > nz - 0.5:
            skipped["off"] += 1
            continue
        key = int(round(k_mean * 1000))  # same plane within 1/1000 of a slice
        planes.setdefault(key, []).append(idx[:, 1:])
        plane_k[key] = k_mean
    # ---- nearest plane per slice
    best: dict[int, int] = {}
    for key, k_mean in plane_k.items():
        k0 = min(nz - 1, max(0, int(np.floor(k_mean + 0.5))))
        if k0 not in best or abs(k_mean - k0) < abs(plane_k[best[k0]] - k0):
            best[k0] = key
    if not best:
        return mask
    # ---- edges of every selected polygon, tagged with their slice
    ks, y0s, x0s, y1s, x1s = [], [], [], [], []
    for k0, key in best.items():
        for ji in planes[key]:
            y, x = ji[:, 0], ji[:, 1]
            ks.append(np.full(y.size, k0, dtype=np.int64))
            y0s.append(y)
            x0s.append(x)
            y1s.append(np.roll(y, -1))
            x1s.append(np.roll(x, -1))
    k = np.concatenate(ks)
    y0, x0, y1, x1 = (np.concatenate(a) for a in (y0s, x0s, y1s, x1s))
    # ---- scanline crossings: row r crosses the edge when min(y) <= r < max(y) (half-open)
    ymin, ymax = np.minimum(y0, y1), np.maximum(y0, y1)
    rlo = np.maximum(np.ceil(ymin), 0).astype(np.int64)
    rhi = np.minimum(np.ceil(ymax) - 1, ny - 1).astype(np.int64)
    count = np.maximum(rhi - rlo + 1, 0)
    keep = (count > 0) & (ymax > ymin)
    if not keep.any():
        return mask
    k, y0, x0, y1, x1, rlo, count = (a[keep] for a in (k, y0, x0, y1, x1, rlo, count))
    edge = np.repeat(np.arange(count.size), count)
    starts = np.cumsum(count) - count
    r = rlo[edge] + (np.arange(edge.size) - starts[edge])
    xr = x0[edge] + (r - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    col = np.clip(np.ceil(xr), 0, nx).astype(np.int64)  # first voxel centre at or right of the crossing
    flat = (k[edge] * ny + r) * (nx + 1) + col
    flips = np.bincount(flat, minlength=nz * ny * (nx + 1)).reshape(nz, ny, nx + 1)[:, :, :nx]
    return (np.cumsum(flips, axis=2, dtype=np.int32) & 1).astype(bool)
