"""Displacement-field helpers shared by the registration modules.

Conventions (the same as :mod:`art_phantoms.deformation`)
--------------------------------------------------------
A displacement field is a float32 array of shape ``(nz, ny, nx, 3)`` on an
axis-aligned :class:`~art.geometry.Grid`; the last axis holds the LPS
components ``(dx, dy, dz)`` in mm, and the field ``d`` stands for the map
``p -> p + d(p)`` (``p`` the voxel centre, LPS mm).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from art.errors import GeometryError
from art.geometry import Grid

__all__ = ["grid_points", "sample_field", "sample_image", "jacobian_determinant", "apply_matrix"]


def grid_points(grid: Grid) -> np.ndarray:
    """LPS voxel centres of ``grid``, shape ``grid.shape + (3,)`` (x, y, z), float64, mm."""
    x, y, z = grid.lps_coordinates(dtype=np.float64)
    return np.stack([np.broadcast_to(x, grid.shape), np.broadcast_to(y, grid.shape), np.broadcast_to(z, grid.shape)], axis=-1)


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4 x 4 homogeneous matrix to LPS points of shape (..., 3)."""
    m = np.asarray(matrix, dtype=np.float64)
    return points @ m[:3, :3].T + m[:3, 3]


def _coords(grid: Grid, points: np.ndarray) -> np.ndarray:
    kji = grid.lps_to_index(points.reshape(-1, 3))
    return kji.T


def _map_coordinates(src: np.ndarray, coords: np.ndarray, **kw) -> np.ndarray:
    """``ndimage.map_coordinates(src, coords, **kw)`` with the points (``coords``: (3, n)) split between two threads (:mod:`art.threads`)
    when there are many (SciPy releases the GIL; each point's value is its own: the same array)."""
    from art.threads import parallel

    n = coords.shape[1]
    if n < 1_000_000:
        return ndimage.map_coordinates(src, coords, **kw)
    h = n // 2
    return np.concatenate(parallel(lambda c: ndimage.map_coordinates(src, c, **kw), [coords[:, :h], coords[:, h:]]))


def sample_image(array: np.ndarray, grid: Grid, points: np.ndarray, *, order: int = 1, fill_value: float = 0.0) -> np.ndarray:
    """Interpolate a scalar array on ``grid`` at LPS ``points`` (..., 3); ``fill_value`` outside.

    Returns float32 of shape ``points.shape[:-1]``.
    """
    src = np.asarray(array)
    if src.dtype == bool:
        src = src.astype(np.float32)
    out = _map_coordinates(src, _coords(grid, points), order=order, mode="constant", cval=fill_value, prefilter=False)
    return out.reshape(points.shape[:-1]).astype(np.float32, copy=False)


def sample_field(field: np.ndarray, grid: Grid, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear interpolation of a displacement field at LPS ``points`` (..., 3).

    Returns
    -------
    values : ndarray, float32, shape ``points.shape``
        The interpolated (dx, dy, dz) in mm (0 outside the grid).
    inside : ndarray of bool, shape ``points.shape[:-1]``
        Whether each point lies within the grid's outer voxel centres.
    """
    if field.shape != grid.shape + (3,):
        raise GeometryError(f"field shape {field.shape} does not match grid {grid.shape} + (3,)")
    c = _coords(grid, points)
    out = np.empty(points.shape, dtype=np.float32)
    for a in range(3):
        out[..., a] = _map_coordinates(field[..., a], c, order=1, mode="nearest", prefilter=False).reshape(points.shape[:-1])
    inside = grid.contains(points, margin_voxels=0.0)
    return out, inside


def jacobian_determinant(displacement: np.ndarray, spacing) -> np.ndarray:
    """Jacobian determinant of ``p -> p + d(p)`` by central differences.

    Parameters
    ----------
    displacement : ndarray, shape (nz, ny, nx, 3)
        Components (dx, dy, dz), mm, on an axis-aligned grid.
    spacing : (dz, dy, dx)
        Grid spacing, mm.

    Returns
    -------
    ndarray, float32, shape (nz, ny, nx)
    """
    dz, dy, dx = (float(s) for s in spacing)
    g = []
    for a in range(3):
        gz, gy, gx = np.gradient(displacement[..., a].astype(np.float32), dz, dy, dx)
        g.append([gx, gy, gz])
    for a in range(3):
        g[a][a] = g[a][a] + 1.0
    det = (
        g[0][0] * (g[1][1] * g[2][2] - g[1][2] * g[2][1])
        - g[0][1] * (g[1][0] * g[2][2] - g[1][2] * g[2][0])
        + g[0][2] * (g[1][0] * g[2][1] - g[1][1] * g[2][0])
    )
    return det.astype(np.float32, copy=False)
