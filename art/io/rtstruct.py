"""RT Structure Set (RTSTRUCT): closed planar contours <-> boolean masks on an image grid.

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

Writing (:func:`write_rtstruct`, :func:`structures_to_dataset`)
---------------------------------------------------------------
Each mask slice is contoured with contourpy at level 0.5 on the 0/1 slice,
padded with zeros so every line closes.  The polygons pass through the
mid-points between voxel centres (marching squares), so reading them back with
the centre-inside rule gives back the same voxels; collinear points are
dropped (lossless).  Inner boundaries (holes) are written as separate
contours.  Every contour is ``CLOSED_PLANAR``, lists its points without
repeating the first one, and references the SOP instance of its image slice.
The ReferencedFrameOfReferenceSequence lists every image slice.  The
structure set has the image's patient and study, its own series, and the
image's frame of reference.  ContourData uses fixed 4-decimal strings (0.1 µm).
"""

from __future__ import annotations

import datetime as _dt
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import DicomError, GeometryError, InputError
from art.geometry import Grid
from art.io.dicom_common import (
    RT_STRUCTURE_SET_STORAGE,
    dicom_date,
    dicom_time,
    format_ds_fixed,
    new_file_dataset,
    read_dataset,
    save_dataset,
    sequence_items,
    set_character_set,
    set_general_study,
    set_patient,
    set_rt_series,
)
from art.io.series import ImageSeries
from art.io.uids import check_uid, new_uid
from art.structures import ROI_TYPES, Structure, StructureSet

__all__ = ["read_rtstruct", "write_rtstruct", "structures_to_dataset", "rasterise_contours", "mask_to_contours"]

STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
"""ReferencedSOPClassUID used for the study in RTReferencedStudySequence (as most planning systems write)."""

DEFAULT_COLORS = (
    (255, 0, 0), (0, 160, 0), (0, 0, 255), (255, 200, 0), (255, 0, 255), (0, 200, 200),
    (255, 128, 0), (128, 0, 255), (128, 128, 0), (0, 128, 255), (255, 128, 128), (128, 255, 128),
)  # fmt: skip
_AREA_TYPES = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR")


# =====================================================================  reading
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
    modality = str(ds.get("Modality", "") or "")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality != "RTSTRUCT" and sop_class != RT_STRUCTURE_SET_STORAGE:
        raise DicomError(f"not an RTSTRUCT (Modality {modality or 'missing'})", path=path)
    roi_items = sequence_items(ds, "StructureSetROISequence")
    if "StructureSetROISequence" not in ds:
        raise DicomError("RTSTRUCT lacks StructureSetROISequence", path=path)

    # ---- frame of reference check
    if image_for is not None:
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
            warnings.warn(f"{path}: {msg}", stacklevel=2)

    # ---- ROI metadata
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

    out = StructureSet(grid)
    skipped = {"off": 0, "oblique": 0}
    used_names: set[str] = set()
    for n, roi in enumerate(roi_items):
        try:
            number = int(roi.ROINumber)
        except (AttributeError, TypeError, ValueError) as exc:
            raise DicomError(f"StructureSetROISequence item {n + 1} lacks a valid ROINumber", path=path) from exc
        name = str(roi.get("ROIName", "") or "").strip() or f"ROI {number}"
        if name.lower() in used_names:
            new = f"{name}_{number}"
            warnings.warn(f"{path}: ROI name {name!r} repeated; ROI {number} renamed {new!r}", stacklevel=2)
            name = new
        used_names.add(name.lower())
        roi_type = types_by_roi.get(number, "")
        if roi_type not in ROI_TYPES:
            warnings.warn(f"{path}: ROI {name!r} has unknown RT ROI interpreted type {roi_type!r}; kept as ''", stacklevel=2)
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
        out.add(Structure(name=name, mask=mask, grid=grid, roi_type=roi_type, color=color))
    if skipped["off"] or skipped["oblique"]:
        warnings.warn(
            f"{path}: skipped {skipped['off']} contour(s) outside the image slices and "
            f"{skipped['oblique']} contour(s) not parallel to them",
            stacklevel=2,
        )
    return out


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
    data = item.get("ContourData", None)
    if data is None:
        return None
    try:
        values = np.array([float(v) for v in (data if not isinstance(data, (str, float, int)) else [data])], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"ROI {name!r}: ContourData is not numeric", path=path) from exc
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


