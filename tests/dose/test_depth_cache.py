"""The beams' ray traces kept between dose calculations on the same geometry (art.dose.engine.DEPTHS):
a recomputation gives the same dose to the bit without tracing again; a changed density, grid or
beam geometry traces again."""

from __future__ import annotations

import numpy as np
import pytest

from art.dose import engine
from art.dose.calc import dose
from art.plan import Beam, Plan
from tests.call_counter import count_calls

from .conftest import open_segment, water_phantom


@pytest.fixture
def traces(monkeypatch):
    """Counts the radiological-depth traces (the real ones run)."""
    engine.DEPTHS.clear()
    yield count_calls(monkeypatch, engine, "radiological_depth")
    engine.DEPTHS.clear()


def two_beam_plan(machine, mu=(100.0, 80.0), side=60.0, gantry=(0.0, 40.0)):
    beams = [Beam(f"B{i}", g, isocenter_lps=(0.0, 60.0, 0.0), segments=[open_segment(machine, side, mu=m)]) for i, (g, m) in enumerate(zip(gantry, mu))]
    return Plan(beams, 1, machine.name)


def test_a_recomputation_on_the_same_geometry_traces_no_ray_and_gives_the_same_dose(machine, traces):
    ct = water_phantom(spacing=(5.0, 4.0, 4.0), half_xz=80.0, depth=160.0)
    first = dose(ct, two_beam_plan(machine), machine, dose_grid_mm=5.0)
    assert traces[0] == 2 and engine.DEPTHS.info()["entries"] == 2
    again = dose(ct, two_beam_plan(machine), machine, dose_grid_mm=5.0)
    assert traces[0] == 2
    np.testing.assert_array_equal(again.array, first.array)
    # other MU and apertures on the same geometry: the kept traces, and the dose a fresh trace gives
    other = two_beam_plan(machine, mu=(30.0, 150.0), side=40.0)
    kept = dose(ct, other, machine, dose_grid_mm=5.0)
    assert traces[0] == 2
    engine.DEPTHS.clear()
    fresh = dose(ct, other, machine, dose_grid_mm=5.0)
    assert traces[0] == 4
    np.testing.assert_array_equal(kept.array, fresh.array)


def test_a_changed_density_grid_or_beam_traces_again(machine, traces):
    ct = water_phantom(spacing=(5.0, 4.0, 4.0), half_xz=80.0, depth=160.0)
    base = dose(ct, two_beam_plan(machine), machine, dose_grid_mm=5.0)
    n = traces[0]
    lung = ct.array.copy()
    lung[:, 10:14, :] = -700.0  # a slab of lung in the beams' path
    from art.geometry import Volume

    slab = dose(Volume(lung, ct.grid), two_beam_plan(machine), machine, dose_grid_mm=5.0)
    assert traces[0] == n + 2
    assert not np.allclose(slab.array, base.array)
    dose(ct, two_beam_plan(machine), machine, dose_grid_mm=4.0)  # another dose grid: other points
    assert traces[0] == n + 4
    dose(ct, two_beam_plan(machine, gantry=(0.0, 41.0)), machine, dose_grid_mm=5.0)  # one beam turned by 1 degree
    assert traces[0] == n + 5


def test_kept_arrays_cannot_be_changed_by_a_caller(machine, traces):
    ct = water_phantom(spacing=(5.0, 4.0, 4.0), half_xz=80.0, depth=160.0)
    dose(ct, two_beam_plan(machine), machine, dose_grid_mm=5.0)
    for arrays in list(engine.DEPTHS._entries.values()):
        for a in arrays:
            with pytest.raises(ValueError):
                a[0] = 0.0
