"""art.course.fraction: a finished re-plan folder read as one delivered fraction, and the folder checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from art.errors import InputError
from tests.course.synthetic import FRACTIONS, PATIENT_ID, shift, write_fraction, write_reference


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from art.reference import load_reference

    root = tmp_path_factory.mktemp("fraction")
    ref = write_reference(root)
    day = write_fraction(root, "day1", ref, dose=lambda p: 3.0 + 0.01 * p[:, 0])
    return {"root": root, "ref": ref, "reference": load_reference(ref), "day": day}


def test_read_fraction_gives_the_dose_of_one_fraction_with_its_identity(case):
    from art.course.fraction import patient_key, read_fraction
    from art.io import read_rtdose
    from art.io.dicom_common import read_dataset

    f = read_fraction(case["day"], case["reference"], index=1)
    course = read_rtdose(case["day"] / "RTDOSE.dcm")
    assert f.delivered == "adapted" and f.plan_fractions == FRACTIONS
    np.testing.assert_allclose(f.dose.array, course.array / FRACTIONS, rtol=1e-6)
    assert f.dose.grid.same_as(course.grid)
    p = f.dose.grid.index_to_lps(np.array([[5.0, 20.0, 20.0]]))[0]
    assert f.dose.array[5, 20, 20] == pytest.approx(3.0 + 0.01 * p[0], abs=1e-3)
    plan_uid = str(read_dataset(case["day"] / "RTPLAN.dcm", stop_before_pixels=True).SOPInstanceUID)
    assert f.plan_sop_instance_uid == plan_uid == f.folder_plan_uid and f.plan_label == "ADAPTED"
    assert f.patient_key == patient_key(PATIENT_ID) and PATIENT_ID not in f.patient_key
    # water inside the body, air outside (the energy method's mass)
    assert f.density.array[5, 20, 20] == pytest.approx(1.0, abs=0.02) and f.density.array[0, 0, 0] < 0.05
    assert {s.name for s in f.structures_daily} == {"BODY", "PTV", "CTV", "Rectum"}
    assert f.deformation.source_frame_of_reference_uid == case["reference"].ct.frame_of_reference_uid


def test_scheduled_dose_is_the_reference_plan_following_the_couch_shift(case, tmp_path):
    """Anatomy shifted by t (REG and DREG say so): the scheduled plan's dose is the planned dose shifted by t."""
    from art.course.accumulate import planned_dose
    from art.course.fraction import read_fraction
    from art.geometry import Grid

    t = (8.0, -4.0, 0.0)  # in-plane: the short CT (36 mm) would end at other anatomy along z, changing the scatter
    day = write_fraction(tmp_path, "shifted", case["ref"], dose=lambda p: np.ones(len(p)), displacement=shift(t), rigid_mm=t,
                         recommended="scheduled")  # fmt: skip
    f = read_fraction(day, case["reference"], index=1)
    assert f.delivered == "scheduled" and f.plan_sop_instance_uid == case["reference"].plan.sop_instance_uid
    g = f.dose.grid  # today's dose grid; the same tissue lies at g + t on the planning CT
    moved = Grid(g.shape, g.spacing, tuple(np.asarray(g.origin) + t), g.direction)
    planned = planned_dose(case["reference"], moved)
    assert f.dose.array.max() > 0.5
    np.testing.assert_allclose(f.dose.array, planned.array / FRACTIONS, atol=2e-3 * f.dose.array.max())


def test_delivered_given_overrides_the_recommendation(case):
    from art.course.fraction import read_fraction

    f = read_fraction(case["day"], case["reference"], index=2, delivered="scheduled")
    assert f.delivered == "scheduled" and f.index == 2
    with pytest.raises(InputError, match="adapted' or 'scheduled"):
        read_fraction(case["day"], case["reference"], index=1, delivered="both")


@pytest.mark.parametrize("missing", ["DREG.dcm", "RTDOSE.dcm", "summary.json", "sCT"])
def test_a_folder_without_its_files_is_refused_naming_it(case, tmp_path, missing):
    from art.course.fraction import read_fraction

    day = tmp_path / "incomplete"
    shutil.copytree(case["day"], day)
    target = day / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(InputError, match=missing) as err:
        read_fraction(day, case["reference"], index=1)
    assert str(day) in str(err.value)


