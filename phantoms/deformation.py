"""Smooth, exactly known deformations for digital patients.

A daily anatomy is made from a *stationary velocity field* ``v`` (mm) built
from localised, smooth components; the deformation is its group exponential
``phi = exp(v)`` computed by scaling and squaring, and the inverse is
``exp(-v)``. Both are diffeomorphisms when ``v`` is smooth and the steps are
small, which :func:`jacobian_determinant` and :func:`inverse_consistency`
check numerically.

Conventions
-----------
* Displacement and velocity fields are float arrays of shape ``(nz, ny, nx, 3)``
  on an axis-aligned :class:`~art.geometry.Grid`; the last axis holds the LPS
  components ``(dx, dy, dz)`` in mm.
* A displacement field ``d`` stands for the map ``p -> p + d(p)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from art.errors import GeometryError, InputError
from art.geometry import Grid

__all__ = [
    "smoothstep",
    "flat_top",
    "ellipsoid_excess",
    "rotation_matrix",
    "rotation_about_x",
    "grid_points",
    "sample_field",
    "exponentiate",
    "jacobian_determinant",
    "rigid_apply",
    "rigid_inverse_apply",
    "inverse_consistency",
]


def smoothstep(t: np.ndarray) -> np.ndarray:
    """C1 ramp: 0 for ``t <= 0``, 1 for ``t >= 1``, ``3t² - 2t³`` between."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def flat_top(excess_mm: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Weight 1 where ``excess_mm <= 0`` and a Gaussian fall-off beyond (C1 at the edge).

    Parameters
    ----------
    excess_mm : ndarray
        Distance (mm) outside the flat region; values <= 0 are inside.
    sigma_mm : float
        Width of the fall-off, mm.
    """
    e = np.maximum(excess_mm, 0.0)
    return np.exp(-(e * e) / (2.0 * sigma_mm * sigma_mm))


def ellipsoid_excess(x, y, z, centre, semi_axes, rotation=None) -> np.ndarray:
    """Approximate distance (mm) of points outside an ellipsoid, 0 inside.

    The distance is measured along the ray from the centre:
    ``|q| (1 - 1/rho)`` with ``rho`` the normalised ellipsoidal radius, exact on
    the axes and a smooth, monotone proxy elsewhere.

    Parameters
    ----------
    x, y, z : ndarrays (broadcastable)
        LPS coordinates, mm.
    centre : (x, y, z)
        Ellipsoid centre, mm.
    semi_axes : (a, b, c)
        Semi-axes along the local axes, mm.
    rotation : (3, 3) array, optional
        Columns are the local axes in LPS; identity when omitted.
    """
    q = _local(x, y, z, centre, rotation)
    a, b, c = semi_axes
    rho = np.sqrt((q[0] / a) ** 2 + (q[1] / b) ** 2 + (q[2] / c) ** 2)
    r = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(rho > 1.0, r * (1.0 - 1.0 / np.maximum(rho, 1e-12)), 0.0)
    return out


def _local(x, y, z, centre, rotation):
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    if rotation is None:
        return dx, dy, dz
    m = np.asarray(rotation, dtype=np.float64)
    return (
        m[0, 0] * dx + m[1, 0] * dy + m[2, 0] * dz,
        m[0, 1] * dx + m[1, 1] * dy + m[2, 1] * dz,
        m[0, 2] * dx + m[1, 2] * dy + m[2, 2] * dz,
    )


def rotation_about_x(angle_deg: float) -> np.ndarray:
    """Right-handed rotation by ``angle_deg`` about the LPS +x (patient right-to-left) axis.

    A positive angle turns +y (posterior) towards +z (superior).
    """
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_matrix(angles_deg) -> np.ndarray:
    """Rotation ``Rz @ Ry @ Rx`` from right-handed angles about LPS x, y, z (degrees), shape (3, 3)."""
    ax, ay, az = (math.radians(float(a)) for a in angles_deg)
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def grid_points(grid: Grid, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full ``(x, y, z)`` LPS coordinate arrays (mm) of an axis-aligned grid's voxel centres."""
    if not grid.is_axis_aligned:
        raise GeometryError("phantom fields need axis-aligned grids (identity direction)")
    zs, ys, xs = grid.axis_positions()
    z, y, x = np.meshgrid(zs.astype(dtype), ys.astype(dtype), xs.astype(dtype), indexing="ij")
    return x, y, z


