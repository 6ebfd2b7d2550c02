"""De-identified copies: no identity or original UID left, every cross-reference intact, pixels unchanged."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from art.errors import InputError
from art.io import read_image_series, read_rtstruct
from art.io.anonymize import KEPT_UID_KEYWORDS, anonymize_folder
from art.io.dicom_common import new_file_dataset, save_dataset
from art.io.uids import is_valid_uid, new_uid

RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
REG = "1.2.840.10008.5.1.4.1.1.66.1"
PHI = [b"ART^Phantom", b"ARTPH00007", b"19600101", b"St Elsewhere", b"Dr^Who", b"Secret^Person", b"OTHER-ID-42"]


def _item(**kw) -> Dataset:
    it = Dataset()
    for k, v in kw.items():
        setattr(it, k, v)
    return it


def _common(ds: Dataset, ref: Dataset, modality: str) -> None:
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID"):
        setattr(ds, kw, ref.get(kw, ""))
    ds.Modality = modality
    ds.SeriesInstanceUID = new_uid()
    ds.InstitutionName = "St Elsewhere"
    ds.OperatorsName = "Dr^Who"


@pytest.fixture(scope="module")
def patient(tmp_path_factory) -> Path:
    """Phantom CT + RTSTRUCT, plus an RTPLAN, RTDOSE and spatial registration referencing them, and PHI extras."""
    from art_phantoms.write import write_phantom

    out = tmp_path_factory.mktemp("anon") / "patient"
    write_phantom(out, seed=7, fractions=0, spacing=(5.0, 4.0, 4.0))
    ct_files = sorted((out / "CT").iterdir())
    ct0 = pydicom.dcmread(ct_files[0])
    rs = pydicom.dcmread(out / "RTSTRUCT.dcm")

    # identifying extras in one CT slice: institution, other IDs, a private block holding the name
    ct = pydicom.dcmread(ct_files[1])
    ct.InstitutionName = "St Elsewhere"
    ct.OtherPatientIDs = "OTHER-ID-42"
    ct.PerformingPhysicianName = "Secret^Person"
    block = ct.private_block(0x0099, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "ART^Phantom")
    ct.save_as(ct_files[1], enforce_file_format=True)

    plan = new_file_dataset(RT_PLAN, new_uid())
    _common(plan, ct0, "RTPLAN")
    plan.RTPlanLabel = "Prostate"
    plan.RTPlanDate = "20240101"
    plan.ReviewerName = "Secret^Person"
    plan.ReferencedStructureSetSequence = Sequence(
        [_item(ReferencedSOPClassUID=rs.SOPClassUID, ReferencedSOPInstanceUID=rs.SOPInstanceUID)]
    )
    save_dataset(plan, out / "RTPLAN.dcm")

    dose = new_file_dataset(RT_DOSE, new_uid())
    _common(dose, ct0, "RTDOSE")
    dose.DoseUnits, dose.DoseType, dose.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    dose.ReferencedRTPlanSequence = Sequence(
        [_item(ReferencedSOPClassUID=RT_PLAN, ReferencedSOPInstanceUID=plan.SOPInstanceUID)]
    )
    save_dataset(dose, out / "RTDOSE.dcm")

    cbct_for = new_uid()
    reg = new_file_dataset(REG, new_uid())
    _common(reg, ct0, "REG")
    reg.RegistrationSequence = Sequence(
        [
            _item(FrameOfReferenceUID=ct0.FrameOfReferenceUID,
                  ReferencedImageSequence=Sequence([_item(ReferencedSOPClassUID=ct0.SOPClassUID,
                                                          ReferencedSOPInstanceUID=ct0.SOPInstanceUID)])),
            _item(FrameOfReferenceUID=cbct_for),
        ]
    )
    reg.ReferencedSeriesSequence = Sequence([_item(SeriesInstanceUID=ct0.SeriesInstanceUID)])
    save_dataset(reg, out / "REG" / "REG.dcm")
    (out / "report.html").write_text("<html>ART^Phantom</html>")
    return out


@pytest.fixture(scope="module")
def anonymized(patient, tmp_path_factory) -> tuple[Path, dict, str]:
    before = _tree_hash(patient)
    dst = tmp_path_factory.mktemp("anon_out") / "anon"
    result = anonymize_folder(patient, dst)
    assert _tree_hash(patient) == before  # the source is never modified
    return dst, result, before


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def _instance_uids(folder: Path) -> set[str]:
    """Every instance UID in the DICOM files of ``folder`` (UI values not naming a class or syntax)."""
    from pydicom._uid_dict import UID_dictionary

    out: set[str] = set()

    def walk(ds):
        for elem in ds:
            if elem.VR == "SQ":
                for it in elem.value:
                    walk(it)
            elif elem.VR == "UI" and elem.keyword not in KEPT_UID_KEYWORDS:
                values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
                out.update(str(v) for v in values if v and str(v) not in UID_dictionary)

    for p in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(p)
        walk(ds)
        out.add(str(ds.file_meta.MediaStorageSOPInstanceUID))
    return out


def _by_source(result: dict) -> dict[str, str]:
    return {f["source"]: f["destination"] for f in result["files"]}


def test_no_identity_and_no_original_uid_left_anywhere(patient, anonymized):
    dst, result, _ = anonymized
    n_dicom = len(list(patient.rglob("*.dcm")))
    assert result["n_files"] == n_dicom and result["n_patients"] == 1 and result["salt"] == "random"
    assert "report.html" in result["skipped"] and not list(dst.rglob("*.html"))
    originals = _instance_uids(patient)
    assert len(originals) > n_dicom  # SOP instances + series, study, frames of reference
    assert result["n_uids_remapped"] == len(originals)
    for p in patient.rglob("*.dcm"):  # the check can fail: every needle is in the source
        data = p.read_bytes()
        assert b"ART^Phantom" in data and b"ARTPH00007" in data
    needles = PHI + [u.encode() for u in originals]
    files = sorted(dst.rglob("*"))
    assert len([f for f in files if f.is_file()]) == n_dicom
    for f in files:
        name = str(f.relative_to(dst)).encode()
        assert not any(n in name for n in needles), f
        if f.is_file():
            data = f.read_bytes()
            leaked = [n for n in needles if n in data]
            assert not leaked, (f.name, leaked[:3])
    new = _instance_uids(dst)
    assert len(new) == len(originals) and not new & originals
    assert all(is_valid_uid(u) for u in new)
    for p in dst.rglob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod
        assert str(ds.PatientName).startswith("ANON^") and ds.PatientID.startswith("ANON")
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert not any(e.tag.is_private for e in ds.iterall())
        assert "InstitutionName" not in ds and "OtherPatientIDs" not in ds and "StudyDate" in ds and not ds.StudyDate
    assert len({str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in dst.rglob("*.dcm")}) == 1


def test_cross_references_still_resolve(patient, anonymized):
    dst, result, _ = anonymized
    dest = _by_source(result)
    # the RTSTRUCT reads against the anonymised CT with the strict frame-of-reference check, same masks
    ct0, ct1 = read_image_series(patient / "CT"), read_image_series(dst / "CT")
    assert ct1.frame_of_reference_uid != ct0.frame_of_reference_uid
    np.testing.assert_array_equal(ct1.volume.array, ct0.volume.array)
    s0 = read_rtstruct(patient / "RTSTRUCT.dcm", ct0)
    s1 = read_rtstruct(dst / dest["RTSTRUCT.dcm"], ct1)
    assert s1.names == s0.names
    for name in s0.names:
        np.testing.assert_array_equal(s1[name].mask, s0[name].mask)

    cts = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((dst / "CT").iterdir())]
    ct_uids = {str(d.SOPInstanceUID) for d in cts}
    rs = pydicom.dcmread(dst / dest["RTSTRUCT.dcm"])
    refs = {
        str(c.ReferencedSOPInstanceUID)
        for f in rs.ReferencedFrameOfReferenceSequence
        for st in f.RTReferencedStudySequence
        for se in st.RTReferencedSeriesSequence
        for c in se.ContourImageSequence
    }
    assert refs == ct_uids
    assert rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].ReferencedSOPInstanceUID == rs.StudyInstanceUID
    for it in rs.ROIContourSequence:
        for c in it.ContourSequence:
            for ci in c.get("ContourImageSequence", []):
                assert str(ci.ReferencedSOPInstanceUID) in ct_uids

    plan = pydicom.dcmread(dst / dest["RTPLAN.dcm"])
    dose = pydicom.dcmread(dst / dest["RTDOSE.dcm"])
    reg = pydicom.dcmread(dst / dest["REG/REG.dcm"])
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
    assert plan.RTPlanLabel == "Prostate" and plan.RTPlanDate == "" and plan.ReviewerName == ""
    for ds in (rs, plan, dose, reg, *cts):
        assert ds.StudyInstanceUID == cts[0].StudyInstanceUID
        assert ds.FrameOfReferenceUID == ct1.frame_of_reference_uid
    assert reg.RegistrationSequence[0].FrameOfReferenceUID == ct1.frame_of_reference_uid
    assert str(reg.RegistrationSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID) in ct_uids
    assert reg.ReferencedSeriesSequence[0].SeriesInstanceUID == cts[0].SeriesInstanceUID
    other_for = reg.RegistrationSequence[1].FrameOfReferenceUID
    assert other_for != ct1.frame_of_reference_uid and is_valid_uid(other_for)


def test_pixel_data_unchanged(patient, anonymized):
    dst, result, _ = anonymized
    for src, rel in _by_source(result).items():
        a, b = pydicom.dcmread(patient / src), pydicom.dcmread(dst / rel)
        assert a.SOPClassUID == b.SOPClassUID and a.SOPInstanceUID != b.SOPInstanceUID
        if "PixelData" in a:
            assert a.PixelData == b.PixelData
            for kw in ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
                       "RescaleSlope", "RescaleIntercept", "SliceThickness"):
                assert a.get(kw) == b.get(kw), kw


def test_salt_makes_the_mapping_reproducible(patient, tmp_path):
    r1 = anonymize_folder(patient / "CT", tmp_path / "a", salt="s3cret")
    r2 = anonymize_folder(patient / "CT", tmp_path / "b", salt="s3cret")
    r3 = anonymize_folder(patient / "CT", tmp_path / "c", salt="other")
    assert r3["salt"] == "given"
    d1, d2, d3 = (sorted(p.name for p in (tmp_path / x).iterdir()) for x in "abc")
    assert d1 == d2 and set(d1).isdisjoint(d3)
    assert r1["salt"] == "given" and _by_source(r1) == _by_source(r2)
    a, b = (pydicom.dcmread(tmp_path / x / d1[0]) for x in "ab")
    assert a == b


def test_burned_in_annotation_is_refused(patient, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(patient / "CT", src)
    f = sorted(src.iterdir())[3]
    ds = pydicom.dcmread(f)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(f, enforce_file_format=True)
    with pytest.raises(InputError, match="burned-in") as err:
        anonymize_folder(src, tmp_path / "out")
    assert f.name in str(err.value)
    assert not (tmp_path / "out").exists()


def test_truncated_file_is_refused(patient, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(patient / "CT", src)
    f = sorted(src.iterdir())[0]
    f.write_bytes(f.read_bytes()[:-500])
    with pytest.raises(InputError, match="truncated"):
        anonymize_folder(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_destination_must_be_outside_the_source(patient, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(patient / "CT", src)
    for dst in (src, src / "anon", tmp_path):
        with pytest.raises(InputError, match="outside"):
            anonymize_folder(src, dst)
    with pytest.raises(InputError, match="not found"):
        anonymize_folder(tmp_path / "missing", tmp_path / "x")


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
def test_anonymised_objects_gain_no_dciodvfy_errors(patient, anonymized):
    """De-identification must not break the objects: no dciodvfy error that the source does not have."""
    dst, result, _ = anonymized
    dest = _by_source(result)
    ct_name = sorted(p.name for p in (patient / "CT").iterdir())[0]
    for src in (f"CT/{ct_name}", "RTSTRUCT.dcm"):
        errs = []
        for path in (patient / src, dst / dest[src]):
            out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
            errs.append({line.split(" - ", 1)[-1] for line in out.stderr.splitlines() if line.startswith("Error")})
        assert errs[1] <= errs[0], errs[1] - errs[0]
