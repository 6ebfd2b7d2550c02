"""Report builders from raw objects: figures computed, goals, recommendation."""

from __future__ import annotations

import numpy as np
import pytest

from art.errors import InputError
from art.evaluate import evaluate_goals
from art.geometry import Volume
from art.protocol import parse_protocol
from art.plan import Beam, Plan, Segment
from art.report import adaptive_report_model, dvh_curves, plan_report_model, recommend, render_report

PROTOCOL = """\
name = "test"

[prescription]
target = "PTV"
dose_gy = 60.0
fractions = 20

[beams]
energy = "6X"
gantry_angles = [0, 120, 240]
isocenter = "PTV"

[[goals]]
structure = "PTV"
metric = "D95%"
at_least = 40.0
priority = 1

[[goals]]
structure = "Rectum"
metric = "Dmean"
at_most = 30.0
priority = 2

[[goals]]
structure = "Bladder"
metric = "Dmax"
at_most = 40.0
priority = 3
"""


def _plan(mu: float) -> Plan:
    seg = Segment(np.array([[-10.0] * 4, [10.0] * 4]), (-20.0, 20.0, -20.0, 20.0), mu)
    beams = [Beam(f"G{g}", float(g), isocenter_lps=(0.0, 0.0, 0.0), segments=[seg, seg]) for g in (0, 120, 240)]
    return Plan(beams, 20, "generic")


