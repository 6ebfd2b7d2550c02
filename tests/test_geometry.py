"""Grid and Volume: index <-> LPS round trips, resampling, SimpleITK conversion."""

import numpy as np
import pytest

from art.errors import GeometryError, InputError
from art.geometry import Grid, Volume, resample, resample_mask


def test_identity_grid_maps_index_to_lps_by_spacing(small_grid):
    p = small_grid.index_to_lps([2, 3, 4])  # k, j, i
    # x = ox + i*dx, y = oy + j*dy, z = oz + k*dz
    np.testing.assert_allclose(p, [-20 + 4 * 1.5, -15 + 3 * 2.0, 40 + 2 * 3.0])


def test_rotated_grid_round_trip(rotated_grid):
    rng = np.random.default_rng(1)
    idx = rng.uniform(-2, 20, size=(200, 3))
    back = rotated_grid.lps_to_index(rotated_grid.index_to_lps(idx))
    np.testing.assert_allclose(back, idx, atol=1e-9)


def test_rotated_grid_steps_follow_direction_columns(rotated_grid):
    d = rotated_grid.direction_matrix
    p0 = rotated_grid.index_to_lps([0, 0, 0])
    np.testing.assert_allclose(p0, rotated_grid.origin)
    # one step in i (column) moves dx along the first direction column; k moves dz along the third
    np.testing.assert_allclose(rotated_grid.index_to_lps([0, 0, 1]) - p0, d[:, 0] * rotated_grid.spacing[2], atol=1e-12)
    np.testing.assert_allclose(rotated_grid.index_to_lps([1, 0, 0]) - p0, d[:, 2] * rotated_grid.spacing[0], atol=1e-12)


def test_lps_coordinates_match_index_to_lps(rotated_grid):
    x, y, z = rotated_grid.lps_coordinates(np.float64)
    k, j, i = 3, 5, 7
    np.testing.assert_allclose([x[k, j, i], y[k, j, i], z[k, j, i]], rotated_grid.index_to_lps([k, j, i]), atol=1e-9)


def test_grid_validation_names_the_parameter():
    with pytest.raises(InputError, match="spacing"):
        Grid(shape=(2, 2, 2), spacing=(1, 0, 1), origin=(0, 0, 0))
    with pytest.raises(InputError, match="shape"):
        Grid(shape=(2, 2), spacing=(1, 1, 1), origin=(0, 0, 0))
    with pytest.raises(GeometryError, match="orthonormal"):
        Grid(shape=(2, 2, 2), spacing=(1, 1, 1), origin=(0, 0, 0), direction=(1, 0, 0, 0, 2, 0, 0, 0, 1))
    with pytest.raises(GeometryError, match="does not match"):
        Volume(np.zeros((2, 2, 3)), Grid(shape=(2, 2, 2), spacing=(1, 1, 1), origin=(0, 0, 0)))


def test_grid_dict_round_trip(rotated_grid):
    assert Grid.from_dict(rotated_grid.to_dict()) == rotated_grid


def _linear_image(grid: Grid) -> Volume:
    x, y, z = grid.lps_coordinates(np.float64)
    return Volume((0.5 * x - 0.25 * y + 2.0 * z + 7.0).astype(np.float32), grid)


def test_resample_reproduces_a_linear_image_exactly():
    src_grid = Grid(shape=(30, 40, 50), spacing=(2.0, 2.0, 2.0), origin=(-50, -40, -30))
    src = _linear_image(src_grid)
    # a finer, shifted target fully inside the source: linear interpolation of a linear function is exact
    tgt = Grid(shape=(20, 25, 30), spacing=(1.3, 1.7, 2.1), origin=(-40.3, -30.1, -20.7))
    out = resample(src, tgt, order=1)
    np.testing.assert_allclose(out.array, _linear_image(tgt).array, atol=1e-3)


def test_resample_between_rotated_grids_is_exact_for_linear_image():
    from tests.conftest import rotation_direction

    src_grid = Grid(shape=(40, 60, 60), spacing=(2.0, 2.0, 2.0), origin=(-60, -60, -40))
    src = _linear_image(src_grid)
    tgt = Grid(shape=(10, 20, 20), spacing=(2.0, 1.5, 1.5), origin=(-5, -8, -10), direction=rotation_direction(35, "z"))
    out = resample(src, tgt, order=1)
    np.testing.assert_allclose(out.array, _linear_image(tgt).array, atol=1e-3)


