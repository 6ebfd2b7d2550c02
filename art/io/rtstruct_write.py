"""Writing an RT Structure Set (RTSTRUCT): boolean masks on an image series as closed planar contours.

Public entry: :func:`art.io.rtstruct.write_rtstruct` and
:func:`art.io.rtstruct.structures_to_dataset` (re-exported by :mod:`art.io`),
and :func:`art.io.rtstruct.mask_to_contours`.

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
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import GeometryError, InputError
from art.io.dicom_common import (
    RT_STRUCTURE_SET_STORAGE,
    dicom_date,
    dicom_time,
    format_ds_fixed,
    new_file_dataset,
    save_dataset,
    set_character_set,
    set_general_study,
    set_patient,
    set_rt_series,
)
from art.io.image_series import ImageSeries
from art.io.uids import check_uid, new_uid
from art.structures import Structure, StructureSet

__all__ = ["write_rtstruct", "structures_to_dataset", "mask_to_contours", "STUDY_COMPONENT_SOP_CLASS"]

STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
"""ReferencedSOPClassUID used for the study in RTReferencedStudySequence (as most planning systems write)."""


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
    from pydicom.sequence import Sequence

    _check_structures(structures, image, label, name, generation_algorithm)
    series_uid, sop_uid = _structure_set_uids(series_instance_uid, sop_instance_uid)
    date, time = dicom_date(structure_set_date), dicom_time(structure_set_time)

    ds = new_file_dataset(RT_STRUCTURE_SET_STORAGE, sop_uid)
    set_character_set(ds, image.patient.name, label, name, description, series_description, *structures.names)
    # patient, general study (the image's)
    set_patient(ds, image.patient)
    set_general_study(ds, image.study_instance_uid, image.study_date, image.study_time)
    # RT series, frame of reference (in the RT Structure Set IOD of recent editions of PS3.3), equipment
    set_rt_series(ds, "RTSTRUCT", series_uid, series_number, image.frame_of_reference_uid)
    ds.SeriesDescription = series_description
    _set_structure_set_module(ds, label, name, description, date, time)
    ds.ReferencedFrameOfReferenceSequence = Sequence([_referenced_frame_of_reference(image)])
    roi_seq, contour_seq, obs_seq = _roi_sequences(structures, image, generation_algorithm)
    ds.StructureSetROISequence = Sequence(roi_seq)
    ds.ROIContourSequence = Sequence(contour_seq)
    ds.RTROIObservationsSequence = Sequence(obs_seq)
    return ds


def _check_structures(structures: StructureSet, image: ImageSeries, label: str, name: str, generation_algorithm: str) -> None:
    """Refuse what :func:`structures_to_dataset` cannot write.

    Raises
    ------
    InputError
        Wrong types, a label not of 1-16 characters without backslash, a name
        over 64 characters, an unknown generation algorithm, or a structure
        name over 64 characters or with a backslash.
    GeometryError
        Structures not on the image grid.
    """
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


def _structure_set_uids(series_instance_uid: str | None, sop_instance_uid: str | None) -> tuple[str, str]:
    """The structure set's series and SOP instance UIDs.

    Given UIDs are checked; a missing series UID is new and random; a missing
    SOP instance UID is derived from the given series UID (deterministic
    output), else new and random.
    """
    series_uid = check_uid(series_instance_uid, "series_instance_uid") if series_instance_uid else new_uid()
    if sop_instance_uid:
        sop_uid = check_uid(sop_instance_uid, "sop_instance_uid")
    elif series_instance_uid:
        sop_uid = new_uid(entropy=(series_uid, "RTSTRUCT"))
    else:
        sop_uid = new_uid()
    return series_uid, sop_uid


def _set_structure_set_module(ds: Any, label: str, name: str, description: str, date: str, time: str) -> None:
    """Set the Structure Set module's own attributes (label, name and description when given, instance number, date, time)."""
    ds.StructureSetLabel = label
    if name:
        ds.StructureSetName = name
    if description:
        ds.StructureSetDescription = description
    ds.InstanceNumber = 1
    ds.StructureSetDate = date
    ds.StructureSetTime = time


def _image_ref(image: ImageSeries, k: int) -> Any:
    """A ContourImageSequence item referencing slice ``k`` of ``image``."""
    from pydicom.dataset import Dataset

    it = Dataset()
    it.ReferencedSOPClassUID = image.sop_class_uid
    it.ReferencedSOPInstanceUID = image.sop_instance_uids[k]
    return it


def _referenced_frame_of_reference(image: ImageSeries) -> Any:
    """The ReferencedFrameOfReferenceSequence item: the image's frame of reference, study, series and every slice."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    grid = image.grid
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = image.series_instance_uid
    series_ref.ContourImageSequence = Sequence([_image_ref(image, k) for k in range(grid.shape[0])])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = STUDY_COMPONENT_SOP_CLASS
    study_ref.ReferencedSOPInstanceUID = image.study_instance_uid
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = image.frame_of_reference_uid
    for_ref.RTReferencedStudySequence = Sequence([study_ref])
    return for_ref


def _roi_sequences(structures: StructureSet, image: ImageSeries, generation_algorithm: str) -> tuple[list, list, list]:
    """The items of StructureSetROISequence, ROIContourSequence and RTROIObservationsSequence.

    Parameters
    ----------
    structures : StructureSet
        Masks on ``image.grid``; ROI numbers are their positions from 1.
    image : ImageSeries
        The image referenced (frame of reference, slice UIDs, grid).
    generation_algorithm : str
        ROIGenerationAlgorithm of every ROI.

    Returns
    -------
    roi_seq, contour_seq, obs_seq : list of pydicom Dataset
        One item per structure in each, in the order of ``structures``.
    """
    from pydicom.dataset import Dataset

    roi_seq, contour_seq, obs_seq = [], [], []
    for number, s in enumerate(structures, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = image.frame_of_reference_uid
        roi.ROIName = s.name
        roi.ROIGenerationAlgorithm = generation_algorithm
        roi_seq.append(roi)

        contour_seq.append(_roi_contour(s, number, image))

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = s.roi_type
        obs.ROIInterpreter = ""
        obs_seq.append(obs)
    return roi_seq, contour_seq, obs_seq


def _roi_contour(s: Structure, number: int, image: ImageSeries) -> Any:
    """The ROIContourSequence item of one structure: its colour and one CLOSED_PLANAR contour per polygon of each slice.

    Parameters
    ----------
    s : Structure
        Mask of shape (z, y, x) on ``image.grid``.
    number : int
        Its ROI number.
    image : ImageSeries
        The image (grid and slice UIDs referenced by each contour).

    Returns
    -------
    pydicom.dataset.Dataset
        ContourData in LPS mm (fixed 4-decimal strings).
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    grid = image.grid
    rc = Dataset()
    rc.ROIDisplayColor = [int(c) for c in s.color]
    items = []
    for k in np.nonzero(s.mask.reshape(s.mask.shape[0], -1).any(axis=1))[0]:
        for ji in mask_to_contours(s.mask[k]):
            idx = np.column_stack([np.full(len(ji), float(k)), ji])
            lps = grid.index_to_lps(idx)
            c = Dataset()
            c.ContourImageSequence = Sequence([_image_ref(image, int(k))])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(lps)
            c.ContourNumber = len(items) + 1
            c.ContourData = format_ds_fixed(lps)
            items.append(c)
    if items:
        rc.ContourSequence = Sequence(items)
    rc.ReferencedROINumber = number
    return rc


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