def test_another_patient_is_refused_without_showing_the_id(case, tmp_path):
    from art.course.fraction import read_fraction

    day = write_fraction(tmp_path, "other", case["ref"], dose=lambda p: np.ones(len(p)), patient_id="SOMEONE-ELSE-42")
    with pytest.raises(InputError, match="another patient") as err:
        read_fraction(day, case["reference"], index=1)
    assert str(day) in str(err.value) and "SOMEONE-ELSE-42" not in str(err.value) and PATIENT_ID not in str(err.value)


def test_a_deformation_from_another_planning_ct_is_refused(case, tmp_path):
    from art.course.fraction import read_fraction
    from art.io import read_image_series, write_image_series

    ct = read_image_series(case["ref"] / "CT")
    other = write_image_series(ct.volume, tmp_path / "other_ct", patient=ct.patient)  # same patient, new frame of reference
    day = write_fraction(tmp_path, "otherframe", case["ref"], dose=lambda p: np.ones(len(p)), source=other)
    with pytest.raises(InputError, match="another frame of reference") as err:
        read_fraction(day, case["reference"], index=1)
    assert str(day) in str(err.value)


def test_a_summary_that_is_not_a_replan_is_refused(case, tmp_path):
    from art.course.fraction import read_fraction

    day = tmp_path / "plan_result"
    shutil.copytree(case["day"], day)
    (day / "summary.json").write_text(json.dumps({"kind": "reference"}))
    with pytest.raises(InputError, match="kind 'adaptive'"):
        read_fraction(day, case["reference"], index=1)


def test_the_same_fraction_twice_is_refused_naming_the_second(case, tmp_path):
    from art.course.fraction import check_folders

    check_folders([case["day"]])
    with pytest.raises(InputError, match="same folder") as err:
        check_folders([case["day"], case["day"]])
    copy = tmp_path / "copy_of_day1"
    shutil.copytree(case["day"], copy)
    with pytest.raises(InputError, match="same RTPLAN") as err:
        check_folders([case["day"], copy])
    assert str(copy) in str(err.value)
    again = write_fraction(tmp_path, "replanned_again", case["ref"], dose=lambda p: np.ones(len(p)), cbct_id="cbct-day1")
    with pytest.raises(InputError, match="same CBCT"):
        check_folders([case["day"], again])
    with pytest.raises(InputError, match="no fractions"):
        check_folders([])


def test_the_scheduled_dose_is_recomputed_by_the_engine_of_the_days_final_doses(case, tmp_path, monkeypatch):
    """Issue 19: ``evaluation.engine`` of the day's summary.json (pencil beam when absent) recomputes the scheduled plan.

    The pencil beam registered under the name "ccc" (tests/engine_spy.py) shows which name computed it.
    """
    from art.course.fraction import fraction_engine, read_fraction
    from art.dose import engines
    from tests import engine_spy

    assert fraction_engine({}) == "pb" and fraction_engine({"evaluation": {"engine": "ccc"}}) == "ccc"
    monkeypatch.setitem(engines.ENGINES, "ccc", "tests.engine_spy:dose")
    monkeypatch.setattr(engine_spy, "CALLS", [])
    day = tmp_path / "day1"
    shutil.copytree(case["day"], day)
    read_fraction(day, case["reference"], index=1, delivered="scheduled")
    assert engine_spy.CALLS == []  # no engine named: the pencil beam
    summary = json.loads((day / "summary.json").read_text())
    summary["evaluation"] = {"engine": "ccc"}
    (day / "summary.json").write_text(json.dumps(summary))
    f = read_fraction(day, case["reference"], index=1, delivered="scheduled")
    assert len(engine_spy.CALLS) == 1 and engine_spy.CALLS[0]["dose_grid"].same_as(f.dose.grid)
    summary["evaluation"] = {"engine": "montecarlo"}
    (day / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(InputError, match="unknown dose engine 'montecarlo'"):
        read_fraction(day, case["reference"], index=1, delivered="scheduled")
