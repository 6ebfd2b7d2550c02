"""Daily deformation: scaling and squaring against analytic maps, and the truth of simulated fractions."""

import json

import numpy as np
import pytest
from scipy import ndimage

from art.errors import InputError
from art.geometry import Grid
from art_phantoms import CbctArtefacts, inverse_consistency, jacobian_determinant, make_fraction
from art_phantoms.deformation import exponentiate, grid_points, rotation_about_x, rotation_matrix, sample_field

from .conftest import KNOWN


# ------------------------------------------------------------ unit level
def _grid(n=41, h=2.0):
    return Grid(shape=(n, n, n), spacing=(h, h, h), origin=(-(n - 1) * h / 2,) * 3)


def _linear_velocity(grid, a):
    x, y, z = grid_points(grid)
    p = np.stack([x, y, z], axis=-1)
    return p @ np.asarray(a).T, p


def _interior(grid, margin):
    x, y, z = grid_points(grid)
    half = (grid.shape[0] - 1) * grid.spacing[0] / 2 - margin
    return (np.abs(x) < half) & (np.abs(y) < half) & (np.abs(z) < half)


def test_exponentiate_uniform_scaling():
    g = _grid()
    a = 0.1
    v, p = _linear_velocity(g, a * np.eye(3))
    d = exponentiate(v, g)
    expected = (np.exp(a) - 1.0) * p
    inner = _interior(g, 15.0)
    assert np.abs(d[inner] - expected[inner]).max() < 0.05
    jac = jacobian_determinant(d, g.spacing)
    assert np.allclose(jac[inner], np.exp(3 * a), rtol=2e-3)


def test_exponentiate_rotation_and_inverse():
    g = _grid()
    theta = np.radians(6.0)
    skew = np.array([[0, 0, 0], [0, 0, -theta], [0, theta, 0]])  # rotation about +x
    v, p = _linear_velocity(g, skew)
    fwd = exponentiate(v, g)
    expected = p @ rotation_about_x(6.0).T - p
    inner = _interior(g, 15.0)
    assert np.abs(fwd[inner] - expected[inner]).max() < 0.05
    inv = exponentiate(-v, g)
    res = inverse_consistency(fwd, g, inv, g, mask=_interior(g, 20.0))
    assert res.size > 1000 and res.max() < 0.02


def test_exponentiate_zero_and_shape_check():
    g = _grid(9)
    assert np.array_equal(exponentiate(np.zeros(g.shape + (3,)), g), np.zeros(g.shape + (3,), np.float32))
    with pytest.raises(InputError):
        exponentiate(np.zeros((3, 3, 3, 3)), g)


def test_jacobian_of_known_fields():
    g = _grid(11)
    x, y, z = grid_points(g)
    d = np.stack([0.2 * x, -0.1 * y, 0.05 * z], axis=-1)
    assert np.allclose(jacobian_determinant(d, g.spacing), 1.2 * 0.9 * 1.05)
    fold = np.stack([-2.0 * x, 0 * y, 0 * z], axis=-1)  # x -> -x: folds
    assert jacobian_determinant(fold, g.spacing).max() < 0


def test_sample_field_outside():
    g = _grid(5)
    f = np.ones(g.shape + (3,), np.float32)
    far = np.array([1000.0])
    assert np.all(sample_field(f, g, far, far, far) == 0)
    assert np.all(sample_field(f, g, far, far, far, outside="nearest") == 1)


