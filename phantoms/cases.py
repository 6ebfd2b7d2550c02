"""Containers for a digital patient: the planning case and the daily fractions with their ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from art.geometry import Volume
from art.structures import StructureSet

__all__ = ["PlanningCase", "DailyTruth", "DailyCase"]


@dataclass
class PlanningCase:
    """A digital patient at planning.

    Attributes
    ----------
    ct : Volume
        Planning CT in HU, float32, shape (z, y, x), with CT-like noise.
    structures : StructureSet
        Masks on ``ct.grid``: ``BODY`` (EXTERNAL), ``CTV`` (prostate and the
        proximal seminal vesicles, CTV), ``PTV`` (CTV + margin, PTV),
        ``Bladder``, ``Rectum``, ``FemoralHead_L``, ``FemoralHead_R``,
        ``Prostate``, ``SeminalVesicles`` and ``Bones`` (ORGAN).
    seed : int
        The seed the case was made from (same seed, same arrays).
    params : dict
        The sampled anatomical parameters (JSON-serialisable: numbers, lists,
        strings, dicts). They fully describe the analytic anatomy, so that a
        daily fraction can re-synthesise it at deformed positions.
    """

    ct: Volume
    structures: StructureSet
    seed: int
    params: dict = field(default_factory=dict)


@dataclass
class DailyTruth:
    """The ground truth of one treatment fraction.

    Attributes
    ----------
    daily_ct : Volume
        The true anatomy of the day in HU (CT noise, no CBCT artefacts), float32,
        on the CBCT grid.
    structures : StructureSet
        The true daily masks on the CBCT grid (same names as the planning set).
    daily_to_planning : ndarray, float32, shape (nz, ny, nx, 3)
        On the CBCT grid: displacement ``(dx, dy, dz)`` in LPS mm such that the
        tissue at CBCT voxel centre ``y`` is the planning tissue at
        ``y + d(y)`` (planning frame of reference). Includes the set-up error.
    planning_to_daily : ndarray, float32, shape (nz, ny, nx, 3)
        On the planning grid: the inverse map; planning point ``x`` lies at
        ``x + u(x)`` in the daily (CBCT) image.
    setup_shift_mm : tuple of 3 floats
        Rigid set-up translation ``(x, y, z)`` LPS mm. A set-up rotation (if
        any) is in ``params["setup_rotation_deg"]``; the rigid map is
        ``p -> R (p - iso) + iso + t`` with ``iso = params["isocenter_mm"]``.
    params : dict
        Bladder filling, rectal filling and gas, prostate shift/rotation,
        set-up, artefacts switched on and the seeds (JSON-serialisable).
    """

    daily_ct: Volume
    structures: StructureSet
    daily_to_planning: np.ndarray
    planning_to_daily: np.ndarray
    setup_shift_mm: tuple
    params: dict = field(default_factory=dict)


@dataclass
class DailyCase:
    """One simulated treatment fraction.

    Attributes
    ----------
    fraction : int
        Fraction number (1-based by convention; any integer is accepted).
    cbct : Volume
        Simulated CBCT, float32, HU-like, on its own grid (smaller field of
        view, same orientation and frame of reference as the planning CT).
    truth : DailyTruth
        What the CBCT shows, without artefacts, and the exact deformation.
    """

    fraction: int
    cbct: Volume
    truth: DailyTruth
