"""Both engines against every shipped machine's beam data in water (issue 19, item 4: depth doses
and profiles within 1 %/1 mm beyond d_max), with the measures of benchmarks/water_machine_data.py.

More collapsed-cone water tests (calibration, MU, symmetry, inverse square) are in test_ccc_water.py;
the collapsed cone meets 1 % on the depth doses through its commissioned depth correction
(docs/dose_engines.md, *Depth correction*)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from art.dose.library import load_library

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import water_machine_data as wmd  # noqa: E402

MACHINES = {m.energy: m for m in load_library().machines}


@pytest.mark.parametrize("energy", sorted(MACHINES))
@pytest.mark.parametrize("side", [30.0, 50.0, 100.0, 200.0, 400.0])
def test_pencil_beam_depth_dose_within_1_percent_1_mm(energy, side):
    """Measured 2026-12-05: local max 0.98 % (6X 3×3), ≤ 0.6 % for 5×5 and larger; γ ≤ 0.73;
    the absolute dose at d_max within 0.84 % of dose/MU × S_cp."""
    m = MACHINES[energy]
    y, d, _ = wmd.central_axis_dose(m, "pb", side)
    r = wmd.pdd_metrics(m, side, y, d)
    assert r["gamma_max"] <= 1.0, r
    assert r["max_abs_percent"] <= (1.5 if side < 50 else 1.0), r
    assert r["rms_percent"] <= 1.0, r
    assert abs(r["dmax_dose_vs_table_percent"]) <= 1.0, r
    assert abs(y[np.argmax(d)] - m.calib_depth_mm) <= 3.0


@pytest.mark.parametrize("energy", sorted(MACHINES))
def test_pencil_beam_profiles_within_1_mm(energy):
    """80–20 % penumbra of the 10×10 cm² field and its 50 % point at the table's depths: measured
    within 0.49 mm of the table and 0.27 mm of the geometric edge."""
    m = MACHINES[energy]
    r = wmd.profile_metrics(m, "pb")
    assert [q["depth_mm"] for q in r["depths"]] == m.penumbra_depth_mm.tolist()
    for q in r["depths"]:
        assert abs(q["penumbra_diff_mm"]) <= 1.0, q
        assert abs(q["edge_diff_mm"]) <= 1.0, q


#: the collapsed cone's cases in the default run (a few seconds each); the larger fields are slow (10–60 s)
CCC_FAST = {("6X", 30.0), ("6X", 50.0), ("10X", 30.0), ("6FFF", 30.0)}


@pytest.mark.parametrize("energy, side", [pytest.param(e, s, marks=[] if (e, s) in CCC_FAST else pytest.mark.slow)
                                          for e in sorted(MACHINES) for s in (30.0, 50.0, 100.0, 200.0, 400.0)])  # fmt: skip
def test_collapsed_cone_depth_dose_within_1_percent_1_mm(energy, side):
    """With the depth correction (commissioned on the fit's phantom, scored here on the benchmark's water
    CT): measured 2026-12-05 local max 0.34 % (6X 3×3), γ ≤ 0.28; without it the local differences
    reached 9.2 % (6X 3×3 at 300 mm) and γ 2.39 (10X 3×3). The dose at d_max within 1 % of dose/MU × S_cp."""
    m = MACHINES[energy]
    y, d, _ = wmd.central_axis_dose(m, "ccc", side)
    r = wmd.pdd_metrics(m, side, y, d)
    assert r["gamma_max"] <= 1.0, r
    assert r["max_abs_percent"] <= 1.0, r
    assert abs(r["dmax_dose_vs_table_percent"]) <= 1.0, r
    # no higher maximum before d_max than the build-up allows: the 10X 3×3 cm² peaks 0.9 % above its d_max dose at
    # 18.75 mm (the table: 99.7 % at 20 mm), the engine's build-up being before the depths the issue scores
    assert d.max() <= 1.015 * np.interp(m.calib_depth_mm, y, d)


@pytest.mark.slow
@pytest.mark.parametrize("energy", sorted(MACHINES))
def test_collapsed_cone_profiles_within_1_mm(energy):
    """80–20 % penumbra of the 10×10 cm² field and its 50 % point at the table's depths (1.25 mm grid):
    measured within 0.52 mm of the table and 0.48 mm of the geometric edge."""
    m = MACHINES[energy]
    r = wmd.profile_metrics(m, "ccc")
    for q in r["depths"]:
        assert abs(q["penumbra_diff_mm"]) <= 1.0, q
        assert abs(q["edge_diff_mm"]) <= 1.0, q
