"""art.course.job.course_job: the accumulated RTDOSE, summary.json and report from finished re-plan folders; bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from art.errors import InputError
from tests.course.synthetic import PATIENT_ID, shift, wave, write_fraction, write_reference


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("course_job")
    ref = write_reference(root)
    days = [write_fraction(root, "day1", ref, dose=lambda p: np.full(len(p), 3.0), displacement=wave(5.0)),
            write_fraction(root, "day2", ref, dose=lambda p: 3.0 + 0.005 * p[:, 0], displacement=shift((4.0, -4.0, 0.0)))]  # fmt: skip
    return {"root": root, "ref": ref, "days": days}


@pytest.fixture(scope="module")
def result(case):
    from art.course.job import course_job

    out = case["root"] / "course"
    return out, course_job(case["ref"], case["days"], out, grid_mm=4.0, show=False)


def test_the_accumulated_rtdose_is_a_multi_plan_dose_on_the_planning_ct(case, result):
    from art.course.accumulate import accumulate
    from art.course.fraction import read_fraction
    from art.io import read_image_series, read_rtdose
    from art.io.dicom_common import read_dataset
    from art.io.validate import run_dciodvfy
    from art.reference import load_reference

    out, summary = result
    reference = load_reference(case["ref"])
    course = accumulate(reference, [read_fraction(d, reference, index=k) for k, d in enumerate(case["days"], 1)], grid_mm=4.0)
    dose = read_rtdose(out / "RTDOSE.dcm")
    assert dose.grid.same_as(course.grid)
    np.testing.assert_allclose(dose.array, course.dose.array, atol=course.dose.array.max() / 65535 + 1e-6)
    ds = read_dataset(out / "RTDOSE.dcm")
    plans = [str(read_dataset(d / "RTPLAN.dcm", stop_before_pixels=True).SOPInstanceUID) for d in case["days"]]
    assert ds.DoseSummationType == "MULTI_PLAN" and ds.DoseComment == "accumulated over 2 fractions by pull"
    assert [str(it.ReferencedSOPInstanceUID) for it in ds.ReferencedRTPlanSequence] == plans
    ct = read_image_series(case["ref"] / "CT")
    assert ds.FrameOfReferenceUID == ct.frame_of_reference_uid and ds.PatientID == PATIENT_ID
    errors = run_dciodvfy(out / "RTDOSE.dcm")
    assert not errors, errors


def test_summary_holds_fractions_cumulative_projection_and_uncertainty(case, result):
    out, summary = result
    on_disk = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert on_disk["kind"] == "course" and on_disk["fractions_delivered"] == 2 and on_disk["fractions_planned"] == 20
    assert on_disk["method"] == "pull" and on_disk["other_method"] == "energy" and on_disk["projection_basis"] == "mean"
    assert [f["folder"] for f in on_disk["fractions"]] == ["day1", "day2"]
    assert [f["delivered_plan"] for f in on_disk["fractions"]] == ["adapted", "adapted"]
    f2 = on_disk["fractions"][1]
    np.testing.assert_allclose(f2["target_centroid_shift_mm"], [-4.0, 4.0, 0.0], atol=0.6)
    assert set(f2["volumes_cc"]) == {"PTV", "CTV", "Rectum"} and f2["dose_warp_residual_mm"] < 0.05
    cum = {(r["structure"], r["metric"]): r for r in on_disk["cumulative"]["goals"]}
    assert cum[("CTV", "Dmean")]["value"] == pytest.approx(6.0, abs=0.05) and cum[("CTV", "Dmean")]["planned"] > 0
    assert on_disk["projection"]["priority1_met"] is True and on_disk["projection"]["missed_priority1"] == []
    assert np.isfinite(on_disk["uncertainty"]["integral_dose_difference_percent"])
    assert set(on_disk["provenance"]["inputs"]) >= {"ct", "plan", "protocol", "fraction_01", "fraction_02"}
    assert on_disk["provenance"]["parameters"]["planned_dose_engine"] == "pb"  # the fractions name no engine: the pencil beam
    for name in ("summary.json", "report.html"):
        text = (out / name).read_text(encoding="utf-8")
        assert PATIENT_ID not in text and "Course^Test" not in text


def test_a_scheduled_day_references_the_reference_plan(case, tmp_path):
    from art.course.job import course_job
    from art.io.dicom_common import read_dataset

    summary = course_job(case["ref"], case["days"], tmp_path / "c", delivered=["2=scheduled"], projection="last", grid_mm=4.0, show=False)
    ref_plan = str(read_dataset(case["ref"] / "RTPLAN.dcm", stop_before_pixels=True).SOPInstanceUID)
    assert summary["fractions"][1]["delivered_plan"] == "scheduled" and summary["fractions"][1]["plan_sop_instance_uid"] == ref_plan
    refs = [str(it.ReferencedSOPInstanceUID) for it in read_dataset(tmp_path / "c" / "RTDOSE.dcm").ReferencedRTPlanSequence]
    assert refs[1] == ref_plan and len(refs) == 2
    assert summary["projection_basis"] == "last" and any("scheduled plan was delivered" in w for w in summary["warnings"])


def _refused(case, folders, tmp_path, match, **kw):
    from art.course.job import course_job

    out = tmp_path / "never"
    with pytest.raises(InputError, match=match) as err:
        course_job(case["ref"], folders, out, grid_mm=4.0, show=False, **kw)
    assert not out.exists() and not any(p.name.startswith(".never") for p in tmp_path.iterdir())
    return str(err.value)


def test_bad_input_is_refused_naming_the_folder_and_nothing_is_written(case, tmp_path):
    no_dreg = tmp_path / "no_dreg"
    shutil.copytree(case["days"][0], no_dreg)
    (no_dreg / "DREG.dcm").unlink()
    assert str(no_dreg) in _refused(case, [case["days"][0], no_dreg], tmp_path, "no DREG.dcm")
    assert str(case["days"][1]) in _refused(case, [case["days"][1], case["days"][1]], tmp_path, "given twice")
    other = write_fraction(tmp_path, "other_patient", case["ref"], dose=lambda p: np.ones(len(p)), patient_id="ANOTHER-7")
    msg = _refused(case, [case["days"][0], other], tmp_path, "another patient")
    assert str(other) in msg and "ANOTHER-7" not in msg
    from art.io import read_image_series, write_image_series

    ct = read_image_series(case["ref"] / "CT")
    elsewhere = write_image_series(ct.volume, tmp_path / "ct_other_frame", patient=ct.patient)
    frame = write_fraction(tmp_path, "other_frame", case["ref"], dose=lambda p: np.ones(len(p)), source=elsewhere)
    assert str(frame) in _refused(case, [frame], tmp_path, "another frame of reference")
    _refused(case, case["days"], tmp_path, "fraction 3 is not one of", delivered=["3=adapted"])
    _refused(case, case["days"], tmp_path, "method must be", method="warp")
