"""The collapsed-cone engine in water against the machine data: calibration, depth doses, MU,
symmetry, inverse square (art.dose.ccc.dose on CT phantoms)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from art.dose import ccc
from art.dose.ccc import kernels
from art.dose.ccc.calibration import open_field_beam, water_dose, water_grid
from art.dose.ccc.model import ccc_model
from art.geometry import Volume
from art.plan import Beam, Plan

from .conftest import open_segment

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from water_machine_data import gamma_1d, water_ct  # noqa: E402  (the phantom benchmarks/water_machine_data.py scores every machine on)




def one_beam(machine, side, *, mu=100.0, iso_y=0.0, fractions=1):
    beam = Beam("A", 0.0, isocenter_lps=(0.0, iso_y, 0.0), segments=[open_segment(machine, side, mu=mu)])
    return Plan([beam], fractions=fractions, machine_name=machine.name)


def cax(dose: Volume):
    g = dose.grid
    _, y, _ = g.axis_positions()
    return y, dose.array[g.shape[0] // 2, :, g.shape[2] // 2].astype(np.float64)


@pytest.fixture(scope="module")
def field10(machine):
    ct = water_ct(2.5, 80.0, 400.0)
    return ccc.dose(ct, one_beam(machine, 100.0), machine, dose_grid_mm=None, backend="numpy")


def test_calibration_gives_dose_per_mu_at_the_calibration_depth(field10, machine):
    y, d = cax(field10)
    assert np.interp(machine.calib_depth_mm, y, d) == pytest.approx(100 * machine.dose_per_mu_gy, rel=0.005)


def test_pdd_10x10_beyond_dmax_matches_the_machine_table(field10, machine):
    """Within 1 % from d_max (15 mm) to 300 mm, rms 0.5 %, with the commissioned depth correction (measured
    0.21 %; without it 1.82 %, −1.8 % at 300 mm: the kernels' PDD with one spectrum for all fields)."""
    y, d = cax(field10)
    depths = np.array([15.0, 20, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300])
    pdd = 100 * np.interp(depths, y, d) / np.interp(15.0, y, d)
    np.testing.assert_allclose(pdd, machine.pdd(depths, 100.0), rtol=0.01)
    assert np.sqrt(np.mean((pdd / machine.pdd(depths, 100.0) - 1) ** 2)) < 0.005
    assert 10.0 <= y[np.argmax(d)] <= 20.0


def test_pdd_10x10_meets_1_percent_1_mm_in_gamma(field10, machine):
    """γ (1 % of the d_max dose, 1 mm) ≤ 1 at every table depth from d_max to 300 mm: measured 0.18 with the
    depth correction, 0.83 without it (0.90 before the transport's entry correction; docs/dose_engines.md,
    *Both engines against the machine data*)."""
    y, d = cax(field10)
    at = machine.pdd_depth_mm[(machine.pdd_depth_mm >= machine.calib_depth_mm) & (machine.pdd_depth_mm <= 300.0)]
    g = gamma_1d(at, machine.pdd(at, 100.0), y, 100 * d / np.interp(machine.calib_depth_mm, y, d))
    assert g.max() <= 1.0, dict(zip(at.tolist(), np.round(g, 2).tolist()))


def test_pdd_10x10_of_the_10x_machine_meets_1_percent_1_mm_in_gamma():
    """The 10X 10×10 cm² PDD: γ (1 %/1 mm) ≤ 1 from d_max (23 mm) to 300 mm. Measured 0.17 with the depth
    correction; 0.54 without it, with the entry correction of the transport; 1.17 before that (the build-up
    staircase put +1.2 % just beyond d_max)."""
    from art.dose.library import load_library
    from water_machine_data import central_axis_dose, pdd_metrics

    m = next(m for m in load_library().machines if m.energy == "10X")
    y, d, _ = central_axis_dose(m, "ccc", 100.0)
    r = pdd_metrics(m, 100.0, y, d)
    assert r["gamma_max"] <= 1.0, r["local_diff_percent"]


def test_dose_is_linear_in_mu_and_fractions(machine):
    ct = water_ct(5.0, 60.0, 120.0)
    a = ccc.dose(ct, one_beam(machine, 60.0, mu=50.0), machine, dose_grid_mm=None, backend="numpy")
    b = ccc.dose(ct, one_beam(machine, 60.0, mu=100.0, fractions=3), machine, dose_grid_mm=None, backend="numpy")
    c = ccc.dose(ct, one_beam(machine, 60.0, mu=100.0, fractions=3), machine, dose_grid_mm=None, backend="numpy", per_fraction=True)
    np.testing.assert_allclose(b.array, 6 * a.array, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(c.array, 2 * a.array, rtol=1e-4, atol=1e-6)
    assert a.array.max() > 0.3


def test_symmetric_field_gives_a_symmetric_dose(machine):
    ct = water_ct(2.5, 60.0, 120.0)
    d = ccc.dose(ct, one_beam(machine, 60.0), machine, dose_grid_mm=None, backend="numpy").array
    inside = d > 0.05 * d.max()
    for flipped in (d[:, :, ::-1], d[::-1, :, :], np.swapaxes(d, 0, 2)):
        np.testing.assert_allclose(flipped[inside], d[inside], rtol=0.01)


def test_inverse_square_ssd_90_against_100(machine):
    """Same MU and collimator setting: at the same depth the dose scales about as ((SSD100 + d)/(SSD90 + d))²;
    the field at that depth is 10 % smaller at SSD 90, so its scatter is a little less (within 2 %)."""
    ct = water_ct(2.5, 60.0, 160.0)
    at100 = ccc.dose(ct, one_beam(machine, 60.0), machine, dose_grid_mm=None, backend="numpy")
    at90 = ccc.dose(ct, one_beam(machine, 60.0, iso_y=100.0), machine, dose_grid_mm=None, backend="numpy")
    y, d100 = cax(at100)
    _, d90 = cax(at90)
    for depth in (20.0, 50.0, 100.0):
        ratio = np.interp(depth, y, d90) / np.interp(depth, y, d100)
        isl = ((1000.0 + depth) / (900.0 + depth)) ** 2
        assert ratio == pytest.approx(isl, rel=0.02), depth
        assert abs(ratio - isl) < 0.25 * (isl - 1.0)


@pytest.mark.parametrize("side", [50.0, 200.0])
def test_pdd_other_fields(machine, side):
    """5×5 and 20×20 cm² from d_max to 250 mm within 1 % with the depth correction (measured 0.27 and
    0.21 %); without it, one spectrum for all fields (commission.FIT_FIELDS): 2.17 % and 2.70 % (the
    generic table's field-size dependence is not that of the kernels, docs/dose_engines.md)."""
    ct = water_ct(2.5, 0.6 * side + 40.0, 320.0)
    y, d = cax(ccc.dose(ct, one_beam(machine, side), machine, dose_grid_mm=None, backend="numpy"))
    depths = np.array([15.0, 30, 50, 100, 150, 200, 250])
    pdd = 100 * np.interp(depths, y, d) / np.interp(15.0, y, d)
    np.testing.assert_allclose(pdd, machine.pdd(depths, side), rtol=0.01)


def test_kernel_hardening_by_energy_groups_approaches_one_group_per_energy(machine, monkeypatch):
    """5×5 cm², SSD 100 cm: the dose at 250 mm relative to 50 mm with the engine's energy groups is within
    0.8 % of one group per tabulated energy (the exact hardening with depth of these kernels; 0.4 %
    measured); with one kernel for the whole spectrum (no hardening) it is more than 2 % lower (2.5 %)."""
    beam = open_field_beam(machine, 50.0, mu=100.0, isocenter_lps=(0.0, 0.0, 0.0))
    grid = water_grid((2.5,) * 3, half_width_mm=55.0, depth_mm=300.0)
    model = ccc_model(machine)
    e = kernels.load_tables().energies_mev

    def ratio(edges) -> float:
        monkeypatch.setattr(kernels, "GROUP_EDGES_MEV", edges)
        y, d = cax(Volume(water_dose(machine, model, beam, grid), grid))
        return float(np.interp(250.0, y, d) / np.interp(50.0, y, d))

    groups = ratio(kernels.GROUP_EDGES_MEV)
    exact = ratio(tuple((e[1:] + e[:-1]) / 2))
    none = ratio(())
    assert groups == pytest.approx(exact, rel=0.008)
    assert none < 0.98 * exact
