"""Spatial Registration (REG) objects: rigid (Spatial Registration Storage) and deformable
(Deformable Spatial Registration Storage), written and read — DICOM PS3.3 C.20.2 and C.20.3.

Rigid (C.20.2.1.1)
------------------
The object's FrameOfReferenceUID is the **registered** RCS. Each
RegistrationSequence item names a frame of reference (and, optionally, its
images) and a FrameOfReferenceTransformationMatrix ``M`` (4 × 4, homogeneous,
mm, row-major) that transforms a point of the item's frame into the registered
RCS: ``p_registered = M @ [p_item, 1]``; several MatrixSequence items are
applied in item order. ``art`` writes the planning CT as the registered RCS:
first item the planning CT with the identity, second item the CBCT with
``M`` = CBCT → CT. Each item lists its image slices (ReferencedImageSequence),
so the object stays unambiguous when CT and CBCT share a FrameOfReferenceUID
(as the phantoms' do). A REG that links two *different* frames (an imaging
system's) is read by :mod:`art.io.registration_frames`.

Deformable (C.20.3.1.1)
-----------------------
"The registrations in this module are applied to the Registered RCS
coordinates": a point ``p`` of the registered RCS (the object's
FrameOfReferenceUID) is first transformed by the Pre Deformation Matrix, then
the deformation vector of its grid element is added, then the Post
Deformation Matrix is applied; the result is the **source** point (the item's
SourceFrameOfReferenceUID, whose images ReferencedImageSequence lists)::

    p_source = M_post @ (M_pre @ [p, 1] + [D(p), 0])

The deformation grid (ImagePositionPatient, ImageOrientationPatient,
GridDimensions (columns, rows, slices), GridResolution (dx, dy, dz) mm) lies in
the registered RCS; VectorGridData is float32, x fastest. So the field is
"pull": it tells how to sample source data (the planning CT, its structures)
into the registered RCS.

``art`` keeps a field as ``p → p + d(p)`` (:mod:`art.registration.fields`); the
writer takes the whole map registered → source as ``d`` on the grid and the
rigid part as ``pre_matrix`` (registered → source), and stores
``D(p) = p + d(p) − M_pre p`` with ``M_post`` the identity; the reader returns
the whole map again (pre and post matrices applied), so ``d`` survives a round
trip whatever matrices another system wrote. ``art replan`` writes the daily
CBCT as the registered RCS and the planning CT as the source: ``d`` is
``cbct_to_ct``, ``M_pre`` the rigid CBCT → CT matrix — the map art itself used
to pull the planning CT and contours onto today's image. docs/registration.md
says more.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import DicomError, InputError
from art.geometry import Grid
from art.io.dicom_common import (
    dicom_date,
    dicom_time,
    format_ds_list,
    new_file_dataset,
    read_dataset,
    save_dataset,
    sequence_items,
    set_equipment,
    set_general_study,
    set_patient,
)
from art.io.series import ImageSeries
from art.io.uids import new_uid

__all__ = [
    "SPATIAL_REGISTRATION_STORAGE",
    "DEFORMABLE_SPATIAL_REGISTRATION_STORAGE",
    "write_spatial_registration",
    "read_spatial_registration",
    "write_deformable_registration",
    "read_deformable_registration",
    "DeformableRegistration",
]

SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"
DEFORMABLE_SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.3"


def _check_rigid(matrix: Any, name: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError(f"{name} must be a finite 4 x 4 matrix, got shape {m.shape}")
    r = m[:3, :3]
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-9):
        raise InputError(f"{name}: last row must be [0, 0, 0, 1]")
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-5) or np.linalg.det(r) <= 0:
        raise InputError(f"{name} is not rigid (rotation part must be orthonormal with determinant +1)")
    return m


def _image_refs(image: ImageSeries) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    items = []
    for uid in image.sop_instance_uids:
        it = Dataset()
        it.ReferencedSOPClassUID = image.sop_class_uid
        it.ReferencedSOPInstanceUID = uid
        items.append(it)
    return Sequence(items)


def _common_instance_reference(ds: Any, images: list[ImageSeries]) -> None:
    """Common Instance Reference module: the images' series, grouped by study."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    by_study: dict[str, dict[str, ImageSeries]] = {}
    for im in images:
        by_study.setdefault(im.study_instance_uid, {})[im.series_instance_uid] = im

    def series_seq(series: dict[str, ImageSeries]) -> Any:
        out = []
        for uid, im in series.items():
            s = Dataset()
            s.SeriesInstanceUID = uid
            s.ReferencedInstanceSequence = _image_refs(im)
            out.append(s)
        return Sequence(out)

    own = ds.StudyInstanceUID
    if own in by_study:
        ds.ReferencedSeriesSequence = series_seq(by_study[own])
    others = []
    for study, series in by_study.items():
        if study == own:
            continue
        st = Dataset()
        st.StudyInstanceUID = study
        st.ReferencedSeriesSequence = series_seq(series)
        others.append(st)
    if others:
        ds.StudiesContainingOtherReferencedInstancesSequence = Sequence(others)


