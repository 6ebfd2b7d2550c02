"""CBCT simulation: each degradation alone, against the true daily CT."""

import numpy as np
import pytest
from scipy import ndimage

from art.errors import InputError
from art_phantoms import CbctArtefacts, cbct_grid, make_fraction
from art_phantoms.cbct import apply_artefacts

OFF = dict(noise_hu=0.0, shading_hu=0.0, hu_offset=0.0, truncation=False, streaks=False)


def _degrade(day, **on):
    """The coarse day's true CT degraded by the named artefacts only."""
    art = CbctArtefacts(**{**OFF, **on})
    tr = day.truth
    gas = (tr.daily_ct.array < -600) & tr.structures["Rectum"].mask
    out, info = apply_artefacts(tr.daily_ct.array, tr.daily_ct.grid, artefacts=art, isocenter_mm=tr.params["isocenter_mm"], seed=123, gas_mask=gas)
    return out, info


def _uniform_region(day):
    """Urine: a uniform region deep inside the bladder."""
    return ndimage.binary_erosion(day.truth.structures["Bladder"].mask, iterations=3)


def test_none_equals_daily_ct(coarse_day):
    assert np.array_equal(coarse_day.cbct.array, coarse_day.truth.daily_ct.array)
    assert coarse_day.cbct.grid.same_as(coarse_day.truth.daily_ct.grid)
    out, info = _degrade(coarse_day)
    assert np.array_equal(out, coarse_day.truth.daily_ct.array)
    assert info["hu_offset"] == 0.0 and info["streak_slices"] == 0


def test_noise_only(coarse_day):
    out, _ = _degrade(coarse_day, noise_hu=40.0)
    ct = coarse_day.truth.daily_ct.array
    region = _uniform_region(coarse_day)
    assert region.sum() > 200
    sd_ct, sd_cbct = ct[region].std(), out[region].std()
    assert sd_cbct > 2.5 * sd_ct
    assert np.sqrt(sd_cbct**2 - sd_ct**2) == pytest.approx(40.0, rel=0.15)
    assert abs(np.mean(out - ct)) < 2.0  # zero-mean


def test_shading_only(coarse_day):
    out, _ = _degrade(coarse_day, shading_hu=80.0)
    tr = coarse_day.truth
    diff = out - tr.daily_ct.array
    g = tr.daily_ct.grid
    z, y, x = g.axis_positions()
    iso = np.asarray(tr.params["isocenter_mm"])
    r = np.sqrt((x[None, None, :] - iso[0]) ** 2 + (y[None, :, None] - iso[1]) ** 2)
    r = np.broadcast_to(r, g.shape)
    body = ndimage.binary_erosion(tr.structures["BODY"].mask, iterations=2)
    soft = body & (np.abs(tr.daily_ct.array) < 100)  # muscle, organs
    centre, edge = soft & (r < 50), soft & (r > 140)
    assert centre.sum() > 100 and edge.sum() > 100
    assert diff[centre].mean() < diff[edge].mean() - 30.0  # cupping: darker centre
    assert diff[centre].mean() < -40.0
    # air hardly changes (the shading scales attenuation)
    air = ~ndimage.binary_dilation(tr.structures["BODY"].mask, iterations=2)
    assert np.abs(diff[air]).max() < 5.0
    # low frequency: smooth where the tissue is uniform
    region = _uniform_region(coarse_day)
    assert diff[region].std() < 10.0


def test_offset_only(coarse_day):
    out, info = _degrade(coarse_day, hu_offset=-55.0)
    assert np.allclose(out - coarse_day.truth.daily_ct.array, -55.0, atol=1e-3)
    assert info["hu_offset"] == -55.0


def test_offset_sampled_when_none(coarse_day):
    out, info = _degrade(coarse_day, hu_offset=None)
    assert -80.0 <= info["hu_offset"] <= 60.0 and info["hu_offset"] != 0.0
    assert np.allclose(out - coarse_day.truth.daily_ct.array, info["hu_offset"], atol=1e-3)


