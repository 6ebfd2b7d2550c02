"""Helpers shared by the DICOM readers and writers of :mod:`art.io`.

* :class:`PatientInfo` and the Patient module (read and write);
* value formatting: :func:`format_ds` (Decimal String, at most 16
  characters), :func:`format_ds_list`, :func:`dicom_date` / :func:`dicom_time`;
* file handling: :func:`looks_like_dicom` (128-byte preamble + ``DICM``),
  :func:`read_dataset` (errors become :class:`~art.errors.DicomError` naming the
  file), :func:`make_file_meta` and :func:`save_dataset`;
* equipment attributes written by ``art`` (:func:`set_equipment`).

Patient data (name, ID, birth date, sex) is never put in messages.
"""

from __future__ import annotations

import contextlib

import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from art.errors import DicomError, InputError

IMPLEMENTATION_CLASS_UID = "2.25.203227512398424393946327315187461298791"
"""Implementation Class UID written in the file meta of every file ``art`` writes (fixed)."""
IMPLEMENTATION_VERSION_NAME = "ART_0_1"
MANUFACTURER = "art"
MANUFACTURER_MODEL = "art adaptive radiotherapy engine"

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


@dataclass
class PatientInfo:
    """Patient module values (DICOM type 2: empty strings are allowed).

    Never print these in messages or logs.

    Parameters
    ----------
    name : str
        PatientName in DICOM PN form (``"Family^Given"``).
    id : str
        PatientID.
    birth_date : str
        PatientBirthDate, ``YYYYMMDD`` or empty.
    sex : str
        PatientSex: ``"M"``, ``"F"``, ``"O"`` or empty.
    """

    name: str = ""
    id: str = ""
    birth_date: str = ""
    sex: str = ""

    def __repr__(self) -> str:  # keep patient data out of tracebacks and logs
        return "PatientInfo(<hidden>)"

    __str__ = __repr__

    def validate(self) -> None:
        """Raise :class:`~art.errors.InputError` for values DICOM cannot hold (no values in the message)."""
        for field_name in ("name", "id", "birth_date", "sex"):
            if not isinstance(getattr(self, field_name), str):
                raise InputError(f"patient {field_name} must be a string")
        if self.sex not in ("", "M", "F", "O"):
            raise InputError("patient sex must be 'M', 'F', 'O' or empty")
        if self.birth_date and not (len(self.birth_date) == 8 and self.birth_date.isdigit()):
            raise InputError("patient birth_date must be YYYYMMDD or empty")
        if len(self.id) > 64:
            raise InputError("patient id is longer than 64 characters (DICOM LO)")
        if any(ch in self.id for ch in "\\\r\n"):
            raise InputError("patient id contains a backslash or a line break")


def patient_from_dataset(ds: Any) -> PatientInfo:
    """The Patient module of a dataset (missing attributes become empty strings)."""
    return PatientInfo(
        name=str(ds.get("PatientName", "") or ""),
        id=str(ds.get("PatientID", "") or ""),
        birth_date=str(ds.get("PatientBirthDate", "") or ""),
        sex=str(ds.get("PatientSex", "") or ""),
    )


def set_patient(ds: Any, patient: PatientInfo) -> None:
    """Write the Patient module (all type 2) into ``ds``."""
    if not isinstance(patient, PatientInfo):
        raise InputError(f"patient must be a PatientInfo, got {type(patient).__name__}")
    patient.validate()
    ds.PatientName = patient.name
    ds.PatientID = patient.id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex


def needs_utf8(*texts: str) -> bool:
    """True when any text is not plain ASCII (then SpecificCharacterSet must be set)."""
    return any(not t.isascii() for t in texts if t)


def set_character_set(ds: Any, *texts: str) -> None:
    """Set SpecificCharacterSet to ``ISO_IR 192`` (UTF-8) when any text is non-ASCII; otherwise leave it absent (default repertoire)."""
    if needs_utf8(*texts):
        ds.SpecificCharacterSet = "ISO_IR 192"


# ---------------------------------------------------------------- formatting
def format_ds(value: float) -> str:
    """A number as a DICOM Decimal String of at most 16 characters.

    Uses :func:`pydicom.valuerep.format_number_as_ds`, which keeps as many
    significant digits as fit; ``-0.0`` is written ``"0.0"``.

    Raises
    ------
    InputError
        For NaN or infinite values.
    """
    from pydicom.valuerep import format_number_as_ds

    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"cannot write a non-finite number ({v}) as a DICOM decimal string")
    if v == 0.0:
        v = 0.0  # drop the sign of -0.0
    s = format_number_as_ds(v)
    if len(s) > 16:  # pragma: no cover - format_number_as_ds guarantees this
        raise InputError(f"decimal string {s!r} is longer than 16 characters")
    return s


