"""The independent dose check (issue 19, part C): the check engine on the export grid, gamma and dose-difference statistics, labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from art.dose import engines
from art.errors import InputError
from art.geometry import Grid, Volume
from art.independent_check import CHECK_FLUENCE_MM, check_label, check_plan, checked_engines, dose_difference
from tests.engine_case import PRESCRIPTION_GY, engine_case


@pytest.fixture(scope="module")
def case():
    return engine_case()


@pytest.fixture(scope="module")
def final(case):
    from art.final_dose import final_dose

    return final_dose(case.ct, case.plan, case.machine, case.structures, case.grid, engine="pb")


@pytest.mark.parametrize("check, evaluated, label", [
    ("ccc", "pb", "second algorithm (collapsed-cone convolution/superposition)"),
    ("pb", "ccc", "second algorithm (pencil beam)"),
    ("pb", "pb", "same algorithm (pencil beam)"),
    ("ccc", "ccc", "same algorithm (collapsed-cone convolution/superposition)"),
])  # fmt: skip
def test_the_label_says_which_algorithm_checked(check, evaluated, label):
    assert check_label(check, evaluated) == label


def test_checked_engines_keep_the_default_and_refuse_unknown_names():
    assert checked_engines("PB", None) == ("pb", None) and checked_engines("pb", " Pb ") == ("pb", "pb")
    with pytest.raises(InputError, match="^check_engine: unknown dose engine 'mc'"):
        checked_engines("pb", "mc")
    with pytest.raises(InputError, match="^final_engine: unknown dose engine"):
        checked_engines("collapsed cone", None)


def test_checked_engines_refuse_a_machine_an_engine_named_cannot_use():
    """A machine without the collapsed cone's ``ccc`` section: refused up front when ccc is the final or the named check
    engine, accepted with a default check (which falls back, see check_plan) or the pencil beam."""
    pytest.importorskip("art.dose.ccc")
    import dataclasses

    from art.dose import load_machine
    from art.errors import MachineDataError

    bare = dataclasses.replace(load_machine(), ccc=None)
    assert checked_engines("pb", None, machine=bare) == ("pb", None)
    assert checked_engines("ccc", None, machine=load_machine()) == ("ccc", None)
    for final, check in (("ccc", None), ("pb", "ccc"), ("ccc", "pb")):
        with pytest.raises(MachineDataError, match="'ccc': missing"):
            checked_engines(final, check, machine=[load_machine(), bare])


def _line(values):
    g = Grid((1, 1, len(values)), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    return Volume(np.asarray(values, np.float32).reshape(g.shape), g)


def test_dose_difference_statistics_in_percent_of_the_prescription_inside_the_body_above_10_percent():
    rx = 50.0
    evaluated = [50.0, 50.0, 40.0, 30.0, 20.0, 10.0, 6.0, 4.0, 50.0, 50.0]  # 4 Gy: below 10 % of Rx; the last two: outside the body
    delta_pct = [1.0, -2.0, 0.5, 0.0, 3.0, -0.5, 4.0, 90.0, 80.0, -70.0]
    check = [e + d / 100.0 * rx for e, d in zip(evaluated, delta_pct)]
    body = np.array([True] * 8 + [False] * 2).reshape(1, 1, 10)
    d = dose_difference(_line(check), _line(evaluated), body, prescription_gy=rx)
    inside = np.array(delta_pct[:7])  # the float32 doses round the differences a little
    assert d["n_voxels"] == 7
    assert d["mean_percent"] == pytest.approx(inside.mean(), abs=1e-4)
    assert d["mean_abs_percent"] == pytest.approx(np.abs(inside).mean(), abs=1e-4)
    assert d["p95_abs_percent"] == pytest.approx(np.percentile(np.abs(inside), 95), abs=1e-4)
    assert d["max_abs_percent"] == pytest.approx(4.0, abs=1e-4)


def test_dose_difference_of_an_empty_region_and_bad_inputs():
    low = _line([1.0, 2.0])
    d = dose_difference(low, low, np.ones(low.grid.shape, bool), prescription_gy=50.0)
    assert d["n_voxels"] == 0 and np.isnan(d["p95_abs_percent"])
    with pytest.raises(InputError, match="prescription_gy"):
        dose_difference(low, low, np.ones(low.grid.shape, bool), prescription_gy=0.0)
    with pytest.raises(InputError, match="same grid"):
        dose_difference(low, _line([1.0, 2.0, 3.0]), np.ones(low.grid.shape, bool), prescription_gy=50.0)


def test_the_check_is_the_named_engine_on_the_export_grid_compared_to_the_evaluated_dose(case, final):
    from art.dose.calc import dose

    c = check_plan(case.ct, case.plan, case.machine, case.structures, final, prescription_gy=PRESCRIPTION_GY, final_engine="pb", engine="pb")
    assert (c.engine, c.final_engine, c.fallback, c.second_algorithm) == ("pb", "pb", None, False)
    assert c.dose.grid.same_as(final.grid)
    direct = dose(case.ct, case.plan, case.machine, dose_grid=final.grid, structures=case.structures, fluence_mm=CHECK_FLUENCE_MM)
    np.testing.assert_array_equal(c.dose.array, direct.array)
    assert c.gamma.pass_rate >= 99.0 and c.gamma.n_evaluated > 1000
    assert c.difference["n_voxels"] > 1000 and c.difference["p95_abs_percent"] < 1.0  # 1 mm vs 1.25 mm fluence pixels only
    rec = json.loads(json.dumps(c.record()))  # summary.json-ready
    assert rec["check"] == "same algorithm (pencil beam)" and rec["algorithm"] == "same"
    assert rec["engine"] == "pb" and rec["evaluated_dose_engine"] == "pb" and rec["warning"] is None
    assert rec["gamma_3pct_2mm_pass_percent"] == round(c.gamma.pass_rate, 2)
    assert set(rec["dose_difference_percent_of_prescription"]) == {"mean_percent", "mean_abs_percent", "p95_abs_percent", "max_abs_percent"}
    assert rec["grid_spacing_mm"] == [4.0, 4.0, 4.0]
    table = c.table()
    assert table["check"] == "same algorithm (pencil beam)" and table["evaluated dose computed by"] == "pencil beam (pb)"


def test_without_the_second_engine_the_default_check_is_the_same_algorithm_and_says_so(case, final, monkeypatch):
    monkeypatch.setitem(engines.ENGINES, "ccc", "art.dose.no_such_engine:dose")
    c = check_plan(case.ct, case.plan, case.machine, case.structures, final, prescription_gy=PRESCRIPTION_GY, final_engine="pb")
    assert c.engine == "pb" and c.fallback == "is not installed"
    assert c.warning == ("independent check by the same algorithm (pencil beam): the collapsed-cone convolution/superposition engine "
                         "is not installed, so the check does not test the beam model")
    assert c.record()["warning"] == c.warning and c.record()["algorithm"] == "same"
    with pytest.raises(InputError, match="check engine: the collapsed-cone convolution/superposition engine"):
        check_plan(case.ct, case.plan, case.machine, case.structures, final, prescription_gy=PRESCRIPTION_GY, engine="ccc")


def test_by_default_the_collapsed_cone_engine_checks_a_pencil_beam_dose(case, final):
    pytest.importorskip("art.dose.ccc")
    c = check_plan(case.ct, case.plan, case.machine, case.structures, final, prescription_gy=PRESCRIPTION_GY, final_engine="pb")
    assert (c.engine, c.fallback, c.second_algorithm) == ("ccc", None, True)
    assert c.label == "second algorithm (collapsed-cone convolution/superposition)"
    assert c.record()["algorithm"] == "second" and c.record()["warning"] is None
    assert c.dose.grid.same_as(final.grid)
    assert c.gamma.pass_rate >= 90.0  # two algorithms, open fields in water
    assert c.difference["p95_abs_percent"] < 5.0


def test_by_default_the_pencil_beam_checks_a_collapsed_cone_dose(case):
    pytest.importorskip("art.dose.ccc")
    from art.final_dose import final_dose

    ccc_final = final_dose(case.ct, case.plan, case.machine, case.structures, case.grid, engine="ccc")
    c = check_plan(case.ct, case.plan, case.machine, case.structures, ccc_final, prescription_gy=PRESCRIPTION_GY, final_engine="ccc")
    assert (c.engine, c.final_engine) == ("pb", "ccc") and c.label == "second algorithm (pencil beam)"
    assert c.record()["evaluated_dose_engine_name"] == "collapsed-cone convolution/superposition"


def test_a_machine_the_collapsed_cone_engine_cannot_model_is_checked_by_the_same_algorithm_by_default(case, final):
    """A machine file without the collapsed-cone beam model (no ``ccc`` section): the default check says so; asked for, it is an error."""
    import dataclasses

    from art.errors import MachineDataError

    pytest.importorskip("art.dose.ccc")
    bare = dataclasses.replace(case.machine, ccc=None)
    c = check_plan(case.ct, case.plan, bare, case.structures, final, prescription_gy=PRESCRIPTION_GY, final_engine="pb")
    assert c.engine == "pb" and c.fallback.startswith("cannot compute this plan (") and "ccc" in c.fallback
    assert c.record()["algorithm"] == "same" and c.warning in c.record()["warning"]
    with pytest.raises(MachineDataError, match="ccc"):
        check_plan(case.ct, case.plan, bare, case.structures, final, prescription_gy=PRESCRIPTION_GY, engine="ccc")


def test_inner_body_leaves_out_the_layer_under_the_surface():
    from art.independent_check import inner_body

    mask = np.zeros((20, 40, 40), dtype=bool)
    mask[:, 5:35, 5:35] = True  # a box, infinite along z (it touches the grid's z edges)
    inner = inner_body(mask, (2.0, 2.0, 2.0), skin_mm=10.0)
    # 2 mm voxels: the voxels deeper than 10 mm from the faces at y, x = 5 and 34 are 11..28 (depth = 2 mm x (index - 4))
    assert inner[:, 10:30, 10:30].all() and not inner[:, 9, :].any() and not inner[:, :, 30].any()
    assert inner[0].any() and inner[-1].any()  # the grid's z edges are not a surface
    assert not (inner & ~mask).any()