# =====================================================================  writing
def mask_to_contours(mask_slice: np.ndarray) -> list[np.ndarray]:
    """Closed polygons around the ``True`` voxels of one slice.

    Parameters
    ----------
    mask_slice : ndarray of bool, shape (ny, nx)

    Returns
    -------
    list of ndarray, each of shape (n, 2)
        Polygons in continuous (row j, column i) indices, first point not
        repeated, collinear points removed; outer boundaries and holes alike.
    """
    import contourpy

    m = np.asarray(mask_slice, dtype=bool)
    if not m.any():
        return []
    rows = np.nonzero(m.any(axis=1))[0]
    cols = np.nonzero(m.any(axis=0))[0]
    j0, j1, i0, i1 = rows[0], rows[-1], cols[0], cols[-1]
    sub = np.zeros((j1 - j0 + 3, i1 - i0 + 3), dtype=np.float64)
    sub[1:-1, 1:-1] = m[j0 : j1 + 1, i0 : i1 + 1]
    gen = contourpy.contour_generator(z=sub, line_type="Separate")
    out = []
    for line in gen.lines(0.5):
        xy = np.asarray(line, dtype=np.float64)
        if len(xy) > 1 and np.allclose(xy[0], xy[-1]):
            xy = xy[:-1]
        xy = _drop_collinear(xy)
        if len(xy) < 3:
            continue
        ji = np.column_stack([xy[:, 1] + (j0 - 1), xy[:, 0] + (i0 - 1)])
        out.append(ji)
    return out


def _drop_collinear(p: np.ndarray) -> np.ndarray:
    if len(p) < 4:
        return p
    prev = np.roll(p, 1, axis=0)
    nxt = np.roll(p, -1, axis=0)
    a, b = p - prev, nxt - p
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return p[np.abs(cross) > 1e-9]


