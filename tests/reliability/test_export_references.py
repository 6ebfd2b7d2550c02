"""Every exported object references the right UIDs (issue 9, item 4): :func:`art.io.references.check_result_references`.

A result folder is written with the exporter the jobs use
(:func:`art.results.write_plan_files`: RTSTRUCT, RTPLAN, RTDOSE on the planning
CT) plus the registration objects ``art replan`` writes (REG: planning CT ←
CBCT; DREG: CBCT ← planning CT). The intact folder has no problem; each deliberately broken copy
(one reference changed) is reported, naming the file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from art.io.references import check_result_references

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PATIENT_NAME = "ART^Phantom"


def tiny_plan(ct, machine):
    """Two static 40 × 40 mm beams at the image centre (no optimisation)."""
    from art.plan import Beam, Plan, Segment

    n = machine.mlc.n_pairs
    seg = Segment(np.vstack([np.full(n, -20.0), np.full(n, 20.0)]), (-20.0, 20.0, -20.0, 20.0), 100.0)
    iso = tuple(ct.grid.index_to_lps(np.array([[s / 2 for s in ct.grid.shape]], float))[0])
    beams = [Beam("B1", 0.0, isocenter_lps=iso, segments=[seg]), Beam("B2", 180.0, isocenter_lps=iso, segments=[seg])]
    return Plan(beams, fractions=20, machine_name=machine.name)


@pytest.fixture(scope="module")
def result(tmp_path_factory, coarse_patient):
    """(folder, planning CT, CBCT, CT folder, CBCT folder): an exported plan + registrations. Read-only."""
    from art.dose import load_machine
    from art.geometry import Volume
    from art.io import read_image_series, read_rtstruct
    from art.io.registration import write_deformable_registration, write_spatial_registration
    from art.protocol import load_protocol
    from art.results import write_plan_files

    folder = tmp_path_factory.mktemp("result") / "result"
    folder.mkdir()
    ct = read_image_series(coarse_patient / "CT")
    cbct = read_image_series(coarse_patient / "CBCT_01")
    structures = read_rtstruct(coarse_patient / "RTSTRUCT.dcm", ct)
    protocol = load_protocol(coarse_patient / "protocol.toml")
    machine = load_machine()
    dose = Volume(np.full(ct.grid.shape, 1.5, np.float32), ct.grid)
    write_plan_files(folder, plan=tiny_plan(ct, machine), dose=dose, ct=ct, structures=structures, protocol=protocol,
                     machine=machine, label="REFERENCE")  # fmt: skip
    shift = np.eye(4)
    shift[:3, 3] = (2.0, -1.0, 3.0)
    write_spatial_registration(shift, ct, cbct, folder / "REG.dcm")
    write_deformable_registration(np.zeros(cbct.grid.shape + (3,), np.float32), cbct.grid, folder / "DREG.dcm", registered=cbct, source=ct,
                                  pre_matrix=shift)  # fmt: skip
    return folder, ct, cbct, coarse_patient / "CT", coarse_patient / "CBCT_01"


@pytest.fixture
def broken(result, tmp_path):
    """A private copy of the result folder and a helper to edit one of its files."""
    folder = tmp_path / "result"
    shutil.copytree(result[0], folder)

    def edit(file: str, fn) -> None:
        ds = pydicom.dcmread(folder / file)
        fn(ds)
        ds.save_as(folder / file)

    return folder, edit


def test_intact_result_has_no_problem(result):
    folder, ct, cbct, ct_dir, cbct_dir = result
    assert {p.name for p in folder.iterdir()} == {"RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm", "REG.dcm", "DREG.dcm"}
    assert check_result_references(folder, images=[ct, cbct]) == []
    # the same with the series given as folders, and with the CT copied into the result (art demo layout)
    assert check_result_references(folder, images=[ct_dir, cbct_dir]) == []


def test_image_series_inside_the_result_folder_count(result, tmp_path):
    folder, ct, cbct, ct_dir, cbct_dir = result
    dst = tmp_path / "reference"
    shutil.copytree(folder, dst)
    for f in ("REG.dcm", "DREG.dcm"):
        (dst / f).unlink()
    shutil.copytree(ct_dir, dst / "CT")
    assert check_result_references(dst) == []
    # without any image series the image references cannot be verified: that is a problem, not a pass
    (shutil.rmtree(dst / "CT"))
    problems = check_result_references(dst)
    assert any("no image series" in p for p in problems), problems


def _set_nested(path: list, value):
    """Editor setting ``ds.<path>`` where path alternates keywords and item indices."""

    def fn(ds):
        obj = ds
        for key in path[:-1]:
            obj = obj[key] if isinstance(key, int) else getattr(obj, key)
        setattr(obj, path[-1], value)

    return fn


OTHER_UID = "2.25.123456789012345678901234567890"

# (id, file edited, editor, words expected in one problem line)
BREAKS = [
    ("plan->wrong structure set", "RTPLAN.dcm", _set_nested(["ReferencedStructureSetSequence", 0, "ReferencedSOPInstanceUID"], OTHER_UID),
     ["RTPLAN.dcm", "ReferencedStructureSetSequence"]),
    ("plan->structure set class", "RTPLAN.dcm", _set_nested(["ReferencedStructureSetSequence", 0, "ReferencedSOPClassUID"], "1.2.840.10008.5.1.4.1.1.2"),
     ["RTPLAN.dcm", "ReferencedSOPClassUID"]),
    ("plan dose reference ROI", "RTPLAN.dcm", _set_nested(["DoseReferenceSequence", 0, "ReferencedROINumber"], 999),
     ["RTPLAN.dcm", "ROI 999"]),
    ("plan frame of reference", "RTPLAN.dcm", _set_nested(["FrameOfReferenceUID"], OTHER_UID), ["RTPLAN.dcm", "FrameOfReferenceUID"]),
    ("plan patient", "RTPLAN.dcm", _set_nested(["PatientID"], "SOMEONE-ELSE"), ["RTPLAN.dcm", "PatientID"]),
    ("plan study", "RTPLAN.dcm", _set_nested(["StudyInstanceUID"], OTHER_UID), ["RTPLAN.dcm", "StudyInstanceUID"]),
    ("dose->wrong plan", "RTDOSE.dcm", _set_nested(["ReferencedRTPlanSequence", 0, "ReferencedSOPInstanceUID"], OTHER_UID),
     ["RTDOSE.dcm", "ReferencedRTPlanSequence"]),
    ("dose->no plan", "RTDOSE.dcm", lambda ds: delattr(ds, "ReferencedRTPlanSequence"), ["RTDOSE.dcm", "ReferencedRTPlanSequence"]),
    ("dose fraction group", "RTDOSE.dcm", None, ["RTDOSE.dcm", "fraction group"]),
    ("dose frame of reference", "RTDOSE.dcm", _set_nested(["FrameOfReferenceUID"], OTHER_UID), ["RTDOSE.dcm", "FrameOfReferenceUID"]),
    ("dose study", "RTDOSE.dcm", _set_nested(["StudyInstanceUID"], OTHER_UID), ["RTDOSE.dcm", "StudyInstanceUID"]),
    ("dose same SOP instance as plan", "RTDOSE.dcm", None, ["SOPInstanceUID", "is also that of"]),
    ("struct frame of reference item", "RTSTRUCT.dcm",
     _set_nested(["ReferencedFrameOfReferenceSequence", 0, "FrameOfReferenceUID"], OTHER_UID), ["RTSTRUCT.dcm", "ReferencedFrameOfReferenceSequence"]),
    ("struct frame of reference", "RTSTRUCT.dcm", _set_nested(["FrameOfReferenceUID"], OTHER_UID), ["RTSTRUCT.dcm", "FrameOfReferenceUID"]),
    ("struct series", "RTSTRUCT.dcm",
     _set_nested(["ReferencedFrameOfReferenceSequence", 0, "RTReferencedStudySequence", 0, "RTReferencedSeriesSequence", 0, "SeriesInstanceUID"], OTHER_UID),
     ["RTSTRUCT.dcm", "series"]),
    ("struct study reference", "RTSTRUCT.dcm",
     _set_nested(["ReferencedFrameOfReferenceSequence", 0, "RTReferencedStudySequence", 0, "ReferencedSOPInstanceUID"], OTHER_UID),
     ["RTSTRUCT.dcm", "RTReferencedStudySequence"]),
    ("struct series-level image", "RTSTRUCT.dcm",
     _set_nested(["ReferencedFrameOfReferenceSequence", 0, "RTReferencedStudySequence", 0, "RTReferencedSeriesSequence", 0,
                  "ContourImageSequence", 3, "ReferencedSOPInstanceUID"], OTHER_UID),
     ["RTSTRUCT.dcm", "do not exist"]),
    ("struct contour image", "RTSTRUCT.dcm",
     _set_nested(["ROIContourSequence", 0, "ContourSequence", 0, "ContourImageSequence", 0, "ReferencedSOPInstanceUID"], OTHER_UID),
     ["RTSTRUCT.dcm", "ContourSequence"]),
    ("struct ROI frame of reference", "RTSTRUCT.dcm", _set_nested(["StructureSetROISequence", 1, "ReferencedFrameOfReferenceUID"], OTHER_UID),
     ["RTSTRUCT.dcm", "ROI"]),
    ("struct contour image class", "RTSTRUCT.dcm",
     _set_nested(["ROIContourSequence", 0, "ContourSequence", 0, "ContourImageSequence", 0, "ReferencedSOPClassUID"], "1.2.840.10008.5.1.4.1.1.4"),
     ["RTSTRUCT.dcm", "SOP class"]),
    ("reg moving image", "REG.dcm", _set_nested(["RegistrationSequence", 1, "ReferencedImageSequence", 2, "ReferencedSOPInstanceUID"], OTHER_UID),
     ["REG.dcm", "RegistrationSequence item 2"]),
    ("reg frame of reference item", "REG.dcm", _set_nested(["RegistrationSequence", 0, "FrameOfReferenceUID"], OTHER_UID),
     ["REG.dcm", "FrameOfReferenceUID"]),
    ("reg one series only", "REG.dcm", None, ["REG.dcm", "registers 1 image series"]),
    ("reg common instance reference", "REG.dcm", _set_nested(["ReferencedSeriesSequence", 0, "SeriesInstanceUID"], OTHER_UID),
     ["REG.dcm", "Common Instance Reference"]),
    ("reg patient", "REG.dcm", _set_nested(["PatientID"], "SOMEONE-ELSE"), ["REG.dcm", "PatientID"]),
    ("dreg source frame of reference", "DREG.dcm", _set_nested(["DeformableRegistrationSequence", 0, "SourceFrameOfReferenceUID"], OTHER_UID),
     ["DREG.dcm", "SourceFrameOfReferenceUID"]),
    ("dreg moving image", "DREG.dcm",
     _set_nested(["DeformableRegistrationSequence", 0, "ReferencedImageSequence", 0, "ReferencedSOPInstanceUID"], OTHER_UID),
     ["DREG.dcm", "ReferencedImageSequence"]),
]


def _special(case_id: str, folder: Path, edit) -> None:
    if case_id == "dose same SOP instance as plan":
        plan_uid = pydicom.dcmread(folder / "RTPLAN.dcm", stop_before_pixels=True).SOPInstanceUID

        def same(ds):
            ds.SOPInstanceUID = plan_uid
            ds.file_meta.MediaStorageSOPInstanceUID = plan_uid

        edit("RTDOSE.dcm", same)
    elif case_id == "dose fraction group":  # a fraction-group dose naming a group the plan does not have
        def group7(ds):
            item = pydicom.Dataset()
            item.ReferencedFractionGroupNumber = 7
            ds.ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence = pydicom.Sequence([item])

        edit("RTDOSE.dcm", group7)
    elif case_id == "reg one series only":  # the moving item now points at the fixed (CT) images
        def fixed_twice(ds):
            ds.RegistrationSequence[1].ReferencedImageSequence = ds.RegistrationSequence[0].ReferencedImageSequence
            ds.ReferencedSeriesSequence = pydicom.Sequence([ds.ReferencedSeriesSequence[0]])

        edit("REG.dcm", fixed_twice)


@pytest.mark.parametrize("case_id, file, editor, words", BREAKS, ids=[b[0] for b in BREAKS])
def test_each_broken_reference_is_reported(result, broken, case_id, file, editor, words):
    _, ct, cbct, _, _ = result
    folder, edit = broken
    if editor is None:
        _special(case_id, folder, edit)
    else:
        edit(file, editor)
    problems = check_result_references(folder, images=[ct, cbct])
    assert any(all(w in p for w in words) for p in problems), f"{case_id}: expected a line with {words}, got {problems}"
    assert all(p.split(":")[0] in {"RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm", "REG.dcm", "DREG.dcm", "result"} for p in problems), problems
    # never print the patient's name or ID
    for p in problems:
        assert PATIENT_NAME not in p and "ARTPH" not in p and "SOMEONE-ELSE" not in p, p


def test_missing_image_instance_and_missing_objects(result, broken, tmp_path):
    folder, _ = broken
    _, ct, cbct, ct_dir, cbct_dir = result
    # a referenced CT slice is not in the image series given
    ct_copy = tmp_path / "CT"
    shutil.copytree(ct_dir, ct_copy)
    sorted(ct_copy.iterdir())[4].unlink()
    problems = check_result_references(folder, images=[ct_copy, cbct_dir])
    assert any(p.startswith("RTSTRUCT.dcm") and "do not exist" in p for p in problems), problems
    assert any(p.startswith("REG.dcm") and "do not exist" in p for p in problems), problems
    # the structure set is not exported with the plan
    (folder / "RTSTRUCT.dcm").unlink()
    problems = check_result_references(folder, images=[ct, cbct])
    assert any(p.startswith("RTPLAN.dcm") and "not the SOPInstanceUID of an RTSTRUCT" in p for p in problems), problems
    # nor the plan with the dose
    (folder / "RTPLAN.dcm").unlink()
    problems = check_result_references(folder, images=[ct, cbct])
    assert any(p.startswith("RTDOSE.dcm") and "RTPLAN" in p for p in problems), problems


def test_unreadable_and_foreign_files(result, broken):
    folder, _ = broken
    _, ct, cbct, _, _ = result
    (folder / "notes.txt").write_text("not DICOM, ignored")
    (folder / "report.html").write_text("<html></html>")
    assert check_result_references(folder, images=[ct, cbct]) == []
    data = (folder / "RTDOSE.dcm").read_bytes()
    (folder / "RTDOSE.dcm").write_bytes(data[: len(data) // 5])
    problems = check_result_references(folder, images=[ct, cbct])
    assert any(p.startswith("RTDOSE.dcm") and "cannot be read" in p for p in problems), problems
    with pytest.raises(Exception, match="not found"):
        check_result_references(folder / "nope")


def test_pydicom_reference_files_are_checked():
    """A foreign, consistent chain: pydicom's rtplan.dcm/rtdose.dcm reference other UIDs (reported, not crashed)."""
    from pydicom.data import get_testdata_file

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name in ("rtplan.dcm", "rtdose.dcm"):
            shutil.copy(get_testdata_file(name), Path(d) / name)
        problems = check_result_references(d)
    # rtplan.dcm references a structure set that is not there; rtdose.dcm a plan
    assert any(p.startswith("rtplan.dcm") and "RTSTRUCT" in p for p in problems), problems
