"""Registration fast paths against the plain computation: guide distances on a cropped box, the field extended onto a padded grid, masks pulled only near their bounding boxes."""

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


def test_pulled_masks_equal_sampling_every_point():
    """propagate._pull (indices once per grid, each mask only near its bounding box) against
    sample_image at every point, for masks inside, at the edge of and empty on the planning grid."""
    from art.geometry import Grid
    from art.registration.fields import grid_points, sample_image
    from art.registration.propagate import _pull
    from art.structures import Structure, StructureSet

    rng = np.random.default_rng(8)
    plan_grid = Grid((20, 30, 26), (3.0, 2.0, 2.0), (-20.0, -30.0, -25.0))
    target = Grid((18, 28, 30), (3.0, 1.8, 1.9), (-22.0, -28.0, -26.0))
    z, y, x = np.meshgrid(*[np.arange(n) for n in plan_grid.shape], indexing="ij")
    masks = {"ball": (z - 10) ** 2 / 16 + (y - 14) ** 2 / 30 + (x - 12) ** 2 / 20 <= 1, "edge": (x < 3) & (y > 20), "empty": np.zeros(plan_grid.shape, bool)}
    ss = StructureSet(plan_grid, [Structure(n, m, plan_grid) for n, m in masks.items()])
    pts = grid_points(target)
    pts = pts + rng.normal(0, 1.5, pts.shape)  # a rough deformation
    got = _pull(ss, pts, target)
    for name, m in masks.items():
        want = sample_image(m.astype(np.float32), plan_grid, pts, order=1, fill_value=0.0) >= 0.5
        np.testing.assert_array_equal(got[name].mask, want)
    assert got["ball"].mask.sum() > 50 and got["edge"].mask.sum() > 10 and not got["empty"].mask.any()