def format_ds_list(values: Iterable[float]) -> list[str]:
    """:func:`format_ds` applied to each value."""
    return [format_ds(v) for v in values]


def format_ds_fixed(values: np.ndarray, *, decimals: int = 4) -> list[str]:
    """Fast DS formatting of many coordinates in mm with a fixed number of decimals.

    Used for ContourData, where ``format_number_as_ds`` is slow for 10^5
    values; ``decimals=4`` keeps 0.1 µm, far below any voxel.  Values are
    checked to fit 16 characters (|v| < 1e10 mm).
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise InputError("cannot write non-finite coordinates as DICOM decimal strings")
    if arr.size and np.max(np.abs(arr)) >= 1e10:
        raise InputError("coordinate too large for a 16-character DICOM decimal string")
    arr = np.round(arr, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    out = []
    fmt = f"{{:.{decimals}f}}"
    for v in arr.tolist():
        s = fmt.format(v).rstrip("0")
        if s.endswith("."):
            s += "0"
        if s == "-0.0":
            s = "0.0"
        out.append(s)
    return out


def set_ds_values(ds: Any, keyword: str, strings: list[str]) -> None:
    """Put already-formatted Decimal Strings (e.g. :func:`format_ds_fixed`) into ``ds`` as one encoded value.

    pydicom turns every value of a multi-valued DS into a validated object (about 13 µs
    each: 4 s for a structure set's 3·10^5 contour coordinates); the encoded element is
    written as is and decoded only if read. The strings must be valid DS (≤ 16 characters).
    """
    from pydicom.charset import default_encoding
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"unknown DICOM keyword {keyword!r}")
    if any(len(v) > 16 for v in strings):
        raise InputError(f"{keyword}: a value longer than 16 characters cannot be a DICOM decimal string")
    value = "\\".join(strings).encode("ascii")
    if len(value) % 2:
        value += b" "
    ds[tag] = RawDataElement(Tag(tag), "DS", len(value), value, 0, False, True)
    # the element is encoded explicit VR little endian (what art writes): say so, or pydicom decodes it to re-encode it
    # (the character set: pydicom's default, which a sequence item inherits unless its dataset sets another)
    ds.set_original_encoding(False, True, default_encoding)


def ds_values(ds: Any, keyword: str) -> np.ndarray | None:
    """A multi-valued DS element of ``ds`` as float64 (None when absent), decoded straight from its bytes when it has not been read yet.

    Raises
    ------
    ValueError
        A value is not a number.
    """
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return None
    elem = ds.get_item(tag)
    raw = getattr(elem, "value", None)
    if getattr(elem, "is_raw", False) and isinstance(raw, bytes):
        text = raw.decode("ascii", errors="strict").strip(" \x00")
        return np.array(text.split("\\") if text else [], dtype=np.float64)
    data = ds[tag].value
    if data is None:
        return None
    return np.array([float(v) for v in (data if not isinstance(data, (str, float, int)) else [data])], dtype=np.float64)


def dicom_date(value: _dt.date | str | None) -> str:
    """``YYYYMMDD`` from a date or a string (validated); ``None`` gives ``""``."""
    if value is None or value == "":
        return ""
    if isinstance(value, _dt.datetime):
        value = value.date()
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d")
    s = str(value)
    try:
        _dt.datetime.strptime(s, "%Y%m%d")
    except ValueError as exc:
        raise InputError(f"date must be YYYYMMDD, got {s!r}") from exc
    return s


def dicom_time(value: _dt.time | _dt.datetime | str | None) -> str:
    """``HHMMSS`` (optionally with a fraction) from a time or a string; ``None`` gives ``""``."""
    if value is None or value == "":
        return ""
    if isinstance(value, (_dt.datetime, _dt.time)):
        return value.strftime("%H%M%S")
    s = str(value)
    head = s.split(".")[0]
    if not (head.isdigit() and len(head) in (2, 4, 6)):
        raise InputError(f"time must be HHMMSS, got {s!r}")
    return s


# ---------------------------------------------------------------- files
def looks_like_dicom(path: Path) -> bool:
    """True when the file starts with a 128-byte preamble followed by ``DICM`` (PS3.10)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@contextlib.contextmanager
def malformed_as_dicom_error(what: str, path: str | Path) -> Iterator[None]:
    """Turn an unanticipated malformed value (AttributeError, ValueError, ...) into a
    :class:`~art.errors.DicomError` that names the file, e.g. ``malformed RT Plan (...)``.

    Readers wrap their parsing in it: fuzzing found values that pass the explicit checks
    but break a conversion further on.
    """
    from art.errors import InputError

    try:
        yield
    except (DicomError, InputError):
        raise
    except (AttributeError, KeyError, ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError) as exc:
        raise DicomError(f"malformed {what} ({type(exc).__name__}: {exc})", path=Path(path)) from exc


def read_dataset(path: Path, *, stop_before_pixels: bool = False, what: str = "DICOM file") -> Any:
    """Read a DICOM file; any failure becomes a :class:`~art.errors.DicomError` naming the file.

    Files without the ``DICM`` preamble (older raw datasets, such as pydicom's
    own ``rtstruct.dcm``) are read with ``force=True``.
    """
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise DicomError(f"{what} not found", path=path)
    force = not looks_like_dicom(path)
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels, force=force)
        # pydicom decodes lazily: touch every element, nested sequences included, so that
        # truncation and undecodable values (unknown VR, bad lengths) show up here
        _decode_all(ds)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for _ in meta.iterall():
                pass
    except DicomError:
        raise
    except Exception as exc:  # pydicom raises many kinds on bad files
        raise DicomError(f"cannot read {what}: {type(exc).__name__}: {exc}", path=path) from exc
    _ensure_transfer_syntax(ds)
    return ds


