"""Cross-references of an exported result folder: every object points at the right UIDs.

A plan is not exported when its DICOM objects do not hang together (issue 9,
item 4): a treatment planning or record-and-verify system would attach the plan
to the wrong structure set, the dose to the wrong plan, or refuse the import.
:func:`check_result_references` lists every broken reference in a result folder
(``art plan`` / ``art replan`` output), checking:

* RTSTRUCT: ReferencedFrameOfReferenceSequence names the structure set's frame
  of reference, study and image series; every ContourImageSequence item
  (series level and per contour) names an existing SOP instance of that series
  with its SOP class; every ROI's ReferencedFrameOfReferenceUID is listed;
* RTPLAN: ReferencedStructureSetSequence → the SOPInstanceUID of an RTSTRUCT in
  the folder; DoseReferenceSequence ROI numbers exist in that structure set;
* RTDOSE: ReferencedRTPlanSequence → the SOPInstanceUID of an RTPLAN in the
  folder (and an existing fraction group);
* RTPLAN and RTDOSE ReferencedImageSequence (the image the dose was computed on,
  e.g. an adapted plan's synthetic CT): existing instances of one known series, with
  their SOP class, in the object's frame of reference;
* derived image series in the sub-folders (e.g. ``sCT/``): every SourceImageSequence
  item names an existing instance of a known series with its SOP class;
* REG (Spatial Registration) and DREG (Deformable Spatial Registration): the
  registered image instances exist in image series with the frames of reference
  given, at least two different series are registered, and the Common Instance
  Reference module names existing series and instances;
* FrameOfReferenceUID equal along image → RTSTRUCT → RTPLAN → RTDOSE,
  StudyInstanceUID of each object equal to that of the images it is on,
  PatientID the same in every object and image, SOPInstanceUIDs unique and equal
  to the file meta's MediaStorageSOPInstanceUID.

Messages name the file and the attribute; they never contain patient names or
IDs, and UIDs are shortened to their last digits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from art.errors import ArtError, InputError

__all__ = ["check_result_references"]

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"
DEFORMABLE_SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.3"
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (RTReferencedStudySequence)
_RT_CLASSES = {
    RT_STRUCTURE_SET_STORAGE: "RTSTRUCT",
    RT_PLAN_STORAGE: "RTPLAN",
    RT_DOSE_STORAGE: "RTDOSE",
    SPATIAL_REGISTRATION_STORAGE: "REG",
    DEFORMABLE_SPATIAL_REGISTRATION_STORAGE: "DREG",
}


@dataclass
class _Series:
    """What is needed to resolve references to one image series."""

    series_uid: str
    frame_of_reference_uid: str
    study_uid: str
    sop_class_uid: str
    patient_id: str
    where: str
    sop_instance_uids: set[str] = field(default_factory=set)
    source_refs: list = field(default_factory=list)  # SourceImageSequence items of a derived series


def _s(v: Any) -> str:
    return "" if v is None else str(v).strip()


def _short(uid: Any) -> str:
    uid = _s(uid)
    return f"…{uid[-8:]}" if len(uid) > 8 else (uid or "(empty)")


def _items(ds: Any, keyword: str) -> list:
    v = ds.get(keyword, None) if ds is not None else None
    try:
        return list(v) if v is not None else []
    except TypeError:
        return []


def _image_series_from(obj: Any, problems: list[str]) -> list[_Series]:
    """Image series records from an ImageSeries or a folder of DICOM image files."""
    from art.io.series import ImageSeries

    if isinstance(obj, ImageSeries):
        s = _Series(obj.series_instance_uid, obj.frame_of_reference_uid, obj.study_instance_uid, obj.sop_class_uid,
                    obj.patient.id, obj.files[0].parent.name if obj.files else f"{obj.modality} series")  # fmt: skip
        s.sop_instance_uids = set(obj.sop_instance_uids)
        return [s]
    if isinstance(obj, (str, Path)):
        folder = Path(obj)
        if not folder.is_dir():
            raise InputError("image series folder not found", path=folder)
        return _scan_images(folder, problems)
    raise InputError(f"images must be ImageSeries objects or folders, got {type(obj).__name__}")


def _scan_images(folder: Path, problems: list[str]) -> list[_Series]:
    from art.io.dicom_common import looks_like_dicom, read_dataset

    by_series: dict[str, _Series] = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        if not (looks_like_dicom(f) or f.suffix.lower() == ".dcm"):
            continue
        try:
            ds = read_dataset(f, stop_before_pixels=True)
        except ArtError:
            problems.append(f"{f.relative_to(folder.parent)}: cannot be read as DICOM")
            continue
        if _s(ds.get("SOPClassUID")) in _RT_CLASSES or "PixelSpacing" not in ds:
            continue
        uid = _s(ds.get("SeriesInstanceUID"))
        s = by_series.get(uid)
        if s is None:
            s = by_series[uid] = _Series(uid, _s(ds.get("FrameOfReferenceUID")), _s(ds.get("StudyInstanceUID")),
                                         _s(ds.get("SOPClassUID")), _s(ds.get("PatientID")), f.parent.name)  # fmt: skip
        s.sop_instance_uids.add(_s(ds.get("SOPInstanceUID")))
        s.source_refs.extend(_items(ds, "SourceImageSequence"))
    return list(by_series.values())


def check_result_references(folder: str | Path, *, images: Any = None) -> list[str]:
    """List the broken UID references between the DICOM objects of a result folder.

    Parameters
    ----------
    folder : str or Path
        A result folder: the DICOM objects directly inside it (RTSTRUCT, RTPLAN,
        RTDOSE, REG, DREG; any file names) are checked. Image series in its
        sub-folders (e.g. ``CT/``) count as known images.
    images : ImageSeries, folder, or a list of them, optional, keyword-only
        The image series the objects are on or register (planning CT, daily
        CBCT). References to images are resolved against these and the
        sub-folders' series; when an RTSTRUCT or a registration refers to
        images and none are known, that is reported as a problem.

    Returns
    -------
    list of str
        One line per problem (empty: every reference resolves), each starting
        with the file name. Patient names and IDs are never included.

    Raises
    ------
    InputError
        ``folder`` (or a folder in ``images``) does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("result folder not found", path=folder)
    problems: list[str] = []
    add = problems.append

    series = _known_series(folder, images, problems)
    sop_to_series = {uid: s for s in series.values() for uid in s.sop_instance_uids}
    objects = _exported_objects(folder, add)
    if not objects:
        add(f"{folder.name}: no RTSTRUCT, RTPLAN, RTDOSE or registration object found")
        return problems
    _check_identity(folder.name, objects, series, add)
    needs_images = any(kind in ("RTSTRUCT", "REG", "DREG") for _, _, kind in objects)
    if needs_images and not series:
        add(f"{folder.name}: no image series given or found: references to images cannot be checked")
    _check_objects(objects, series, sop_to_series, add)
    for s in series.values():
        if s.source_refs:
            _check_image_refs(f"{s.where}/", "SourceImageSequence", s.source_refs, None, sop_to_series, add)
    return problems


