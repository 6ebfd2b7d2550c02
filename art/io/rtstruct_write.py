"""Writing an RT Structure Set (RTSTRUCT): structures on an image series as closed planar contours.

Public entry: :func:`art.io.rtstruct.write_rtstruct` and
:func:`art.io.rtstruct.structures_to_dataset` (re-exported by :mod:`art.io`).

Two kinds of structures, two rules (docs/structures.md):

* **Polygons as given.**  A structure read from an RTSTRUCT keeps its closed
  planar polygons (``Structure.contours``); they are written back unchanged:
  the same polygons in the same order, the same points (first point not
  repeated unless it was), ``CLOSED_PLANAR``.  Each coordinate is written as
  the shortest decimal string that reads back to the same float64 (Python's
  ``repr``), which fits the 16 characters of DS for every value read from a DS;
  a value that does not fit (a polygon made in code) is rounded to 16
  characters, and the writer refuses (:class:`~art.errors.InputError`) any
  loss above 1 µm (``DS_TOLERANCE_MM``).  A contour references, in its
  ContourImageSequence, the image slice whose plane all its points lie on
  (within ``PLANE_TOLERANCE_MM`` = 0.05 mm); a contour between slices
  references none: the sequence is Type 3 in the ROI Contour Module (PS3.3
  C.8.8.6) and lists the images *containing* the contour, so naming the
  nearest slice would be false.  Two checks before anything is written
  (:class:`~art.errors.GeometryError`, naming the structure): the polygons'
  frame of reference (``Structure.frame_of_reference_uid``) must be the
  image's — polygons are never written into another frame; the image may
  differ from the one they were read on only by a change that keeps the frame
  (another series, a resampled grid) — and the mask must still be their
  rasterisation on the image grid (a mask changed without dropping the
  polygons is refused, never silently exported as the old polygons).
* **Traced masks.**  A structure without polygons (AI, propagated, edited,
  phantom) is traced slice by slice with sub-voxel smoothing
  (:func:`art.io.rtstruct_trace.mask_to_contours`, ``smoothing`` pixels;
  ``smoothing=0`` gives the voxel tracing that rasterises back to the same
  voxels).  Holes are separate contours (even-odd rule); each contour
  references its image slice.  ContourData uses fixed 4-decimal strings
  (0.1 µm).

The ReferencedFrameOfReferenceSequence lists every image slice.  The
structure set has the image's patient and study, its own series, and the
image's frame of reference.
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
    set_ds_values,
    set_character_set,
    set_general_study,
    set_patient,
    set_rt_series,
)
from art.io.image_series import ImageSeries
from art.io.rtstruct_read import rasterise_contours
from art.io.rtstruct_trace import DEFAULT_SMOOTHING, mask_to_contours, traced_polygons
from art.io.uids import object_uids
from art.structures import Structure, StructureSet

__all__ = ["write_rtstruct", "structures_to_dataset", "mask_to_contours", "format_ds_exact", "STUDY_COMPONENT_SOP_CLASS", "PLANE_TOLERANCE_MM", "DS_TOLERANCE_MM"]

STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
"""ReferencedSOPClassUID used for the study in RTReferencedStudySequence (as most planning systems write)."""

PLANE_TOLERANCE_MM = 0.05
"""A given contour references an image slice when all its points lie within this distance (mm) of the slice's plane."""

DS_TOLERANCE_MM = 1e-3
"""The largest change (mm) a given coordinate may suffer from being written as a 16-character decimal string."""


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
    smoothing: float = DEFAULT_SMOOTHING,
) -> Any:
    """Build an RTSTRUCT dataset (not written) for structures on an image series: polygons as given, masks traced.

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
    smoothing : float
        Sigma (pixels) of the smoothing along the polygons traced for
        structures without polygons of their own; 0: voxel tracing (see
        :func:`art.io.rtstruct_trace.mask_to_contours`).  Structures with
        polygons are written as given whatever this is.

    Returns
    -------
    pydicom.dataset.FileDataset
        With file meta, ready for :meth:`save_as`.

    Raises
    ------
    InputError, GeometryError
        See :func:`_check_structures` and :func:`_given_contours`.
    """
    from pydicom.sequence import Sequence

    _check_structures(structures, image, label, name, generation_algorithm, smoothing)
    given = {s.name: _given_contours(s, image) for s in structures if s.contours is not None}
    series_uid, sop_uid = object_uids(series_instance_uid, sop_instance_uid, kind="RTSTRUCT")
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
    roi_seq, contour_seq, obs_seq = _roi_sequences(structures, image, generation_algorithm, given, float(smoothing))
    ds.StructureSetROISequence = Sequence(roi_seq)
    ds.ROIContourSequence = Sequence(contour_seq)
    ds.RTROIObservationsSequence = Sequence(obs_seq)
    return ds