def test_dvh_curves_match_dvh_and_skip_body(case):
    from art.evaluate import dvh

    curves = dvh_curves(case.dose, case.structures)
    assert list(curves) == ["PTV", "Rectum", "Bladder"]
    width = float(case.dose.array.max()) / 1000
    for name, (d, v) in curves.items():
        h = dvh(case.dose, case.structures[name], bin_width_gy=width)
        assert v[0] == pytest.approx(100.0) and v[-1] == pytest.approx(0.0, abs=1e-9)
        assert np.all(np.diff(v) <= 1e-9)  # cumulative: non-increasing
        # the thinned curve is a subset of the full curve, ending where it ends
        idx = np.rint(d / width).astype(int)
        np.testing.assert_allclose(d, h.dose_gy[idx], rtol=1e-12)
        np.testing.assert_allclose(v, h.volume_pct[idx], rtol=1e-12)
        assert d[-1] == h.dose_gy[-1]
        assert len(d) <= 410
        # and it agrees with a brute-force count on the voxels
        samples = case.dose.array[case.structures[name].mask]
        for level in (d[len(d) // 3], d[len(d) // 2]):
            assert v[np.argmin(np.abs(d - level))] == pytest.approx(100.0 * np.mean(samples >= level), abs=1e-6)


def test_plan_report_model(case):
    goals = evaluate_goals(case.dose, case.structures, parse_protocol(PROTOCOL))
    model = plan_report_model(case.ct, case.structures, case.dose, goals, plan=_plan(50.0), provenance={"inputs": {"ct": "0" * 64}})
    assert list(model.goals) == ["reference"]
    assert [r["metric"] for r in model.goals["reference"]] == ["D95%", "Dmean", "Dmax"]
    assert {"Dose-volume histograms", "Dose: reference", "Monitor units per beam"} <= set(model.figures)
    assert model.mu_per_beam == {"reference": {"G0": 100.0, "G120": 100.0, "G240": 100.0}}
    assert model.segments_per_beam == {"reference": {"G0": 2, "G120": 2, "G240": 2}}
    assert model.identifiers == {}  # nothing added
    page = render_report(model)
    assert page.count('<tr class="goal') == 3
    assert "<td>Dmax (D0.03cc)</td>" in page  # the near-maximum says what it is (issue 15)
    model.evaluation = "Every goal is computed on the exported RT Dose (2.5 mm grid)."
    assert '<p class="evaluation">Every goal is computed on the exported RT Dose (2.5 mm grid).</p>' in render_report(model)


@pytest.mark.parametrize("position, words", [("HFS", "head first, supine"), ("FFP", "feet first, prone")])
def test_dose_captions_state_the_patient_position(case, position, words):
    """The planes are drawn in patient orientation for any position; the captions say how the patient lay."""
    import dataclasses

    from art.report.build import position_text

    plan = dataclasses.replace(_plan(50.0), patient_position=position)
    goals = evaluate_goals(case.dose, case.structures, parse_protocol(PROTOCOL))
    model = plan_report_model(case.ct, case.structures, case.dose, goals, plan=plan)
    assert f"patient {position} ({words}), shown in patient orientation" in model.figures["Dose: reference"].caption
    assert position_text(plan) == f"{position} ({words})"
    assert model.identifiers == {}  # the caller adds the position to the header (art.jobs), no patient data added here


def test_adaptive_report_model_and_recommendation(case):
    protocol = parse_protocol(PROTOCOL)
    scheduled = Volume(case.dose.array * 0.7, case.grid)  # under-doses the PTV: P1 fails
    sched_goals = evaluate_goals(scheduled, case.structures, protocol)
    adapt_goals = evaluate_goals(case.dose, case.structures, protocol)
    assert not sched_goals[0].met and adapt_goals[0].met
    gamma = np.where(case.dose.array > 6.0, 0.4, np.nan).astype(np.float32)
    model = adaptive_report_model(
        case.ct,
        case.structures,
        scheduled,
        case.dose,
        sched_goals,
        adapt_goals,
        scheduled_plan=_plan(40.0),
        adapted_plan=_plan(55.0),
        fixed_image=case.ct,
        moving_resampled=case.ct,
        registration={"couch_shift_mm": (0.0, 1.0, -2.0), "jacobian_min": 0.7},
        contour_qa=[{"structure": "Rectum", "dice_ai_vs_propagated": 0.8, "flagged": False}],
        check_dose=case.dose,
        gamma=Volume(gamma, case.grid),
        timings={"register": 1.0},
    )
    assert set(model.goals) == {"scheduled", "adapted"}
    expected = {
        "Dose-volume histograms",
        "Dose: scheduled",
        "Dose: adapted",
        "Dose difference: adapted − scheduled",
        "Independent dose check: adapted",
        "Gamma",
        "Registration: checkerboard",
        "Monitor units per beam",
    }
    assert expected <= set(model.figures)
    assert model.recommendation.startswith("Recommended: the adapted plan")
    assert "priority 1" in model.recommendation
    page = render_report(model)
    assert "Registration QA" in page and "Contour QA" in page


def test_recommend_is_lexicographic_by_priority():
    def rows(*met):
        return [{"structure": f"S{i}", "metric": "Dmean", "goal": "x", "value": 1.0, "met": m, "priority": p} for i, (p, m) in enumerate(met)]

    # same at priority 1, adapted better at 2 although worse at 3
    text = recommend({"scheduled": rows((1, True), (2, False), (3, True)), "adapted": rows((1, True), (2, True), (3, False))})
    assert text.startswith("Recommended: the adapted plan") and "priority 2" in text
    # a priority-1 advantage outweighs everything below
    text = recommend({"scheduled": rows((1, True), (2, False), (3, False)), "adapted": rows((1, False), (2, True), (3, True))})
    assert text.startswith("Recommended: the scheduled plan")
    # a tie keeps the scheduled plan; failing P1 goals are named
    text = recommend({"scheduled": rows((1, False), (2, True)), "adapted": rows((1, False), (2, True))})
    assert text.startswith("Recommended: the scheduled plan") and "S0 Dmean" in text
    with pytest.raises(InputError):
        recommend({"adapted": []})


def test_builders_validate_inputs(case):
    with pytest.raises(InputError, match="image"):
        plan_report_model(case.ct.array, case.structures, case.dose, [])
    with pytest.raises(InputError, match="adapted_dose"):
        adaptive_report_model(case.ct, case.structures, case.dose, None, [], [])


def test_plan_report_takes_a_gamma_result(case):
    from art.evaluate.gamma import gamma_index

    check = Volume(case.dose.array * np.float32(1.02), case.grid)
    result = gamma_index(case.dose, check, dose_percent=3.0, distance_mm=2.0, threshold_percent=10.0)
    goals = evaluate_goals(case.dose, case.structures, parse_protocol(PROTOCOL))
    model = plan_report_model(case.ct, case.structures, case.dose, goals, check_dose=check, gamma=result, gamma_criteria="ignored")
    assert "Gamma" in model.figures and "Independent dose check: reference" in model.figures
    assert "3 %/2 mm, 10 % threshold, global" in model.figures["Gamma"].caption
    with pytest.raises(InputError, match="gamma"):
        plan_report_model(case.ct, case.structures, case.dose, goals, gamma=np.zeros(3))


def test_the_independent_check_section_names_the_algorithm_and_the_evaluated_dose_engine(case):
    """Issue 19: the report says which algorithm checked the evaluated dose, and with what result."""
    from art.evaluate.gamma import gamma_index

    check = Volume(case.dose.array * np.float32(1.01), case.grid)
    result = gamma_index(check, case.dose, dose_percent=3.0, distance_mm=2.0, threshold_percent=10.0)
    goals = evaluate_goals(case.dose, case.structures, parse_protocol(PROTOCOL))
    label = "second algorithm (collapsed-cone convolution/superposition)"
    table = {"check": label, "evaluated dose computed by": "pencil beam (pb)", "gamma 3 %/2 mm pass rate (%)": 99.5, "95th percentile |ΔD| (%)": 1.2}
    for build in (
        lambda **kw: plan_report_model(case.ct, case.structures, case.dose, goals, **kw),
        lambda **kw: adaptive_report_model(case.ct, case.structures, case.dose, case.dose, goals, goals, **kw),
    ):
        model = build(check_dose=check, gamma=result, independent_check=table, check_label=label)
        assert model.independent_check == table
        assert f"by the {label}" in model.figures["Gamma"].caption
        assert any(f"Independent recalculation by the {label} minus" in f.caption for n, f in model.figures.items() if n.startswith("Independent"))
        page = render_report(model)
        assert '<section id="independent-check"><h2>Independent dose check</h2>' in page
        assert label in page and "pencil beam (pb)" in page and "99.5" in page
    bare = plan_report_model(case.ct, case.structures, case.dose, goals)
    assert bare.independent_check is None and "Independent dose check" not in render_report(bare)
