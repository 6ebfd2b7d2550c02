"""Tests of the segment-MU stage (art.optimize.segment_mu): analytic optima, the lexicographic
rule, conservative bounds, MU limits, reported infeasibility, input errors, the plan wrapper."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from art.errors import InputError
from art.evaluate.metrics import evaluate_metric, prepare_samples
from art.optimize.fmo_types import OptimizationError
from art.optimize.segment_mu import optimize_plan_segment_mu, optimize_segment_mu
from art.optimize.segment_mu_convex import bound_value, goal_bounds
from art.optimize.voxels import StructureVoxels
from art.plan import Beam, Plan, Segment
from art.protocol import Goal, Prescription, parse_metric

RX = Prescription("T", 60.0, 20)
VV = 0.027  # cc per voxel


def sv(rows, weights=None, roi="ORGAN", name=""):
    return StructureVoxels(np.asarray(rows), weights=weights, roi_type=roi, voxel_volume_cc=VV, name=name)


def goal(structure, metric, *, lo=None, hi=None, p=1):
    return Goal(structure, parse_metric(metric), at_least=lo, at_most=hi, priority=p)


def run(a, structures, goals, mu_start, beams=None, **kw):
    n = np.shape(a)[1] if np.ndim(a) == 2 else 2
    opts = dict(mu_min=kw.pop("mu_min", 0.0), mu_max_per_beam=kw.pop("mu_max_per_beam", 1e4),
                beam_of_segment=np.arange(n) if beams is None else beams, mu_start=mu_start, fractions=20)  # fmt: skip
    opts.update(kw)
    return optimize_segment_mu(a, structures, goals, RX, **opts)


def two_segments():
    """Segment 0 treats the target (rows 0-9); segment 1 the OAR (rows 10-19) and a little of the target."""
    a = np.zeros((20, 2))
    a[:10, 0], a[10:, 1], a[:10, 1] = 0.01, 0.01, 0.002
    return a, {"T": sv(range(10), roi="PTV"), "OAR": sv(range(10, 20))}


def test_analytic_optimum_two_segments():
    a, s = two_segments()
    goals = [goal("T", "D95%", lo=60.0, p=1), goal("OAR", "Dmean", hi=10.0, p=2)]
    r = run(a, s, goals, [100.0, 100.0], margin=1e-6)
    # OAR mean = 20 * 0.01 * mu1 <= 10 -> mu1 = 50 (the pull toward 100 keeps it there);
    # target = 20 * (0.01 mu0 + 0.002 mu1) >= 60 -> mu0 = 290 (the pull toward 100 keeps it there)
    # (to the solver's tolerance: the pull is weak by design)
    assert r.mu == pytest.approx([290.0, 50.0], abs=0.2)
    assert [g.met for g in r.goals] == [True, True] and r.achieved_priorities == (1, 2)
    assert 60.0 <= r.goals[0].value <= 60.05 and 9.99 <= r.goals[1].value <= 10.0 and r.goals[0].value_before == pytest.approx(24.0)
    assert r.status == "ok" and r.priority1_met


def test_goals_met_at_start_leave_the_mu_alone():
    a, s = two_segments()
    goals = [goal("T", "D95%", lo=20.0, p=1), goal("OAR", "Dmean", hi=30.0, p=2)]
    r = run(a, s, goals, [100.0, 100.0])
    assert r.mu == pytest.approx([100.0, 100.0]) and all(st["status"] == "skipped" for st in r.stages)


def conflict():
    """One segment treats target and OAR alike: target mean >= 60 needs MU >= 300, OAR mean <= 30 needs MU <= 150."""
    a = np.zeros((20, 2))
    a[:, 0] = 0.01
    a[10:, 1] = 0.001  # a second, nearly useless segment
    return a, {"T": sv(range(10), roi="PTV"), "OAR": sv(range(10, 20))}


def test_lower_priority_never_worsens_an_achieved_level():
    a, s = conflict()
    r = run(a, s, [goal("T", "Dmean", lo=60.0, p=1), goal("OAR", "Dmean", hi=30.0, p=2)], [200.0, 10.0])
    t, oar = r.goals
    assert t.met and t.value >= 60.0 and t.value == pytest.approx(60.06, abs=0.01)  # held at the level (+ margin), not beyond
    assert not oar.met and oar.value == pytest.approx(t.value + 20 * 0.001 * r.mu[1], abs=1e-6)
    assert r.mu[1] == pytest.approx(0.0, abs=1e-3)  # p2 traded what it could: the useless segment off
    assert r.achieved_priorities == (1,) and r.missed_priorities == (2,) and r.priority1_met


def test_missed_priority_one_goal_is_reported():
    a, s = conflict()
    r = run(a, s, [goal("OAR", "Dmean", hi=30.0, p=1), goal("T", "Dmean", lo=60.0, p=2)], [200.0, 10.0])
    oar, t = r.goals
    assert oar.met and not t.met and r.priority1_met and r.missed_priorities == (2,)
    r2 = run(a, s, [goal("T", "Dmean", lo=60.0, p=1), goal("OAR", "Dmean", hi=30.0, p=1)], [200.0, 10.0])
    assert not r2.priority1_met and 1 in r2.missed_priorities
    assert "priority-1 goal(s) missed" in r2.message and "Dmean" in r2.message
    assert r2.corrections == 2 and any(st["name"].startswith("correction") for st in r2.stages)  # tried before giving up


def random_samples(rng, n, uniform):
    d = rng.gamma(2.0, 10.0, n) + rng.choice([0.0, 30.0], n)
    w = np.ones(n) if uniform else rng.choice([0.01, 0.2, 1.0], n)
    return d, w


METRICS = ["D95%", "D2%", "D50%", "D0%", "D100%", "D1cc", "Dmax", "Dmin", "Dmean"]


@pytest.mark.parametrize("uniform", [True, False])
def test_every_bound_is_conservative(uniform):
    """For random doses: a goal whose level is the bound's value is met by the exact metric."""
    rng = np.random.default_rng(1 if uniform else 2)
    for _ in range(60):
        n = int(rng.integers(3, 400))
        d, w = random_samples(rng, n, uniform)
        s = sv(np.arange(n), None if uniform else w)
        ds, vs = prepare_samples(d, s.weight_array() * VV)
        for m in METRICS + ["V30Gy", "V50Gy[cc]"]:
            metric = parse_metric(m)
            if metric.unit == "cc" and metric.kind == "D" and metric.parameter > vs.sum():
                continue
            exact = evaluate_metric(metric, ds, vs)
            for sense in ("lower", "upper"):
                if metric.kind == "V":
                    vol = exact * rng.uniform(0.5, 1.5)  # a volume goal near the exact value
                    g = Goal("S", metric, at_least=vol if sense == "lower" else None, at_most=vol if sense == "upper" else None)
                    for b in goal_bounds(g, 0, s):
                        met_bound = bound_value(b, d, s) < b.level_gy if sense == "upper" else bound_value(b, d, s) >= b.level_gy
                        if met_bound:
                            assert (exact <= vol) if sense == "upper" else (exact >= vol), (m, sense)
                    continue
                g = Goal("S", metric, at_least=0.0 if sense == "lower" else None, at_most=1.0 if sense == "upper" else None)
                (b,) = goal_bounds(g, 0, s)
                v = bound_value(b, d, s)  # a goal with this level: its bound is met, so must be the goal
                assert (exact <= v + 1e-9) if sense == "upper" else (exact >= v - 1e-9), (m, sense, exact, v)