def _known_series(folder: Path, images: Any, problems: list[str]) -> dict[str, _Series]:
    """The image series references may point at: those of ``images``, then those in ``folder``'s sub-folders.

    Parameters
    ----------
    folder : Path
        The result folder.
    images : ImageSeries, folder, list of them, or None
        See :func:`check_result_references`.
    problems : list of str
        Unreadable image files are appended here.

    Returns
    -------
    dict SeriesInstanceUID -> _Series
        A series found twice is one record with the instances of both.
    """
    series: dict[str, _Series] = {}
    if images is not None:
        from art.io.series import ImageSeries

        given = [images] if isinstance(images, (ImageSeries, str, Path)) else list(images)
        for obj in given:
            for s in _image_series_from(obj, problems):
                series.setdefault(s.series_uid, s).sop_instance_uids |= s.sop_instance_uids
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for s in _scan_images(sub, problems):
            series.setdefault(s.series_uid, s).sop_instance_uids |= s.sop_instance_uids
    return series


def _exported_objects(folder: Path, add) -> list[tuple[str, Any, str]]:
    """Read the DICOM objects directly inside ``folder`` (files named ``*.dcm`` or with the DICOM preamble).

    Parameters
    ----------
    folder : Path
        The result folder.
    add : callable
        Appends one problem line: an unreadable or truncated file, or an
        object that is not RTSTRUCT, RTPLAN, RTDOSE, REG or DREG (skipped).

    Returns
    -------
    list of (file name, pydicom.Dataset, kind)
        In file-name order; kind ``"RTSTRUCT"``, ``"RTPLAN"``, ``"RTDOSE"``,
        ``"REG"`` or ``"DREG"``.
    """
    from art.io.dicom_common import looks_like_dicom, read_dataset
    from art.io.dicom_files import pixel_data_problem

    objects: list[tuple[str, Any, str]] = []  # (file name, dataset, kind)
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        if not (looks_like_dicom(f) or f.suffix.lower() == ".dcm"):
            continue
        try:
            ds = read_dataset(f)
        except ArtError:
            add(f"{f.name}: cannot be read as DICOM")
            continue
        truncated = pixel_data_problem(ds)
        if truncated:
            add(f"{f.name}: cannot be read as DICOM: {truncated}")
            continue
        kind = _RT_CLASSES.get(_s(ds.get("SOPClassUID")))
        if kind is None:
            add(f"{f.name}: unexpected object (SOP class {_s(ds.get('SOPClassUID')) or 'missing'}) in the result folder")
            continue
        objects.append((f.name, ds, kind))
    return objects


