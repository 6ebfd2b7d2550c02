"""The content-keyed cache of polygon dose samples (art.evaluate.sample_cache): same content → same
samples without sampling again; any change of dose, grid or polygons → sampled again; callers cannot
alter what it holds; it stays within its byte budget."""

from __future__ import annotations

import numpy as np
import pytest

from art.evaluate import polygons, sample_cache
from art.evaluate.polygons import polygon_samples
from art.geometry import Grid, Volume
from art.structures import Structure
from tests.call_counter import count_calls

GRID = Grid((16, 24, 24), (2.5, 2.5, 2.5), (-28.7, -29.1, -18.9))
TINY = Grid((1, 1, 1), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def disc_structure(r: float = 12.0, name: str = "S") -> Structure:
    t = np.linspace(0.0, 2 * np.pi, 90, endpoint=False)
    polys = [np.column_stack([r * np.cos(t), r * np.sin(t), np.full(t.size, z)]) for z in np.arange(-10.0, 10.1, 2.5)]
    return Structure(name, np.zeros(TINY.shape, bool), TINY, contours=tuple(polys))


def gradient_dose(slope: float = 0.3) -> Volume:
    x, y, z = GRID.lps_coordinates(np.float64)
    return Volume((50.0 + slope * x + 0.1 * z).astype(np.float32), GRID)


@pytest.fixture(autouse=True)
def empty_cache():
    sample_cache.clear()
    yield
    sample_cache.clear()


@pytest.fixture
def planes(monkeypatch):
    """Counts the planes sampled (the real sampler runs)."""
    return count_calls(monkeypatch, polygons, "_sample_plane")


def test_the_same_structure_in_the_same_dose_is_sampled_once(planes):
    s, dose = disc_structure(), gradient_dose()
    d1, v1 = polygon_samples(dose, s)
    first = planes[0]
    assert first > 0
    # another Volume and Structure object with equal content (as a reader or a copy would give): a hit
    d2, v2 = polygon_samples(Volume(dose.array.copy(), GRID), disc_structure(name="renamed"))
    assert planes[0] == first
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(v1, v2)
    assert sample_cache.info()["entries"] == 1


def test_any_change_of_dose_grid_polygons_or_parameters_samples_again(planes):
    s, dose = disc_structure(), gradient_dose()
    d0, _ = polygon_samples(dose, s)
    n = planes[0]
    changed = dose.array.copy()
    changed[8, 12, 12] = np.nextafter(changed[8, 12, 12], np.float32(np.inf))  # one voxel, one ulp
    polygon_samples(Volume(changed, GRID), s)
    assert planes[0] == 2 * n
    shifted = Grid(GRID.shape, GRID.spacing, (GRID.origin[0] + 0.5, GRID.origin[1], GRID.origin[2]))
    d_shift, _ = polygon_samples(Volume(dose.array, shifted), s)
    assert planes[0] == 3 * n
    assert not np.array_equal(d_shift, d0)  # the gradient along x: a shifted grid is another dose
    polygon_samples(dose, disc_structure(r=12.001))
    assert planes[0] == 4 * n
    polygon_samples(dose, s, step_mm=0.5)
    assert planes[0] == 5 * n
    polygon_samples(dose, s)  # the first again: still held
    assert planes[0] == 5 * n


def test_callers_get_copies(planes):
    s, dose = disc_structure(), gradient_dose()
    d1, v1 = polygon_samples(dose, s)
    keep = d1.copy()
    d1 *= 2.0
    v1[:] = 0.0
    d2, v2 = polygon_samples(dose, s)
    np.testing.assert_array_equal(d2, keep)
    assert v2.sum() > 0


def test_the_cache_stays_within_its_byte_budget(monkeypatch, planes):
    s = disc_structure()
    d, v = polygon_samples(gradient_dose(0.3), s)
    one = d.nbytes + v.nbytes
    monkeypatch.setattr(sample_cache, "MAX_BYTES", int(2.5 * one))
    for slope in (0.31, 0.32, 0.33, 0.34):
        polygon_samples(gradient_dose(slope), s)
    info = sample_cache.info()
    assert info["bytes"] <= sample_cache.MAX_BYTES
    assert 1 <= info["entries"] <= 2
    n = planes[0]
    polygon_samples(gradient_dose(0.3), s)  # the oldest was dropped: sampled again
    assert planes[0] > n


def test_errors_are_not_cached(planes):
    s = disc_structure(r=40.0)  # reaches outside the dose grid
    from art.errors import GeometryError

    for _ in range(2):
        with pytest.raises(GeometryError, match="'S'"):
            polygon_samples(gradient_dose(), s)
    assert sample_cache.info()["entries"] == 0


def test_prefetch_on_threads_gives_the_sequential_numbers_and_skips_bad_structures(planes):
    from art.errors import GeometryError
    from art.evaluate.polygons import prefetch_samples

    dose = gradient_dose()
    good = [disc_structure(r, name=f"S{r}") for r in (6.0, 9.0, 12.0)]
    sequential = [polygon_samples(dose, s) for s in good]
    sample_cache.clear()
    prefetch_samples(dose, good + [disc_structure(40.0, name="outside")], threads=2)  # the bad one: no error here
    assert sample_cache.info()["entries"] == 3
    n = planes[0]
    for s, (d, v) in zip(good, sequential):
        d2, v2 = polygon_samples(dose, s)
        np.testing.assert_array_equal(d2, d)
        np.testing.assert_array_equal(v2, v)
    assert planes[0] == n  # all from the cache
    with pytest.raises(GeometryError, match="'outside'"):
        polygon_samples(dose, disc_structure(40.0, name="outside"))


def test_prefetch_of_several_doses_caches_every_pair_with_the_sequential_numbers(planes):
    from art.evaluate.polygons import _polygon_area, prefetch_samples

    doses = [gradient_dose(0.3), gradient_dose(0.5)]
    good = [disc_structure(r, name=f"S{r}") for r in (6.0, 12.0)]
    assert _polygon_area(good[1]) == pytest.approx(4 * _polygon_area(good[0]), rel=0.01)
    sequential = [polygon_samples(d, s) for d in doses for s in good]
    sample_cache.clear()
    prefetch_samples(doses, good, threads=2)
    assert sample_cache.info()["entries"] == 4
    n = planes[0]
    for (d, s), (want_d, want_v) in zip([(d, s) for d in doses for s in good], sequential):
        got_d, got_v = polygon_samples(d, s)
        np.testing.assert_array_equal(got_d, want_d)
        np.testing.assert_array_equal(got_v, want_v)
    assert planes[0] == n