def _check_structures(structures: StructureSet, image: ImageSeries, label: str, name: str, generation_algorithm: str, smoothing: float) -> None:
    """Refuse what :func:`structures_to_dataset` cannot write.

    Raises
    ------
    InputError
        Wrong types, a label not of 1-16 characters without backslash, a name
        over 64 characters, an unknown generation algorithm, a negative or
        non-finite smoothing, or a structure name over 64 characters or with a
        backslash.
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
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not np.isfinite(smoothing) or smoothing < 0:
        raise InputError(f"smoothing must be a finite number >= 0 (pixels), got {smoothing!r}")
    for s in structures:
        if len(s.name) > 64 or "\\" in s.name:
            raise InputError(f"structure name {s.name!r} must be at most 64 characters without backslash (ROIName)")


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


def _roi_sequences(
    structures: StructureSet, image: ImageSeries, generation_algorithm: str, given: dict[str, list], smoothing: float
) -> tuple[list, list, list]:
    """The items of StructureSetROISequence, ROIContourSequence and RTROIObservationsSequence.

    Parameters
    ----------
    structures : StructureSet
        Masks on ``image.grid``; ROI numbers are their positions from 1.
    image : ImageSeries
        The image referenced (frame of reference, slice UIDs, grid).
    generation_algorithm : str
        ROIGenerationAlgorithm of every ROI.
    given : dict of str to list
        Contour items of the structures written as given (:func:`_given_contours`), by name.
    smoothing : float
        Tracing smoothing (pixels) for the others.

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

        contour_seq.append(_roi_contour(s, number, image, given.get(s.name), smoothing))

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = s.roi_type
        obs.ROIInterpreter = ""
        obs_seq.append(obs)
    return roi_seq, contour_seq, obs_seq


def _roi_contour(s: Structure, number: int, image: ImageSeries, given: list | None, smoothing: float) -> Any:
    """The ROIContourSequence item of one structure: its colour and its CLOSED_PLANAR contours.

    Parameters
    ----------
    s : Structure
        Mask of shape (z, y, x) on ``image.grid``.
    number : int
        Its ROI number.
    image : ImageSeries
        The image (grid and slice UIDs referenced by each contour).
    given : list of pydicom Dataset or None
        The contour items of its polygons as given; None: trace the mask.
    smoothing : float
        Tracing smoothing, pixels.

    Returns
    -------
    pydicom.dataset.Dataset
        ContourData in LPS mm.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    rc = Dataset()
    rc.ROIDisplayColor = [int(c) for c in s.color]
    items = given if given is not None else _traced_contours(s, image, smoothing)
    for n, c in enumerate(items, start=1):
        c.ContourNumber = n
    if items:
        rc.ContourSequence = Sequence(items)
    rc.ReferencedROINumber = number
    return rc


def _contour_item(lps: np.ndarray, data: list[str], image: ImageSeries, k: int | None) -> Any:
    """One ContourSequence item (CLOSED_PLANAR), referencing image slice ``k`` unless None."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    c = Dataset()
    if k is not None:
        c.ContourImageSequence = Sequence([_image_ref(image, k)])
    c.ContourGeometricType = "CLOSED_PLANAR"
    c.NumberOfContourPoints = len(lps)
    set_ds_values(c, "ContourData", data)
    return c


