"""``make_plan(final_engine=...)`` and the plan's independent check (issue 19, part C), on a small water cylinder.

Which engine computed a dose is seen through tests/engine_spy.py: the real pencil beam registered
under the name ``"ccc"``, recording its calls.
"""

from __future__ import annotations

import pytest

from art.dose import engines
from art.errors import InputError
from art.progress import Stages
from art.protocol import parse_protocol
from tests import engine_spy
from tests.engine_case import PRESCRIPTION_GY, engine_case

PROTOCOL = f"""
name = "cylinder"
[prescription]
target = "PTV"
dose_gy = {PRESCRIPTION_GY}
fractions = 20
[beams]
energy = "6X"
gantry_angles = [0, 90, 180, 270]
isocenter = "PTV"
bixel_mm = 10.0
[dose]
grid_mm = 6.0
[[goals]]
structure = "PTV"
metric = "D95%"
at_least = 38.0
priority = 1
"""


def _plan(final_engine):
    from art.workflow import make_plan

    c = engine_case()
    return make_plan(c.ct, c.structures, parse_protocol(PROTOCOL), machine=c.machine, final_grid_mm=4.0, correction=False,
                     final_engine=final_engine)  # fmt: skip


def test_an_unknown_final_engine_is_refused_before_any_work():
    with pytest.raises(InputError, match="^final_engine: unknown dose engine 'mc'; choose one of pb"):
        _plan("mc")


def test_a_machine_the_final_engine_cannot_use_is_refused_before_the_optimisation(monkeypatch):
    """make_plan with final_engine ccc and a machine without a ``ccc`` section: MachineDataError before any dose influence."""
    pytest.importorskip("art.dose.ccc")
    import dataclasses

    import art.dose
    from art.errors import MachineDataError
    from art.protocol import parse_protocol
    from art.workflow import make_plan

    def no_influence(*args, **kwargs):
        raise AssertionError("the dose influence was computed before the machine was checked")

    monkeypatch.setattr(art.dose, "influence_matrix", no_influence)
    c = engine_case()
    bare = dataclasses.replace(c.machine, ccc=None)
    with pytest.raises(MachineDataError, match="'ccc': missing"):
        make_plan(c.ct, c.structures, parse_protocol(PROTOCOL), machine=bare, final_grid_mm=4.0, correction=False, final_engine="ccc")


def test_every_final_dose_of_the_plan_comes_from_the_engine_named_and_the_other_algorithm_checks_it(monkeypatch):
    from art.independent_check import staged_check

    monkeypatch.setitem(engines.ENGINES, "ccc", "tests.engine_spy:dose")
    monkeypatch.setattr(engine_spy, "CALLS", [])
    r = _plan("CCC")
    assert r.engine == "ccc" and r.parameters["final_engine"] == "ccc"
    assert engine_spy.CALLS and all(c["dose_grid"].same_as(r.dose.grid) for c in engine_spy.CALLS)
    n_final = len(engine_spy.CALLS)
    c = engine_case()
    stages = Stages(show=False)
    check = staged_check(c.ct, r, r.structures, parse_protocol(PROTOCOL), c.machine, engine=None, stages=stages)
    assert len(engine_spy.CALLS) == n_final  # the check did not go through the final dose's engine
    assert (check.engine, check.final_engine, check.fallback) == ("pb", "ccc", None)
    assert check.label == "second algorithm (pencil beam)" and "independent check" in stages.timings
    assert check.gamma.pass_rate >= 99.0  # here both names compute the pencil beam


def test_the_pencil_beam_plan_by_default():
    r = _plan("pb")
    assert r.engine == "pb" and r.parameters["final_engine"] == "pb"
    assert all(g.met for g in r.goals if g.priority == 1)


@pytest.mark.slow
def test_a_plan_with_the_collapsed_cone_final_dose():
    pytest.importorskip("art.dose.ccc")
    r = _plan("ccc")
    assert r.engine == "ccc" and r.parameters["final_engine"] == "ccc"
    (ptv,) = [g for g in r.goals if g.structure == "PTV"]
    assert ptv.value == pytest.approx(38.0 * 1.002, abs=0.5)  # normalised on the collapsed-cone dose
