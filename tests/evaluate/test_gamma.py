"""Gamma index: analytic cases (identity, uniform scaling, shifted gradients)."""

import numpy as np
import pytest

from art.errors import InputError
from art.evaluate.gamma import gamma_index
from art.geometry import Grid, Volume


def _grid(shape=(6, 40, 60), spacing=(2.0, 1.0, 1.0)):
    return Grid(shape, spacing, (0.0, 0.0, 0.0))


def _ramp(grid, shift_mm=0.0, slope=10.0, plateau=100.0):
    """Dose along x: 0 before x=20, rising `slope` %/mm of `plateau`, then flat (Gy)."""
    x = grid.axis_positions()[2] - shift_mm
    prof = np.clip((x - 20.0) * slope / 100.0, 0.0, 1.0) * plateau
    return Volume(np.broadcast_to(prof, grid.shape).astype(np.float32).copy(), grid)


def _blob(grid):
    z, y, x = np.meshgrid(*grid.axis_positions(), indexing="ij")
    d = 50.0 * np.exp(-((x - 30) ** 2 + (y - 20) ** 2) / (2 * 15.0**2)) + 5.0
    return Volume(d.astype(np.float32), grid)


def test_identical_is_100_percent_and_zero():
    g = _grid()
    ref = _blob(g)
    r = gamma_index(ref, ref.copy())
    assert r.pass_rate == 100.0
    assert r.n_evaluated == int(np.count_nonzero(ref.array >= 0.1 * ref.array.max()))
    assert np.nanmax(r.gamma.array) == 0.0
    assert np.isnan(r.gamma.array[ref.array < 0.1 * ref.array.max()]).all()


def test_uniform_scaling_2pct_passes_5pct_fails():
    g = _grid()
    ref = _blob(g)
    r2 = gamma_index(ref, Volume(ref.array * 1.02, g))
    assert r2.pass_rate == 100.0
    # the zero displacement bounds gamma by 2 % of D / 3 % of Dmax <= 2/3
    assert np.nanmax(r2.gamma.array) <= 2.0 / 3.0 + 1e-6
    r5 = gamma_index(ref, Volume(ref.array * 1.05, g))
    assert r5.pass_rate < 100.0
    # at the peak of the radially symmetric blob: an independent dense 1-D radial search
    imax = np.unravel_index(np.argmax(ref.array), g.shape)
    s = np.linspace(0, 4, 40001)
    f = 50.0 * np.exp(-(s**2) / (2 * 15.0**2)) + 5.0
    dd = 0.03 * ref.array.max()
    expected = np.sqrt(np.min(s**2 / 4.0 + (1.05 * f - f[0]) ** 2 / dd**2))
    assert expected > 1.0
    # trilinear interpolation of the evaluated dose (chords under the concave peak) may lower
    # gamma slightly below the continuous value; never above it (zero displacement is searched)
    assert expected - 0.05 <= r5.gamma.array[imax] <= expected + 1e-4
    # a local criterion is stricter in the low-dose region
    loc = gamma_index(ref, Volume(ref.array * 1.04, g), global_norm=False)
    glob = gamma_index(ref, Volume(ref.array * 1.04, g))
    assert loc.pass_rate < glob.pass_rate


@pytest.mark.parametrize("shift, passes", [(1.0, True), (3.0, False)])
def test_shifted_steep_gradient(shift, passes):
    g = _grid()
    ref = _ramp(g)
    ev = _ramp(g, shift_mm=shift)  # 10 %/mm: a 1 mm shift is a 10 % dose error
    r = gamma_index(ref, ev, dose_percent=3.0, distance_mm=2.0)
    x = g.axis_positions()[2]
    in_gradient = (x > 22) & (x < 28)
    gam = r.gamma.array[3, 20, in_gradient]
    if passes:
        assert r.pass_rate == 100.0
        # linear gradient G (Gy/mm), shift δ: gamma = δ / sqrt(Δd² + (ΔD / G)²)
        assert np.allclose(gam, shift / np.sqrt(2.0**2 + (3.0 / 10.0) ** 2), atol=0.02)
    else:
        assert np.all(gam > 1.0)
        # beyond Δd the lattice is twice as coarse: gamma is overestimated by a few percent at most
        true = shift / np.sqrt(2.0**2 + (3.0 / 10.0) ** 2)
        assert np.all((gam >= true - 0.01) & (gam <= true * 1.06))
        assert r.pass_rate < 100.0
    # without the distance criterion the 1 mm shift would fail (it is the DTA that saves it)
    if passes:
        strict = gamma_index(ref, ev, dose_percent=3.0, distance_mm=0.2, search_step_mm=0.05)
        assert strict.pass_rate < 100.0


def test_sub_voxel_shift_uses_interpolation():
    # 3 mm voxels, a 1.5 mm shift: only interpolation between voxels finds the match
    # (a linear ramp, which trilinear interpolation reproduces exactly between voxels)
    g = Grid((3, 10, 40), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0))
    x = g.axis_positions()[2]

    def lin(shift):
        return Volume(np.broadcast_to(20.0 + 2.0 * (x - shift), g.shape).astype(np.float32).copy(), g)

    ref, ev = lin(0.0), lin(1.5)  # 2 Gy/mm = 1.5 % of the 137 Gy maximum per mm
    r = gamma_index(ref, ev, dose_percent=1.0, distance_mm=2.0)
    inner = r.gamma.array[:, :, 1:-1]  # the last column has no evaluated dose beyond it
    dd = 0.01 * ref.array.max()
    assert np.nanmax(inner) == pytest.approx(1.5 / np.sqrt(2.0**2 + (dd / 2.0) ** 2), abs=0.02)
    assert np.all(inner[np.isfinite(inner)] <= 1.0)
    # nearest-voxel search only (no interpolation) could not do better than a 0 or 3 mm shift:
    # 3 mm costs gamma 1.5 and 0 mm a 3 Gy = 2.2 % difference (gamma 2.2)