def _check_identity(folder_name: str, objects: list[tuple[str, Any, str]], series: dict[str, _Series], add) -> None:
    """SOP instance UIDs unique and equal to the file meta's; one PatientID in every object and image series.

    Parameters
    ----------
    folder_name : str
        Names the folder in folder-level problems.
    objects : list of (file name, dataset, kind)
        From :func:`_exported_objects`.
    series : dict SeriesInstanceUID -> _Series
        The known image series.
    add : callable
        Appends one problem line.
    """
    seen: dict[str, str] = {}
    for name, ds, _ in objects:
        uid = _s(ds.get("SOPInstanceUID"))
        if not uid:
            add(f"{name}: SOPInstanceUID missing")
            continue
        meta = getattr(ds, "file_meta", None)
        if meta is not None and _s(meta.get("MediaStorageSOPInstanceUID")) not in ("", uid):
            add(f"{name}: file meta MediaStorageSOPInstanceUID differs from SOPInstanceUID")
        if uid in seen:
            add(f"{name}: SOPInstanceUID {_short(uid)} is also that of {seen[uid]}")
        seen.setdefault(uid, name)
    patient_ids = {s.patient_id for s in series.values()}
    if len(patient_ids) > 1:
        add(f"{folder_name}: the image series belong to {len(patient_ids)} different PatientIDs")
    ref_pid = next(iter(patient_ids)) if len(patient_ids) == 1 else _s(objects[0][1].get("PatientID"))
    for name, ds, _ in objects:
        if _s(ds.get("PatientID")) != ref_pid:
            add(f"{name}: PatientID differs from that of the {'image series' if patient_ids else 'other objects'}")


def _check_objects(objects: list[tuple[str, Any, str]], series: dict[str, _Series], sop_to_series: dict, add) -> None:
    """Check the references of each object, kind by kind (RTSTRUCT, RTPLAN, RTDOSE, REG, DREG).

    Parameters
    ----------
    objects : list of (file name, dataset, kind)
        From :func:`_exported_objects`.
    series : dict SeriesInstanceUID -> _Series
        The known image series.
    sop_to_series : dict SOPInstanceUID -> _Series
        The series of each known image instance.
    add : callable
        Appends one problem line.
    """
    by_kind: dict[str, list[tuple[str, Any]]] = {}
    for name, ds, kind in objects:
        by_kind.setdefault(kind, []).append((name, ds))
    structs = {_s(ds.get("SOPInstanceUID")): (name, ds) for name, ds in by_kind.get("RTSTRUCT", [])}
    plans = {_s(ds.get("SOPInstanceUID")): (name, ds) for name, ds in by_kind.get("RTPLAN", [])}

    for name, ds in by_kind.get("RTSTRUCT", []):
        _check_rtstruct(name, ds, series, sop_to_series, add)
    for name, ds in by_kind.get("RTPLAN", []):
        _check_rtplan(name, ds, structs, add)
        _check_referenced_images(name, ds, sop_to_series, add)
    for name, ds in by_kind.get("RTDOSE", []):
        _check_rtdose(name, ds, plans, add)
        _check_referenced_images(name, ds, sop_to_series, add)
    for name, ds in by_kind.get("REG", []):
        _check_registration(name, ds, series, sop_to_series, add, deformable=False)
    for name, ds in by_kind.get("DREG", []):
        _check_registration(name, ds, series, sop_to_series, add, deformable=True)


