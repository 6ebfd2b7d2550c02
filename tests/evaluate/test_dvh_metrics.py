"""DVH and dose-volume metrics checked against brute force and analytic doses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from art.errors import GeometryError, InputError
from art.evaluate import dvh, evaluate_metric, occupancy, structure_samples
from art.evaluate.metrics import prepare_samples
from art.geometry import Grid, Volume
from art.structures import Structure


# ----------------------------------------------------------------- independent reference
def brute_hot_dose(doses, vols, v):
    """Dose to the hottest v cc, written independently: walk the voxels hottest first,
    each placed at the middle of its volume interval, and interpolate linearly."""
    items = sorted(zip(doses.tolist(), vols.tolist()), key=lambda t: -t[0])
    pts, pos = [], 0.0
    for d, w in items:
        if w <= 0:
            continue
        pts.append((pos + w / 2, d))
        pos += w
    if v <= pts[0][0]:
        return pts[0][1]
    if v >= pts[-1][0]:
        return pts[-1][1]
    for (x0, d0), (x1, d1) in zip(pts, pts[1:]):
        if x0 <= v <= x1:
            return d0 + (d1 - d0) * (v - x0) / (x1 - x0)
    raise AssertionError("unreachable")


def brute_volume_at(doses, vols, x):
    return sum(w for d, w in zip(doses.tolist(), vols.tolist()) if d >= x)


@pytest.fixture
def random_case():
    rng = np.random.default_rng(1234)
    grid = Grid(shape=(10, 12, 14), spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0))
    dose = Volume(rng.gamma(4.0, 10.0, grid.shape).astype(np.float32), grid)
    mask = rng.random(grid.shape) < 0.3
    return dose, Structure("OAR", mask, grid)


# ----------------------------------------------------------------- cross-check with brute force
@pytest.mark.parametrize("percent", [0, 1, 2, 5, 33.3, 50, 95, 98, 99.9, 100])
def test_d_percent_matches_brute_force(random_case, percent):
    dose, s = random_case
    d = dose.array[s.mask].astype(np.float64)
    w = np.full(d.size, dose.grid.voxel_volume_cc)
    expected = brute_hot_dose(d, w, percent / 100 * w.sum())
    got = dvh(dose, s).metric(f"D{percent}%")
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_metrics_match_brute_force_with_fractional_weights(random_case):
    dose, s = random_case
    rng = np.random.default_rng(7)
    weights = np.where(s.mask, rng.uniform(0.05, 1.0, s.mask.shape), 0.0)
    weights[0, 0, :3] = [0.0, 1.0, 0.5]
    h = dvh(dose, None, weights=weights, name="partial")
    sel = weights > 0
    d = dose.array[sel].astype(np.float64)
    w = weights[sel] * dose.grid.voxel_volume_cc
    total = w.sum()
    assert h.total_volume_cc == pytest.approx(total, rel=1e-12)
    for p in (2, 50, 95):
        assert h.metric(f"D{p}%") == pytest.approx(brute_hot_dose(d, w, p / 100 * total), rel=1e-9)
    for cc in (0.1, 0.5, 1.0):
        assert h.metric(f"D{cc}cc") == pytest.approx(brute_hot_dose(d, w, cc), rel=1e-9)
    for x in (10.0, 40.0, 55.5):
        assert h.metric(f"V{x}Gy[cc]") == pytest.approx(brute_volume_at(d, w, x), rel=1e-9)
        assert h.metric(f"V{x}Gy") == pytest.approx(100 * brute_volume_at(d, w, x) / total, rel=1e-9)
    assert h.metric("Dmean") == pytest.approx(sum(a * b for a, b in zip(d, w)) / total, rel=1e-9)
    assert h.metric("Dmax") == pytest.approx(brute_hot_dose(d, w, 0.03), rel=1e-9)
    assert h.metric("Dmin") == pytest.approx(brute_hot_dose(d, w, total - 0.03), rel=1e-9)


def test_dmax_dmin_interpolate_between_voxels():
    # 3 mm voxels: 0.027 cc each; doses 10, 8, 6, ... hottest first
    grid = Grid(shape=(1, 1, 6), spacing=(3.0, 3.0, 3.0), origin=(0, 0, 0))
    dose = Volume(np.array([[[2, 10, 4, 8, 0, 6]]], dtype=np.float32), grid)
    s = Structure("S", np.ones(grid.shape, bool), grid)
    h = dvh(dose, s)
    vv = 0.027
    # hottest voxel centred at 0.0135 cc, next at 0.0405 cc
    assert h.max_gy == pytest.approx(10 + (8 - 10) * (0.03 - vv / 2) / vv)
    assert h.min_gy == pytest.approx(0 + (2 - 0) * (0.03 - vv / 2) / vv)
    assert h.metric("D0%") == 10 and h.metric("D100%") == 0
    assert h.metric("D0.027cc") == pytest.approx(10 + (8 - 10) * 0.5)


def test_structure_below_0_03_cc_uses_voxel_extremes():
    grid = Grid(shape=(1, 1, 3), spacing=(2.0, 2.0, 2.0), origin=(0, 0, 0))  # 0.008 cc voxels
    dose = Volume(np.array([[[3.0, 9.0, 5.0]]], dtype=np.float32), grid)
    s = Structure("tiny", np.ones(grid.shape, bool), grid)  # 0.024 cc
    h = dvh(dose, s)
    assert h.max_gy == 9.0 and h.min_gy == 3.0
    with pytest.raises(InputError, match="tiny"):
        h.metric("D0.1cc")
    assert h.metric("D0.024cc") == 3.0  # the whole structure: its minimum


def test_uniform_dose():
    grid = Grid(shape=(4, 5, 6), spacing=(2.5, 2.5, 2.5), origin=(0, 0, 0))
    dose = Volume(np.full(grid.shape, 60.0, np.float32), grid)
    s = Structure("PTV", np.ones(grid.shape, bool), grid)
    h = dvh(dose, s)
    for m in ("D95%", "D2%", "Dmean", "Dmax", "Dmin", "D1cc"):
        assert h.metric(m) == pytest.approx(60.0, abs=1e-12)
    assert h.metric("V60Gy") == 100.0 and h.metric("V60.01Gy") == 0.0
    assert h.metric("V60Gy[cc]") == pytest.approx(s.volume_cc)


# ----------------------------------------------------------------- analytic dose
def gradient_cube(n=20, h=2.0, a=10.0, b=0.5):
    """Dose a + b*x (x in mm from the first voxel centre) along x through a cube of n^3 voxels of h mm."""
    grid = Grid(shape=(n, n, n), spacing=(h, h, h), origin=(0.0, 0.0, 0.0))
    x = np.arange(n) * h
    dose = np.broadcast_to((a + b * x).astype(np.float32), grid.shape).copy()
    lo = a + b * (-h / 2)  # continuous extremes at the cube faces
    hi = a + b * ((n - 1) * h + h / 2)
    return Volume(dose, grid), Structure("cube", np.ones(grid.shape, bool), grid), lo, hi


@pytest.mark.parametrize("percent", [2.5, 5, 10, 25, 50, 75, 90, 95, 97.5])
def test_linear_gradient_d_percent_is_analytic(percent):
    dose, s, lo, hi = gradient_cube()
    # the hottest p % of a linear ramp starts p % of the way down from the top
    expected = hi - percent / 100 * (hi - lo)
    assert dvh(dose, s).metric(f"D{percent}%") == pytest.approx(expected, abs=1e-4)


def test_linear_gradient_mean_and_v():
    n, h, a, b = 20, 2.0, 10.0, 0.5
    dose, s, lo, hi = gradient_cube(n, h, a, b)
    hist = dvh(dose, s)
    assert hist.metric("D50%") == pytest.approx((lo + hi) / 2, abs=1e-4)
    assert hist.mean_gy == pytest.approx((lo + hi) / 2, abs=1e-4)
    # at a voxel boundary the sampled count equals the analytic fraction exactly
    for k in (1, 5, 10, 17):
        level = a + b * (k * h - h / 2)
        assert hist.metric(f"V{level}Gy") == pytest.approx(100 * (hi - level) / (hi - lo), abs=1e-9)
    # elsewhere within one voxel slab (100/n %)
    for level in (12.3, 17.7, 25.1):
        assert abs(hist.metric(f"V{level}Gy") - 100 * (hi - level) / (hi - lo)) <= 100 / n + 1e-9


def test_linear_dose_on_coarser_grid_is_interpolated_exactly():
    """A linear dose on a 3 mm grid evaluated on a 1 mm structure grid equals the analytic dose there."""
    def field(x, y, z):
        return 20.0 + 0.3 * x - 0.2 * y + 0.1 * z

    dgrid = Grid(shape=(12, 14, 16), spacing=(3.0, 3.0, 3.0), origin=(-20.0, -18.0, -15.0))
    z, y, x = dgrid.axis_positions()
    dose = Volume(field(x[None, None, :], y[None, :, None], z[:, None, None]).astype(np.float32), dgrid)
    sgrid = Grid(shape=(20, 22, 24), spacing=(1.0, 1.0, 1.0), origin=(-10.0, -9.0, -8.0))
    sz, sy, sx = sgrid.axis_positions()
    zz, yy, xx = np.meshgrid(sz, sy, sx, indexing="ij")
    mask = (xx - 2) ** 2 + (yy - 1) ** 2 + (zz - 1) ** 2 <= 8.0**2
    s = Structure("ball", mask, sgrid)
    exact = Volume(field(xx, yy, zz).astype(np.float32), sgrid)
    h_interp, h_exact = dvh(dose, s), dvh(exact, s)
    for m in ("D2%", "D50%", "D98%", "Dmean", "Dmax", "Dmin", "V22Gy"):
        assert h_interp.metric(m) == pytest.approx(h_exact.metric(m), abs=2e-4), m
    assert h_interp.total_volume_cc == pytest.approx(s.volume_cc)


def test_structure_outside_dose_grid_is_an_error():
    dgrid = Grid(shape=(4, 4, 4), spacing=(3.0, 3.0, 3.0), origin=(0.0, 0.0, 0.0))
    dose = Volume(np.ones(dgrid.shape, np.float32), dgrid)
    sgrid = Grid(shape=(4, 4, 20), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))  # x up to 19 mm > 9 + 1.5
    s = Structure("long", np.ones(sgrid.shape, bool), sgrid)
    with pytest.raises(GeometryError, match="long"):
        dvh(dose, s)
    # within half a dose voxel of the last centre is fine (edge value)
    s2 = Structure("edge", np.zeros(sgrid.shape, bool), sgrid)
    s2.mask[:, :, :11] = True  # x up to 10 mm <= 10.5
    assert dvh(dose, s2).mean_gy == pytest.approx(1.0)


# ----------------------------------------------------------------- the binned curve
def test_cumulative_curve_counts_exactly(random_case):
    dose, s = random_case
    h = dvh(dose, s, bin_width_gy=0.5)
    d = dose.array[s.mask]
    vv = dose.grid.voxel_volume_cc
    assert h.dose_gy[0] == 0 and np.all(np.diff(h.dose_gy) > 0)
    assert h.dose_gy[-1] > d.max()
    assert h.volume_cc[0] == pytest.approx(s.volume_cc) and h.volume_cc[-1] == 0
    assert np.all(np.diff(h.volume_cc) <= 0)
    for k in (1, 37, 80, 150):
        assert h.volume_cc[k] == pytest.approx(np.count_nonzero(d >= h.dose_gy[k]) * vv)
    assert h.volume_pct[0] == pytest.approx(100.0)
    out = h.to_dict(max_points=50)
    assert len(out["dose_gy"]) <= 51 and out["volume_pct"][0] == pytest.approx(100.0)


def test_plain_arrays_need_voxel_volume(random_case):
    dose, s = random_case
    with pytest.raises(InputError, match="voxel_volume_cc"):
        dvh(dose.array, s.mask)
    h = dvh(dose.array, s.mask, voxel_volume_cc=0.008)
    assert h.total_volume_cc == pytest.approx(s.voxel_count * 0.008)


def test_empty_structure_is_named():
    grid = Grid(shape=(3, 3, 3), spacing=(1, 1, 1), origin=(0, 0, 0))
    dose = Volume(np.ones(grid.shape, np.float32), grid)
    with pytest.raises(InputError, match="'Bladder' is empty"):
        dvh(dose, Structure("Bladder", np.zeros(grid.shape, bool), grid))
    with pytest.raises(InputError, match="empty"):
        prepare_samples(np.array([1.0]), np.array([0.0]), name="x")


def test_non_finite_dose_rejected():
    grid = Grid(shape=(2, 2, 2), spacing=(1, 1, 1), origin=(0, 0, 0))
    arr = np.ones(grid.shape, np.float32)
    arr[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="not finite"):
        dvh(Volume(arr, grid), Structure("S", np.ones(grid.shape, bool), grid))


# ----------------------------------------------------------------- occupancy
def test_occupancy_same_grid_is_the_mask(random_case):
    _, s = random_case
    occ = occupancy(s, s.grid)
    assert occ.array.dtype == np.float32
    np.testing.assert_array_equal(occ.array, s.mask.astype(np.float32))


def test_occupancy_aligned_block_average():
    rng = np.random.default_rng(3)
    fine = Grid(shape=(9, 12, 15), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    mask = rng.random(fine.shape) < 0.4
    s = Structure("S", mask, fine)
    coarse = Grid(shape=(3, 4, 5), spacing=(3.0, 3.0, 3.0), origin=(1.0, 1.0, 1.0))  # 3x3x3 blocks
    occ = occupancy(s, coarse).array
    expected = mask.reshape(3, 3, 4, 3, 5, 3).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(occ, expected, atol=1e-6)
    assert occ.sum() * coarse.voxel_volume_cc == pytest.approx(s.volume_cc, rel=1e-6)


def test_occupancy_of_a_small_sphere_keeps_its_volume():
    r = 5.0
    fine = Grid(shape=(30, 30, 30), spacing=(0.5, 0.5, 0.5), origin=(-7.25, -7.25, -7.25))
    z, y, x = fine.axis_positions()
    mask = (x[None, None, :] ** 2 + y[None, :, None] ** 2 + z[:, None, None] ** 2) <= r**2
    s = Structure("node", mask, fine)
    dgrid = Grid(shape=(12, 12, 12), spacing=(3.0, 3.0, 3.0), origin=(-16.0, -17.0, -15.5))
    occ = occupancy(s, dgrid)
    analytic = 4 / 3 * math.pi * r**3 / 1000
    assert occ.array.sum() * dgrid.voxel_volume_cc == pytest.approx(analytic, rel=0.03)
    assert occ.array.max() <= 1.0 and occ.array.min() >= 0.0
    # with a linear dose the occupancy-weighted mean is the dose at the sphere's centre
    dz, dy, dx = dgrid.axis_positions()
    dose = Volume(np.broadcast_to((30.0 + 0.5 * dx)[None, None, :], dgrid.shape).astype(np.float32), dgrid)
    d, w, _ = structure_samples(dose, s, weights=occ)
    assert float(np.dot(d, w) / w.sum()) == pytest.approx(30.0, abs=0.05)


def test_evaluate_metric_accepts_text():
    d, w = prepare_samples(np.array([1.0, 3.0, 2.0]), 1.0)
    assert list(d) == [3.0, 2.0, 1.0]
    assert evaluate_metric("Dmean", d, w) == pytest.approx(2.0)
    assert evaluate_metric("V2Gy[cc]", d, w) == 2.0


def test_occupancy_on_a_rotated_dose_grid():
    r = 6.0
    fine = Grid(shape=(32, 32, 32), spacing=(0.5, 0.5, 0.5), origin=(-7.75, -7.75, -7.75))
    z, y, x = fine.axis_positions()
    mask = (x[None, None, :] ** 2 + y[None, :, None] ** 2 + z[:, None, None] ** 2) <= r**2
    s = Structure("node", mask, fine)
    a = np.deg2rad(30.0)
    rot = (np.cos(a), -np.sin(a), 0.0, np.sin(a), np.cos(a), 0.0, 0.0, 0.0, 1.0)
    dgrid = Grid(shape=(10, 10, 10), spacing=(2.5, 2.5, 2.5), origin=(0.0, 0.0, 0.0), direction=rot)
    centre = dgrid.index_to_lps(np.array([4.5, 4.5, 4.5]))
    dgrid = Grid(shape=dgrid.shape, spacing=dgrid.spacing, origin=tuple(-centre), direction=rot)
    occ = occupancy(s, dgrid).array
    assert occ.sum() * dgrid.voxel_volume_cc == pytest.approx(s.volume_cc, rel=0.02)
    # the dose interpolated onto the structure grid from a rotated grid: a linear field stays exact
    lx, ly, lz = dgrid.lps_coordinates(np.float64)
    dose = Volume((10.0 + 0.2 * lx + 0.1 * lz).astype(np.float32), dgrid)
    assert dvh(dose, s).mean_gy == pytest.approx(10.0, abs=1e-3)


def test_chunked_interpolation_gives_the_same_samples(monkeypatch):
    import importlib

    dvh_module = importlib.import_module("art.evaluate.dvh")

    rng = np.random.default_rng(5)
    dgrid = Grid(shape=(6, 7, 8), spacing=(3.0, 3.0, 3.0), origin=(0.0, 0.0, 0.0))
    dose = Volume(rng.random(dgrid.shape).astype(np.float32) * 50, dgrid)
    sgrid = Grid(shape=(10, 12, 14), spacing=(1.5, 1.5, 1.5), origin=(1.0, 1.0, 1.0))
    s = Structure("S", rng.random(sgrid.shape) < 0.5, sgrid)
    whole = structure_samples(dose, s)[0]
    monkeypatch.setattr(dvh_module, "_CHUNK", 7)
    chunked = structure_samples(dose, s)[0]
    np.testing.assert_array_equal(whole, chunked)
    far = Structure("far", np.ones(sgrid.shape, bool), Grid(shape=sgrid.shape, spacing=sgrid.spacing, origin=(100.0, 0.0, 0.0)))
    with pytest.raises(GeometryError, match="far"):
        structure_samples(dose, far)
