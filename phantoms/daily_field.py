"""The daily deformation of the pelvis: a stationary velocity field and its exponentials.

The model (bladder filling, rectal filling, prostate motion, bone ramps) is
described in :mod:`art_phantoms.pelvis`. The velocity field (mm) lives on an
internal work grid around the pelvic organs; :func:`_deformation` calibrates
the bladder rate on a coarse grid and returns ``phi = exp(v)`` and its inverse
``exp(-v)`` on the fine one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from art.geometry import Grid

from .anatomy import _Pelvis
from .deformation import (
    ellipsoid_excess,
    exponentiate,
    flat_top,
    grid_points,
    jacobian_determinant,
    rotation_about_x,
    smoothstep,
)

_BONE_PAD_MM = 7.0  # velocity is exactly zero this close to bone (smoothed distance)
_BONE_SMOOTH_MM = 3.0  # Gaussian smoothing of the distance to bone
_BONE_RAMP_MM = 8.0  # ... and the prostate motion reaches full strength this much further out
_BONE_RAMP_SOFT_MM = 16.0  # ... and the bladder / rectal components (softer: less shear next to bone)
_BLADDER_AXIS_SHARE = (0.25, 0.30, 0.45)  # share of the log volume change along x, y, z (fills mostly cranially)
_WORK_SPACING_MM = (2.5, 3.0)  # internal grid of the velocity field: CT spacing clipped to this range


def _work_grid(p: dict, pel: _Pelvis, a_b: float, a_r: float, flat_margin_p: float, *, spacing: float) -> Grid:
    """Internal grid that holds every non-zero velocity (fall-offs included, plus a taper margin)."""
    pad = 50.0
    bl, pr = p["bladder"], p["prostate"]
    boxes = []
    grow = math.exp(3.0 * max(a_b, 0.0) * max(_BLADDER_AXIS_SHARE))
    sb = np.asarray(bl["semi_axes"]) * grow + 5.0
    boxes.append((np.asarray(bl["centre"]) - sb, np.asarray(bl["centre"]) + sb + np.array([0.0, 0.0, 2.0 * sb[2] * (grow - 1.0) + 10.0])))
    sp = max(pr["semi_axes"]) + 2.0 * flat_margin_p
    boxes.append((np.asarray(pr["centre"]) - sp, np.asarray(pr["centre"]) + sp))
    lo_r, hi_r = pel.rectum_bbox(10.0 * max(1.0, math.exp(a_r)))
    zc = pr["centre"][2]
    lo_r[2], hi_r[2] = max(lo_r[2], zc - 25.0), min(hi_r[2], zc + 45.0)
    boxes.append((lo_r, hi_r))
    lo = np.min([b[0] for b in boxes], axis=0) - pad
    hi = np.max([b[1] for b in boxes], axis=0) + pad
    h = float(spacing)
    shape = tuple(int(math.ceil((hi[i] - lo[i]) / h)) + 1 for i in (2, 1, 0))
    return Grid(shape=shape, spacing=(h, h, h), origin=tuple(lo))


def _work_fields(p: dict, pel: _Pelvis, work: Grid):
    """Coordinates, bone ramps (hard, soft) and the bladder mask on the work grid."""
    X, Y, Z = grid_points(work)
    far = _BONE_PAD_MM + _BONE_RAMP_SOFT_MM + 4.0 * _BONE_SMOOTH_MM
    bone = pel.bone_sdf(X.ravel(), Y.ravel(), Z.ravel(), far=far).reshape(work.shape)
    # the union of approximate distances has creases: smooth it so that v is smooth
    bone = ndimage.gaussian_filter(bone, sigma=_BONE_SMOOTH_MM / work.spacing[0], mode="nearest", truncate=3.0)
    att = smoothstep((bone - _BONE_PAD_MM) / _BONE_RAMP_MM)
    att_soft = smoothstep((bone - _BONE_PAD_MM) / _BONE_RAMP_SOFT_MM)
    bl = p["bladder"]
    in_bladder = ellipsoid_excess(X, Y, Z, bl["centre"], bl["semi_axes"]) <= 0
    return X, Y, Z, att, att_soft, in_bladder


def _mean_jacobian(disp: np.ndarray, grid: Grid, mask: np.ndarray) -> float:
    """Mean Jacobian determinant of the displacement ``disp`` (mm, ``grid.shape + (3,)``) over ``mask``; 1 for an empty mask."""
    if not mask.any():
        return 1.0
    return float(jacobian_determinant(disp, grid.spacing)[mask].mean())


def _velocity(p: dict, pel: _Pelvis, grid: Grid, X, Y, Z, att: np.ndarray, att_soft: np.ndarray, in_bladder=None, *, a_b: float, a_r: float, shift, angle_deg: float, flat_margin_p: float) -> np.ndarray:
    """Stationary velocity field (mm) on the work grid, shape grid.shape + (3,)."""
    v = np.zeros(grid.shape + (3,), dtype=np.float64)
    # bladder: scaling about the base point c0, by exp(3 a_b share_i) along axis i
    bl = p["bladder"]
    cb, sb = np.asarray(bl["centre"]), np.asarray(bl["semi_axes"])
    c0 = cb + np.array([0.0, 0.2 * sb[1], -0.7 * sb[2]])
    rates = 3.0 * a_b * np.asarray(_BLADDER_AXIS_SHARE)
    s = np.maximum(1.0, np.exp(rates))
    w_b = flat_top(ellipsoid_excess(X, Y, Z, c0 + s * (cb - c0), sb * s + 3.0), 15.0)
    vb = np.stack([rates[0] * (X - c0[0]), rates[1] * (Y - c0[1]), rates[2] * (Z - c0[2])], axis=-1) * w_b[..., None]
    # rectum: radial scaling about the axis, in a window around the prostate
    zc = p["prostate"]["centre"][2]
    ax, ay = pel.rectum_axis(Z)
    rad = np.sqrt((X - ax) ** 2 + (Y - ay) ** 2)
    w_r = flat_top(rad - (pel.rectum_radius(Z) * max(1.0, math.exp(a_r)) + 3.0), 10.0)
    w_r = w_r * flat_top(np.maximum(zc - 25.0 - Z, Z - zc - 45.0), 15.0)
    vr = np.stack([a_r * (X - ax), a_r * (Y - ay), np.zeros_like(X)], axis=-1) * w_r[..., None]
    # prostate: rigid motion about its centre
    pr = p["prostate"]
    c = np.asarray(pr["centre"])
    t = np.asarray(shift, dtype=np.float64)
    # flat region: the prostate along its path (centre halfway) plus 2 mm
    w_p = flat_top(ellipsoid_excess(X, Y, Z, c + 0.5 * t, np.asarray(pr["semi_axes"]) + flat_margin_p, pel.rot_p), 10.0)
    theta = math.radians(angle_deg)
    if abs(theta) < 1e-9:
        vp = np.broadcast_to(t, X.shape + (3,))
    else:
        rot = rotation_about_x(angle_deg)
        t_perp = t[1:]
        dc = np.linalg.solve(np.eye(2) - rot[1:, 1:], t_perp)
        cp = c + np.array([0.0, dc[0], dc[1]])
        vp = np.stack([np.full_like(X, t[0]), -theta * (Z - cp[2]), theta * (Y - cp[1])], axis=-1)
    v = (w_p * att)[..., None] * vp + ((1.0 - w_p) * att_soft)[..., None] * (vb + vr)
    # taper to zero at the work-grid border
    zs, ys, xs = grid.axis_positions()
    taper = 1.0
    for axis_pos, shape_axis in ((xs, (1, 1, -1)), (ys, (1, -1, 1)), (zs, (-1, 1, 1))):
        dist = np.minimum(axis_pos - axis_pos[0], axis_pos[-1] - axis_pos)
        taper = taper * smoothstep(dist / 25.0).reshape(shape_axis)
    return v * taper[..., None]


@dataclass(frozen=True)
class _Deformation:
    """The deformation of the day on its work grid.

    ``fwd`` = ``phi = exp(v)`` and ``inv`` = ``exp(-v)``: displacement fields,
    mm, float64, shape ``work.shape + (3,)``; ``achieved``: mean Jacobian
    determinant of ``phi`` over the bladder (its volume ratio); ``jac_min``:
    the smallest Jacobian determinant on the work grid.
    """

    work: Grid
    fwd: np.ndarray
    inv: np.ndarray
    achieved: float
    jac_min: float


def _calibrate_bladder_rate(p: dict, pel: _Pelvis, coarse: Grid, a_b: float, fill: float, kw: dict) -> float:
    """The bladder rate whose field gives the volume ratio ``1 + fill`` on the ``coarse`` grid (at most three tries, starting from ``a_b``)."""
    target = 1.0 + fill
    fields = _work_fields(p, pel, coarse)
    a_used = a_b
    for _ in range(3):
        v = _velocity(p, pel, coarse, *fields, a_b=a_used, **kw)
        achieved = _mean_jacobian(exponentiate(v, coarse), coarse, fields[-1])
        if abs(achieved - target) <= 0.005 * abs(fill) + 0.001:
            break
        a_used += (math.log(target) - math.log(achieved)) / 3.0
    return a_used


def _deformation(p: dict, ct_spacing: Sequence[float], *, fill: float, rect: float, shift: np.ndarray, angle: float) -> _Deformation:
    """The deformation of the day from its variation.

    Parameters
    ----------
    p : dict
        Anatomical parameters of the patient.
    ct_spacing : (dz, dy, dx)
        Planning CT spacing, mm; sets the work-grid spacing.
    fill, rect : float
        Relative bladder volume change and relative rectal radius change.
    shift : ndarray, shape (3,)
        Prostate translation, LPS mm.
    angle : float
        Prostate rotation about the left-right axis, degrees.
    """
    pel = _Pelvis(p)
    a_b = math.log1p(fill) / 3.0
    a_r = math.log1p(rect)
    flat_margin_p = float(0.5 * np.linalg.norm(shift) + 2.0 * abs(math.sin(math.radians(angle) / 2.0)) * max(p["prostate"]["semi_axes"]) + 2.0)
    kw = dict(a_r=a_r, shift=shift, angle_deg=angle, flat_margin_p=flat_margin_p)
    # calibrate the bladder rate on a coarse grid, then build the fields on the fine one
    h = float(np.clip(min(ct_spacing), *_WORK_SPACING_MM))
    coarse = _work_grid(p, pel, a_b, a_r, flat_margin_p, spacing=2.0 * h)
    a_used = _calibrate_bladder_rate(p, pel, coarse, a_b, fill, kw)
    work = _work_grid(p, pel, a_b, a_r, flat_margin_p, spacing=h)
    fields = _work_fields(p, pel, work)
    v = _velocity(p, pel, work, *fields, a_b=a_used, **kw)
    fwd = exponentiate(v, work)
    inv = exponentiate(-v, work)
    jac = jacobian_determinant(fwd, work.spacing)
    achieved = float(jac[fields[-1]].mean()) if fields[-1].any() else 1.0
    jac_min = float(jac.min())
    return _Deformation(work=work, fwd=fwd, inv=inv, achieved=achieved, jac_min=jac_min)
