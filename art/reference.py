"""The reference folder of ``art replan``: planning CT, RTSTRUCT, RTPLAN and ``protocol.toml``.

Files may have any names and sit in sub-folders; they are told apart by their
DICOM Modality (CT series, RTSTRUCT, RTPLAN). Exactly one of each is required,
and the RTSTRUCT and RTPLAN must share the CT's frame of reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from art.errors import InputError


@dataclass
class Reference:
    """A loaded reference: the plan the patient is treated with and what it was made on.

    Attributes
    ----------
    ct : ImageSeries
        Planning CT (HU).
    structures : StructureSet
        Planning structures on the CT grid.
    plan : Plan
        The reference plan (MLC segments, MU per fraction).
    protocol : Protocol
    paths : dict of str to Path
        ``ct`` (folder), ``rtstruct``, ``rtplan``, ``protocol``.
    """

    ct: Any
    structures: Any
    plan: Any
    protocol: Any
    paths: dict


def _modality(path: Path) -> str | None:
    from art.io.dicom_common import looks_like_dicom

    if not looks_like_dicom(path):
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the reader that needs it
        return "unreadable"
    return str(getattr(ds, "Modality", "") or "")


def find_reference_files(folder: str | Path) -> dict[str, Path]:
    """Locate the CT series folder, RTSTRUCT, RTPLAN and protocol in a reference folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("reference folder does not exist or is not a folder", path=folder)
    found: dict[str, list[Path]] = {"CT": [], "RTSTRUCT": [], "RTPLAN": []}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        m = _modality(p)
        if m in found:
            found[m].append(p)
    protocol = folder / "protocol.toml"
    if not protocol.is_file():
        raise InputError("reference folder has no protocol.toml", path=folder)
    if not found["CT"]:
        raise InputError("reference folder holds no CT images", path=folder)
    ct_dirs = sorted({p.parent for p in found["CT"]})
    if len(ct_dirs) > 1:
        raise InputError(f"reference folder holds CT images in {len(ct_dirs)} folders; keep one planning CT", path=folder)
    for kind in ("RTSTRUCT", "RTPLAN"):
        if len(found[kind]) != 1:
            what = "no" if not found[kind] else f"{len(found[kind])}"
            raise InputError(f"reference folder holds {what} {kind} files; exactly one is needed", path=folder)
    return {"ct": ct_dirs[0], "rtstruct": found["RTSTRUCT"][0], "rtplan": found["RTPLAN"][0], "protocol": protocol}


def load_reference(folder: str | Path) -> Reference:
    """Read a reference folder (see module docstring) with clear errors naming the file."""
    from art.io import read_image_series, read_rtstruct
    from art.io.image_series import check_plan_position
    from art.io.rtplan import read_rtplan
    from art.protocol import load_protocol

    paths = find_reference_files(folder)
    protocol = load_protocol(paths["protocol"])
    ct = read_image_series(paths["ct"])
    structures = read_rtstruct(paths["rtstruct"], ct)
    plan = read_rtplan(paths["rtplan"])
    for_uid = getattr(plan, "frame_of_reference_uid", None)
    if for_uid and ct.frame_of_reference_uid and for_uid != ct.frame_of_reference_uid:
        raise InputError("RTPLAN frame of reference differs from the planning CT's", path=paths["rtplan"])
    check_plan_position(plan, ct, plan_path=paths["rtplan"])  # the CT's PatientPosition, and the plan's the same
    return Reference(ct=ct, structures=structures, plan=plan, protocol=protocol, paths=paths)