def _traced_contours(s: Structure, image: ImageSeries, smoothing: float) -> list:
    """Contour items of a structure without polygons: each slice of its mask traced (fixed 4-decimal ContourData)."""
    return [_contour_item(lps, format_ds_fixed(lps), image, k) for k, lps in traced_polygons(s.mask, image.grid, smoothing=smoothing)]


def _given_contours(s: Structure, image: ImageSeries) -> list:
    """Contour items of a structure's polygons as given, after the frame-of-reference and mask checks.

    Raises
    ------
    GeometryError
        The polygons' frame of reference is unknown or not the image's, or
        their rasterisation on the image grid is not the structure's mask.
    InputError
        A coordinate a 16-character decimal string cannot hold within 1 µm.
    """
    image_for = image.frame_of_reference_uid
    if s.frame_of_reference_uid is None:
        raise GeometryError(
            f"structure {s.name!r}: its polygons have no known frame of reference; "
            "set Structure.frame_of_reference_uid, or make the structure from its mask without contours to export it traced"
        )
    if s.frame_of_reference_uid != image_for:
        raise GeometryError(
            f"structure {s.name!r}: its polygons are in frame of reference {s.frame_of_reference_uid}, "
            f"the image {image.series_instance_uid} is in {image_for}: polygons are never written into another frame"
        )
    grid = image.grid
    if not np.array_equal(rasterise_contours(list(s.contours), grid, _skipped={"off": 0, "oblique": 0}), s.mask):
        raise GeometryError(
            f"structure {s.name!r}: its mask is not the rasterisation of its polygons on the image grid "
            "(changed or resampled after reading); make a new Structure without contours, or rasterise the polygons "
            "onto this grid (art.io.rtstruct.rasterise_contours)"
        )
    items = []
    for pts in s.contours:
        kk = grid.lps_to_index(pts)[:, 0]
        k0 = int(np.round(np.mean(kk)))
        off_mm = float(np.max(np.abs(kk - k0))) * grid.spacing[0]
        k = k0 if 0 <= k0 < grid.shape[0] and off_mm <= PLANE_TOLERANCE_MM else None
        items.append(_contour_item(pts, format_ds_exact(pts, what=f"structure {s.name!r}"), image, k))
    return items


def format_ds_exact(values: np.ndarray, *, what: str = "a coordinate") -> list[str]:
    """Decimal strings (DS, at most 16 characters) that read back to the same float64 wherever 16 characters allow.

    Parameters
    ----------
    values : array_like of float
        Coordinates in mm (any shape; flattened).
    what : str, keyword-only
        Named in the error message.

    Returns
    -------
    list of str
        ``repr`` of each value (the shortest string that reads back exactly),
        without a trailing ``.0`` beyond 16 characters; a value still over 16
        characters is rounded to 16 (:func:`pydicom.valuerep.format_number_as_ds`).

    Raises
    ------
    InputError
        A non-finite value, or one that 16 characters cannot hold within
        ``DS_TOLERANCE_MM`` (1 µm).
    """
    from pydicom.valuerep import format_number_as_ds

    out = []
    for v in np.asarray(values, dtype=np.float64).ravel().tolist():
        if not np.isfinite(v):
            raise InputError(f"{what}: cannot write a non-finite coordinate as a DICOM decimal string")
        t = repr(v + 0.0)  # + 0.0 turns -0.0 into 0.0
        if len(t) > 16 and t.endswith(".0"):
            t = t[:-2]
        if len(t) > 16:
            t = format_number_as_ds(v)
            if len(t) > 16 or abs(float(t) - v) > DS_TOLERANCE_MM:
                raise InputError(f"{what}: coordinate {v!r} mm cannot be written in 16 characters within 1 µm")
        out.append(t)
    return out


def write_rtstruct(structures: StructureSet, image: ImageSeries, path: str | Path, *, label: str = "art", **options: Any) -> Any:
    """Write structures on an image series as an RTSTRUCT file: polygons as given, masks traced.

    Parameters
    ----------
    structures : StructureSet
        Structures on ``image.grid``; those with ``contours`` are written with
        exactly those polygons (module notes), the others traced from their masks.
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