#: Elements checked as numbers straight from their bytes and left undecoded by :func:`read_dataset`:
#: ContourData (3006,0050), millions of DS values in an RTSTRUCT, which pydicom decodes one by one
#: (seconds per file); :func:`ds_values` reads them from the bytes.
_NUMBERS_FROM_BYTES = frozenset({0x30060050})


def _decode_all(ds: Any) -> None:
    """Decode every element of ``ds``, nested sequences included (as ``for _ in ds.iterall()``), except
    the elements of :data:`_NUMBERS_FROM_BYTES` whose bytes parse as numbers (left raw: decoded on access)."""
    for tag in sorted(ds.keys()):
        if tag in _NUMBERS_FROM_BYTES and _raw_numbers_parse(ds.get_item(tag)):
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value:
                _decode_all(item)


def _raw_numbers_parse(elem: Any) -> bool:
    """True when ``elem`` is still raw and its bytes are backslash-separated numbers (ASCII)."""
    raw = getattr(elem, "value", None)
    if not (getattr(elem, "is_raw", False) and isinstance(raw, bytes) and raw.strip(b" \x00")):
        return False
    try:
        np.array(raw.decode("ascii").strip(" \x00").split("\\"), dtype=np.float64)
    except (UnicodeDecodeError, ValueError):
        return False  # decoded (and judged) by pydicom as any other element
    return True


def _ensure_transfer_syntax(ds: Any) -> None:
    """Give a raw dataset (no file meta) the transfer syntax it was read with, so pixels decode."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def make_file_meta(sop_class_uid: str, sop_instance_uid: str) -> Any:
    """File meta information (explicit VR little endian) for a new file."""
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def new_file_dataset(sop_class_uid: str, sop_instance_uid: str) -> Any:
    """An empty dataset with file meta, preamble and the SOP Common UIDs set."""
    from pydicom.dataset import FileDataset

    meta = make_file_meta(sop_class_uid, sop_instance_uid)
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


def save_dataset(ds: Any, path: Path) -> None:
    """Write ``ds`` as a PS3.10 file (preamble, file meta, explicit VR little endian)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(str(path), enforce_file_format=True)
    except OSError as exc:
        raise InputError(f"cannot write DICOM file: {exc.strerror or exc}", path=path) from exc


def set_equipment(ds: Any) -> None:
    """General Equipment module: Manufacturer (type 2) and the software version."""
    from art._version import __version__

    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MANUFACTURER_MODEL
    ds.SoftwareVersions = str(__version__)


def set_rt_series(ds: Any, modality: str, series_uid: str, series_number: int, frame_of_reference_uid: str) -> None:
    """RT Series, Frame of Reference and General Equipment modules of an RT object on an image.

    Modality, SeriesInstanceUID, SeriesNumber, OperatorsName (type 2, empty), the image's
    FrameOfReferenceUID with an empty PositionReferenceIndicator, and :func:`set_equipment`.
    """
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(series_number)
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    set_equipment(ds)


def sequence_items(ds: Any, keyword: str) -> list:
    """Items of a sequence attribute, or ``[]`` when absent or empty."""
    seq = ds.get(keyword, None)
    if seq is None:
        return []
    return list(seq)


def set_general_study(ds: Any, study_uid: str, date: str, time: str) -> None:
    """General Study module: study UID, date and time; the type-2 identifiers left empty."""
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = date
    ds.StudyTime = time
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
