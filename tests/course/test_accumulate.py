"""art.course.accumulate: fractions' doses on the planning CT (analytic cases), goals and projection."""

from __future__ import annotations

import numpy as np
import pytest

from art.errors import InputError
from tests.course.synthetic import FRACTIONS, shift, wave, write_fraction, write_reference

GRID_MM = 4.0  # the planning CT's own 4 mm lattice: the final grid's nodes are the CT's (and the daily dose grid's)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from art.reference import load_reference

    root = tmp_path_factory.mktemp("accumulate")
    ref = write_reference(root)
    return {"root": root, "ref": ref, "reference": load_reference(ref)}


def _fraction(case, name, index, **kw):
    from art.course.fraction import read_fraction

    return read_fraction(write_fraction(case["root"], name, case["ref"], **kw), case["reference"], index=index)


def _lps(grid):
    return grid.index_to_lps(np.indices(grid.shape).reshape(3, -1).T.astype(np.float64)).reshape(*grid.shape, 3)


def test_uniform_dose_under_a_smooth_deformation_accumulates_uniform(case):
    from art.course.accumulate import accumulate

    fr = [_fraction(case, "wave1", 1, dose=lambda p: np.full(len(p), 3.0), displacement=wave(6.0, 80.0)),
          _fraction(case, "wave2", 2, dose=lambda p: np.full(len(p), 2.5), displacement=wave(-4.0, 100.0))]  # fmt: skip
    c = accumulate(case["reference"], fr, method="pull", grid_mm=GRID_MM)
    assert c.grid.same_as(case["reference"].ct.grid.covering((GRID_MM,) * 3).pad((0, 1, 1)))
    np.testing.assert_allclose(c.dose.array, 5.5, atol=1e-4)
    np.testing.assert_allclose(c.per_fraction[0].array, 3.0, atol=1e-4)
    assert max(c.residuals_mm) < 0.05  # the inverted deformation, where the dose reaches


@pytest.mark.parametrize("t", [(8.0, -4.0, 4.0), (1.3, -2.7, 0.9)])
def test_a_rigid_shift_moves_the_dose_exactly(case, t):
    """Today's p is the planning p + t: the planning voxel x received today's dose at x − t (linear pattern: trilinear is exact)."""
    from art.course.accumulate import accumulate

    def pattern(p):
        return 3.0 + 0.01 * p[:, 0] - 0.008 * p[:, 1] + 0.012 * p[:, 2]

    f = _fraction(case, f"shift{t}", 1, dose=pattern, displacement=shift(t))
    c = accumulate(case["reference"], [f], grid_mm=GRID_MM)
    x = _lps(c.grid).reshape(-1, 3)
    expected = pattern(x - np.asarray(t)).reshape(c.grid.shape)
    np.testing.assert_allclose(c.dose.array, expected, atol=2e-4)
    assert not np.allclose(c.dose.array, pattern(x).reshape(c.grid.shape), atol=0.01)  # it did move


def test_energy_method_keeps_a_uniform_dose_under_a_rigid_shift_and_both_integrals_agree(case):
    """2 Gy in a 14 mm ball of water today (inside the CT's 36 mm length), moved rigidly: both give 2 Gy inside it, the same energy."""
    from art.course.accumulate import accumulate

    t = np.array([4.0, -8.0, 0.0])
    f = _fraction(case, "energy_shift", 1, dose=lambda p: np.where(np.sum(p**2, axis=1) < 14.0**2, 2.0, 0.0), displacement=shift(t))
    c = accumulate(case["reference"], [f], method="energy", grid_mm=GRID_MM)
    assert c.method == "energy" and c.other_method == "pull"
    x = _lps(c.grid)
    deep = np.sum((x - t) ** 2, axis=-1) < 8.0**2  # the ball's tissue on the planning CT, a voxel away from its edge
    np.testing.assert_allclose(c.dose.array[deep], 2.0, rtol=0.01)
    np.testing.assert_allclose(c.other_method_dose.array[deep], 2.0, atol=1e-4)  # pull
    assert abs(c.integral_difference_percent) < 0.5


