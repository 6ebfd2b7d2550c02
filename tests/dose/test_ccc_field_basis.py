"""The per-energy central-axis depth doses of the multi-field commissioning (art.dose.ccc.field_basis)
and the spectrum fit on them (art.dose.ccc.commission.fit_parameters)."""

import dataclasses

import numpy as np
import pytest

from art.dose.ccc import commission
from art.dose.ccc.calibration import central_axis, water_dose
from art.dose.ccc.field_basis import field_basis, fit_phantom
from art.dose.ccc.model import spectrum_model

SPACING = 5.0  # coarse: the tests check the algebra, not the commissioning's accuracy
DEPTH = 200.0


@pytest.fixture(scope="module")
def bases(machine):
    e, f = commission.spectrum(0.2)
    return {side: field_basis(machine, side, e, f, spacing=SPACING, depth_mm=DEPTH, lambdas=(6.0, 8.0, 11.0)) for side in (50.0, 100.0)}


def engine_cax(machine, side, alpha, fraction, lam):
    e, f = commission.spectrum(alpha)
    beam, grid = fit_phantom(machine, side, spacing=SPACING, depth_mm=DEPTH)
    return central_axis(water_dose(machine, spectrum_model(e, f, contamination=(fraction, lam)), beam, grid), grid)[1]


def test_the_basis_gives_the_engines_dose_for_its_kernels_spectrum(machine, bases):
    """For the spectrum whose group kernels it used, the basis is the engine's dose (linear in the fluence
    and the contamination); for a spectrum tilted by 0.3 more, its depth dose normalised beyond d_max
    within 0.1 % of the engine's (the group kernels move a little: the dose's scale by 0.3 %, which the
    PDD's normalisation removes)."""
    f = commission.spectrum(0.2)[1]
    cax = engine_cax(machine, 50.0, 0.2, 0.06, 8.0)
    np.testing.assert_allclose(bases[50.0].dose(f, 0.06, 8.0), cax, rtol=1e-5)
    tilted = engine_cax(machine, 50.0, 0.5, 0.0, 8.0)
    from_basis = bases[50.0].dose(commission.spectrum(0.5)[1])
    assert not np.allclose(tilted, cax, rtol=0.01)  # the tilt changes the dose
    np.testing.assert_allclose(from_basis[3:-2] / from_basis[3], tilted[3:-2] / tilted[3], rtol=0.001)


def test_the_fit_recovers_the_spectrum_and_contamination_of_a_table_made_by_the_engine(machine, bases):
    """A machine whose 5×5 and 10×10 PDDs are the engine's for α 0.45, contamination 0.04 at λ 8 mm: the
    two-field fit finds them (the differences vanish); the file's own table gives another α."""
    alpha, frac, lam = 0.45, 0.04, 8.0
    f = commission.spectrum(alpha)[1]
    rows = machine.pdd_percent.copy()
    for side in (50.0, 100.0):
        b = bases[side]
        d = b.dose(f, frac, lam)
        pdd = 100.0 * np.interp(machine.pdd_depth_mm, b.depths_mm, d) / np.interp(machine.calib_depth_mm, b.depths_mm, d)
        rows[int(np.flatnonzero(machine.pdd_field_mm == side)[0])] = pdd
    synthetic = dataclasses.replace(machine, pdd_percent=rows)
    fields = ((50.0, 150.0, 1.0), (100.0, 150.0, 2.0))
    fit = commission.fit_parameters(synthetic, bases, fields=fields, lambdas=(6.0, 8.0, 11.0))
    assert fit["alpha"] == pytest.approx(alpha, abs=0.01)
    assert fit["fraction"] == pytest.approx(frac, abs=0.003)
    assert fit["depth_mm"] == lam and fit["cost"] < 1e-4
    real = commission.fit_parameters(machine, bases, fields=fields, lambdas=(6.0, 8.0, 11.0))
    assert abs(real["alpha"] - alpha) > 0.05 and real["cost"] > 0.01