def test_truncation_only(coarse_day):
    out, _ = _degrade(coarse_day, truncation=True)
    tr = coarse_day.truth
    g = tr.daily_ct.grid
    z, y, x = g.axis_positions()
    iso = np.asarray(tr.params["isocenter_mm"])
    r = np.broadcast_to(np.sqrt((x[None, None, :] - iso[0]) ** 2 + (y[None, :, None] - iso[1]) ** 2), g.shape)
    outside, inside = r > 180.0, r <= 180.0
    assert np.all(out[outside] == -1000.0)
    assert np.array_equal(out[inside], tr.daily_ct.array[inside])
    # the body reaches beyond the field of view laterally: tissue was cut off
    assert np.any(tr.structures["BODY"].mask & outside)


def test_streaks_from_gas(coarse_day):
    out, info = _degrade(coarse_day, streaks=True)
    diff = out - coarse_day.truth.daily_ct.array
    assert info["streak_slices"] > 0
    slices = np.flatnonzero(np.abs(diff).max(axis=(1, 2)) > 20)
    gas = (coarse_day.truth.daily_ct.array < -600) & coarse_day.truth.structures["Rectum"].mask
    assert set(slices) <= set(np.flatnonzero(gas.any(axis=(1, 2))))
    assert np.abs(diff).max() > 40.0
    assert np.any(diff < -20) and np.any(diff > 20)  # dark and bright lines


def test_no_streaks_without_gas(coarse_day):
    tr = coarse_day.truth
    art = CbctArtefacts(**{**OFF, "streaks": True})
    out, info = apply_artefacts(tr.daily_ct.array, tr.daily_ct.grid, artefacts=art, isocenter_mm=tr.params["isocenter_mm"], seed=1, gas_mask=None)
    assert info["streak_slices"] == 0 and np.array_equal(out, tr.daily_ct.array)


def test_default_cbct_differs_as_described(fine_case, fine_day):
    cbct, tr = fine_day.cbct.array, fine_day.truth
    assert cbct.dtype == np.float32
    info = tr.params["artefacts_applied"]
    assert info["noise_hu"] == 40.0 and info["shading_hu"] == 80.0 and info["truncation"]
    assert -80.0 <= info["hu_offset"] <= 60.0
    region = _uniform_region(fine_day)
    assert cbct[region].std() > 2.0 * tr.daily_ct.array[region].std()
    # the planning CT's noise is lower than the CBCT's in the same tissue
    plan_urine = ndimage.binary_erosion(fine_case.structures["Bladder"].mask, iterations=3)
    assert cbct[region].std() > 2.0 * fine_case.ct.array[plan_urine].std()
    assert tr.params["rectal_gas"] and info["streak_slices"] > 0


def test_cbct_grid_geometry():
    g = cbct_grid((10.0, -20.0, 5.0), (3.0, 2.0, 2.0), fov_diameter_mm=360.0, length_mm=200.0)
    assert g.shape == (67, 180, 180)
    centre = g.index_to_lps(np.array([(n - 1) / 2 for n in g.shape]))
    assert np.allclose(centre, (10.0, -20.0, 5.0))
    small = cbct_grid((0, 0, 0), (2.0, 2.0, 2.0), fov_diameter_mm=250.0, length_mm=150.0)
    assert small.shape == (75, 125, 125)


def test_cbct_geometry_options(coarse_case):
    art = CbctArtefacts.none(fov_diameter_mm=300.0, length_mm=160.0, spacing=(4.0, 3.0, 3.0))
    day = make_fraction(coarse_case, fraction=2, artefacts=art)
    assert day.cbct.grid.shape == (40, 100, 100)
    assert day.cbct.grid.spacing == (4.0, 3.0, 3.0)
    assert day.truth.daily_to_planning.shape == (40, 100, 100, 3)


@pytest.mark.parametrize("kwargs", [dict(noise_hu=-1.0), dict(shading_hu=float("nan")), dict(fov_diameter_mm=0.0), dict(length_mm=-5.0), dict(spacing=(1.0, 2.0)), dict(hu_offset="x")])
def test_bad_artefacts(kwargs):
    with pytest.raises(InputError):
        CbctArtefacts(**kwargs)


def test_none_switches_everything_off():
    a = CbctArtefacts.none()
    assert a.noise_hu == 0 and a.shading_hu == 0 and a.hu_offset == 0 and not a.truncation and not a.streaks
    assert a.fov_diameter_mm == 360.0 and a.length_mm == 200.0