def sample_field(field: np.ndarray, grid: Grid, x, y, z, *, outside: str = "zero") -> np.ndarray:
    """Trilinear interpolation of a displacement field at LPS points.

    Parameters
    ----------
    field : ndarray, shape (nz, ny, nx, 3)
        Field on ``grid`` (components dx, dy, dz in mm).
    grid : Grid
        Axis-aligned grid of ``field``.
    x, y, z : ndarrays of one shape
        LPS points, mm.
    outside : {"zero", "nearest"}, keyword-only
        Value for points outside the grid: zero displacement or the nearest
        border value.

    Returns
    -------
    ndarray, shape ``x.shape + (3,)``, float32
    """
    if not grid.is_axis_aligned:
        raise GeometryError("sample_field needs an axis-aligned grid")
    if field.shape != grid.shape + (3,):
        raise GeometryError(f"field shape {field.shape} does not match grid {grid.shape} + (3,)")
    mode = {"zero": "constant", "nearest": "nearest"}.get(outside)
    if mode is None:
        raise InputError(f"outside must be 'zero' or 'nearest', got {outside!r}")
    (x0, y0, z0), (dz, dy, dx) = grid.origin, grid.spacing
    coords = np.stack([(np.asarray(z) - z0) / dz, (np.asarray(y) - y0) / dy, (np.asarray(x) - x0) / dx])
    out = np.empty(np.shape(x) + (3,), dtype=np.float32)
    sampled = _three(lambda c: ndimage.map_coordinates(field[..., c], coords, order=1, mode=mode, cval=0.0, prefilter=False))
    for c in range(3):
        out[..., c] = sampled[c]
    return out


def _three(fn) -> list:
    """``[fn(0), fn(1), fn(2)]`` on two threads (SciPy's interpolation releases the GIL: the same arrays, sooner)."""
    from art.threads import parallel

    return parallel(fn, range(3), most=2)


def exponentiate(velocity: np.ndarray, grid: Grid, *, max_step_voxels: float = 0.125) -> np.ndarray:
    """Displacement of ``exp(v)`` by scaling and squaring.

    ``d_0 = v / 2^N``; then ``N`` times ``d <- d + d o (id + d)`` (trilinear
    interpolation, border values repeated). ``N`` is chosen so that the first
    step moves no point by more than ``max_step_voxels`` voxels.

    Parameters
    ----------
    velocity : ndarray, shape (nz, ny, nx, 3)
        Stationary velocity field (dx, dy, dz) in mm on ``grid``; it should fall
        to zero towards the grid border.
    grid : Grid
        Axis-aligned grid of ``velocity``.
    max_step_voxels : float, keyword-only
        Largest first step, in voxels.

    Returns
    -------
    ndarray, shape (nz, ny, nx, 3), float32
        Displacement (mm) of ``p -> exp(v)(p)``.
    """
    if not grid.is_axis_aligned:
        raise GeometryError("exponentiate needs an axis-aligned grid")
    if velocity.shape != grid.shape + (3,):
        raise GeometryError(f"velocity shape {velocity.shape} does not match grid {grid.shape} + (3,)")
    dz, dy, dx = grid.spacing
    vmax = float(np.max(np.abs(velocity) / np.array([dx, dy, dz]))) if velocity.size else 0.0
    n = 0 if vmax == 0 else max(1, int(math.ceil(math.log2(vmax / max_step_voxels))))
    # work in voxel units, component order (k, j, i)
    d = np.stack([velocity[..., 2] / dz, velocity[..., 1] / dy, velocity[..., 0] / dx]).astype(np.float64)
    d /= 2.0**n
    base = np.indices(grid.shape, dtype=np.float64)
    for _ in range(n):
        coords = base + d
        d = d + np.stack(_three(lambda c: ndimage.map_coordinates(d[c], coords, order=1, mode="nearest", prefilter=False)))  # noqa: B023
    out = np.empty(grid.shape + (3,), dtype=np.float32)
    out[..., 0] = d[2] * dx
    out[..., 1] = d[1] * dy
    out[..., 2] = d[0] * dz
    return out


