"""The DICOM files of a folder: finding them, and checking that each is whole and consistent.

:func:`find_dicom_files` splits a folder's files into DICOM and other files;
:func:`pixel_data_problem` says when a file's native pixel data is cut short.
Both are used by sending (:mod:`art.io.network`), anonymising
(:mod:`art.io.anonymize`) and reference checking (:mod:`art.io.references`);
:func:`_inspect` reads what sending needs to know of one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["find_dicom_files", "pixel_data_problem"]


@dataclass
class _File:
    path: Path
    rel: Path
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    transfer_syntax: str = ""
    part10: bool = True  # has preamble + file meta (can be streamed unchanged)
    problem: str = ""


def _is_raw_dataset(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return head in (b"\x08\x00", b"\x02\x00")


def find_dicom_files(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """Split the files under ``folder`` (recursively) into DICOM and other files.

    A file is DICOM when it has the PS3.10 preamble (``DICM`` at byte 128) or
    is a raw little-endian dataset (starts with group 0008 or 0002) that
    pydicom can read with a SOP Class UID.

    Parameters
    ----------
    folder : str or Path
        The folder to search.

    Returns
    -------
    dicom, other : list of Path, list of Path
        Absolute paths, sorted.
    """
    folder = Path(folder)
    dicom, other = [], []
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        (dicom if _is_dicom(p) else other).append(p)
    return dicom, other


def _is_dicom(path: Path) -> bool:
    """True when ``path`` is a DICOM file as :func:`find_dicom_files` counts them."""
    from art.io.dicom_common import looks_like_dicom

    return looks_like_dicom(path) or (_is_raw_dataset(path) and _raw_has_sop_class(path))


def _raw_has_sop_class(path: Path) -> bool:
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True, specific_tags=["SOPClassUID"])
        return bool(ds.get("SOPClassUID", None))
    except Exception:
        return False


def _inspect(path: Path, rel: Path) -> _File:
    """Read one DICOM file fully (so truncation shows) and check its file meta against the dataset."""
    from art.errors import DicomError
    from art.io.dicom_common import looks_like_dicom, read_dataset

    f = _File(path=path, rel=rel, part10=looks_like_dicom(path))
    try:
        ds = read_dataset(path)
        if "PixelData" in ds:
            _ = ds.PixelData  # materialise: a truncated value fails here
    except DicomError as exc:
        f.problem = f"unreadable: {exc.problem}"
        return f
    problem = pixel_data_problem(ds)
    if problem:
        f.problem = f"unreadable: {problem}"
        return f
    f.sop_class_uid = str(ds.get("SOPClassUID", "") or "")
    f.sop_instance_uid = str(ds.get("SOPInstanceUID", "") or "")
    meta = getattr(ds, "file_meta", None)
    f.transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    if not f.sop_class_uid or not f.sop_instance_uid:
        f.problem = "lacks SOPClassUID or SOPInstanceUID"
    elif not f.transfer_syntax:
        f.problem = "transfer syntax unknown"
    elif f.part10:
        ms_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
        ms_inst = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        if ms_class != f.sop_class_uid or ms_inst != f.sop_instance_uid:
            f.problem = "file meta MediaStorageSOPClassUID/InstanceUID differ from the dataset's SOPClassUID/InstanceUID"
    return f


def pixel_data_problem(ds: Any) -> str:
    """'' when the native (uncompressed) pixel data has the length its attributes need, else why not.

    pydicom reads a file cut inside its last element (usually PixelData)
    without complaint; this catches it.  Encapsulated (compressed) pixel data
    is not checked.
    """
    if "PixelData" not in ds:
        return ""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID", None) if meta is not None else None
    if ts is None or ts.is_compressed:
        return ""
    try:
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return "pixel data without valid Rows, Columns or BitsAllocated"
    expected = (n * bits + 7) // 8
    have = len(ds.PixelData)
    if have < expected:
        return f"pixel data truncated ({have} of {expected} bytes): incomplete file"
    return ""