def _base_dataset(sop_class: str, fixed: ImageSeries, moving: ImageSeries, *, label: str, description: str, content_date: Any, content_time: Any,
                  series_number: int, names: tuple[str, str] = ("fixed", "moving")) -> Any:  # fmt: skip
    """The dataset's modules up to the registration itself; ``fixed`` gives the frame (Registered RCS), patient and study."""
    for im, nm in ((fixed, names[0]), (moving, names[1])):
        if not isinstance(im, ImageSeries):
            raise InputError(f"{nm} must be an ImageSeries, got {type(im).__name__}")
    if not isinstance(label, str) or not label or len(label) > 64 or "\\" in label:
        raise InputError(f"label must be 1-64 characters without backslash (ContentLabel), got {label!r}")
    label = label.upper().replace(" ", "_")  # ContentLabel is a CS
    now = _dt.datetime.now()
    ds = new_file_dataset(sop_class, new_uid())
    set_patient(ds, fixed.patient)
    set_general_study(ds, fixed.study_instance_uid, fixed.study_date, fixed.study_time)
    ds.Modality = "REG"
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = int(series_number)
    ds.Laterality = ""  # General Series, type 2C (not a paired organ)
    ds.FrameOfReferenceUID = fixed.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    set_equipment(ds)
    ds.DeviceSerialNumber = "0"  # Enhanced General Equipment (type 1); software only
    ds.InstanceNumber = 1
    ds.ContentLabel = label
    ds.ContentDescription = description[:64]
    ds.ContentCreatorName = ""
    ds.ContentDate = dicom_date(content_date if content_date is not None else now.date())
    ds.ContentTime = dicom_time(content_time if content_time is not None else now.time())
    return ds


def _matrix_item(matrix: np.ndarray, kind: str) -> Any:
    from pydicom.dataset import Dataset

    it = Dataset()
    it.FrameOfReferenceTransformationMatrixType = kind
    it.FrameOfReferenceTransformationMatrix = format_ds_list(np.asarray(matrix, dtype=np.float64).reshape(-1))
    return it