def test_half_voxel_shift_is_needed_for_unequal_voxels():
    """A small hot sample next to a large cold one: D(v) exceeds the plain CVaR of v, not the shifted one."""
    d, w = np.array([100.0, 0.0]), np.array([0.01, 1.0])
    ds, vs = prepare_samples(d, w * VV)
    exact = evaluate_metric(parse_metric("D30%"), ds, vs)
    s = sv([0, 1], w)
    plain = (0.01 * 100.0) / (0.3 * 1.01)  # mean of the hottest 30 %
    assert exact > plain  # the unshifted CVaR would not be conservative here
    (b,) = goal_bounds(goal("S", "D30%", hi=1.0), 0, s)
    assert bound_value(b, d, s) >= exact


def test_optimised_goals_met_when_bounds_say_so():
    rng = np.random.default_rng(3)
    a = sp.random(300, 6, density=0.6, random_state=4, format="csr") * 0.02
    w = rng.choice([0.3, 1.0], 300)
    s = {"T": sv(range(0, 120), w[:120], roi="PTV"), "A": sv(range(100, 220), w[100:220]), "B": sv(range(200, 300), w[200:300])}
    goals = [goal("T", "D95%", lo=25.0, p=1), goal("T", "D2%", hi=60.0, p=1), goal("A", "V30Gy", hi=20.0, p=2),
             goal("A", "Dmax", hi=55.0, p=2), goal("B", "D10%", hi=30.0, p=3), goal("B", "Dmin", lo=1.0, p=3)]  # fmt: skip
    r = run(a, s, goals, np.full(6, 50.0), beams=np.array([0, 0, 1, 1, 2, 2]), mu_min=5.0, mu_max_per_beam=400.0)
    assert r.status == "ok"
    for g in r.goals:
        if g.bound_met:
            assert g.met, g
    d = 20 * (a @ r.mu)
    for g in r.goals:  # the reported values are the exact metrics of the returned MU
        rows = s[g.goal.structure].rows
        ds, vs = prepare_samples(d[rows], s[g.goal.structure].weight_array() * VV)
        assert g.value == pytest.approx(evaluate_metric(g.goal.metric, ds, vs), abs=1e-9)
    assert np.all((r.mu == 0) | (r.mu >= 5.0 - 1e-6)) and np.all(r.beam_mu <= 400.0 + 1e-6)


