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