def _check_image_refs(name: str, what: str, items: list, s: _Series | None, sop_to_series: dict, add) -> None:
    """Every item's ReferencedSOPInstanceUID is an instance of series ``s`` (or of a known series)."""
    missing = 0
    wrong_class = 0
    elsewhere = 0
    for it in items:
        uid = _s(it.get("ReferencedSOPInstanceUID"))
        owner = sop_to_series.get(uid)
        if owner is None:
            missing += 1
        elif s is not None and owner is not s:
            elsewhere += 1
        elif _s(it.get("ReferencedSOPClassUID")) != owner.sop_class_uid:
            wrong_class += 1
    if missing:
        add(f"{name}: {what}: {missing} referenced image instance(s) do not exist in the image series")
    if elsewhere:
        add(f"{name}: {what}: {elsewhere} referenced image instance(s) belong to another series than the one referenced")
    if wrong_class:
        add(f"{name}: {what}: {wrong_class} item(s) with a ReferencedSOPClassUID other than the image's SOP class")


def _check_referenced_images(name: str, ds: Any, sop_to_series: dict, add) -> None:
    """An RT Plan's or RT Dose's ReferencedImageSequence (when present): instances of one known series in its frame of reference."""
    refs = _items(ds, "ReferencedImageSequence")
    if not refs:
        return
    _check_image_refs(name, "ReferencedImageSequence", refs, None, sop_to_series, add)
    owners = {id(o): o for o in (sop_to_series.get(_s(r.get("ReferencedSOPInstanceUID"))) for r in refs) if o is not None}
    if len(owners) > 1:
        add(f"{name}: ReferencedImageSequence references instances of {len(owners)} image series")
    for o in owners.values():
        if o.frame_of_reference_uid != _s(ds.get("FrameOfReferenceUID")):
            add(f"{name}: ReferencedImageSequence names series {_short(o.series_uid)}, which is in another frame of reference")