def test_resample_fills_outside_and_shift_moves_content():
    g = Grid(shape=(10, 10, 10), spacing=(1, 1, 1), origin=(0, 0, 0))
    a = np.zeros(g.shape, np.float32)
    a[5, 5, 5] = 1.0
    shifted = Grid(shape=g.shape, spacing=g.spacing, origin=(2.0, 0.0, 0.0))  # 2 mm towards +x
    out = resample(Volume(a, g), shifted, order=0, fill_value=-1)
    assert out.array[5, 5, 3] == 1.0  # the point x=5 is at i=3 on the shifted grid
    assert np.all(out.array[:, :, -2:] == -1)  # beyond the source


def test_resample_mask_modes():
    g = Grid(shape=(20, 20, 20), spacing=(1, 1, 1), origin=(0, 0, 0))
    m = np.zeros(g.shape, bool)
    m[5:15, 5:15, 5:15] = True
    coarse = g.with_spacing((2.0, 2.0, 2.0))
    frac = resample_mask(Volume(m, g), coarse, mode="fraction").array
    assert frac.dtype == np.float32 and frac.min() >= 0 and frac.max() <= 1
    # occupancy integrates to the volume (1000 mm^3) within a voxel layer
    assert abs(frac.sum() * 8.0 - 1000.0) < 150.0
    for mode in ("linear", "nearest"):
        out = resample_mask(Volume(m, g), g, mode=mode).array
        assert out.dtype == bool and np.array_equal(out, m)
    with pytest.raises(InputError, match="mode"):
        resample_mask(Volume(m, g), g, mode="cubic")


def test_with_spacing_covers_the_same_extent(small_grid):
    coarse = small_grid.with_spacing((6.0, 4.0, 3.0))
    lo, hi = small_grid.corners_lps().min(0), small_grid.corners_lps().max(0)
    clo, chi = coarse.corners_lps().min(0), coarse.corners_lps().max(0)
    assert np.all(clo <= lo + 1e-9) and np.all(chi >= hi - 1e-9)
    np.testing.assert_allclose((clo + chi) / 2, (lo + hi) / 2, atol=1e-9)


def test_crop_keeps_positions(rotated_grid):
    sub = rotated_grid.crop((slice(2, 6), slice(3, 10), slice(1, 5)))
    np.testing.assert_allclose(sub.index_to_lps([1, 2, 3]), rotated_grid.index_to_lps([3, 5, 4]), atol=1e-9)


def test_sitk_round_trip_keeps_geometry_and_values(rotated_grid):
    arr = np.random.default_rng(0).normal(size=rotated_grid.shape).astype(np.float32)
    img = Volume(arr, rotated_grid).to_sitk()
    # SimpleITK must place voxel (i, j, k) at the same LPS point
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((3, 5, 2)), rotated_grid.index_to_lps([2, 5, 3]), atol=1e-6)
    back = Volume.from_sitk(img)
    assert back.grid.same_as(rotated_grid, tol_mm=1e-6)
    np.testing.assert_array_equal(back.array, arr)


def test_mask_volume_converts_to_uint8_image(small_grid):
    m = np.zeros(small_grid.shape, bool)
    m[2, 3, 4] = True
    back = Volume.from_sitk(Volume(m, small_grid).to_sitk())
    assert back.array[2, 3, 4] == 1 and back.array.sum() == 1


def test_pad_is_the_inverse_of_crop(rotated_grid):
    big = rotated_grid.pad((1, 2, 3))
    assert big.shape == tuple(s + 2 * k for s, k in zip(rotated_grid.shape, (1, 2, 3)))
    assert big.crop((slice(1, -1), slice(2, -2), slice(3, -3))).same_as(rotated_grid)
    # the padded grid's voxel [1, 2, 3] is the original's [0, 0, 0]
    np.testing.assert_allclose(big.index_to_lps([1, 2, 3]), rotated_grid.index_to_lps([0, 0, 0]), atol=1e-9)
    with pytest.raises(InputError):
        rotated_grid.pad(-1)
    with pytest.raises(InputError):
        rotated_grid.pad(1.5)