def structures_to_dataset(
    structures: StructureSet,
    image: ImageSeries,
    *,
    label: str = "art",
    name: str = "",
    description: str = "",
    series_description: str = "",
    series_number: int = 1,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    structure_set_date: _dt.date | str | None = None,
    structure_set_time: _dt.time | str | None = None,
    generation_algorithm: str = "AUTOMATIC",
) -> Any:
    """Build an RTSTRUCT dataset (not written) for masks on an image series.

    Parameters
    ----------
    structures : StructureSet
        Masks on ``image.grid`` (same grid required).
    image : ImageSeries
        The image referenced: patient, study, frame of reference and slice UIDs.
    label : str, keyword-only
        StructureSetLabel (at most 16 characters).
    name, description : str
        StructureSetName (<= 64 characters) and StructureSetDescription.
    series_description : str
        SeriesDescription of the RTSTRUCT series.
    series_number : int
        SeriesNumber.
    series_instance_uid, sop_instance_uid : str, optional
        New random UIDs when None; the SOP instance UID is derived from the
        series UID when only the latter is given (deterministic output).
    structure_set_date, structure_set_time : date/str, optional
        StructureSetDate/Time; empty when None (deterministic output).
    generation_algorithm : str
        ROIGenerationAlgorithm for every ROI: ``AUTOMATIC``, ``SEMIAUTOMATIC``,
        ``MANUAL`` or ``""``.

    Returns
    -------
    pydicom.dataset.FileDataset
        With file meta, ready for :meth:`save_as`.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    if not isinstance(structures, StructureSet):
        raise InputError(f"structures must be a StructureSet, got {type(structures).__name__}")
    if not isinstance(image, ImageSeries):
        raise InputError(f"image must be an ImageSeries, got {type(image).__name__}")
    if not structures.grid.same_as(image.grid):
        raise GeometryError(
            "structures are not on the image grid; resample them onto it first (art.geometry.resample_mask)"
        )
    if not isinstance(label, str) or not label or len(label) > 16 or "\\" in label:
        raise InputError(f"label must be 1-16 characters without backslash, got {label!r}")
    if len(name) > 64:
        raise InputError("name must be at most 64 characters (StructureSetName)")
    if generation_algorithm not in ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL", ""):
        raise InputError(f"generation_algorithm must be AUTOMATIC, SEMIAUTOMATIC, MANUAL or '', got {generation_algorithm!r}")
    for s in structures:
        if len(s.name) > 64 or "\\" in s.name:
            raise InputError(f"structure name {s.name!r} must be at most 64 characters without backslash (ROIName)")

    grid = image.grid
    series_uid = check_uid(series_instance_uid, "series_instance_uid") if series_instance_uid else new_uid()
    if sop_instance_uid:
        sop_uid = check_uid(sop_instance_uid, "sop_instance_uid")
    elif series_instance_uid:
        sop_uid = new_uid(entropy=(series_uid, "RTSTRUCT"))
    else:
        sop_uid = new_uid()
    date, time = dicom_date(structure_set_date), dicom_time(structure_set_time)

    ds = new_file_dataset(RT_STRUCTURE_SET_STORAGE, sop_uid)
    set_character_set(ds, image.patient.name, label, name, description, series_description, *structures.names)
    # patient, general study (the image's)
    set_patient(ds, image.patient)
    set_general_study(ds, image.study_instance_uid, image.study_date, image.study_time)
    # RT series, frame of reference (in the RT Structure Set IOD of recent editions of PS3.3), equipment
    set_rt_series(ds, "RTSTRUCT", series_uid, series_number, image.frame_of_reference_uid)
    ds.SeriesDescription = series_description
    # structure set
    ds.StructureSetLabel = label
    if name:
        ds.StructureSetName = name
    if description:
        ds.StructureSetDescription = description
    ds.InstanceNumber = 1
    ds.StructureSetDate = date
    ds.StructureSetTime = time

    def image_ref(k: int) -> Dataset:
        it = Dataset()
        it.ReferencedSOPClassUID = image.sop_class_uid
        it.ReferencedSOPInstanceUID = image.sop_instance_uids[k]
        return it

    series_ref = Dataset()
    series_ref.SeriesInstanceUID = image.series_instance_uid
    series_ref.ContourImageSequence = Sequence([image_ref(k) for k in range(grid.shape[0])])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = STUDY_COMPONENT_SOP_CLASS
    study_ref.ReferencedSOPInstanceUID = image.study_instance_uid
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = image.frame_of_reference_uid
    for_ref.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([for_ref])

    roi_seq, contour_seq, obs_seq = [], [], []
    for number, s in enumerate(structures, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = image.frame_of_reference_uid
        roi.ROIName = s.name
        roi.ROIGenerationAlgorithm = generation_algorithm
        roi_seq.append(roi)

        rc = Dataset()
        rc.ROIDisplayColor = [int(c) for c in s.color]
        items = []
        for k in np.nonzero(s.mask.reshape(s.mask.shape[0], -1).any(axis=1))[0]:
            for ji in mask_to_contours(s.mask[k]):
                idx = np.column_stack([np.full(len(ji), float(k)), ji])
                lps = grid.index_to_lps(idx)
                c = Dataset()
                c.ContourImageSequence = Sequence([image_ref(int(k))])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(lps)
                c.ContourNumber = len(items) + 1
                c.ContourData = format_ds_fixed(lps)
                items.append(c)
        if items:
            rc.ContourSequence = Sequence(items)
        rc.ReferencedROINumber = number
        contour_seq.append(rc)

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = s.roi_type
        obs.ROIInterpreter = ""
        obs_seq.append(obs)
    ds.StructureSetROISequence = Sequence(roi_seq)
    ds.ROIContourSequence = Sequence(contour_seq)
    ds.RTROIObservationsSequence = Sequence(obs_seq)
    return ds


def write_rtstruct(structures: StructureSet, image: ImageSeries, path: str | Path, *, label: str = "art", **options: Any) -> Any:
    """Write masks on an image series as an RTSTRUCT file.

    Parameters
    ----------
    structures : StructureSet
        Masks on ``image.grid``.
    image : ImageSeries
        The referenced image series.
    path : str or Path
        Output file; when an existing folder, the file ``RS.<SOPInstanceUID>.dcm``
        is written inside it.
    label : str, keyword-only
        StructureSetLabel.
    **options
        Further keyword arguments of :func:`structures_to_dataset`.

    Returns
    -------
    pydicom.dataset.FileDataset
        The dataset written.
    """
    ds = structures_to_dataset(structures, image, label=label, **options)
    path = Path(path)
    if path.is_dir():
        path = path / f"RS.{ds.SOPInstanceUID}.dcm"
    save_dataset(ds, path)
    return ds
