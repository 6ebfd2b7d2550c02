"""The measures of benchmarks/water_machine_data.py on analytic curves."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import water_machine_data as wmd  # noqa: E402


def test_gamma_of_a_dose_offset_in_a_flat_region_is_the_offset_over_the_criterion():
    x = np.linspace(0.0, 100.0, 401)
    g = wmd.gamma_1d([50.0], [80.0], x, np.full_like(x, 80.6))
    assert g[0] == pytest.approx(0.6, abs=1e-6)


def test_gamma_of_a_shifted_steep_edge_is_the_shift_over_the_distance():
    x = np.linspace(0.0, 100.0, 2001)
    edge = lambda s: 100.0 / (1.0 + np.exp((x - 50.0 - s) / 0.2))  # noqa: E731  (a steep edge: 20–80 % in 0.55 mm)
    ref = edge(0.0)
    g = wmd.gamma_1d(x[::20], ref[::20], x, edge(0.7))
    assert g.max() == pytest.approx(0.7, abs=0.02)
    assert wmd.gamma_1d(x[::20], ref[::20], x, edge(1.3)).max() > 1.0


def test_edge_measures_of_an_error_function_edge():
    from scipy.special import erf

    class Flat:
        sad_mm, pdd_ssd_mm = 1000.0, 1000.0

        @staticmethod
        def off_axis_ratio(r):
            return np.ones_like(np.asarray(r, float))

    x = np.arange(-100.0, 100.0 + 1e-9, 0.25)
    sigma = 3.0
    row = 0.5 * (erf((55.0 - np.abs(x)) / (np.sqrt(2) * sigma)) + 1.0)
    pen, half = wmd.edge_measures(x, row, Flat, 100.0)
    assert pen == pytest.approx(2 * 0.8416 * sigma, abs=0.05)  # 80–20 % of a Gaussian edge: 1.683 σ
    assert half == pytest.approx(55.0, abs=0.05)


def test_pdd_metrics_of_the_table_itself_are_zero():
    from art.dose.library import load_library

    m = load_library().machines[0]
    y = np.arange(0.5, 320.0, 0.5)
    d = m.pdd(y, 100.0) / 100.0 * m.dose_per_mu_gy * 100.0 * float(m.output_factor(100.0))
    r = wmd.pdd_metrics(m, 100.0, y, d)
    assert r["max_abs_percent"] <= 0.2 and r["gamma_max"] <= 0.2 and abs(r["dmax_dose_vs_table_percent"]) < 0.01
    r = wmd.pdd_metrics(m, 100.0, y, 1.02 * d * np.where(y > 100.0, 1.02, 1.0))
    assert r["max_abs_percent"] == pytest.approx(2.0, abs=0.2) and r["gamma_max"] > 1.0
