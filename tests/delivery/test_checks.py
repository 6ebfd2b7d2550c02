"""Deliverability checks: every machine limit is detected and named."""

import dataclasses

import numpy as np
import pytest

from art.delivery import assert_deliverable, check_plan, sequence_beam
from art.dose import load_machine
from art.errors import InputError
from art.plan import Beam, Plan, Segment


@pytest.fixture(scope="module")
def machine():
    return load_machine()


def good_segment(machine, mu=10.0):
    n = machine.mlc.n_pairs
    lp = np.vstack([np.full(n, -20.0), np.full(n, 20.0)])
    return Segment(lp, (-20.0, 20.0, -20.0, 20.0), mu)


def plan_of(machine, *segs):
    return Plan([Beam("A", 0.0, segments=list(segs))], 1, machine.name)


def test_good_and_sequenced_plans_pass(machine):
    assert check_plan(plan_of(machine, good_segment(machine)), machine) == []
    f = np.random.default_rng(0).uniform(0, 20, (8, 8))
    g = {"x_edges_mm": np.arange(9) * 5.0 - 20, "y_edges_mm": np.arange(9) * 5.0 - 20}
    p = plan_of(machine, *sequence_beam(f, g, machine))
    assert check_plan(p, machine) == []
    assert_deliverable(p, machine)


def mutate(machine, **changes):
    s = good_segment(machine)
    lp = s.leaf_positions.copy()
    jaws = list(s.jaws)
    mu = s.mu
    if "lp" in changes:
        changes["lp"](lp)
    if "jaws" in changes:
        jaws = changes["jaws"]
    if "mu" in changes:
        mu = changes["mu"]
    seg = Segment(lp, tuple(jaws), mu)
    if "after" in changes:  # bypass Segment validation (a plan mutated after construction)
        changes["after"](seg)
    return plan_of(machine, seg)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (dict(lp=lambda lp: lp.__setitem__((1, 3), 250.0)), r"leaf pairs \[4\] outside the leaf limits"),
        (dict(lp=lambda lp: lp.__setitem__((0, 5), 19.8)), r"leaf pairs \[6\] closer than the minimum gap"),
        (dict(after=lambda s: s.leaf_positions.__setitem__((0, 7), 30.0)), r"leaf pairs \[8\] have bank X1 beyond bank X2"),
        (dict(after=lambda s: s.leaf_positions.__setitem__((0, 2), np.nan)), "not all finite"),
        (dict(jaws=(-250.0, 20.0, -20.0, 20.0)), "X jaws"),
        (dict(jaws=(-20.0, 20.0, -20.0, 260.0)), "Y jaws"),
        (dict(mu=0.5), "below the minimum"),
        (dict(mu=1200.0), "exceeds the machine maximum"),
        (dict(lp=lambda lp: (lp.__setitem__((0, slice(None)), -190.0), lp.__setitem__((0, 0), -30.0))), "leaf span"),
        (dict(lp=lambda lp: (lp.__setitem__((0, slice(None)), 50.0), lp.__setitem__((1, slice(None)), 60.0))), "no opening"),
        (dict(after=lambda s: setattr(s, "leaf_positions", np.zeros((2, 10)))), r"shape \(2, 10\)"),
    ],
)
def test_each_violation_is_reported(machine, change, pattern):
    p = mutate(machine, **change)
    problems = check_plan(p, machine)
    assert any(__import__("re").search(pattern, q) for q in problems), problems
    assert all("beam 'A'" in q for q in problems)
    with pytest.raises(InputError, match="not deliverable"):
        assert_deliverable(p, machine)


def test_interdigitation_only_when_forbidden(machine):
    s = good_segment(machine)
    lp = s.leaf_positions.copy()
    lp[:, 30] = [30.0, 40.0]  # pair 31 opens right of pair 30's right leaf (20)
    p = plan_of(machine, Segment(lp, (-20.0, 40.0, -20.0, 20.0), 10.0))
    assert check_plan(p, machine) == []
    m = dataclasses.replace(machine, mlc=dataclasses.replace(machine.mlc, interdigitation=False))
    problems = check_plan(p, m)
    assert len(problems) == 1 and "interdigitation between leaf pairs [(30, 31), (31, 32)]" in problems[0]


def test_plan_level_problems(machine):
    p = Plan([Beam("A", 0.0), Beam("B", 90.0, energy="10X", segments=[good_segment(machine)])], 1, "OtherLinac")
    problems = check_plan(p, machine)
    assert any("OtherLinac" in q for q in problems)
    assert any("beam 'A': no segments" in q for q in problems)
    assert any("beam 'B': energy '10X'" in q for q in problems)
    p2 = Plan([Beam("A", 0.0, sad_mm=800.0, segments=[good_segment(machine)])], 1, machine.name)
    assert any("SAD" in q for q in check_plan(p2, machine))
    # the total per beam is checked, not only each segment
    p3 = plan_of(machine, good_segment(machine, 600.0), good_segment(machine, 600.0))
    assert any("1200 MU exceeds" in q for q in check_plan(p3, machine))
    assert check_plan("not a plan", machine) == ["not a Plan: str"]
