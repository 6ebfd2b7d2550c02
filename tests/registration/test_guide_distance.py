"""The guide edges' signed distance on a cropped box: the same guide as on the whole grid, to the bit."""

import numpy as np
import pytest
from scipy import ndimage

from art.registration.deformable_images import _GUIDE_REACH_MM, _signed_distance


def _whole_grid(mask, spacing):
    return (ndimage.distance_transform_edt(~mask, sampling=spacing) - ndimage.distance_transform_edt(mask, sampling=spacing)).astype(np.float32)


@pytest.mark.parametrize("where", ["middle", "edge"])
def test_cropped_signed_distance_gives_the_whole_grids_guide(where):
    spacing = (3.0, 1.5, 1.25)
    shape = (60, 130, 150)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    c = (90.0, 95.0, 90.0) if where == "middle" else (10.0, 20.0, 180.0)
    mask = ((z - c[0]) / 25) ** 2 + ((y - c[1]) / 18) ** 2 + ((x - c[2]) / 30) ** 2 <= 1.0
    mask |= (np.abs(z - c[0]) < 6) & (np.abs(y - c[1] - 25) < 4) & (np.abs(x - c[2]) < 40)  # a thin arm
    assert mask.any() and not mask.all()
    got = _signed_distance(mask, spacing)
    want = _whole_grid(mask, spacing)
    near = np.abs(want) <= _GUIDE_REACH_MM
    np.testing.assert_array_equal(got[near], want[near])
    assert np.all(got[~near] == _GUIDE_REACH_MM)
    np.testing.assert_array_equal(np.tanh(got / 4.0), np.tanh(want / 4.0))


def test_extension_onto_a_padded_grid_matches_the_interpolating_extension():
    """extend_onto_padded (edge padding × fade) against extend_field at the padded grid's voxel centres."""
    from art.geometry import Grid
    from art.registration.deformable import extend_field, extend_onto_padded
    from art.registration.fields import grid_points

    rng = np.random.default_rng(2)
    g = Grid((7, 9, 11), (3.0, 2.0, 1.5), (-5.0, 3.0, 10.0))
    u = rng.normal(0, 3, g.shape + (3,)).astype(np.float32)
    pad = (3, 5, 4)
    got = extend_onto_padded(u, g, pad, fade_mm=7.0)
    want = extend_field(u, g, grid_points(g.pad(pad)), fade_mm=7.0)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.all(got[0, 0, 0] == 0.0)  # corner: beyond the fade
    np.testing.assert_array_equal(got[3:-3, 5:-5, 4:-4], u)  # the grid itself: its own values
