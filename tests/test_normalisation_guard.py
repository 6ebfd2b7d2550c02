"""The final MU scaling guard (issue 16, item 5): normalisation never silently breaks a goal of the
prescription goal's priority or higher, and a clamped volume-metric normalisation says so.

Synthetic doses on analytic discs: a linear dose gradient across a PTV and an organ, so that each
metric is linear in the scale and the expected limits are known from the unscaled dose.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from art.evaluate import evaluate_goals
from art.final_dose import V_METRIC_SCALE_RANGE, evaluation_structures, normalisation, normalise, normalisation_warnings
from art.geometry import Grid, Volume
from art.plan import Beam, Plan, Segment
from art.protocol import parse_protocol
from art.structures import Structure, StructureSet

GRID = Grid((16, 40, 40), (2.5, 2.5, 2.5), (-48.75, -48.75, -18.75))


def _disc(name: str, radius: float, centre_x: float = 0.0, roi_type: str = "ORGAN") -> Structure:
    x, y, z = GRID.lps_coordinates(np.float64)
    return Structure(name, ((x - centre_x) ** 2 + y**2 <= radius**2) & (np.abs(z) <= 10.0), GRID, roi_type=roi_type)


STRUCTURES = evaluation_structures(StructureSet(GRID, [_disc("PTV", 15.0, roi_type="PTV"), _disc("CTV", 5.0, roi_type="CTV"), _disc("OAR", 6.0, 35.0)]))


def _protocol(goals: str):
    head = ('name = "t"\n[prescription]\ntarget = "PTV"\ndose_gy = 50.0\nfractions = 25\n[beams]\nenergy = "6X"\ngantry_angles = [0]\n'
            'isocenter = "PTV"\n')  # fmt: skip
    return parse_protocol(head + goals)


def _goal(structure, metric, bound, value, priority):
    return f'[[goals]]\nstructure = "{structure}"\nmetric = "{metric}"\n{bound} = {value}\npriority = {priority}\n'


def _dose(base: float, slope: float) -> Volume:
    x, _, _ = GRID.lps_coordinates(np.float64)
    return Volume((base + slope * x).clip(0).astype(np.float32), GRID)


def _values(dose, protocol):
    return {(r.structure, r.metric): r for r in evaluate_goals(dose, STRUCTURES, protocol, mode="polygons")}


def _plan():
    return Plan(beams=[Beam("B1", 0.0, segments=[Segment(np.zeros((2, 60)), (-10.0, 10.0, -10.0, 10.0), 100.0)])], fractions=25, machine_name="generic")


def test_scaling_up_stops_before_a_priority_1_organ_goal_breaks_and_the_prescription_goal_is_reported_missed():
    dose = _dose(40.0, 0.25)  # PTV D95% about 37 Gy: the prescription goal needs about x1.28
    protocol = _protocol(_goal("PTV", "D95%", "at_least", 47.5, 1) + _goal("OAR", "Dmax", "at_most", 55.0, 1))
    before = _values(dose, protocol)
    assert before[("OAR", "Dmax")].met and not before[("PTV", "D95%")].met
    oar_limit = 55.0 / before[("OAR", "Dmax")].value  # Dmax is linear in the scale
    assert 47.5 / before[("PTV", "D95%")].value > oar_limit * 1.05  # full scaling would break the organ goal

    norm = normalisation(dose, STRUCTURES, protocol)
    assert norm.needed > oar_limit * 1.05
    assert norm.factor == pytest.approx(oar_limit, rel=2e-3) and norm.factor <= oar_limit
    assert norm.limited_by == ("OAR Dmax ≤ 55 Gy (priority 1)",)
    assert any("stopped at" in w and "OAR Dmax" in w for w in norm.warnings)
    plan, scaled, factor = normalise(_plan(), dose, STRUCTURES, protocol)
    after = _values(scaled, protocol)
    assert after[("OAR", "Dmax")].met  # the organ goal holds ...
    assert not after[("PTV", "D95%")].met  # ... and the prescription goal is missed, visibly (exit 3 through the goals)
    assert plan.beams[0].segments[0].mu == pytest.approx(100.0 * factor)
    rec = norm.record()
    assert rec["normalisation"]["limited_by"] == ["OAR Dmax ≤ 55 Gy (priority 1)"] and normalisation_warnings(rec) == list(norm.warnings)


def test_a_lower_priority_goal_does_not_limit_the_scaling():
    dose = _dose(40.0, 0.25)
    protocol = _protocol(_goal("PTV", "D95%", "at_least", 47.5, 1) + _goal("OAR", "Dmax", "at_most", 55.0, 2))
    norm = normalisation(dose, STRUCTURES, protocol)
    assert norm.limited_by == () and norm.warnings == () and norm.factor == norm.needed
    after = _values(normalise(_plan(), dose, STRUCTURES, protocol)[1], protocol)
    assert after[("PTV", "D95%")].met and not after[("OAR", "Dmax")].met  # a priority-2 goal may be traded (reported in the goals)


def test_an_organ_goal_missed_before_scaling_does_not_limit_it():
    dose = _dose(40.0, 0.25)
    protocol = _protocol(_goal("PTV", "D95%", "at_least", 47.5, 1) + _goal("OAR", "Dmax", "at_most", 45.0, 1))
    assert not _values(dose, protocol)[("OAR", "Dmax")].met
    norm = normalisation(dose, STRUCTURES, protocol)
    assert norm.factor == norm.needed and norm.limited_by == ()


def test_scaling_down_stops_before_a_priority_1_target_goal_breaks():
    dose = _dose(70.0, 0.25)  # far too hot: the prescription goal alone would scale by about x0.7
    protocol = _protocol(_goal("PTV", "D95%", "at_least", 47.5, 1) + _goal("CTV", "D98%", "at_least", 60.0, 1))
    before = _values(dose, protocol)
    ctv_limit = 60.0 / before[("CTV", "D98%")].value
    norm = normalisation(dose, STRUCTURES, protocol)
    assert norm.needed < ctv_limit * 0.95
    assert norm.factor == pytest.approx(ctv_limit, rel=2e-3) and norm.factor >= ctv_limit
    assert norm.limited_by == ("CTV D98% ≥ 60 Gy (priority 1)",) and norm.warnings
    after = _values(normalise(_plan(), dose, STRUCTURES, protocol)[1], protocol)
    assert after[("CTV", "D98%")].met and after[("PTV", "D95%")].met


def test_a_volume_metric_normalisation_outside_its_range_is_clamped_with_a_warning():
    dose = _dose(30.0, 1.3)  # V47.5Gy >= 95 % of the PTV needs more than twice the dose
    protocol = _protocol(_goal("PTV", "V47.5Gy", "at_least", 95.0, 1))
    norm = normalisation(dose, STRUCTURES, protocol)
    assert norm.clamped and norm.factor == V_METRIC_SCALE_RANGE[1]
    assert any("outside" in w and "V47.5Gy" in w for w in norm.warnings)
    assert norm.record()["normalisation"]["clamped"] is True
    hot = normalisation(_dose(200.0, 0.1), STRUCTURES, protocol)  # met even at half the dose
    assert hot.clamped and hot.factor == V_METRIC_SCALE_RANGE[0] and "above" in hot.warnings[0]
    inside = normalisation(_dose(46.0, 0.2), STRUCTURES, protocol)  # reachable: bisection, no warning
    assert not inside.clamped and inside.warnings == ()
    (g,) = evaluate_goals(normalise(_plan(), _dose(46.0, 0.2), STRUCTURES, protocol)[1], STRUCTURES, protocol, mode="polygons")
    assert g.met


def test_the_warnings_reach_summary_and_report_through_plan_warnings():
    from art.jobs import plan_warnings

    dose = _dose(40.0, 0.25)
    protocol = _protocol(_goal("PTV", "D95%", "at_least", 47.5, 1) + _goal("OAR", "Dmax", "at_most", 55.0, 1))
    norm = normalisation(dose, STRUCTURES, protocol)
    goals = evaluate_goals(normalise(_plan(), dose, STRUCTURES, protocol)[1], STRUCTURES, protocol, mode="polygons")
    result = SimpleNamespace(sequencing={"gamma": 99.0, **norm.record()}, goals=goals)
    w = plan_warnings(result, "adapted plan: ")
    assert w[0].startswith("adapted plan: normalisation to PTV D95%") and "OAR Dmax" in w[0]
    assert "adapted plan: priority-1 goal not met: PTV D95% ≥ 47.5 Gy" in w
