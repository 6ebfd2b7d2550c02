"""Shared coarse digital patients for the registration tests (made once per session)."""

import pytest

from art_phantoms import CbctArtefacts, make_fraction, make_pelvis

SPACING = (4.0, 4.0, 4.0)
SETUP = (3.0, -4.0, 2.0)


@pytest.fixture(scope="session")
def reg_case():
    return make_pelvis(seed=0, spacing=SPACING)


@pytest.fixture(scope="session")
def setup_only_day(reg_case):
    """A pure set-up translation (no organ motion), with CBCT shading, noise and a HU offset."""
    return make_fraction(
        reg_case, fraction=1, bladder_filling=0.0, rectal_gas=False, rectal_filling=0.0, prostate_shift_mm=(0, 0, 0),
        prostate_rotation_deg=0.0, setup_shift_mm=SETUP, setup_rotation_deg=(0, 0, 0),
        artefacts=CbctArtefacts(hu_offset=-60.0, streaks=False),
    )


@pytest.fixture(scope="session")
def deformed_day(reg_case):
    """Bladder filling, rectal filling with gas, prostate motion and set-up; mild CBCT artefacts."""
    return make_fraction(
        reg_case, fraction=2, bladder_filling=0.35, rectal_gas=True, rectal_filling=0.15, prostate_shift_mm=(0.5, 3.0, -2.0),
        prostate_rotation_deg=3.0, setup_shift_mm=(2.0, -3.0, 1.5), setup_rotation_deg=(0, 0, 0),
        artefacts=CbctArtefacts(noise_hu=20.0, shading_hu=60.0, hu_offset=-40.0, streaks=False),
    )


@pytest.fixture(scope="session")
def deformed_reg(reg_case, deformed_day):
    from art.registration import register_deformable, register_rigid

    rigid = register_rigid(reg_case.ct, deformed_day.cbct, ct_body=reg_case.structures["BODY"].volume)
    result = register_deformable(reg_case.ct, deformed_day.cbct, rigid=rigid, ct_body=reg_case.structures["BODY"].volume)
    return rigid, result
