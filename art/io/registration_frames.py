"""A Spatial Registration (REG) that links two frames of reference: read, validated, found.

Imaging systems often reconstruct the daily CBCT in a frame of reference of its own
and send a Spatial Registration object (SOP class 1.2.840.10008.5.1.4.1.1.66.1)
linking it to the planning CT. By DICOM PS3.3 C.20.2.1.1 the object's
FrameOfReferenceUID is the registered RCS; each RegistrationSequence item names a
frame (FrameOfReferenceUID, and optionally the images the registration applies to,
ReferencedImageSequence) and a FrameOfReferenceTransformationMatrix that maps that
frame's points into the registered RCS. A frame without an item of its own is
the registered RCS itself (identity). Whichever frame the sender made the
registered one, the CBCT → CT matrix is ``inv(M_ct) @ M_cbct``.

What is refused (every message names the file and the attribute):

* not a Spatial Registration object, or another patient's (PatientID differs);
* the frames it names (its own and its items') are not exactly the planning CT's
  and the CBCT's;
* an item that registers images of the frame but none of the image series given
  (the registration is for other images of that frame);
* a matrix that is not rigid (a registration with scaling or shear is not a
  starting point for a rigid registration), several matrices in one item (their
  order is not needed here and not guessed), or two items for one frame that
  disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import DicomError, InputError
from art.io.dicom_common import read_dataset, sequence_items
from art.io.series import ImageSeries

__all__ = ["FrameLink", "read_frame_registration", "find_spatial_registrations", "frame_link_for"]

SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"


@dataclass(frozen=True)
class FrameLink:
    """A rigid link between the CBCT's frame and the planning CT's, read from a REG file.

    Attributes
    ----------
    matrix_4x4 : ndarray (4, 4), float64
        Maps CBCT-frame LPS points (mm) to planning-CT-frame LPS points.
    path : Path
        The REG file it was read from.
    """

    matrix_4x4: np.ndarray
    path: Path


def _short(uid: str) -> str:
    return f"…{uid[-8:]}" if len(uid) > 8 else (uid or "(empty)")


def _item_matrix(item: Any, n: int, path: Path) -> np.ndarray:
    """The one rigid FrameOfReferenceTransformationMatrix of RegistrationSequence item ``n`` (1-based)."""
    matrices = [ms for mr in sequence_items(item, "MatrixRegistrationSequence") for ms in sequence_items(mr, "MatrixSequence")]
    where = f"RegistrationSequence item {n}"
    if len(matrices) != 1:
        raise DicomError(f"{where} holds {len(matrices)} FrameOfReferenceTransformationMatrix values; one rigid matrix is needed", path=path)
    try:
        m = np.array([float(v) for v in matrices[0].FrameOfReferenceTransformationMatrix], dtype=np.float64)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomError(f"{where}: FrameOfReferenceTransformationMatrix missing or not numeric", path=path) from exc
    if m.size != 16 or not np.all(np.isfinite(m)):
        raise DicomError(f"{where}: FrameOfReferenceTransformationMatrix must hold 16 finite numbers, got {m.size}", path=path)
    m = m.reshape(4, 4)
    r = m[:3, :3]
    rigid = np.allclose(m[3], [0, 0, 0, 1], atol=1e-6) and np.allclose(r @ r.T, np.eye(3), atol=1e-4) and np.linalg.det(r) > 0
    if not rigid:
        kind = str(matrices[0].get("FrameOfReferenceTransformationMatrixType", "")) or "not given"
        raise DicomError(f"{where}: FrameOfReferenceTransformationMatrix is not rigid (type {kind}); a rigid registration is needed", path=path)
    return m


def _frame_matrices(ds: Any, path: Path, images: dict[str, ImageSeries]) -> dict[str, np.ndarray]:
    """Frame UID → matrix into the registered RCS, for every frame the object names (checked as the module says)."""
    own = str(ds.get("FrameOfReferenceUID", "") or "")
    if not own:
        raise DicomError("FrameOfReferenceUID (the registered frame) is missing", path=path)
    items = sequence_items(ds, "RegistrationSequence")
    if not items:
        raise DicomError("RegistrationSequence is missing or empty", path=path)
    out: dict[str, np.ndarray] = {}
    for n, it in enumerate(items, start=1):
        f = str(it.get("FrameOfReferenceUID", "") or "")
        if not f:
            raise DicomError(f"RegistrationSequence item {n} lacks FrameOfReferenceUID", path=path)
        refs = {str(r.get("ReferencedSOPInstanceUID", "")) for r in sequence_items(it, "ReferencedImageSequence")}
        known = images.get(f)
        if refs and known is not None and not refs & set(known.sop_instance_uids):
            raise DicomError(f"RegistrationSequence item {n} (frame {_short(f)}) registers other images of that frame, "
                             "none of the given series' slices (ReferencedImageSequence)", path=path)  # fmt: skip
        m = _item_matrix(it, n, path)
        if f in out and not np.allclose(out[f], m, atol=1e-4):
            raise DicomError(f"RegistrationSequence has two different matrices for frame {_short(f)}", path=path)
        out[f] = m
    out.setdefault(own, np.eye(4))
    return out


def read_frame_registration(path: str | Path, *, cbct: ImageSeries, ct: ImageSeries) -> FrameLink:
    """Read a REG linking the CBCT's frame of reference to the planning CT's.

    Parameters
    ----------
    path : str or Path
        The Spatial Registration file.
    cbct, ct : ImageSeries, keyword-only
        The daily CBCT and the planning CT, in different frames of reference.

    Returns
    -------
    FrameLink
        ``matrix_4x4`` maps CBCT-frame LPS points to planning-CT LPS points (mm).

    Raises
    ------
    InputError
        The two images share a frame of reference (nothing to link).
    DicomError
        The file is not such a registration (see the module notes); the message names the file.
    """
    path = Path(path)
    if cbct.frame_of_reference_uid == ct.frame_of_reference_uid:
        raise InputError("the CBCT shares the planning CT's frame of reference: a registration linking two frames is not used", path=path)
    ds = read_dataset(path, stop_before_pixels=True, what="Spatial Registration file")
    if str(ds.get("SOPClassUID", "")) != SPATIAL_REGISTRATION_STORAGE:
        raise DicomError(f"not a Spatial Registration object (SOPClassUID {ds.get('SOPClassUID', '(missing)')}, "
                         f"expected {SPATIAL_REGISTRATION_STORAGE})", path=path)  # fmt: skip
    if str(ds.get("PatientID", "") or "") != str(ct.patient.id or ""):
        raise DicomError("PatientID differs from the planning CT's: a registration of another patient", path=path)
    cb_for, ct_for = cbct.frame_of_reference_uid, ct.frame_of_reference_uid
    matrices = _frame_matrices(ds, path, {cb_for: cbct, ct_for: ct})
    missing = [name for name, f in (("the CBCT's", cb_for), ("the planning CT's", ct_for)) if f not in matrices]
    if missing:
        raise DicomError(f"does not register {' and '.join(missing)} frame of reference "
                         f"(FrameOfReferenceUID, RegistrationSequence > FrameOfReferenceUID)", path=path)  # fmt: skip
    others = sorted(set(matrices) - {cb_for, ct_for})
    if others:
        raise DicomError(f"registers {len(others)} other frame(s) of reference ({', '.join(_short(o) for o in others)}); "
                         "it must link exactly the planning CT's and the CBCT's", path=path)  # fmt: skip
    return FrameLink(matrix_4x4=np.linalg.inv(matrices[ct_for]) @ matrices[cb_for], path=path)


def find_spatial_registrations(folder: str | Path) -> list[Path]:
    """The Spatial Registration files directly inside ``folder`` (sorted; not searched recursively)."""
    out = []
    for p in sorted(q for q in Path(folder).iterdir() if q.is_file()):
        if _sop_class(p) == SPATIAL_REGISTRATION_STORAGE:
            out.append(p)
    return out


def _sop_class(path: Path) -> str:
    """The file's SOPClassUID, or '' when it is not a readable DICOM file."""
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True, specific_tags=["SOPClassUID"])
        return str(ds.get("SOPClassUID", "") or "")
    except Exception:
        return ""