def _check_rtstruct(name: str, ds: Any, series: dict, sop_to_series: dict, add) -> None:
    for_uid = _s(ds.get("FrameOfReferenceUID"))
    rfors = _items(ds, "ReferencedFrameOfReferenceSequence")
    if not rfors:
        add(f"{name}: ReferencedFrameOfReferenceSequence missing or empty")
    listed_fors = {_s(it.get("FrameOfReferenceUID")) for it in rfors}
    if for_uid and rfors and for_uid not in listed_fors:
        add(f"{name}: ReferencedFrameOfReferenceSequence does not name the structure set's FrameOfReferenceUID {_short(for_uid)}")
    referenced_series: list[_Series] = []
    for it in rfors:
        f = _s(it.get("FrameOfReferenceUID"))
        studies = _items(it, "RTReferencedStudySequence")
        if not studies:
            add(f"{name}: ReferencedFrameOfReferenceSequence item lacks RTReferencedStudySequence")
        for st in studies:
            study_uid = _s(st.get("ReferencedSOPInstanceUID"))
            for se in _items(st, "RTReferencedSeriesSequence"):
                suid = _s(se.get("SeriesInstanceUID"))
                s = series.get(suid)
                if s is None:
                    if series:
                        add(f"{name}: RTReferencedSeriesSequence names series {_short(suid)}, which is not among the image series")
                    continue
                referenced_series.append(s)
                if s.frame_of_reference_uid != f:
                    add(f"{name}: ReferencedFrameOfReferenceSequence frame of reference {_short(f)} is not that of the image series ({_short(s.frame_of_reference_uid)})")
                if study_uid != s.study_uid:
                    add(f"{name}: RTReferencedStudySequence names study {_short(study_uid)}, the image series is in {_short(s.study_uid)}")
                cis = _items(se, "ContourImageSequence")
                if not cis:
                    add(f"{name}: RTReferencedSeriesSequence item lacks ContourImageSequence")
                _check_image_refs(name, "ContourImageSequence (referenced series)", cis, s, sop_to_series, add)
    if rfors and series and not referenced_series:
        add(f"{name}: references no known image series")
    for s in {id(s): s for s in referenced_series}.values():
        if for_uid and s.frame_of_reference_uid != for_uid:
            add(f"{name}: FrameOfReferenceUID differs from that of the image series")
        if _s(ds.get("StudyInstanceUID")) != s.study_uid:
            add(f"{name}: StudyInstanceUID differs from that of the image series")
    for roi in _items(ds, "StructureSetROISequence"):
        if _s(roi.get("ReferencedFrameOfReferenceUID")) not in listed_fors:
            add(f"{name}: ROI {roi.get('ROINumber', '?')} ReferencedFrameOfReferenceUID is not in ReferencedFrameOfReferenceSequence")
    target = referenced_series[0] if len({id(s) for s in referenced_series}) == 1 else None
    contour_refs = [ci for rc in _items(ds, "ROIContourSequence") for c in _items(rc, "ContourSequence") for ci in _items(c, "ContourImageSequence")]
    if series:
        _check_image_refs(name, "ContourSequence ContourImageSequence", contour_refs, target, sop_to_series, add)
    listed = {_s(ci.get("ReferencedSOPInstanceUID")) for se_s in rfors for st in _items(se_s, "RTReferencedStudySequence")
              for se in _items(st, "RTReferencedSeriesSequence") for ci in _items(se, "ContourImageSequence")}  # fmt: skip
    unlisted = sum(1 for ci in contour_refs if _s(ci.get("ReferencedSOPInstanceUID")) not in listed)
    if unlisted:
        add(f"{name}: {unlisted} contour image reference(s) not listed in ReferencedFrameOfReferenceSequence")


def _resolve_reference(name: str, ds: Any, keyword: str, sop_class: str, class_name: str, known: dict, modality: str, add):
    """The one object a ``keyword`` sequence references, checked: its class, that it is in the folder
    (``known``: SOPInstanceUID -> (file name, dataset)), and that frame of reference and study agree.

    Returns ``(item, file name, dataset)``, or None when it cannot be resolved (reported).
    """
    refs = _items(ds, keyword)
    if len(refs) != 1:
        add(f"{name}: {keyword} must have exactly one item, has {len(refs)}")
        return None
    uid = _s(refs[0].get("ReferencedSOPInstanceUID"))
    if _s(refs[0].get("ReferencedSOPClassUID")) != sop_class:
        add(f"{name}: {keyword} ReferencedSOPClassUID is not {class_name}")
    if uid not in known:
        add(f"{name}: {keyword} names {_short(uid)}, which is not the SOPInstanceUID of an {modality} in the folder")
        return None
    ref_name, ref = known[uid]
    if _s(ds.get("FrameOfReferenceUID")) != _s(ref.get("FrameOfReferenceUID")):
        add(f"{name}: FrameOfReferenceUID differs from that of {ref_name}")
    if _s(ds.get("StudyInstanceUID")) != _s(ref.get("StudyInstanceUID")):
        add(f"{name}: StudyInstanceUID differs from that of {ref_name}")
    return refs[0], ref_name, ref


def _check_rtplan(name: str, ds: Any, structs: dict, add) -> None:
    found = _resolve_reference(
        name, ds, "ReferencedStructureSetSequence", RT_STRUCTURE_SET_STORAGE, "RT Structure Set Storage", structs, "RTSTRUCT", add
    )
    if found is None:
        return
    _, rs_name, rs = found
    rois = {_s(r.get("ROINumber")) for r in _items(rs, "StructureSetROISequence")}
    for d in _items(ds, "DoseReferenceSequence"):
        if "ReferencedROINumber" in d and _s(d.ReferencedROINumber) not in rois:
            add(f"{name}: DoseReferenceSequence item {d.get('DoseReferenceNumber', '?')} references ROI {d.ReferencedROINumber}, not in {rs_name}")


