"""Clinical-goal evaluation on a known dose."""

from __future__ import annotations

import json

import numpy as np
import pytest

from art.errors import InputError
from art.evaluate import GoalResult, evaluate_goals
from art.geometry import Grid, Volume
from art.protocol import parse_protocol
from art.structures import Structure, StructureSet

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
metric = "D50%"
at_least = 40.0
at_most = 41.0
priority = 1

[[goals]]
structure = "ptv"
metric = "Dmean"
at_least = 45.0
priority = 1

[[goals]]
structure = "Rectum"
metric = "V20Gy"
at_most = 50.0
stretch = 30.0
priority = 2

[[goals]]
structure = "Rectum"
metric = "V20Gy[cc]"
at_most = 100.0
priority = 3
"""


@pytest.fixture
def case():
    """A dose ramp 0.5 Gy/mm along x on a 2 mm grid; PTV and Rectum are slabs of known dose."""
    grid = Grid(shape=(10, 10, 40), spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0))
    x = np.arange(40) * 2.0
    dose = Volume(np.broadcast_to((0.5 * x).astype(np.float32), grid.shape).copy(), grid)
    ptv = np.zeros(grid.shape, bool)
    ptv[:, :, 30:] = True  # x = 60 .. 78 mm: 30 .. 39 Gy
    rectum = np.zeros(grid.shape, bool)
    rectum[:, :, 10:20] = True  # 10 .. 19 Gy, half of it >= 15 Gy
    ss = StructureSet(
        grid,
        [Structure("PTV", ptv, grid, roi_type="PTV"), Structure("Rectum", rectum, grid), Structure("Empty", np.zeros(grid.shape, bool), grid)],
    )
    return dose, ss


def test_values_met_and_serialisation(case):
    dose, ss = case
    p = parse_protocol(PROTOCOL)
    res = evaluate_goals(dose, ss, p)
    assert [r.structure for r in res] == ["PTV", "ptv", "Rectum", "Rectum"]
    d50, mean, v20, v20cc = res
    # PTV doses 30..39 Gy, ten equal slabs: D50% and mean are 34.5 Gy
    assert d50.value == pytest.approx(34.5) and not d50.met
    assert d50.goal == "≥ 40 Gy and ≤ 41 Gy" and d50.unit == "Gy" and d50.priority == 1
    assert mean.value == pytest.approx(34.5) and not mean.met
    # Rectum 10..19 Gy: nothing reaches 20 Gy
    assert v20.value == 0.0 and v20.met and v20.stretch_met is True and v20.unit == "%"
    assert v20cc.value == 0.0 and v20cc.unit == "cc" and v20cc.stretch_met is None
    for r in res:
        assert isinstance(r, GoalResult)
        d = r.to_dict()
        assert set(d) >= {"structure", "metric", "goal", "value", "met", "priority", "unit"}
        json.dumps(d, allow_nan=False)


def test_met_flags_follow_the_bounds(case):
    dose, ss = case
    p = parse_protocol(PROTOCOL.replace("V20Gy\"", "V15Gy\"").replace("at_least = 40.0\nat_most = 41.0", "at_least = 34.0\nat_most = 35.0"))
    res = evaluate_goals(dose, ss, p)
    assert res[0].met  # 34.5 within [34, 35]
    # Rectum V15Gy: slabs at 15..19 Gy = 50 % -> meets <= 50 %, not the stretch <= 30 %
    assert res[2].metric == "V15Gy" and res[2].value == pytest.approx(50.0)
    assert res[2].met and res[2].stretch_met is False
    assert res[3].value == 0.0  # V20Gy[cc] unchanged


def test_missing_and_empty_structures_are_named(case):
    dose, ss = case
    p = parse_protocol(PROTOCOL.replace('structure = "Rectum"', 'structure = "Bladder"', 1))
    with pytest.raises(InputError, match="Bladder"):
        evaluate_goals(dose, ss, p)
    p = parse_protocol(PROTOCOL.replace('structure = "Rectum"', 'structure = "Empty"', 1))
    with pytest.raises(InputError, match="'Empty' is empty"):
        evaluate_goals(dose, ss, p)


def test_modes_agree_on_the_same_grid_and_mapping_input(case):
    dose, ss = case
    p = parse_protocol(PROTOCOL)
    a = evaluate_goals(dose, ss, p)
    b = evaluate_goals(dose, {s.name: s for s in ss}, p.goals, mode="occupancy")
    assert [r.value for r in a] == [r.value for r in b]
    with pytest.raises(InputError, match="mode"):
        evaluate_goals(dose, ss, p, mode="nearest")


def test_occupancy_mode_on_a_coarser_dose_grid(case):
    dose, ss = case
    # the same linear ramp on a 4 mm grid aligned on 2x2x2 blocks of the structure grid
    # (one more column so that x = 78 mm lies between dose voxel centres, not beyond the last)
    cgrid = Grid(shape=(5, 5, 21), spacing=(4.0, 4.0, 4.0), origin=(1.0, 1.0, 1.0))
    x = 1.0 + 4.0 * np.arange(21)
    coarse = Volume(np.broadcast_to((0.5 * x).astype(np.float32), cgrid.shape).copy(), cgrid)
    p = parse_protocol(PROTOCOL)
    res_occ = evaluate_goals(coarse, ss, p, mode="occupancy")
    res_lin = evaluate_goals(coarse, ss, p)
    # both recover the mean of a linear dose over the PTV slab (30..39 Gy at the fine voxel centres)
    assert res_occ[1].value == pytest.approx(34.5, abs=1e-4)
    assert res_lin[1].value == pytest.approx(34.5, abs=1e-4)
