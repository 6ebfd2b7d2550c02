"""Shared (session-scoped) digital patients for the phantom tests: made once, read-only."""

import pytest

from art_phantoms import CbctArtefacts, make_fraction, make_pelvis

# a fraction with every variation switched on and known, and no CBCT artefact
KNOWN = dict(
    bladder_filling=0.4,
    rectal_gas=True,
    rectal_filling=0.15,
    prostate_shift_mm=(0.5, 3.0, -2.0),
    prostate_rotation_deg=3.0,
    setup_shift_mm=(2.0, -3.0, 1.5),
    setup_rotation_deg=(0.0, 0.0, 0.0),
)


@pytest.fixture(scope="session")
def coarse_case():
    """Seed-0 pelvis on a 4 mm grid (fast)."""
    return make_pelvis(seed=0, spacing=(4.0, 4.0, 4.0))


@pytest.fixture(scope="session")
def coarse_day(coarse_case):
    """A known fraction of the coarse case, CBCT without artefacts."""
    return make_fraction(coarse_case, fraction=1, artefacts=CbctArtefacts.none(), **KNOWN)


@pytest.fixture(scope="session")
def fine_case():
    """Seed-1 pelvis at the default spacing (3, 2, 2) mm."""
    return make_pelvis(seed=1)


@pytest.fixture(scope="session")
def fine_day(fine_case):
    """A known fraction of the fine case (default artefacts)."""
    return make_fraction(fine_case, fraction=2, **KNOWN)
