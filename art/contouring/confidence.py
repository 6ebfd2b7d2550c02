"""Per-structure confidence of automatic contours: test-time augmentation agreement, agreement with propagated contours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from art.errors import InputError
from art.geometry import Volume, resample_mask
from art.structures import StructureSet

__all__ = ["dice", "confidence"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity of two boolean masks of the same shape (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise InputError(f"dice needs masks of the same shape, got {a.shape} and {b.shape}")
    s = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if s == 0 else 2.0 * np.count_nonzero(a & b) / s


def confidence(
    structures: StructureSet,
    *,
    tta_masks: Mapping[str, Sequence[np.ndarray]] | None = None,
    propagated: StructureSet | None = None,
) -> dict[str, float]:
    """Confidence in [0, 1] of each automatic contour.

    Parameters
    ----------
    structures : StructureSet
        The final (post-processed) contours.
    tta_masks : mapping name -> sequence of bool arrays, keyword-only
        The same structure from each test-time-augmentation pass (before
        post-processing), on ``structures.grid``. Their agreement is the mean
        Dice of each pass's mask with the final contour.
    propagated : StructureSet or None, keyword-only
        Contours propagated from planning by deformable registration (any
        grid; resampled to ``structures.grid``). Agreement is the Dice of the
        automatic and the propagated contour, for the names both hold.

    Returns
    -------
    dict
        Name -> confidence: the smaller of the available agreements (1.0 when
        neither is available). Conservative: a contour is trusted only when the
        network is stable under augmentation *and* (when given) it agrees
        with the registration.
    """
    if not isinstance(structures, StructureSet):
        raise InputError(f"structures must be a StructureSet, got {type(structures).__name__}")
    if propagated is not None and not isinstance(propagated, StructureSet):
        raise InputError(f"propagated must be a StructureSet or None, got {type(propagated).__name__}")
    out: dict[str, float] = {}
    grid = structures.grid
    for s in structures:
        parts = []
        if tta_masks is not None and s.name in tta_masks and len(tta_masks[s.name]):
            parts.append(float(np.mean([dice(s.mask, m) for m in tta_masks[s.name]])))
        if propagated is not None:
            p = propagated.find(s.name)
            if p is not None:
                pm = p.mask if p.grid.same_as(grid) else resample_mask(Volume(p.mask, p.grid), grid).array
                parts.append(dice(s.mask, pm))
        out[s.name] = float(min(parts)) if parts else 1.0
        if s.is_empty:
            out[s.name] = 0.0
    return out