def test_adding_a_fraction_is_the_same_as_accumulating_all(case):
    from art.course.accumulate import accumulate, add_fraction

    f1 = _fraction(case, "inc1", 1, dose=lambda p: 2.0 + 0.01 * p[:, 0], displacement=wave(5.0))
    f2 = _fraction(case, "inc2", 2, dose=lambda p: np.full(len(p), 3.0), displacement=shift((4.0, 0.0, 0.0)))
    both = accumulate(case["reference"], [f1, f2], grid_mm=GRID_MM)
    step = add_fraction(accumulate(case["reference"], [f1], grid_mm=GRID_MM), f2)
    np.testing.assert_array_equal(step.dose.array, both.dose.array)
    np.testing.assert_array_equal(step.other_method_dose.array, both.other_method_dose.array)
    assert [f.index for f in step.fractions] == [1, 2] and len(step.per_fraction) == 2
    with pytest.raises(InputError, match="method must be"):
        accumulate(case["reference"], [f1], method="push")


def _uniform_course(case, doses, name):
    from art.course.accumulate import accumulate

    fr = [_fraction(case, f"{name}{k}", k, dose=lambda p, d=d: np.full(len(p), d)) for k, d in enumerate(doses, start=1)]
    return accumulate(case["reference"], fr, grid_mm=GRID_MM)


def test_goals_are_scaled_to_the_fractions_delivered_and_projected(case):
    """Uniform doses: every dose metric is the dose itself, every V-metric 100 %."""
    from art.course.accumulate import course_goals

    c = _uniform_course(case, [3.0, 2.7], "goals")
    g = course_goals(c, fractions_planned=FRACTIONS, projection="mean")
    by = {(r["structure"], r["metric"]): r for r in g["cumulative"]["goals"]}
    ptv = by[("PTV", "D95%")]
    assert ptv["value"] == pytest.approx(5.7, abs=0.01) and ptv["scaled_goal"] == "≥ 5.7 Gy" and ptv["planned"] is None
    assert by[("Rectum", "V50Gy")]["value"] == pytest.approx(100.0) and not by[("Rectum", "V50Gy")]["met"]  # V5Gy of 5.7 Gy
    assert by[("Rectum", "V50Gy")]["scaled_goal"] == "≤ 20 %"
    per = [{(r["structure"], r["metric"]): r["value"] for r in rows} for rows in g["fractions"]]
    assert per[0][("PTV", "D95%")] == pytest.approx(60.0, abs=0.01) and per[1][("PTV", "D95%")] == pytest.approx(54.0, abs=0.01)
    proj = {(r["structure"], r["metric"]): r for r in g["projection"]["goals"]}
    assert proj[("PTV", "D95%")]["value"] == pytest.approx(57.0, abs=0.02)  # 5.7 Gy × 20 / 2
    last = course_goals(c, fractions_planned=FRACTIONS, projection="last")["projection"]
    assert {(r["structure"], r["metric"]): r for r in last["goals"]}[("PTV", "D95%")]["value"] == pytest.approx(5.7 + 18 * 2.7, abs=0.02)
    assert not last["priority1_met"] and last["missed_priority1"][0].startswith("PTV D95% 54.3 Gy (≥ 57 Gy)")


def test_planned_values_are_the_reference_plan_over_the_fractions_delivered(case):
    from art.course.accumulate import course_goals, planned_dose

    c = _uniform_course(case, [3.0], "planned")
    planned = planned_dose(case["reference"], c.grid)
    g = course_goals(c, fractions_planned=FRACTIONS, planned=planned)
    from art.final_dose import evaluate, evaluation_structures

    full = {(r.structure, r.metric): r.value for r in evaluate(planned, evaluation_structures(case["reference"].structures), case["reference"].protocol)}
    for r in g["cumulative"]["goals"]:
        want = full[(r["structure"], r["metric"])] * (1 / FRACTIONS if r["unit"] == "Gy" else 1.0)
        assert r["planned"] == pytest.approx(want, rel=1e-6)
    with pytest.raises(InputError, match="projection must be"):
        course_goals(c, fractions_planned=FRACTIONS, projection="median")


def test_fraction_record_volumes_and_target_shift(case):
    from art.course.accumulate import fraction_record

    t = (2.0, -4.0, 1.0)  # the anatomy moved by -t today; the rigid registration (REG) found nothing
    f = _fraction(case, "moved_target", 1, dose=lambda p: np.ones(len(p)), displacement=shift(t))
    rec = fraction_record(f, case["reference"])
    assert rec["target"] == "CTV" and "BODY" not in rec["volumes_cc"]
    assert rec["volumes_cc"]["Rectum"] == pytest.approx(f.structures_daily["Rectum"].volume_cc, abs=0.01)
    np.testing.assert_allclose(rec["target_centroid_shift_mm"], -np.asarray(t), atol=0.6)