def frame_link_for(cbct: ImageSeries, ct: ImageSeries, *, cbct_dir: str | Path, registration: str | Path | None = None) -> FrameLink | None:
    """The REG that places a CBCT in its own frame of reference onto the planning CT, or None.

    Parameters
    ----------
    cbct, ct : ImageSeries
        Today's CBCT and the planning CT.
    cbct_dir : str or Path, keyword-only
        The CBCT's folder, searched (not recursively) for a REG when ``registration`` is None.
    registration : str or Path, optional, keyword-only
        The REG file given by the user (``art replan --registration``).

    Returns
    -------
    FrameLink or None
        None when the two images share a frame of reference (and no REG was given).

    Raises
    ------
    InputError
        Different frames and no REG given or found (names the CBCT folder); a REG given for
        images that share a frame; several REG files in the folder that link the frames.
    DicomError
        The REG given, or the only one found, does not link exactly these two frames (names it).
    """
    same = cbct.frame_of_reference_uid == ct.frame_of_reference_uid
    if registration is not None:
        return read_frame_registration(registration, cbct=cbct, ct=ct)  # refuses one for a shared frame
    if same:
        return None
    found = find_spatial_registrations(cbct_dir)
    if not found:
        raise InputError("the CBCT's frame of reference differs from the planning CT's and no Spatial Registration (REG) "
                         "links them: give the imaging system's REG with --registration or put it in the CBCT folder", path=cbct_dir)  # fmt: skip
    if len(found) == 1:
        return read_frame_registration(found[0], cbct=cbct, ct=ct)
    links, problems = [], []
    for p in found:
        try:
            links.append(read_frame_registration(p, cbct=cbct, ct=ct))
        except DicomError as exc:
            problems.append(f"{p.name}: {exc.problem}")
    if len(links) == 1:
        return links[0]
    if not links:
        raise DicomError(f"none of the {len(found)} Spatial Registration files links the CBCT's frame to the planning CT's ({'; '.join(problems)})", path=cbct_dir)
    raise InputError(f"{len(links)} Spatial Registration files link the CBCT's frame to the planning CT's "
                     f"({', '.join(lk.path.name for lk in links)}): choose one with --registration", path=cbct_dir)  # fmt: skip
