"""Spatial Registration (REG) objects: rigid (Spatial Registration Storage) and deformable
(Deformable Spatial Registration Storage), written and read.

Direction (both objects)
------------------------
The object's frame of reference is the **fixed** image's (the registered
RCS, e.g. the planning CT).  The rigid matrix ``M`` (4 × 4, homogeneous, mm)
maps **moving-image LPS points into fixed-image LPS points**:
``p_fixed = M @ [p_moving, 1]`` — the DICOM meaning of
FrameOfReferenceTransformationMatrix (it transforms coordinates of the item's
frame of reference into the registration's).  Written as two
RegistrationSequence items: the fixed image with the identity, then the
moving image with ``M``; each lists its image slices (ReferencedImageSequence),
so the object stays unambiguous when CT and CBCT share a FrameOfReferenceUID
(as the phantoms' do).

The deformable object holds the field as ``art`` keeps it
(:mod:`art.registration.fields`): a displacement ``d`` (z, y, x, 3), LPS
components (dx, dy, dz) in mm, on a grid in the fixed frame; the fixed point
``p`` corresponds to the point ``p + d(p)`` of the rigidly pre-aligned moving
image, i.e. to the moving-image point ``pre^-1 (p + d(p))`` where ``pre`` (the
PreDeformationMatrixRegistration, moving → fixed, as the rigid matrix above) is
identity when not given.  VectorGridData is float32, x fastest; GridDimensions
(columns, rows, slices) and GridResolution (dx, dy, dz) mm.  Vendors read the
direction of DICOM deformation vectors differently: check a known point when
exchanging with another system.
"""

from __future__ import annotations

import datetime as _dt
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


