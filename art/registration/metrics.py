"""Registration accuracy metrics: target registration error, Dice, surface distances.

``art.evaluate`` holds dose metrics only; the overlap and surface-distance
metrics live here (masks on one grid, distances in mm).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from art.errors import InputError

__all__ = ["tre_stats", "dice", "surface_distances", "mean_surface_distance", "hd95", "contour_metrics"]


def tre_stats(recovered: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Target registration error between two displacement fields on one grid.

    Parameters
    ----------
    recovered, truth : ndarray, shape (nz, ny, nx, 3)
        Displacements (dx, dy, dz), mm, same convention and grid.
    mask : ndarray of bool, shape (nz, ny, nx), optional
        Voxels to evaluate (e.g. the body); all when omitted.

    Returns
    -------
    dict
        ``mean``, ``median``, ``p95``, ``max`` (mm) of ``|recovered - truth|``
        and ``n`` (voxel count).
    """
    recovered = np.asarray(recovered)
    truth = np.asarray(truth)
    if recovered.shape != truth.shape or recovered.shape[-1:] != (3,):
        raise InputError(f"recovered and truth must both have shape (nz, ny, nx, 3), got {recovered.shape} and {truth.shape}")
    err = np.linalg.norm(recovered.astype(np.float64) - truth, axis=-1)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != err.shape:
            raise InputError(f"mask shape {mask.shape} does not match the fields {err.shape}")
        err = err[mask]
    else:
        err = err.ravel()
    if err.size == 0:
        raise InputError("tre_stats: no voxel to evaluate (empty mask)")
    return {
        "mean": float(err.mean()),
        "median": float(np.median(err)),
        "p95": float(np.percentile(err, 95)),
        "max": float(err.max()),
        "n": int(err.size),
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity ``2|A∩B| / (|A| + |B|)`` of two boolean masks on one grid (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise InputError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    s = int(a.sum()) + int(b.sum())
    if s == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / s


def _surface(m: np.ndarray) -> np.ndarray:
    return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from the surface voxels of ``a`` to the surface of ``b``, and back.

    Surfaces are the mask voxels with a 6-neighbour outside; distances are
    between voxel centres (Euclidean distance transform with ``spacing``
    (dz, dy, dx) in mm), so identical masks give zeros.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise InputError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    if not a.any() or not b.any():
        raise InputError("surface distances need two non-empty masks")
    sa, sb = _surface(a), _surface(b)
    db = ndimage.distance_transform_edt(~sb, sampling=spacing)
    da = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return db[sa], da[sb]


def mean_surface_distance(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Symmetric mean surface distance (mm): the mean over both directions' distances."""
    d1, d2 = surface_distances(a, b, spacing)
    return float(np.concatenate([d1, d2]).mean())


def hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """95th-percentile symmetric Hausdorff distance (mm): max of the two directed 95th percentiles."""
    d1, d2 = surface_distances(a, b, spacing)
    return float(max(np.percentile(d1, 95), np.percentile(d2, 95)))


def contour_metrics(a: np.ndarray, b: np.ndarray, spacing) -> dict:
    """``dice``, ``msd_mm`` and ``hd95_mm`` of two masks on one grid (distances NaN when one is empty)."""
    out = {"dice": dice(a, b)}
    if np.any(a) and np.any(b):
        d1, d2 = surface_distances(a, b, spacing)
        out["msd_mm"] = float(np.concatenate([d1, d2]).mean())
        out["hd95_mm"] = float(max(np.percentile(d1, 95), np.percentile(d2, 95)))
    else:
        out["msd_mm"] = float("nan")
        out["hd95_mm"] = float("nan")
    return out
