"""A small Spatial Registration (REG) writer independent of art, for tests (pydicom only).

Written from DICOM PS3.3 A.39.1 (Spatial Registration IOD) and C.20.2 (Spatial
Registration Module): the object's FrameOfReferenceUID is the registered RCS; each
RegistrationSequence item names a frame of reference (optionally the images of it
that are registered) and one MatrixRegistrationSequence item whose MatrixSequence
holds a FrameOfReferenceTransformationMatrix that maps the item's frame into the
registered RCS (C.20.2.1.1), as an imaging system would send it.

Also: :func:`rewrite_in_own_frame`, a CBCT series copied into a new frame of
reference with its patient coordinates shifted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SPATIAL_REGISTRATION = "1.2.840.10008.5.1.4.1.1.66.1"


def series_refs(folder: Path) -> list[tuple[str, str]]:
    """(SOPClassUID, SOPInstanceUID) of every image file in ``folder``."""
    out = []
    for f in sorted(Path(folder).iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return out


def write_reg(path: Path, *, registered_for: str, items: list[dict], patient_id: str, study_uid: str | None = None,
              sop_class: str = SPATIAL_REGISTRATION) -> Path:  # fmt: skip
    """Write a REG; ``items``: dicts with ``frame`` (UID), ``matrix`` (4 × 4, item frame → registered), optional
    ``refs`` (list of (class, instance) UIDs) and ``type`` (RIGID by default)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "REG"
    ds.PatientID = patient_id
    ds.PatientName = "TEST^REG"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = registered_for
    ds.ContentDate, ds.ContentTime, ds.ContentLabel = "20260101", "120000", "IGRT"
    seq = []
    for spec in items:
        it = Dataset()
        it.FrameOfReferenceUID = spec["frame"]
        if spec.get("refs"):
            refs = []
            for cls, inst in spec["refs"]:
                r = Dataset()
                r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID = cls, inst
                refs.append(r)
            it.ReferencedImageSequence = Sequence(refs)
        m = Dataset()
        m.FrameOfReferenceTransformationMatrixType = spec.get("type", "RIGID")
        m.FrameOfReferenceTransformationMatrix = [f"{v:.10g}" for v in np.asarray(spec["matrix"], float).reshape(-1)]
        mr = Dataset()
        mr.RegistrationTypeCodeSequence = Sequence([])
        mr.MatrixSequence = Sequence([m])
        it.MatrixRegistrationSequence = Sequence([mr])
        seq.append(it)
    ds.RegistrationSequence = Sequence(seq)
    ds.preamble = b"\0" * 128
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return Path(path)


def translation(t) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m


def rewrite_in_own_frame(src: Path, dst: Path, *, offset_mm, frame_uid: str | None = None) -> str:
    """Copy the image series ``src`` to ``dst`` in a new frame of reference: every ImagePositionPatient + ``offset_mm``.

    Returns the new FrameOfReferenceUID. The CBCT's own-frame point ``y'`` is the old point ``y' - offset``.
    """
    dst.mkdir(parents=True)
    uid = frame_uid or generate_uid()
    for f in sorted(Path(src).iterdir()):
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = uid
        ds.ImagePositionPatient = [f"{float(v) + float(o):.6f}" for v, o in zip(ds.ImagePositionPatient, offset_mm)]
        ds.save_as(dst / f.name)
    return uid