def jacobian_determinant(displacement: np.ndarray, spacing) -> np.ndarray:
    """Jacobian determinant of ``p -> p + d(p)`` by central differences.

    Parameters
    ----------
    displacement : ndarray, shape (nz, ny, nx, 3)
        Components (dx, dy, dz) in mm.
    spacing : (dz, dy, dx)
        Grid spacing, mm.

    Returns
    -------
    ndarray, shape (nz, ny, nx), float64
    """
    dz, dy, dx = (float(s) for s in spacing)
    g = []  # g[a][b] = d(component a) / d(axis b), axes (x, y, z)
    for a in range(3):
        gz, gy, gx = np.gradient(displacement[..., a].astype(np.float64), dz, dy, dx)
        g.append([gx, gy, gz])
    for a in range(3):
        g[a][a] += 1.0
    return (
        g[0][0] * (g[1][1] * g[2][2] - g[1][2] * g[2][1])
        - g[0][1] * (g[1][0] * g[2][2] - g[1][2] * g[2][0])
        + g[0][2] * (g[1][0] * g[2][1] - g[1][1] * g[2][0])
    )


def rigid_apply(x, y, z, rotation, translation, centre):
    """``p -> R (p - c) + c + t`` on coordinate arrays; returns (x', y', z')."""
    r = np.asarray(rotation, dtype=np.float64)
    px, py, pz = x - centre[0], y - centre[1], z - centre[2]
    return (
        r[0, 0] * px + r[0, 1] * py + r[0, 2] * pz + centre[0] + translation[0],
        r[1, 0] * px + r[1, 1] * py + r[1, 2] * pz + centre[1] + translation[1],
        r[2, 0] * px + r[2, 1] * py + r[2, 2] * pz + centre[2] + translation[2],
    )


def rigid_inverse_apply(x, y, z, rotation, translation, centre):
    """Inverse of :func:`rigid_apply`: ``q -> R^T (q - c - t) + c``."""
    r = np.asarray(rotation, dtype=np.float64)
    px, py, pz = x - centre[0] - translation[0], y - centre[1] - translation[1], z - centre[2] - translation[2]
    return (
        r[0, 0] * px + r[1, 0] * py + r[2, 0] * pz + centre[0],
        r[0, 1] * px + r[1, 1] * py + r[2, 1] * pz + centre[1],
        r[0, 2] * px + r[1, 2] * py + r[2, 2] * pz + centre[2],
    )


def inverse_consistency(forward: np.ndarray, forward_grid: Grid, inverse: np.ndarray, inverse_grid: Grid, *, mask=None) -> np.ndarray:
    """Residual ``|(id + d_inv) o (id + d_fwd)(p) - p|`` (mm) at the voxels of ``forward_grid``.

    Parameters
    ----------
    forward : ndarray, shape forward_grid.shape + (3,)
        Map from the first space to the second, sampled on ``forward_grid``.
    inverse : ndarray, shape inverse_grid.shape + (3,)
        The map back, sampled on ``inverse_grid``.
    mask : ndarray of bool, optional
        Voxels of ``forward_grid`` to evaluate; all by default.

    Returns
    -------
    ndarray, 1-D
        Residuals (mm) at the selected voxels whose image lies inside ``inverse_grid``.
    """
    x, y, z = grid_points(forward_grid)
    if mask is not None:
        x, y, z, f = x[mask], y[mask], z[mask], forward[mask]
    else:
        x, y, z, f = x.ravel(), y.ravel(), z.ravel(), forward.reshape(-1, 3)
    qx, qy, qz = x + f[:, 0], y + f[:, 1], z + f[:, 2]
    inside = inverse_grid.contains(np.stack([qx, qy, qz], axis=-1), margin_voxels=-1.0)
    qx, qy, qz, x, y, z = qx[inside], qy[inside], qz[inside], x[inside], y[inside], z[inside]
    b = sample_field(inverse, inverse_grid, qx, qy, qz, outside="nearest")
    return np.sqrt((qx + b[:, 0] - x) ** 2 + (qy + b[:, 1] - y) ** 2 + (qz + b[:, 2] - z) ** 2)
