"""Tracing a mask slice as closed polygons with sub-voxel smoothing (structures that have no polygons of their own).

Public entry: :func:`art.io.rtstruct.mask_to_contours` (used by
:func:`art.io.rtstruct.write_rtstruct` for structures without ``contours``).

The tracing, in two steps:

1. **Voxel tracing** (exact topology): contourpy traces level 0.5 of the 0/1
   slice, padded with zeros so every line closes.  The polygons pass through
   the mid-points between neighbouring inside and outside voxel centres
   (marching squares), so every island and every hole of the slice is one
   polygon, and reading them back with the centre-inside rule gives back the
   same voxels.  Its boundary is a staircase: up to half a pixel from a smooth
   true boundary, and it cuts each convex corner of the pixels (on a 10 mm
   radius disc on a 2 mm grid the area comes out 1.1 % small on average).
2. **Smoothing along the polygon** (``smoothing > 0``, the default 1.5 pixels):
   each vertex is replaced by the Gaussian-weighted mean of its neighbours
   along the arc length (sigma ``smoothing`` × the larger pixel spacing, in
   mm, at most a quarter of the polygon's equivalent radius), which removes the
   staircase; the shrinkage that such smoothing causes on a curved boundary
   (``kappa * sigma**2 / 2`` towards the centre of curvature) is then given
   back by moving each vertex along its normal by that amount, with the local
   curvature ``kappa`` taken from the circle through the smoothed neighbours
   one sigma away (clipped to half a pixel).  No vertex ends more than one
   pixel from where the voxel tracing put it.  Each polygon is smoothed on its
   own: islands and holes are never merged or lost.

Why this and not contouring a smoothed slice: a Gaussian blur of the 0/1 slice
erases structures thinner than about two sigma and merges islands closer than
that, and its level 0.5 moves inwards by ``kappa * sigma**2 / 2``; smoothing
the polygon keeps the topology of the voxel tracing and corrects the
shrinkage in the same geometric terms.  Measured on discs of random sub-pixel
position (30 each; distance of the traced polygon from the true circle in mm,
mean and max; mean area against pi r^2):

=============  ============================  ============================
grid, radius   voxel tracing                 smoothed (default)
=============  ============================  ============================
1 mm, 10 mm    mean 0.18, max 0.50; -0.05 %  mean 0.12, max 0.47; +0.22 %
2 mm, 10 mm    mean 0.38, max 1.02; -0.90 %  mean 0.27, max 0.89; +0.16 %
2 mm, 15 mm    mean 0.36, max 1.00; -0.03 %  mean 0.25, max 0.92; +0.49 %
2 mm, 5 mm     mean 0.39, max 1.07; -4.3 %   mean 0.36, max 1.02; -3.2 %
=============  ============================  ============================

The slice-to-slice spread of the area (1.8 % for 10 mm on 2 mm) is the voxel
count's own, and a binary mask only tells where the boundary is to within one
pixel where it runs along a grid axis (the "poles" of a disc), where the largest
deviations are: no tracing removes either.  More figures in docs/structures.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from art.errors import InputError

__all__ = ["mask_to_contours", "DEFAULT_SMOOTHING"]

DEFAULT_SMOOTHING = 1.5
"""Sigma of the smoothing along traced polygons, in pixels (of the larger pixel spacing)."""


def mask_to_contours(
    mask_slice: np.ndarray, *, pixel_spacing: tuple[float, float] = (1.0, 1.0), smoothing: float = DEFAULT_SMOOTHING
) -> list[np.ndarray]:
    """Closed polygons around the ``True`` voxels of one slice.

    Parameters
    ----------
    mask_slice : ndarray of bool, shape (ny, nx)
        One slice of a mask, rows j and columns i.
    pixel_spacing : (dy, dx) floats, keyword-only
        Row and column spacing in mm (the smoothing works in mm, so that it is
        isotropic on non-square pixels).
    smoothing : float, keyword-only
        Sigma of the smoothing along each polygon, in pixels of the larger
        spacing; 0 gives the voxel tracing (mid-points between voxel centres,
        collinear points dropped), which rasterises back to the same voxels.

    Returns
    -------
    list of ndarray, each of shape (n, 2)
        Polygons in continuous (row j, column i) indices, first point not
        repeated; outer boundaries and holes alike (they combine by the
        even-odd rule).

    Raises
    ------
    InputError
        A slice that is not 2-D, a non-positive spacing or a negative or
        non-finite smoothing.
    """
    m = np.asarray(mask_slice, dtype=bool)
    if m.ndim != 2:
        raise InputError(f"mask_slice must be 2-D (ny, nx), got shape {m.shape}")
    dy, dx = (float(v) for v in pixel_spacing)
    if not (np.isfinite(dy) and np.isfinite(dx) and dy > 0 and dx > 0):
        raise InputError(f"pixel_spacing must be two positive numbers (mm), got {pixel_spacing!r}")
    if not np.isfinite(smoothing) or smoothing < 0:
        raise InputError(f"smoothing must be a finite number >= 0 (pixels), got {smoothing!r}")
    out = []
    for ji in _voxel_polygons(m):
        if smoothing > 0:
            scale = np.array([dy, dx])
            pix = max(dy, dx)
            ji = _smooth_polygon(ji * scale, smoothing * pix, pix) / scale
        else:
            ji = _drop_collinear(ji)
        if len(ji) >= 3:
            out.append(ji)
    return out


def traced_polygons(mask: np.ndarray, grid: Any, *, smoothing: float = DEFAULT_SMOOTHING) -> list[tuple[int, np.ndarray]]:
    """Every slice of a mask traced (:func:`mask_to_contours`) as LPS polygons, as the RTSTRUCT writer exports them.

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x)
        On ``grid``.
    grid : Grid
    smoothing : float, keyword-only
        As :func:`mask_to_contours`.

    Returns
    -------
    list of (k, ndarray of shape (n, 3))
        The slice index and the polygon in LPS mm, rounded to 0.1 µm (the 4 decimals
        the writer stores), so that a DVH from these polygons is the DVH from the file.
    """
    m = np.asarray(mask, dtype=bool)
    if m.shape != tuple(grid.shape):
        raise InputError(f"mask shape {m.shape} is not the grid's {tuple(grid.shape)}")
    out = []
    for k in np.nonzero(m.reshape(m.shape[0], -1).any(axis=1))[0]:
        for ji in mask_to_contours(m[k], pixel_spacing=grid.spacing[1:], smoothing=smoothing):
            lps = grid.index_to_lps(np.column_stack([np.full(len(ji), float(k)), ji]))
            out.append((int(k), np.round(lps, 4) + 0.0))
    return out


def _voxel_polygons(m: np.ndarray) -> list[np.ndarray]:
    """Marching-squares polygons at level 0.5 of the 0/1 slice, (n, 2) (j, i), first point not repeated."""
    import contourpy

    if not m.any():
        return []
    rows = np.nonzero(m.any(axis=1))[0]
    cols = np.nonzero(m.any(axis=0))[0]
    j0, j1, i0, i1 = rows[0], rows[-1], cols[0], cols[-1]
    sub = np.zeros((j1 - j0 + 3, i1 - i0 + 3), dtype=np.float64)
    sub[1:-1, 1:-1] = m[j0 : j1 + 1, i0 : i1 + 1]
    gen = contourpy.contour_generator(z=sub, line_type="Separate")
    out = []
    for line in gen.lines(0.5):
        xy = np.asarray(line, dtype=np.float64)
        if len(xy) > 1 and np.allclose(xy[0], xy[-1]):
            xy = xy[:-1]
        if len(xy) < 3:
            continue
        out.append(np.column_stack([xy[:, 1] + (j0 - 1), xy[:, 0] + (i0 - 1)]))
    return out


def _drop_collinear(p: np.ndarray) -> np.ndarray:
    if len(p) < 4:
        return p
    prev = np.roll(p, 1, axis=0)
    nxt = np.roll(p, -1, axis=0)
    a, b = p - prev, nxt - p
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return p[np.abs(cross) > 1e-9]


def _smooth_polygon(p: np.ndarray, sigma: float, pixel: float) -> np.ndarray:
    """Gaussian smoothing along the arc length of a closed polygon, shrinkage given back along the normals.

    Parameters
    ----------
    p : ndarray, shape (n, 2)
        Closed polygon (first point not repeated), in mm.
    sigma : float
        Sigma along the arc length, mm.
    pixel : float
        The larger pixel spacing, mm (bounds of the correction and of the displacement).

    Returns
    -------
    ndarray, shape (n, 2)
        The smoothed polygon, one vertex per vertex of ``p``, in mm.
    """
    n = len(p)
    seg = np.linalg.norm(np.roll(p, -1, axis=0) - p, axis=1)
    length = float(seg.sum())
    sigma = min(sigma, length / (8.0 * np.pi))  # at most a quarter of the equivalent radius
    if n < 4 or sigma <= 0:
        return p
    q = _arc_gaussian(p, seg, sigma)
    q = q + _curvature_offset(q, sigma, pixel, orientation=np.sign(_signed_area(p)), step=length / n)
    move = q - p
    dist = np.linalg.norm(move, axis=1, keepdims=True)
    too_far = dist > pixel
    return np.where(too_far, p + move * (pixel / np.maximum(dist, 1e-300)), q)


def _arc_gaussian(p: np.ndarray, seg: np.ndarray, sigma: float) -> np.ndarray:
    """Each vertex as the Gaussian-weighted mean of the vertices within 4 sigma of arc length (weights × their share of the length)."""
    n = len(p)
    length = float(seg.sum())
    weight = 0.5 * (seg + np.roll(seg, 1))
    s = np.concatenate([[0.0], np.cumsum(seg)[:-1]])
    reach = min(n // 2, int(np.ceil(4.0 * sigma / max(float(seg.min()), 1e-9))))
    acc = weight[:, None] * p
    wsum = weight.copy()
    idx = np.arange(n)
    for m in range(1, reach + 1):
        for sign in (1, -1):
            j = (idx + sign * m) % n
            d = (s[j] - s + length / 2.0) % length - length / 2.0
            w = np.exp(-0.5 * (d / sigma) ** 2) * weight[j]
            acc += w[:, None] * p[j]
            wsum += w
    return acc / wsum[:, None]


def _curvature_offset(q: np.ndarray, sigma: float, pixel: float, *, orientation: float, step: float) -> np.ndarray:
    """The outward move ``kappa * sigma**2 / 2`` per vertex (clipped to half a pixel), kappa from the circle through the neighbours one sigma away."""
    n = len(q)
    m = int(min(max(1, round(sigma / max(step, 1e-9))), (n - 1) // 2))
    a, b = np.roll(q, m, axis=0), np.roll(q, -m, axis=0)
    ab, ac, bc = b - a, q - a, q - b
    cross = ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]
    denom = np.linalg.norm(ab, axis=1) * np.linalg.norm(ac, axis=1) * np.linalg.norm(bc, axis=1)
    kappa = np.where(denom > 1e-12, 2.0 * np.abs(cross) / np.maximum(denom, 1e-300), 0.0)
    t = ab / np.maximum(np.linalg.norm(ab, axis=1, keepdims=True), 1e-300)
    inward = orientation * np.column_stack([-t[:, 1], t[:, 0]])  # left of travel for a positively oriented polygon
    convex = np.sign(np.sum(((a + b) / 2.0 - q) * inward, axis=1))
    delta = np.clip(convex * kappa * sigma**2 / 2.0, -0.5 * pixel, 0.5 * pixel)
    return -delta[:, None] * inward


def _signed_area(p: np.ndarray) -> float:
    y, x = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(y, np.roll(x, -1)) - np.dot(x, np.roll(y, -1)))