def test_mu_limits_and_dropped_segments():
    a, s = two_segments()
    goals = [goal("T", "Dmean", lo=120.0, p=1)]
    r = run(a, s, goals, [100.0, 1.0], beams=np.array([0, 0]), mu_min=2.0, mu_max_per_beam=400.0)
    assert r.mu[1] == 0.0  # started below the machine minimum: dropped
    assert r.mu[0] == pytest.approx(400.0, abs=1e-3)  # the beam limit, not the goal (needs 600), decides
    assert not r.goals[0].met and not r.priority1_met and r.beam_mu[0] <= 400.0 + 1e-6


def bad(**kw):
    a, s = two_segments()
    args = dict(a=a, structures=s, goals=[goal("T", "Dmean", lo=60.0)], mu_start=[10.0, 10.0])
    opts = {k: v for k, v in kw.items() if k not in args}
    args.update({k: v for k, v in kw.items() if k in args})
    return lambda: run(args["a"], args["structures"], args["goals"], args["mu_start"], **opts)


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"mu_start": [10.0]}, "mu_start"),
        ({"mu_start": [10.0, -1.0]}, "mu_start"),
        ({"beam_of_segment": np.array([0.5, 1.0])}, "beam_of_segment"),
        ({"mu_min": -1.0}, "mu_min"),
        ({"mu_max_per_beam": 0.0}, "mu_max_per_beam"),
        ({"mu_min": 50.0, "mu_max_per_beam": 60.0, "beam_of_segment": np.array([0, 0]), "mu_start": [60.0, 60.0]}, "mu_max_per_beam"),
        ({"solver": "FOO"}, "solver"),
        ({"fractions": 0}, "fractions"),
        ({"time_limit_s": 0.0}, "time_limit_s"),
        ({"margin": -1.0}, "margin"),
        ({"a": -np.ones((20, 2))}, "segment_dose"),
        ({"a": np.ones(20)}, "segment_dose"),
        ({"goals": [goal("X", "Dmean", lo=1.0)]}, "structure"),
        ({"goals": [goal("T", "D5cc", hi=1.0)]}, "cc"),
        ({"structures": {"T": sv(range(30)), "OAR": sv([0])}}, "outside segment_dose"),
    ],
)
def test_bad_input_names_the_parameter(kw, name):
    with pytest.raises(InputError, match=name):
        bad(**kw)()


def small_plan(mus):
    lp = np.array([[-10.0] * 4, [10.0] * 4])
    seg = [Segment(lp, (-10, 10, -10, 10), m) for m in mus]
    beams = [Beam("B1", 0.0, segments=[seg[0]]), Beam("B2", 90.0, segments=seg[1:])]
    return Plan(beams, fractions=20, machine_name="test")


def test_plan_wrapper_removes_zero_segments_and_checks_beams():
    a = np.zeros((20, 3))
    a[:10, 0], a[:10, 1], a[10:, 2] = 0.01, 0.01, 0.01  # segment 2 only irradiates the OAR
    s = {"T": sv(range(10), roi="PTV"), "OAR": sv(range(10, 20))}
    protocol = SimpleNamespace(goals=(goal("T", "Dmean", lo=60.0, p=1), goal("OAR", "Dmax", hi=0.0, p=2)), prescription=RX)
    machine = SimpleNamespace(min_mu_per_segment=0.0, max_mu_per_beam=1000.0)
    plan, r = optimize_plan_segment_mu(small_plan([100.0, 100.0, 50.0]), a, s, protocol, machine=machine)
    assert [len(b.segments) for b in plan.beams] == [1, 1] and r.mu[2] == 0.0
    assert sum(b.total_mu for b in plan.beams) == pytest.approx(r.mu.sum()) and r.goals[0].met
    with pytest.raises(InputError, match="one column per segment"):
        optimize_plan_segment_mu(small_plan([100.0, 100.0, 50.0]), a[:, :2], s, protocol, machine=machine)
    a2 = a.copy()
    a2[:, 0] = 0.0
    a2[10:, 0] = 0.01  # beam B1's only segment now only irradiates the OAR: it goes to 0
    with pytest.raises(OptimizationError, match="B1"):
        optimize_plan_segment_mu(small_plan([100.0, 100.0, 50.0]), a2, s, protocol, machine=machine)