def write_spatial_registration(
    matrix_4x4: Any,
    fixed: ImageSeries,
    moving: ImageSeries,
    path: str | Path,
    *,
    label: str = "ART_RIGID",
    description: str = "rigid registration (moving -> fixed)",
    content_date: Any = None,
    content_time: Any = None,
    series_number: int = 1,
) -> Any:
    """Write a rigid registration as a Spatial Registration object.

    Parameters
    ----------
    matrix_4x4 : array-like, shape (4, 4)
        Rigid homogeneous transform (mm) mapping moving-image LPS points into
        fixed-image LPS points.
    fixed, moving : ImageSeries
        The fixed image (e.g. planning CT; the object's frame of reference,
        patient and study) and the moving image (e.g. the daily CBCT).
    path : str or Path
        Output file; an existing folder gets ``REG.<SOPInstanceUID>.dcm`` inside it.
    label, description : str, keyword-only
        ContentLabel (upper-cased, spaces to ``_``) and ContentDescription.

    Returns
    -------
    pydicom.dataset.FileDataset
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    m = _check_rigid(matrix_4x4, "matrix_4x4")
    ds = _base_dataset(SPATIAL_REGISTRATION_STORAGE, fixed, moving, label=label, description=description,
                       content_date=content_date, content_time=content_time, series_number=series_number)  # fmt: skip
    items = []
    for im, mat in ((fixed, np.eye(4)), (moving, m)):
        it = Dataset()
        it.FrameOfReferenceUID = im.frame_of_reference_uid
        it.ReferencedImageSequence = _image_refs(im)
        mr = Dataset()
        mr.RegistrationTypeCodeSequence = Sequence([])
        mr.MatrixSequence = Sequence([_matrix_item(mat, "RIGID")])
        it.MatrixRegistrationSequence = Sequence([mr])
        items.append(it)
    ds.RegistrationSequence = Sequence(items)
    _common_instance_reference(ds, [fixed, moving])
    path = Path(path)
    if path.is_dir():
        path = path / f"REG.{ds.SOPInstanceUID}.dcm"
    save_dataset(ds, path)
    return ds


def _read_matrix(item: Any, path: Path) -> np.ndarray:
    total = np.eye(4)
    for mr in sequence_items(item, "MatrixRegistrationSequence"):
        for ms in sequence_items(mr, "MatrixSequence"):
            try:
                vals = np.array([float(v) for v in ms.FrameOfReferenceTransformationMatrix], dtype=np.float64)
            except (AttributeError, TypeError, ValueError) as exc:
                raise DicomError("MatrixSequence item lacks a numeric FrameOfReferenceTransformationMatrix", path=path) from exc
            if vals.size != 16 or not np.all(np.isfinite(vals)):
                raise DicomError(f"FrameOfReferenceTransformationMatrix must have 16 finite values, got {vals.size}", path=path)
            mat = vals.reshape(4, 4)
            if not np.allclose(mat[3], [0, 0, 0, 1], atol=1e-6):
                raise DicomError("FrameOfReferenceTransformationMatrix: last row must be [0, 0, 0, 1]", path=path)
            total = mat @ total  # matrices are applied in item order
    return total


def read_spatial_registration(path: str | Path, *, moving: ImageSeries | None = None) -> np.ndarray:
    """Read the rigid (or affine) matrix of a Spatial Registration object.

    Parameters
    ----------
    path : str or Path
        The REG file.
    moving : ImageSeries, optional, keyword-only
        Pick the RegistrationSequence item that references this image's slices.
        Without it: the item whose frame of reference differs from the object's;
        if none or several do, the last item (``art`` writes the moving image last).

    Returns
    -------
    ndarray, shape (4, 4), float64
        Maps the moving image's LPS points into the object's (fixed) frame, mm.
    """
    path = Path(path)
    ds = read_dataset(path, what="Spatial Registration file")
    if str(ds.get("SOPClassUID", "")) != SPATIAL_REGISTRATION_STORAGE:
        raise DicomError("not a Spatial Registration object (SOP class 1.2.840.10008.5.1.4.1.1.66.1)", path=path)
    items = sequence_items(ds, "RegistrationSequence")
    if not items:
        raise DicomError("Spatial Registration lacks RegistrationSequence", path=path)
    chosen = None
    if moving is not None:
        wanted = set(moving.sop_instance_uids)
        for it in items:
            refs = {str(r.get("ReferencedSOPInstanceUID", "")) for r in sequence_items(it, "ReferencedImageSequence")}
            if refs & wanted:
                chosen = it
        if chosen is None:
            raise DicomError("no registration item references the moving image's slices", path=path)
    else:
        own = str(ds.get("FrameOfReferenceUID", ""))
        other = [it for it in items if str(it.get("FrameOfReferenceUID", "")) not in ("", own)]
        chosen = other[0] if len(other) == 1 else items[-1]
    return _read_matrix(chosen, path)


def write_deformable_registration(
    displacement: np.ndarray,
    grid: Grid,
    path: str | Path,
    *,
    registered: ImageSeries,
    source: ImageSeries,
    pre_matrix: Any = None,
    label: str = "ART_DEFORMABLE",
    description: str = "deformable registration (registered -> source)",
    content_date: Any = None,
    content_time: Any = None,
    series_number: int = 1,
) -> Any:
    """Write a displacement field as a Deformable Spatial Registration object (PS3.3 C.20.3).

    Parameters
    ----------
    displacement : ndarray, shape (nz, ny, nx, 3), mm
        LPS components (dx, dy, dz) on ``grid``: the registered-frame point ``p``
        corresponds to the source-frame point ``p + displacement(p)`` (the whole
        map, rigid part included; see the module notes).
    grid : Grid
        The field's grid, in the registered image's frame.
    path : str or Path
        Output file; an existing folder gets ``DREG.<SOPInstanceUID>.dcm`` inside it.
    registered : ImageSeries, keyword-only
        The registered image: its frame is the object's FrameOfReferenceUID (the
        Registered RCS), its patient and study are the object's (``art replan``:
        the daily CBCT).
    source : ImageSeries, keyword-only
        The source image: SourceFrameOfReferenceUID and ReferencedImageSequence
        (``art replan``: the planning CT).
    pre_matrix : array-like (4, 4), optional, keyword-only
        Rigid part of the map, registered → source LPS mm, written as the Pre
        Deformation Matrix; the vectors hold the rest, ``p + d(p) − pre(p)``.
        Identity when None. The Post Deformation Matrix is the identity.

    Returns
    -------
    pydicom.dataset.FileDataset
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    if not isinstance(grid, Grid):
        raise InputError(f"grid must be an art.geometry.Grid, got {type(grid).__name__}")
    d = np.asarray(displacement, dtype=np.float64)
    if d.shape != tuple(grid.shape) + (3,):
        raise InputError(f"displacement must have shape {tuple(grid.shape) + (3,)} (grid shape + 3), got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise InputError("displacement has non-finite values")
    pre = np.eye(4) if pre_matrix is None else _check_rigid(pre_matrix, "pre_matrix")
    ds = _base_dataset(DEFORMABLE_SPATIAL_REGISTRATION_STORAGE, registered, source, label=label, description=description,
                       content_date=content_date, content_time=content_time, series_number=series_number,
                       names=("registered", "source"))  # fmt: skip
    pts = _grid_points(grid)
    vectors = (pts + d.reshape(-1, 3) - (pts @ pre[:3, :3].T + pre[:3, 3])).reshape(d.shape)  # D = p + d(p) - pre(p)
    it = Dataset()
    it.SourceFrameOfReferenceUID = source.frame_of_reference_uid
    it.ReferencedImageSequence = _image_refs(source)
    it.RegistrationTypeCodeSequence = Sequence([])
    it.PreDeformationMatrixRegistrationSequence = Sequence([_matrix_item(pre, "RIGID")])
    it.PostDeformationMatrixRegistrationSequence = Sequence([_matrix_item(np.eye(4), "RIGID")])
    it.DeformableRegistrationGridSequence = Sequence([_grid_item(vectors, grid)])
    ds.DeformableRegistrationSequence = Sequence([it])
    _common_instance_reference(ds, [registered, source])
    path = Path(path)
    if path.is_dir():
        path = path / f"DREG.{ds.SOPInstanceUID}.dcm"
    save_dataset(ds, path)
    return ds


def _grid_item(vectors: np.ndarray, grid: Grid) -> Any:
    """The DeformableRegistrationGridSequence item of ``vectors`` ((nz, ny, nx, 3), mm) on ``grid``.

    The grid's depth axis is row × column (C.20.3.1.1): a left-handed grid is written with its slices reversed.
    """
    from pydicom.dataset import Dataset

    direction = grid.direction_matrix
    origin = np.asarray(grid.origin, dtype=np.float64)
    if np.linalg.det(direction) < 0:
        vectors = vectors[::-1]
        origin = origin + direction[:, 2] * grid.spacing[0] * (grid.shape[0] - 1)
        direction = direction.copy()
        direction[:, 2] = -direction[:, 2]
    g = Dataset()
    g.ImageOrientationPatient = format_ds_list(list(direction[:, 0]) + list(direction[:, 1]))
    g.ImagePositionPatient = format_ds_list(origin)
    g.GridDimensions = [int(grid.shape[2]), int(grid.shape[1]), int(grid.shape[0])]
    g.GridResolution = [float(grid.spacing[2]), float(grid.spacing[1]), float(grid.spacing[0])]
    g.VectorGridData = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
    return g


def _grid_points(grid: Grid) -> np.ndarray:
    """LPS centres (mm, float64, shape (n, 3)) of every voxel of ``grid``, in C order of (z, y, x)."""
    return grid.index_to_lps(np.indices(grid.shape).reshape(3, -1).T.astype(np.float64))


@dataclass(frozen=True)
class DeformableRegistration:
    """A deformation read from a Deformable Spatial Registration object.

    Attributes
    ----------
    displacement : ndarray, float32, shape (nz, ny, nx, 3), mm
        LPS (dx, dy, dz) on ``grid``: the registered-frame point ``p`` corresponds
        to the source-frame point ``p + displacement(p)`` — the whole map
        ``M_post (M_pre p + D(p))`` of PS3.3 C.20.3.1.1, matrices applied.
        (NaN where the object marks the deformation undefined.)
    grid : Grid
        The deformation grid (right-handed), in the registered frame.
    pre_matrix, post_matrix : ndarray (4, 4)
        The Pre / Post Deformation Matrices as stored (identity when absent);
        already contained in ``displacement``.
    frame_of_reference_uid : str
        The Registered RCS (the object's FrameOfReferenceUID).
    source_frame_of_reference_uid : str
        The Source RCS (the item's SourceFrameOfReferenceUID).
    source_sop_instance_uids : tuple of str
        The item's ReferencedImageSequence (the source images; may be empty).
    """

    displacement: np.ndarray
    grid: Grid
    pre_matrix: np.ndarray
    post_matrix: np.ndarray
    frame_of_reference_uid: str
    source_frame_of_reference_uid: str
    source_sop_instance_uids: tuple[str, ...] = ()


def read_deformable_registration(path: str | Path) -> DeformableRegistration:
    """Read the (first) deformation grid of a Deformable Spatial Registration object.

    Parameters
    ----------
    path : str or Path
        The DREG file.

    Returns
    -------
    DeformableRegistration
        The whole registered → source map on the deformation grid (see its attributes).

    Raises
    ------
    DicomError
        Not a deformable registration, no grid, a malformed grid or matrix.
    """
    path = Path(path)
    ds = read_dataset(path, what="Deformable Spatial Registration file")
    if str(ds.get("SOPClassUID", "")) != DEFORMABLE_SPATIAL_REGISTRATION_STORAGE:
        raise DicomError("not a Deformable Spatial Registration object (SOP class 1.2.840.10008.5.1.4.1.1.66.3)", path=path)
    items = [it for it in sequence_items(ds, "DeformableRegistrationSequence") if "DeformableRegistrationGridSequence" in it]
    if not items:
        raise DicomError("no DeformableRegistrationGridSequence in the object", path=path)
    it = items[0]
    pre = _matrix_from_items(sequence_items(it, "PreDeformationMatrixRegistrationSequence"), path)
    post = _matrix_from_items(sequence_items(it, "PostDeformationMatrixRegistrationSequence"), path)
    vectors, grid = _read_grid(sequence_items(it, "DeformableRegistrationGridSequence")[0], path)
    pts = _grid_points(grid)
    mapped = pts @ pre[:3, :3].T + pre[:3, 3] + vectors.reshape(-1, 3)
    mapped = mapped @ post[:3, :3].T + post[:3, 3]
    refs = tuple(str(r.get("ReferencedSOPInstanceUID", "")) for r in sequence_items(it, "ReferencedImageSequence"))
    return DeformableRegistration(
        displacement=(mapped - pts).reshape(vectors.shape).astype(np.float32), grid=grid, pre_matrix=pre, post_matrix=post,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        source_frame_of_reference_uid=str(it.get("SourceFrameOfReferenceUID", "")), source_sop_instance_uids=refs,
    )  # fmt: skip


def _read_grid(g: Any, path: Path) -> tuple[np.ndarray, Grid]:
    """The vectors D (float64, (nz, ny, nx, 3), mm) and the grid of a DeformableRegistrationGridSequence item."""
    try:
        iop = np.array([float(v) for v in g.ImageOrientationPatient])
        ipp = np.array([float(v) for v in g.ImagePositionPatient])
        nx, ny, nz = (int(v) for v in g.GridDimensions)
        rx, ry, rz = (float(v) for v in g.GridResolution)
        raw = bytes(g.VectorGridData)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomError(f"malformed deformation grid: {exc}", path=path) from exc
    if len(raw) != nx * ny * nz * 3 * 4:
        raise DicomError(f"VectorGridData has {len(raw)} bytes, expected {nx * ny * nz * 12} for grid {nx}x{ny}x{nz}", path=path)
    d = np.frombuffer(raw, dtype="<f4").reshape(nz, ny, nx, 3).astype(np.float64)
    direction = np.column_stack([iop[:3], iop[3:], np.cross(iop[:3], iop[3:])])
    grid = Grid(shape=(nz, ny, nx), spacing=(rz, ry, rx), origin=tuple(ipp), direction=tuple(direction.reshape(-1)))
    return d, grid


def _matrix_from_items(items: list, path: Path) -> np.ndarray:
    """The Pre/Post Deformation Matrix of its sequence's items (one item by the standard; identity when none)."""
    total = np.eye(4)
    for ms in items:
        try:
            vals = np.array([float(v) for v in ms.FrameOfReferenceTransformationMatrix], dtype=np.float64)
        except (AttributeError, TypeError, ValueError) as exc:
            raise DicomError("matrix item lacks a numeric FrameOfReferenceTransformationMatrix", path=path) from exc
        if vals.size != 16 or not np.all(np.isfinite(vals)):
            raise DicomError("FrameOfReferenceTransformationMatrix must have 16 finite values", path=path)
        total = vals.reshape(4, 4) @ total
    return total
