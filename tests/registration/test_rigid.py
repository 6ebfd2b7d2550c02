import numpy as np
import pytest

from art.errors import InputError
from art.registration import register_rigid
from art.registration.rigid import euler_from_matrix

from .conftest import SETUP


def test_rigid_recovers_setup_shift(reg_case, setup_only_day):
    r = register_rigid(reg_case.ct, setup_only_day.cbct, ct_body=reg_case.structures["BODY"].volume)
    # the couch shift undoes the set-up error
    np.testing.assert_allclose(r.couch_shift_mm, -np.asarray(SETUP), atol=1.0)
    assert np.all(np.abs(r.rotation_deg) < 0.5)
    # the matrix maps CBCT points to planning points: compare with the truth field at the isocentre
    iso = np.asarray(r.center_mm)
    truth = setup_only_day.truth
    k = np.round(setup_only_day.cbct.grid.lps_to_index(iso)).astype(int)
    y = setup_only_day.cbct.grid.index_to_lps(k.astype(float))
    np.testing.assert_allclose(r.cbct_to_ct_points(y), y + truth.daily_to_planning[tuple(k)], atol=1.0)
    # inverse maps back
    np.testing.assert_allclose(r.ct_to_cbct_points(r.cbct_to_ct_points(y)), y, atol=1e-6)


def test_euler_round_trip():
    from art_phantoms.deformation import rotation_matrix

    ang = (2.0, -3.0, 5.0)
    np.testing.assert_allclose(euler_from_matrix(rotation_matrix(ang)), ang, atol=1e-9)


def test_rigid_validates(reg_case):
    with pytest.raises(InputError, match="cbct"):
        register_rigid(reg_case.ct, "not a volume")
    with pytest.raises(InputError, match="focus"):
        register_rigid(reg_case.ct, reg_case.ct, focus="skin")


@pytest.mark.parametrize("rotate", [False, True])
def test_rigid_in_own_frame_starts_from_the_link(reg_case, setup_only_day, rotate):
    """A CBCT in its own frame (issue 16, item 6): the REG's link starts the registration; same result, moved frames."""
    from art.geometry import Grid, Volume
    from art_phantoms.deformation import rotation_matrix

    body = reg_case.structures["BODY"].volume
    shared = register_rigid(reg_case.ct, setup_only_day.cbct, ct_body=body)
    a = np.eye(4)  # shared-frame point -> own-frame point
    a[:3, :3] = rotation_matrix((0.0, 0.0, 20.0)) if rotate else np.eye(3)
    a[:3, 3] = (-120.0, 60.0, 400.0)
    g = setup_only_day.cbct.grid
    own_grid = Grid(g.shape, g.spacing, tuple(a[:3, :3] @ np.asarray(g.origin) + a[:3, 3]), tuple((a[:3, :3] @ g.direction_matrix).reshape(-1)))
    own_cbct = Volume(setup_only_day.cbct.array, own_grid)
    link = np.linalg.inv(a)
    # far from the CT in its own coordinates: without the link the same registration goes wrong
    if not rotate:
        from art.errors import ArtError

        try:
            lost = register_rigid(reg_case.ct, own_cbct, ct_body=body, iterations=20)
            assert np.abs(lost.matrix_4x4 - shared.matrix_4x4 @ link).max() > 5.0
        except ArtError:  # no overlap at all
            pass
    own = register_rigid(reg_case.ct, own_cbct, ct_body=body, initial_matrix=link)
    y = np.array([[10.0, -20.0, 5.0], [-30.0, 15.0, -12.0]])  # shared-frame CBCT points and their own-frame twins
    np.testing.assert_allclose(own.cbct_to_ct_points(y @ a[:3, :3].T + a[:3, 3]), shared.cbct_to_ct_points(y), atol=0.5)
    # the set-up correction is measured from the link (its own frame's axes)
    np.testing.assert_allclose(own.couch_shift_mm, a[:3, :3] @ np.asarray(shared.couch_shift_mm), atol=0.5)
    np.testing.assert_allclose(own.rotation_deg, shared.rotation_deg, atol=0.2)
    assert own.info["frame_link"] is not None and shared.info["frame_link"] is None
    with pytest.raises(InputError, match="initial_matrix is not rigid"):
        register_rigid(reg_case.ct, own_cbct, initial_matrix=2 * np.eye(4))
