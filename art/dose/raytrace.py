"""Radiological (water-equivalent) depth by cumulative sampling on a divergent BEV grid.

For a beam, the density volume is sampled on a fan of rays (a regular grid in BEV
``(u, v)`` at the isocentre plane × axial distance ``z`` from the source) with
trilinear interpolation, accumulated along each ray (midpoint rule, step length
corrected for the ray's obliquity) and interpolated back at the requested points.
Everything is vectorised (``scipy.ndimage.map_coordinates`` and ``cumsum``); no
Python loop over voxels or rays. Outside the density volume the medium is vacuum.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from art.dose.beam_geometry import BeamFrame
from art.errors import InputError
from art.geometry import Volume


def _grid_z_range(frame: BeamFrame, density: Volume) -> tuple[float, float]:
    corners = density.grid.corners_lps()
    _, _, z = frame.to_bev(corners)
    return float(np.nanmin(z)), float(np.nanmax(z))


def radiological_depth(
    density: Volume,
    frame: BeamFrame,
    points_lps: np.ndarray,
    *,
    lateral_step_mm: float = 2.0,
    axial_step_mm: float | None = None,
    max_samples: int = 40_000_000,
    bev: tuple | None = None,
) -> np.ndarray:
    """Water-equivalent depth (mm) of points along rays from the beam's source.

    Parameters
    ----------
    density : Volume
        Relative electron density (water = 1) on any grid.
    frame : BeamFrame
        The beam (source position, BEV axes).
    points_lps : ndarray, shape (n, 3)
        LPS points, mm.
    lateral_step_mm : float, keyword-only
        Ray spacing at the isocentre plane, mm.
    axial_step_mm : float, keyword-only
        Sampling step along the central axis; default half the smallest voxel size.
    max_samples : int, keyword-only
        Guard against runaway memory; the fan is coarsened if it would exceed this.
    bev : tuple of three (n,) arrays, keyword-only
        ``frame.to_bev(points_lps)`` if the caller already has it.

    Returns
    -------
    ndarray, shape (n,), float32
        ∫ ρ dl from the source to each point (0 for points before the volume).
    """
    pts = np.asarray(points_lps, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"points_lps must have shape (n, 3), got {pts.shape}")
    if pts.shape[0] == 0:
        return np.zeros(0, np.float32)
    u, v, z = frame.to_bev(pts) if bev is None else bev
    if np.any(~np.isfinite(u)) or np.any(z <= 0):
        raise InputError("some points lie behind the beam's source")
    dz = float(axial_step_mm) if axial_step_mm else 0.5 * min(density.grid.spacing)
    du = float(lateral_step_mm)
    z0, z1 = _grid_z_range(frame, density)
    z0 = max(z0 - dz, 1.0)
    z1 = min(z1, float(z.max())) + 2 * dz
    if z1 <= z0:
        return np.zeros(pts.shape[0], np.float32)
    # fan lattice anchored at the central axis (multiples of the step), so that
    # different point sets of one beam see the same rays
    u0, u1 = du * np.floor(float(u.min()) / du - 2), float(u.max()) + 2 * du
    v0, v1 = du * np.floor(float(v.min()) / du - 2), float(v.max()) + 2 * du
    z0 = dz * np.floor(z0 / dz)
    while True:
        nu = int(np.ceil((u1 - u0) / du)) + 1
        nv = int(np.ceil((v1 - v0) / du)) + 1
        nz = int(np.ceil((z1 - z0) / dz)) + 1
        if nu * nv * nz <= max_samples:
            break
        du *= 1.25
        dz *= 1.1
    ug = u0 + du * np.arange(nu)
    vg = v0 + du * np.arange(nv)
    zg = z0 + dz * np.arange(nz)
    arr = np.asarray(density.array, dtype=np.float32)
    # positions slice by slice in z keep memory at O(nu*nv) per slice for the coordinates
    cum = np.empty((nu, nv, nz), dtype=np.float32)
    uu, vv = np.meshgrid(ug, vg, indexing="ij")
    obliq = np.sqrt(1.0 + (uu**2 + vv**2) / frame.sad**2).astype(np.float32)
    # LPS = iso + rot @ (u f, v f, sad - z), f = z / sad; index = inv @ (LPS - origin), so
    # index_d = f (M_d0 u + M_d1 v) + M_d2 (sad - z) + c_d with M = inv @ rot
    a = density.grid.affine
    inv = np.linalg.inv(a[:3, :3])
    mrot = inv @ frame.rotation
    cvec = inv @ (np.asarray(frame.isocenter, np.float64) - a[:3, 3])
    lat = [(mrot[d, 0] * uu + mrot[d, 1] * vv).astype(np.float32)[..., None] for d in range(3)]
    chunk = max(1, int(4_000_000 // (nu * nv)))
    running = np.zeros((nu, nv), dtype=np.float32)
    for k0 in range(0, nz, chunk):
        ks = np.arange(k0, min(nz, k0 + chunk))
        f = (zg[ks] / frame.sad).astype(np.float32)
        coords = np.empty((3, nu, nv, ks.size), np.float32)
        for d in range(3):  # array axes (k, j, i) = index components (2, 1, 0)
            off = (mrot[d, 2] * (frame.sad - zg[ks]) + cvec[d]).astype(np.float32)
            np.multiply(lat[d], f, out=coords[2 - d])
            coords[2 - d] += off
        rho = ndimage.map_coordinates(arr, coords.reshape(3, -1), order=1, mode="constant", cval=0.0, prefilter=False)
        rho = rho.reshape(nu, nv, ks.size) * (obliq[..., None] * dz)
        c = np.cumsum(rho, axis=2) + running[..., None]
        running = c[..., -1].copy()
        cum[:, :, ks] = c - 0.5 * rho
    idx = np.stack([(u - u0) / du, (v - v0) / du, (z - z0) / dz]).astype(np.float32)
    out = ndimage.map_coordinates(cum, idx, order=1, mode="nearest", prefilter=False)
    return np.maximum(out, 0.0).astype(np.float32)


def sample_density(density: Volume, points_lps: np.ndarray) -> np.ndarray:
    """Trilinear density at LPS points (0 outside the volume), float32 (n,)."""
    idx = density.grid.lps_to_index(np.asarray(points_lps, dtype=np.float64)).T.astype(np.float32)
    return ndimage.map_coordinates(np.asarray(density.array, np.float32), idx, order=1, mode="constant", cval=0.0, prefilter=False).astype(np.float32)