def _check_rtdose(name: str, ds: Any, plans: dict, add) -> None:
    found = _resolve_reference(name, ds, "ReferencedRTPlanSequence", RT_PLAN_STORAGE, "RT Plan Storage", plans, "RTPLAN", add)
    if found is None:
        return
    ref, plan_name, plan = found
    groups = {_s(fg.get("FractionGroupNumber")) for fg in _items(plan, "FractionGroupSequence")}
    for fg in _items(ref, "ReferencedFractionGroupSequence"):
        if _s(fg.get("ReferencedFractionGroupNumber")) not in groups:
            add(f"{name}: ReferencedFractionGroupNumber {fg.get('ReferencedFractionGroupNumber')} is not a fraction group of {plan_name}")


def _check_registration(name: str, ds: Any, series: dict, sop_to_series: dict, add, *, deformable: bool) -> None:
    own_for = _s(ds.get("FrameOfReferenceUID"))
    registered: list[_Series] = []
    if deformable:
        items = _items(ds, "DeformableRegistrationSequence")
        key, what = "SourceFrameOfReferenceUID", "DeformableRegistrationSequence"
    else:
        items = _items(ds, "RegistrationSequence")
        key, what = "FrameOfReferenceUID", "RegistrationSequence"
    if not items:
        add(f"{name}: {what} missing or empty")
    for n, it in enumerate(items, start=1):
        f = _s(it.get(key))
        refs = _items(it, "ReferencedImageSequence")
        if not refs:
            add(f"{name}: {what} item {n} lacks ReferencedImageSequence")
            continue
        owners = {id(sop_to_series[u]): sop_to_series[u] for u in (_s(r.get("ReferencedSOPInstanceUID")) for r in refs) if u in sop_to_series}
        if series:
            if len(owners) > 1:
                add(f"{name}: {what} item {n} references instances of {len(owners)} image series")
            owner = next(iter(owners.values())) if len(owners) == 1 else None
            _check_image_refs(name, f"{what} item {n} ReferencedImageSequence", refs, owner, sop_to_series, add)
            if owner is not None:
                registered.append(owner)
                if owner.frame_of_reference_uid != f:
                    add(f"{name}: {what} item {n} {key} {_short(f)} is not that of the referenced image series ({_short(owner.frame_of_reference_uid)})")
    # Common Instance Reference module: the series and instances named exist
    cir_series = []
    for se in _items(ds, "ReferencedSeriesSequence"):
        cir_series.append((se, _s(ds.get("StudyInstanceUID"))))
    for st in _items(ds, "StudiesContainingOtherReferencedInstancesSequence"):
        for se in _items(st, "ReferencedSeriesSequence"):
            cir_series.append((se, _s(st.get("StudyInstanceUID"))))
    cir_named: list[_Series] = []
    for se, study in cir_series:
        s = series.get(_s(se.get("SeriesInstanceUID")))
        if s is None:
            if series:
                add(f"{name}: Common Instance Reference names series {_short(se.get('SeriesInstanceUID'))}, which is not among the image series")
            continue
        cir_named.append(s)
        if study != s.study_uid:
            add(f"{name}: Common Instance Reference puts series {_short(s.series_uid)} in the wrong study")
        _check_image_refs(name, "Common Instance Reference", _items(se, "ReferencedInstanceSequence"), s, sop_to_series, add)
    if series:
        named = {id(s): s for s in registered + cir_named}
        if len(named) < 2:
            add(f"{name}: registers {len(named)} image series; a registration needs the two series it links")
        missing = [s for s in registered if id(s) not in {id(c) for c in cir_named}]
        if missing:
            add(f"{name}: Common Instance Reference does not list {len(missing)} registered image series")
        if own_for and not any(s.frame_of_reference_uid == own_for for s in named.values()):
            add(f"{name}: FrameOfReferenceUID {_short(own_for)} is not that of either registered image series")
        study = _s(ds.get("StudyInstanceUID"))
        if named and not any(s.study_uid == study for s in named.values()):
            add(f"{name}: StudyInstanceUID is not that of either registered image series")