def test_threshold_mask_and_resampling():
    g = _grid()
    ref = _blob(g)
    mask = np.zeros(g.shape, bool)
    mask[:, :, :30] = True
    r = gamma_index(ref, ref.copy(), mask=mask, threshold_percent=50.0)
    sel = mask & (ref.array >= 0.5 * ref.array[mask].max())
    assert r.n_evaluated == int(sel.sum())
    # an evaluated dose on another (finer) grid is resampled
    fine = Grid((11, 79, 119), (1.0, 0.5, 0.5), (0.0, 0.0, 0.0))
    ev = _blob(fine)
    assert gamma_index(ref, ev).pass_rate > 99.0


def test_validation():
    g = _grid()
    ref = _blob(g)
    with pytest.raises(InputError, match="distance_mm"):
        gamma_index(ref, ref, distance_mm=0)
    with pytest.raises(InputError, match="threshold"):
        gamma_index(ref, ref, threshold_percent=100)
    with pytest.raises(InputError, match="mask"):
        gamma_index(ref, ref, mask=np.ones((2, 2, 2), bool))
    with pytest.raises(InputError, match="normalisation"):
        gamma_index(Volume(np.zeros(g.shape, np.float32), g), ref)


def _brute_force_gamma2(ref, ev, spacing, offs, norm, dose_percent, distance_mm, max_gamma, sel):
    """γ² by exhaustive search: every displacement for every voxel, the evaluated dose interpolated at
    arbitrary points (scipy map_coordinates), displacements leaving the grid skipped."""
    from scipy.ndimage import map_coordinates

    idx = np.argwhere(sel).astype(np.float64)
    hi = np.array(ref.shape, dtype=np.float64) - 1
    best = np.full(idx.shape[0], max_gamma**2)
    d_ref = ref[sel].astype(np.float64)
    for off in offs:
        c = idx + off / spacing
        inside = np.all((c >= -1e-9) & (c <= hi + 1e-9), axis=1)
        val = map_coordinates(ev, np.clip(c[inside], 0, hi).T, order=1, mode="nearest", prefilter=False)
        g2 = off @ off / distance_mm**2 + (val - d_ref[inside]) ** 2 / (dose_percent / 100 * norm) ** 2
        best[inside] = np.minimum(best[inside], g2)
    return best


@pytest.mark.parametrize("spacing", [(2.5, 2.5, 2.5), (3.0, 1.2, 0.9)])
def test_search_matches_an_exhaustive_search_with_point_interpolation(spacing):
    """The gather-and-blend search (same cell for every voxel) against an exhaustive search interpolating
    at arbitrary points: the same γ, including voxels on the grid's faces (displacements leaving the grid)."""
    from scipy.ndimage import gaussian_filter

    from art.evaluate.gamma import _offsets

    rng = np.random.default_rng(5)
    grid = Grid((9, 11, 13), spacing, (0.0, 0.0, 0.0))
    ref = gaussian_filter(rng.random(grid.shape), 1.5) * 300.0 + 5.0
    ev = ref * (1.06 + 0.05 * gaussian_filter(rng.standard_normal(grid.shape), 1))
    res = gamma_index(Volume(ref.astype(np.float32), grid), Volume(ev.astype(np.float32), grid), threshold_percent=0.0)
    assert res.n_evaluated == ref.size  # every voxel, those on the faces included
    assert 5.0 < res.pass_rate < 95.0
    r32, e32 = ref.astype(np.float32).astype(np.float64), ev.astype(np.float32).astype(np.float64)
    offs = _offsets(4.0, 0.2, 2.0, np.asarray(spacing), grid.shape)
    want = _brute_force_gamma2(r32, e32, np.asarray(spacing), offs, float(r32.max()), 3.0, 2.0, 2.0, np.ones(grid.shape, bool))
    np.testing.assert_allclose(res.gamma.array.ravel().astype(np.float64), np.sqrt(want), rtol=1e-5, atol=1e-6)


def test_nan_evaluated_dose_is_never_a_match():
    """Where the evaluated dose is NaN (outside its grid) no displacement lands; a zero-weight NaN corner
    (a whole-voxel displacement next to it) does not spoil a finite value."""
    g = _grid((4, 10, 30), (2.0, 1.0, 1.0))
    ref = Volume(np.full(g.shape, 10.0, np.float32), g)
    ev = np.full(g.shape, 10.0, np.float32)
    ev[:, :, 15:] = np.nan
    res = gamma_index(ref, Volume(ev, g), threshold_percent=0.0)
    gam = res.gamma.array
    assert np.all(gam[:, :, :15] == 0.0)  # the same dose in place
    # x = 15 is 1 mm from x = 14 (finite, same dose): γ = 1 mm / 2 mm; x = 16 is 2 mm away: γ = 1
    np.testing.assert_allclose(gam[:, :, 15], 0.5, atol=1e-6)
    np.testing.assert_allclose(gam[:, :, 16], 1.0, atol=1e-6)
    assert np.all(gam[:, :, 19:] == 2.0)  # nothing finite within the search: capped