def _base_dataset(sop_class: str, fixed: ImageSeries, moving: ImageSeries, *, label: str, description: str, content_date: Any, content_time: Any, series_number: int) -> Any:
    for im, nm in ((fixed, "fixed"), (moving, "moving")):
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
    fixed: ImageSeries,
    moving: ImageSeries,
    path: str | Path,
    *,
    pre_matrix: Any = None,
    label: str = "ART_DEFORMABLE",
    description: str = "deformable registration",
    content_date: Any = None,
    content_time: Any = None,
    series_number: int = 1,
) -> Any:
    """Write a displacement field as a Deformable Spatial Registration object.

    Parameters
    ----------
    displacement : ndarray, shape (nz, ny, nx, 3), mm
        LPS components (dx, dy, dz) on ``grid``; see the module notes for the direction.
    grid : Grid
        The field's grid, in the fixed image's frame.
    fixed, moving : ImageSeries
        Fixed (registered frame) and moving (source) images.
    path : str or Path
        Output file; an existing folder gets ``DREG.<SOPInstanceUID>.dcm`` inside it.
    pre_matrix : array-like (4, 4), optional, keyword-only
        Rigid pre-alignment (moving → fixed); identity when None.

    Returns
    -------
    pydicom.dataset.FileDataset
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    if not isinstance(grid, Grid):
        raise InputError(f"grid must be an art.geometry.Grid, got {type(grid).__name__}")
    d = np.asarray(displacement, dtype=np.float32)
    if d.shape != tuple(grid.shape) + (3,):
        raise InputError(f"displacement must have shape {tuple(grid.shape) + (3,)} (grid shape + 3), got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise InputError("displacement has non-finite values")
    pre = np.eye(4) if pre_matrix is None else _check_rigid(pre_matrix, "pre_matrix")
    ds = _base_dataset(DEFORMABLE_SPATIAL_REGISTRATION_STORAGE, fixed, moving, label=label, description=description,
                       content_date=content_date, content_time=content_time, series_number=series_number)  # fmt: skip
    direction = grid.direction_matrix
    origin = np.asarray(grid.origin, dtype=np.float64)
    if np.linalg.det(direction) < 0:  # left-handed: reverse the slices
        d = d[::-1]
        origin = origin + direction[:, 2] * grid.spacing[0] * (grid.shape[0] - 1)
        direction = direction.copy()
        direction[:, 2] = -direction[:, 2]
    it = Dataset()
    it.SourceFrameOfReferenceUID = moving.frame_of_reference_uid
    it.ReferencedImageSequence = _image_refs(moving)
    it.RegistrationTypeCodeSequence = Sequence([])
    it.PreDeformationMatrixRegistrationSequence = Sequence([_matrix_item(pre, "RIGID")])
    it.PostDeformationMatrixRegistrationSequence = Sequence([_matrix_item(np.eye(4), "RIGID")])
    g = Dataset()
    g.ImageOrientationPatient = format_ds_list(list(direction[:, 0]) + list(direction[:, 1]))
    g.ImagePositionPatient = format_ds_list(origin)
    g.GridDimensions = [int(grid.shape[2]), int(grid.shape[1]), int(grid.shape[0])]
    g.GridResolution = [float(grid.spacing[2]), float(grid.spacing[1]), float(grid.spacing[0])]
    g.VectorGridData = np.ascontiguousarray(d, dtype="<f4").tobytes()
    it.DeformableRegistrationGridSequence = Sequence([g])
    ds.DeformableRegistrationSequence = Sequence([it])
    _common_instance_reference(ds, [fixed, moving])
    path = Path(path)
    if path.is_dir():
        path = path / f"DREG.{ds.SOPInstanceUID}.dcm"
    save_dataset(ds, path)
    return ds


def read_deformable_registration(path: str | Path) -> tuple[np.ndarray, Grid, np.ndarray | None]:
    """Read the (first) deformation grid of a Deformable Spatial Registration object.

    Returns
    -------
    displacement : ndarray, float32, shape (nz, ny, nx, 3), mm
        LPS components (dx, dy, dz), see the module notes.
    grid : Grid
        Right-handed grid of the field (fixed frame).
    pre_matrix : ndarray (4, 4) or None
        The pre-deformation matrix (moving → fixed), None when absent.

    Raises
    ------
    DicomError
        Not a deformable registration, no grid, a post-deformation matrix that
        is not the identity (not representable), or a malformed grid.
    """
    path = Path(path)
    ds = read_dataset(path, what="Deformable Spatial Registration file")
    if str(ds.get("SOPClassUID", "")) != DEFORMABLE_SPATIAL_REGISTRATION_STORAGE:
        raise DicomError("not a Deformable Spatial Registration object (SOP class 1.2.840.10008.5.1.4.1.1.66.3)", path=path)
    items = [it for it in sequence_items(ds, "DeformableRegistrationSequence") if "DeformableRegistrationGridSequence" in it]
    if not items:
        raise DicomError("no DeformableRegistrationGridSequence in the object", path=path)
    it = items[0]
    pre = None
    if "PreDeformationMatrixRegistrationSequence" in it:
        pre = _matrix_from_items(sequence_items(it, "PreDeformationMatrixRegistrationSequence"), path)
    post = _matrix_from_items(sequence_items(it, "PostDeformationMatrixRegistrationSequence"), path)
    if not np.allclose(post, np.eye(4), atol=1e-6):
        raise DicomError("a post-deformation matrix other than the identity is not supported", path=path)
    g = sequence_items(it, "DeformableRegistrationGridSequence")[0]
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
    d = np.frombuffer(raw, dtype="<f4").reshape(nz, ny, nx, 3).astype(np.float32)
    direction = np.column_stack([iop[:3], iop[3:], np.cross(iop[:3], iop[3:])])
    grid = Grid(shape=(nz, ny, nx), spacing=(rz, ry, rx), origin=tuple(ipp), direction=tuple(direction.reshape(-1)))
    return d, grid, pre


def _matrix_from_items(items: list, path: Path) -> np.ndarray:
    total = np.eye(4)
    for ms in items:
        try:
            vals = np.array([float(v) for v in ms.FrameOfReferenceTransformationMatrix], dtype=np.float64)
        except (AttributeError, TypeError, ValueError) as exc:
            raise DicomError("matrix item lacks a numeric FrameOfReferenceTransformationMatrix", path=path) from exc
        if vals.size != 16:
            raise DicomError("FrameOfReferenceTransformationMatrix must have 16 values", path=path)
        total = vals.reshape(4, 4) @ total
    return total
