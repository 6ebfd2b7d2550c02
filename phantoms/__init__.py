"""Digital patients (phantoms) for art: anatomy, daily variation, CBCT simulation, ground truth.

The prostate patient::

    from art_phantoms import make_pelvis, make_fraction, CbctArtefacts

    case = make_pelvis(seed=3)                      # planning CT + structures
    day = make_fraction(case, fraction=1)           # CBCT + ground truth
    exact = make_fraction(case, fraction=1, artefacts=CbctArtefacts.none())

See :mod:`art_phantoms.pelvis` for the anatomy and the daily variation model,
:mod:`art_phantoms.cbct` for the CBCT degradations and
:mod:`art_phantoms.deformation` for the deformation tools.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .cases import DailyCase, DailyTruth, PlanningCase
from .cbct import CbctArtefacts, cbct_grid
from .deformation import inverse_consistency, jacobian_determinant
from .pelvis import LABELS, PTV_MARGIN_MM, make_fraction, make_pelvis

__all__ = [
    "PlanningCase",
    "DailyTruth",
    "DailyCase",
    "CbctArtefacts",
    "cbct_grid",
    "make_pelvis",
    "make_fraction",
    "inverse_consistency",
    "jacobian_determinant",
    "default_protocol_path",
    "default_protocol_text",
    "LABELS",
    "PTV_MARGIN_MM",
]

_PROTOCOL = "prostate_protocol.toml"


def default_protocol_path() -> Path:
    """Path of the shipped prostate protocol (``Prostate 60 Gy in 20``, TOML)."""
    return Path(str(resources.files(__name__).joinpath("data", _PROTOCOL)))


def default_protocol_text() -> str:
    """Text of the shipped prostate protocol (TOML, see docs/protocol.md)."""
    return resources.files(__name__).joinpath("data", _PROTOCOL).read_text(encoding="utf-8")
