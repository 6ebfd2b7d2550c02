"""PatientPosition in the files: the CT series (read, written) and the RT Plan's PatientSetupSequence (issue 16, item 1).

A plan's position is never assumed: a missing, malformed, decubitus or unsupported
position is an error naming the file and the attribute, not HFS.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from art.dose import load_machine
from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io import PatientInfo, read_image_series, write_image_series
from art.io.image_series import check_plan_position
from art.io.rtplan import read_rtplan, write_rtplan
from art.plan import Beam, Plan, Segment

MACHINE = load_machine()
PATIENT = PatientInfo(name="P^Q", id="PQ1")


def _volume():
    g = Grid((4, 12, 10), (5.0, 4.0, 4.0), (-18.0, -22.0, -7.5))
    return Volume(np.random.default_rng(0).normal(0, 50, g.shape).astype(np.float32), g)


def _plan(position="HFS"):
    n = MACHINE.mlc.n_pairs
    lp = np.vstack([np.full(n, -20.0), np.full(n, 20.0)])
    beams = [Beam(f"G{a}", a, isocenter_lps=(0.0, 0.0, 0.0), segments=[Segment(lp, (-25, 25, -20, 20), 50.0)]) for a in (0, 90)]
    return Plan(beams, fractions=10, machine_name=MACHINE.name, patient_position=position)


@pytest.fixture(scope="module")
def ffs(tmp_path_factory):
    """A CT written in FFS and an FFS plan on it."""
    tmp = tmp_path_factory.mktemp("ffs")
    image = write_image_series(_volume(), tmp / "ct", patient=PATIENT, patient_position="FFS")
    write_rtplan(_plan("FFS"), image, "1.2.3.4", tmp / "RP.dcm", machine=MACHINE, label="pos")
    return {"tmp": tmp, "image": image, "plan_path": tmp / "RP.dcm"}


# ------------------------------------------------------------------ CT series
def test_ct_position_written_and_read_back(ffs):
    assert ffs["image"].patient_position == "FFS"
    back = read_image_series(ffs["tmp"] / "ct")
    assert back.patient_position == "FFS" and back.require_patient_position() == "FFS"
    assert all(pydicom.dcmread(f, stop_before_pixels=True).PatientPosition == "FFS" for f in back.files)


def _edit_slices(folder, fn):
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        fn(ds, f)
        ds.save_as(f)


@pytest.mark.parametrize(
    "value, message",
    [("HFDL", "decubitus"), ("FFDR", "decubitus"), ("XYZ", "not a DICOM patient position"), ("LFS", "not supported"), (None, "missing")],
)
def test_ct_without_a_supported_position_is_refused_for_planning(tmp_path, value, message):
    image = write_image_series(_volume(), tmp_path / "ct", patient=PATIENT)

    def set_position(ds, _):
        if value is None:
            del ds.PatientPosition
        else:
            ds.PatientPosition = value

    _edit_slices(tmp_path / "ct", set_position)
    back = read_image_series(tmp_path / "ct")  # reading is fine: the position is needed only for a plan
    with pytest.raises(DicomError, match=rf"{tmp_path}.*\.dcm: PatientPosition \(0018,5100\).*{message}"):
        back.require_patient_position()
    with pytest.raises(DicomError, match="PatientPosition"):
        check_plan_position(_plan(), back)
    assert image.patient_position == "HFS"


def test_slices_with_different_positions_are_refused(tmp_path):
    write_image_series(_volume(), tmp_path / "ct", patient=PATIENT)
    last = sorted(tmp_path.joinpath("ct").iterdir())[-1]
    ds = pydicom.dcmread(last)
    ds.PatientPosition = "FFS"
    ds.save_as(last)
    with pytest.raises(DicomError, match=r"\.dcm: PatientPosition \(0018,5100\) '(FFS|HFS)' differs from the first slice's '(HFS|FFS)'"):
        read_image_series(tmp_path / "ct")


def test_writer_refuses_decubitus(tmp_path):
    with pytest.raises(InputError, match="decubitus"):
        write_image_series(_volume(), tmp_path / "ct", patient=PATIENT, patient_position="HFDR")
    assert not (tmp_path / "ct").exists() or not any((tmp_path / "ct").iterdir())


# ------------------------------------------------------------------ RT Plan
def test_rtplan_position_written_and_read_back(ffs):
    ds = pydicom.dcmread(ffs["plan_path"])
    assert [s.PatientPosition for s in ds.PatientSetupSequence] == ["FFS"]
    assert all(int(b.ReferencedPatientSetupNumber) == int(ds.PatientSetupSequence[0].PatientSetupNumber) for b in ds.BeamSequence)
    plan = read_rtplan(ffs["plan_path"])
    assert plan.patient_position == "FFS"
    assert check_plan_position(plan, ffs["image"]) == "FFS"


def test_rtplan_writer_refuses_a_plan_in_another_position_than_the_image(ffs, tmp_path):
    with pytest.raises(InputError, match="patient position HFS but the image's PatientPosition is 'FFS'"):
        write_rtplan(_plan("HFS"), ffs["image"], "1.2.3.4", tmp_path / "RP.dcm", machine=MACHINE, label="pos")
    with pytest.raises(InputError, match="differs from the plan's"):
        write_rtplan(_plan("FFS"), ffs["image"], "1.2.3.4", tmp_path / "RP.dcm", machine=MACHINE, label="pos", patient_position="HFS")
    assert not (tmp_path / "RP.dcm").exists()


def _edited(ffs, tmp_path, fn):
    ds = pydicom.dcmread(ffs["plan_path"])
    fn(ds)
    path = tmp_path / "RP_edited.dcm"
    ds.save_as(path)
    return path


def _set_position(value):
    def fn(ds):
        if value is None:
            del ds.PatientSetupSequence[0].PatientPosition
        else:
            ds.PatientSetupSequence[0].PatientPosition = value

    return fn


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set_position("XYZ"), r"PatientPosition \(0018,5100\) of PatientSetupSequence item 1 \(setup 1\) 'XYZ' is not a DICOM patient position"),
        (_set_position("HFDL"), r"PatientPosition \(0018,5100\) of PatientSetupSequence item 1 \(setup 1\) HFDL is a decubitus position"),
        (_set_position(""), r"PatientPosition \(0018,5100\) of PatientSetupSequence item 1 \(setup 1\) is missing"),
        (_set_position(None), r"PatientPosition \(0018,5100\) of PatientSetupSequence item 1 \(setup 1\) is missing"),
        (lambda ds: delattr(ds, "PatientSetupSequence"), "no PatientSetupSequence"),
        (lambda ds: setattr(ds.BeamSequence[0], "ReferencedPatientSetupNumber", 7), "ReferencedPatientSetupNumber 7 is not in PatientSetupSequence"),
    ],
)
def test_rtplan_with_an_unknown_position_is_an_error_not_hfs(ffs, tmp_path, edit, message):
    path = _edited(ffs, tmp_path, edit)
    with pytest.raises(DicomError, match=rf"RP_edited.dcm: .*{message}"):
        read_rtplan(path)


def test_rtplan_beams_in_two_positions_are_refused(ffs, tmp_path):
    def two_setups(ds):
        second = pydicom.Dataset()
        second.PatientSetupNumber, second.PatientPosition = 2, "HFS"
        ds.PatientSetupSequence.append(second)
        ds.BeamSequence[1].ReferencedPatientSetupNumber = 2

    with pytest.raises(DicomError, match="different patient positions"):
        read_rtplan(_edited(ffs, tmp_path, two_setups))


def test_rtplan_beam_without_setup_reference_takes_the_only_setup(ffs, tmp_path):
    def no_refs(ds):
        for b in ds.BeamSequence:
            del b.ReferencedPatientSetupNumber

    assert read_rtplan(_edited(ffs, tmp_path, no_refs)).patient_position == "FFS"


def test_plan_on_a_ct_in_another_position_is_refused(ffs):
    with pytest.raises(DicomError, match="RP.dcm: PatientPosition HFS of the plan's PatientSetupSequence differs from the CT's PatientPosition FFS"):
        check_plan_position(_plan("HFS"), ffs["image"], plan_path=ffs["plan_path"])
