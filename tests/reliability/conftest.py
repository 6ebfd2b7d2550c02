"""Fixtures of the reliability tests: a small digital patient to break in many ways."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PATIENT_NAME = "ART^Phantom"

@pytest.fixture(scope="session")
def coarse_patient(tmp_path_factory) -> Path:
    """``art phantom --seed 1 --fractions 1`` at 5×4×4 mm (read-only: copy before breaking)."""
    from art_phantoms.write import write_phantom

    out = tmp_path_factory.mktemp("patient") / "p"
    write_phantom(out, seed=1, fractions=1, spacing=(5.0, 4.0, 4.0))
    return out


@pytest.fixture
def patient(coarse_patient, tmp_path) -> Path:
    """A private copy of the coarse patient, to corrupt."""
    dst = tmp_path / "patient"
    shutil.copytree(coarse_patient, dst)
    return dst