def test_rotation_matrix_convention():
    assert np.allclose(rotation_matrix((90, 0, 0)) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    assert np.allclose(rotation_matrix((0, 0, 90)) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


# ------------------------------------------------------------ fraction level
def test_fields_shapes_and_types(coarse_case, coarse_day):
    tr = coarse_day.truth
    assert tr.daily_to_planning.shape == coarse_day.cbct.grid.shape + (3,)
    assert tr.planning_to_daily.shape == coarse_case.ct.grid.shape + (3,)
    assert tr.daily_to_planning.dtype == np.float32 and tr.planning_to_daily.dtype == np.float32
    assert tr.daily_ct.grid is coarse_day.cbct.grid or tr.daily_ct.grid.same_as(coarse_day.cbct.grid)
    assert tr.structures.grid.same_as(coarse_day.cbct.grid)
    assert tr.setup_shift_mm == KNOWN["setup_shift_mm"]
    json.dumps(tr.params)
    # the CBCT grid: 360 mm in-plane, 200 mm long, centred on the isocentre (PTV centroid)
    g = coarse_day.cbct.grid
    assert g.shape == (50, 90, 90)
    centre = g.index_to_lps(np.array([(n - 1) / 2 for n in g.shape]))
    assert np.allclose(centre, coarse_case.structures["PTV"].centroid_lps())


def test_jacobian_positive(coarse_case, coarse_day):
    tr = coarse_day.truth
    for field, grid in ((tr.planning_to_daily, coarse_case.ct.grid), (tr.daily_to_planning, coarse_day.cbct.grid)):
        jac = jacobian_determinant(field, grid.spacing)
        assert jac.min() > 0.2
        assert jac.max() < 5.0
    assert tr.params["jacobian_min"] > 0.2


def test_inverse_consistency_default_spacing(fine_case, fine_day):
    tr = fine_day.truth
    body = fine_case.structures["BODY"].mask
    res = inverse_consistency(tr.planning_to_daily, fine_case.ct.grid, tr.daily_to_planning, fine_day.cbct.grid, mask=body)
    assert res.size > 0.5 * body.sum()  # most of the body lies in the CBCT
    assert res.max() < 0.5
    assert res.mean() < 0.05
    # and the other way round
    res2 = inverse_consistency(tr.daily_to_planning, fine_day.cbct.grid, tr.planning_to_daily, fine_case.ct.grid, mask=tr.structures["BODY"].mask)
    assert res2.max() < 0.5


def test_bladder_filling_volume(fine_case, fine_day):
    before = fine_case.structures["Bladder"].volume_cc
    after = fine_day.truth.structures["Bladder"].volume_cc
    change = after / before - 1.0
    assert change == pytest.approx(KNOWN["bladder_filling"], abs=0.1 * KNOWN["bladder_filling"])


@pytest.mark.parametrize("filling", [-0.2, 0.6])
def test_bladder_filling_range(coarse_case, filling):
    day = make_fraction(coarse_case, fraction=3, bladder_filling=filling, artefacts=CbctArtefacts.none(), setup_rotation_deg=(0, 0, 0))
    change = day.truth.structures["Bladder"].volume_cc / coarse_case.structures["Bladder"].volume_cc - 1.0
    assert change == pytest.approx(filling, abs=0.1 * abs(filling) + 0.01)
    assert day.truth.params["bladder_volume_ratio_achieved"] == pytest.approx(1 + filling, abs=0.05 * abs(filling))


@pytest.mark.parametrize("day_name", ["coarse", "fine"])
def test_prostate_moves_as_requested(request, day_name):
    case = request.getfixturevalue(f"{day_name}_case")
    day = request.getfixturevalue(f"{day_name}_day")
    before = case.structures["Prostate"].centroid_lps()
    after = day.truth.structures["Prostate"].centroid_lps()
    moved = after - before - np.asarray(day.truth.setup_shift_mm)
    assert np.abs(moved - np.asarray(KNOWN["prostate_shift_mm"])).max() < 1.0
    # the exact map of the prostate centre (continuous, no voxelisation)
    c = np.asarray(case.params["anatomy"]["prostate"]["centre"])
    k = case.ct.grid.lps_to_index(c)
    u = np.array([ndimage.map_coordinates(day.truth.planning_to_daily[..., i], k[:, None], order=1)[0] for i in range(3)])
    assert np.allclose(u, np.asarray(KNOWN["prostate_shift_mm"]) + np.asarray(KNOWN["setup_shift_mm"]), atol=0.1)


def test_bones_move_rigidly_with_setup(coarse_case, coarse_day):
    bones = coarse_case.structures["Bones"].mask
    u = coarse_day.truth.planning_to_daily[bones]
    assert np.abs(u - np.asarray(KNOWN["setup_shift_mm"])).max() < 0.05
    # the soft tissue does deform
    bladder = coarse_case.structures["Bladder"].mask
    assert np.abs(coarse_day.truth.planning_to_daily[bladder] - np.asarray(KNOWN["setup_shift_mm"])).max() > 3.0


def test_setup_rotation_is_rigid_about_isocentre(coarse_case):
    rot = (0.8, -0.5, 0.6)
    day = make_fraction(coarse_case, fraction=4, bladder_filling=0.0, rectal_filling=0.0, prostate_shift_mm=(0, 0, 0), prostate_rotation_deg=0.0, setup_shift_mm=(1.0, 2.0, -1.0), setup_rotation_deg=rot, artefacts=CbctArtefacts.none())
    iso = np.asarray(day.truth.params["isocenter_mm"])
    bones = coarse_case.structures["Bones"].mask
    x, y, z = grid_points(coarse_case.ct.grid)
    p = np.stack([x[bones], y[bones], z[bones]], axis=-1)
    expected = (p - iso) @ rotation_matrix(rot).T + iso + np.array([1.0, 2.0, -1.0]) - p
    assert np.abs(day.truth.planning_to_daily[bones] - expected).max() < 0.05
    assert day.truth.params["setup_rotation_deg"] == list(rot)
    # a purely rigid day: the two fields are exact inverses (linear fields interpolate exactly)
    res = inverse_consistency(day.truth.planning_to_daily, coarse_case.ct.grid, day.truth.daily_to_planning, day.cbct.grid, mask=coarse_case.structures["BODY"].mask)
    assert res.size > 1000 and res.max() < 0.05


def test_daily_masks_match_the_field(coarse_case, coarse_day):
    """The planning masks pulled through daily_to_planning agree with the daily masks."""
    tr = coarse_day.truth
    g = coarse_day.cbct.grid
    x, y, z = grid_points(g)
    d = tr.daily_to_planning
    k = coarse_case.ct.grid.lps_to_index(np.stack([x + d[..., 0], y + d[..., 1], z + d[..., 2]], axis=-1))
    k0 = coarse_case.ct.grid.lps_to_index(np.stack([x, y, z], axis=-1))

    def dice_with_daily(name, idx):
        warped = ndimage.map_coordinates(coarse_case.structures[name].mask.astype(np.float32), np.moveaxis(idx, -1, 0), order=1) >= 0.5
        daily = tr.structures[name].mask
        return 2 * np.count_nonzero(warped & daily) / (warped.sum() + daily.sum())

    for name in ("Prostate", "Bladder", "Rectum", "FemoralHead_L", "PTV"):
        assert dice_with_daily(name, k) > 0.92, name
    # the planning bladder taken as is matches much worse (the day differs)
    assert dice_with_daily("Bladder", k0) < dice_with_daily("Bladder", k) - 0.05


def test_daily_structures_consistent(coarse_day):
    s = coarse_day.truth.structures
    body = s["BODY"].mask
    for st in s:
        assert not np.any(st.mask & ~body), st.name
    assert np.all(s["PTV"].mask[s["CTV"].mask & body])


def test_daily_gas_inside_daily_rectum(coarse_day):
    tr = coarse_day.truth
    assert tr.params["rectal_gas"] and tr.params["gas"]
    rect = tr.structures["Rectum"].mask
    ct = tr.daily_ct.array
    gas = (ct < -600) & tr.structures["BODY"].mask & ndimage.binary_erosion(tr.structures["BODY"].mask, iterations=3)
    assert np.count_nonzero(gas & rect) > 3
    assert np.count_nonzero(gas & ~ndimage.binary_dilation(rect)) == 0


def test_fraction_determinism(coarse_case):
    a = make_fraction(coarse_case, fraction=5)
    b = make_fraction(coarse_case, fraction=5)
    c = make_fraction(coarse_case, fraction=6)
    assert np.array_equal(a.cbct.array, b.cbct.array)
    assert np.array_equal(a.truth.daily_ct.array, b.truth.daily_ct.array)
    assert np.array_equal(a.truth.daily_to_planning, b.truth.daily_to_planning)
    assert a.truth.params == b.truth.params
    assert all(np.array_equal(s.mask, b.truth.structures[s.name].mask) for s in a.truth.structures)
    assert a.truth.params["seed"] != c.truth.params["seed"]
    assert not np.array_equal(a.truth.daily_to_planning, c.truth.daily_to_planning)
    # an explicit seed overrides the derived one
    d = make_fraction(coarse_case, fraction=6, seed=a.truth.params["seed"])
    assert np.array_equal(d.cbct.array, a.cbct.array)


@pytest.mark.parametrize(
    "kwargs",
    [dict(fraction=-1), dict(fraction=1.0), dict(fraction=1, seed=-3), dict(fraction=1, bladder_filling=-1.0), dict(fraction=1, prostate_shift_mm=(1, 2)), dict(fraction=1, prostate_shift_mm=(30, 0, 0)), dict(fraction=1, setup_rotation_deg=(20, 0, 0)), dict(fraction=1, artefacts="none")],
)
def test_fraction_bad_input(coarse_case, kwargs):
    with pytest.raises(InputError):
        make_fraction(coarse_case, **kwargs)
