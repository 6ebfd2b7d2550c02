import numpy as np
import pytest

from art.errors import InputError
from art.registration.metrics import contour_metrics, dice, hd95, mean_surface_distance, tre_stats


def _cube(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def test_dice_analytic():
    a = _cube((10, 10, 10), (0, 0, 0), (4, 4, 4))  # 64 voxels
    b = _cube((10, 10, 10), (2, 0, 0), (6, 4, 4))  # overlap 32
    assert dice(a, b) == pytest.approx(2 * 32 / 128)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


def test_surface_distance_of_shifted_cube():
    a = _cube((20, 20, 20), (5, 5, 5), (15, 15, 15))
    b = np.roll(a, 2, axis=0)  # shifted 2 voxels of 3 mm along z
    spacing = (3.0, 1.0, 1.0)
    assert mean_surface_distance(a, a, spacing) == 0.0
    assert hd95(a, b, spacing) == pytest.approx(6.0)
    msd = mean_surface_distance(a, b, spacing)
    assert 0 < msd <= 6.0
    m = contour_metrics(a, b, spacing)
    assert m["dice"] == pytest.approx(0.8) and m["hd95_mm"] == pytest.approx(6.0)


def test_tre_stats():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(4, 5, 6, 3)).astype(np.float32)
    t = tre_stats(f, f)
    assert t["max"] == 0.0 and t["n"] == 120
    g = f.copy()
    g[..., 0] += 3.0
    t = tre_stats(g, f, np.ones((4, 5, 6), bool))
    assert t["mean"] == pytest.approx(3.0, abs=1e-5) and t["p95"] == pytest.approx(3.0, abs=1e-5)
    with pytest.raises(InputError):
        tre_stats(f, f[..., :2])
    with pytest.raises(InputError):
        tre_stats(f, f, np.zeros((4, 5, 6), bool))
