"""Contours cut by the daily image's field of view: recognise them and complete them from the propagated contour.

A CBCT images a limited volume: a cylinder (its reconstructed field of view, FOV) about
200 mm long. An organ that continues beyond it (a full bladder above the last slice, a
body wider than the cylinder) is cut there, and near that edge the network sees only
part of the organ and padding: its contour there is unreliable (it tapers away, or
bulges). Such a contour is **truncated**; :func:`complete_truncated`:

1. **recognises** it: the automatic or the propagated contour has voxels on the FOV's
   outer layer (the CBCT's first or last slice, or a voxel next to the padding outside
   the reconstructed cylinder or to the grid's in-plane edge) or outside the FOV;
2. **completes** it: within ``margin_mm`` of the FOV's boundary (the *edge band*) and
   outside the FOV, the propagated contour (the planning contour deformed to today's
   anatomy) is added to the network's (their union: what the network saw is kept, what it
   lost towards the edge is filled in); inside, the network's contour alone. The **seam**
   is the inner surface of the edge band: the planes ``margin_mm`` inside the first/last
   slice, and the surface ``margin_mm`` inside the cylinder;
3. **discounts** its confidence: the network's confidence times the share of the
   completed contour outside the edge band (where the network saw the whole organ).

The caller flags a truncated structure for review (:func:`art.adapt.daily_structures`).
Masks are bool arrays (z, y, x) on the daily image's grid; lengths in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from art.errors import InputError
from art.geometry import Grid

__all__ = ["EDGE_MARGIN_MM", "Truncation", "edge_regions", "reaches_edge_band", "complete_truncated"]

#: Width (mm) of the edge band inside the field of view's boundary where the network's contour is not trusted:
#: about two and a half voxels of the shipped network (4 mm), over which its context is cut by the edge.
EDGE_MARGIN_MM = 10.0


@dataclass
class Truncation:
    """A structure cut by the field of view, and its completed contour.

    Attributes
    ----------
    edges : list of str
        The edges it touches: ``"superior"``/``"inferior"`` (the last/first slice, named
        by the slice axis in LPS) and ``"in-plane"`` (the FOV cylinder or the grid's side).
    mask : ndarray of bool, (z, y, x)
        The completed contour: the network's, with the propagated one added in the edge band and beyond.
    edge_fraction : float
        Share (0..1) of the completed contour's voxels in the edge band or beyond the field of view.
    added_fraction : float
        Share (0..1) of the completed contour's voxels added from the propagated contour.
    confidence : float
        The network's confidence times ``1 - edge_fraction``.
    edge_dice : float
        Dice of the network's and the propagated contour inside the edge band (their agreement where the seam is).
    """

    edges: list
    mask: np.ndarray
    edge_fraction: float
    added_fraction: float
    confidence: float
    edge_dice: float

    def to_dict(self) -> dict:
        """The record for summary.json and the report (no mask)."""
        return {"edges": list(self.edges), "in_edge_band_percent": round(100.0 * self.edge_fraction, 1),
                "added_from_propagated_percent": round(100.0 * self.added_fraction, 1), "edge_dice": round(float(self.edge_dice), 3)}  # fmt: skip


def _checked(fov: np.ndarray, grid: Grid) -> np.ndarray:
    if not isinstance(grid, Grid):
        raise InputError(f"grid must be an art.geometry.Grid, got {type(grid).__name__}")
    fov = np.asarray(fov, dtype=bool)
    if fov.shape != tuple(grid.shape):
        raise InputError(f"field_of_view has shape {fov.shape}, the grid {tuple(grid.shape)}")
    return fov


def edge_regions(fov: np.ndarray, grid: Grid, *, margin_mm: float = EDGE_MARGIN_MM) -> tuple[np.ndarray, np.ndarray]:
    """The edge band and the outer layer of a field of view.

    Parameters
    ----------
    fov : ndarray of bool, (z, y, x)
        Voxels inside the reconstructed field of view (e.g. :func:`art.registration.rigid.field_of_view`).
    grid : Grid
        The daily image's grid (spacing mm).
    margin_mm : float, keyword-only
        Width of the edge band.

    Returns
    -------
    band : ndarray of bool
        Voxels outside the FOV, and those inside whose centre lies within ``margin_mm``
        of a voxel centre outside it (beyond the grid counts as outside).
    outer : ndarray of bool
        FOV voxels with a face-neighbour outside it (the first and last slices, the
        in-plane rim).
    """
    fov = _checked(fov, grid)
    if not (np.isfinite(margin_mm) and margin_mm >= 0):
        raise InputError(f"margin_mm must be a non-negative number of mm, got {margin_mm!r}")
    padded = np.pad(fov, 1, constant_values=False)
    dist = ndimage.distance_transform_edt(padded, sampling=grid.spacing)[1:-1, 1:-1, 1:-1]
    band = ~fov | (dist <= margin_mm + 1e-6)
    outer = fov & ~ndimage.binary_erosion(padded)[1:-1, 1:-1, 1:-1]
    return band, outer


def reaches_edge_band(mask: np.ndarray, fov: np.ndarray, grid: Grid, *, margin_mm: float = EDGE_MARGIN_MM) -> bool:
    """True when ``mask`` (bool, (z, y, x)) has voxels in the field of view's edge band (:func:`edge_regions`)."""
    band, _ = edge_regions(fov, grid, margin_mm=margin_mm)
    return bool(np.any(np.asarray(mask, dtype=bool) & band))


def _edges(touch: np.ndarray, grid: Grid) -> list[str]:
    """Which edges ``touch`` (voxels on the outer layer or outside the FOV) lies on: axial ends named in LPS, or in-plane."""
    up = float(grid.direction_matrix[2, 2]) >= 0  # the slice axis points superior (+z in LPS)
    names = []
    if touch[0].any():
        names.append("inferior" if up else "superior")
    if touch[-1].any():
        names.append("superior" if up else "inferior")
    if touch[1:-1].any():
        names.append("in-plane")
    return names


def complete_truncated(ai_mask: np.ndarray, propagated_mask: np.ndarray, fov: np.ndarray, grid: Grid, *, confidence: float,
                       margin_mm: float = EDGE_MARGIN_MM) -> Truncation | None:  # fmt: skip
    """Recognise a contour cut by the field of view and complete it from the propagated one (see module notes).

    Parameters
    ----------
    ai_mask, propagated_mask : ndarray of bool, (z, y, x)
        The network's and the propagated contour of one structure on ``grid``.
    fov : ndarray of bool, (z, y, x)
        The daily image's field of view.
    grid : Grid
        The daily image's grid.
    confidence : float, keyword-only
        The network's confidence in the contour (0..1).
    margin_mm : float, keyword-only
        Width of the edge band (default :data:`EDGE_MARGIN_MM`).

    Returns
    -------
    Truncation or None
        None when neither contour reaches the field of view's outer layer or beyond.
    """
    from .confidence import dice

    ai = np.asarray(ai_mask, dtype=bool)
    prop = np.asarray(propagated_mask, dtype=bool)
    if ai.shape != tuple(grid.shape) or prop.shape != tuple(grid.shape):
        raise InputError(f"the masks must have the grid's shape {tuple(grid.shape)}, got {ai.shape} and {prop.shape}")
    if not 0.0 <= float(confidence) <= 1.0:
        raise InputError(f"confidence must be in [0, 1], got {confidence!r}")
    band, outer = edge_regions(fov, grid, margin_mm=margin_mm)
    fov = np.asarray(fov, dtype=bool)
    touch = (ai | prop) & (outer | ~fov)
    if not touch.any():
        return None
    completed = ai | (prop & band)
    n = int(np.count_nonzero(completed))
    in_band = float(np.count_nonzero(completed & band) / n) if n else 1.0
    added = float(np.count_nonzero(completed & ~ai) / n) if n else 0.0
    return Truncation(edges=_edges(touch, grid), mask=completed, edge_fraction=in_band, added_fraction=added,
                      confidence=float(confidence) * (1.0 - in_band), edge_dice=dice(ai & band, prop & band))  # fmt: skip
