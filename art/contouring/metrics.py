"""Contour comparison metrics: Dice and the 95th-percentile Hausdorff distance."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from art.errors import InputError

from .confidence import dice

__all__ = ["dice", "hd95"]


def _surface(m: np.ndarray) -> np.ndarray:
    return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Symmetric 95th-percentile Hausdorff distance between two masks' surfaces, mm.

    Parameters
    ----------
    a, b : ndarray of bool, same shape (z, y, x)
    spacing : (dz, dy, dx)
        Voxel size, mm.

    Returns
    -------
    float
        95th percentile of the distances from every surface voxel of each
        mask to the other's surface (voxel centres); 0 for identical masks;
        inf when exactly one mask is empty; nan when both are.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise InputError(f"hd95 needs masks of the same shape, got {a.shape} and {b.shape}")
    if not a.any() and not b.any():
        return float("nan")
    if not a.any() or not b.any():
        return float("inf")
    sa, sb = _surface(a), _surface(b)
    # crop to the joint bounding box (+2 voxels) for speed
    idx = np.argwhere(a | b)
    lo = np.maximum(idx.min(0) - 2, 0)
    hi = idx.max(0) + 3
    sl = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    sa, sb = sa[sl], sb[sl]
    da = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    db = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return float(np.percentile(np.concatenate([da, db]), 95))
