"""Synthetic CT of the day: the planning CT warped onto today's anatomy, with CBCT-only regions from the CBCT.

Steps (all on the CBCT grid):

1. ``warped`` = planning CT pulled through ``result.cbct_to_ct`` (linear).
2. Calibration: the CBCT's shading is removed (smooth field against ``warped``,
   :func:`~art.registration.deformable.shading_correction`), then a linear
   map is fitted on well-registered tissue (inside the body and the field of
   view, both above -200 HU, |residual| < 150 HU after a first fit): the
   corrected CBCT is regressed on the warped CT (so the CBCT's noise does not
   flatten the slope) and inverted, ``HU_ct = a · HU_cbct + b``.
3. CBCT-only regions: voxels inside the body (10 mm from its surface) and the field of view where the
   calibrated CBCT shows gas (< -400 HU) while the warped CT shows tissue
   (> -200 HU) — gas pockets of the day — take the calibrated CBCT value;
   so do voxels where the warped CT shows gas that is gone today (warped CT <
   -400, calibrated CBCT > -200).
4. Outside the CBCT's field of view (truncation) and beyond its grid the warped
   (rigidly placed) CT is kept; outside ``body`` (when given) the value is -1000.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from art.errors import InputError
from art.geometry import Volume
from art.registration.deformable import DeformableResult, _ball, shading_correction
from art.registration.fields import grid_points, sample_image
from art.registration.rigid import body_mask as _body_mask
from art.registration.rigid import field_of_view

__all__ = ["synthetic_ct", "warp_ct", "source_slices"]

_GAS = -400.0
_TISSUE = -200.0


def warp_ct(ct: Volume, result: DeformableResult) -> Volume:
    """The planning CT pulled onto the CBCT grid through ``result.cbct_to_ct`` (linear, -1000 outside), HU float32."""
    pts = grid_points(result.cbct_grid) + result.cbct_to_ct
    return Volume(sample_image(ct.array, ct.grid, pts, fill_value=-1000.0), result.cbct_grid)


def source_slices(ct_grid, result: DeformableResult) -> list[list[int]]:
    """Per CBCT slice, the planning CT slices :func:`warp_ct` samples for it (linear interpolation).

    Parameters
    ----------
    ct_grid : Grid
        The planning CT's grid.
    result : DeformableResult
        The registration whose ``cbct_to_ct`` field pulls the CT onto the CBCT grid.

    Returns
    -------
    list of list of int
        One sorted list per CBCT slice (array order): the CT slice indices (z) that
        the slice's points fall between, for the points inside the CT grid (empty
        when none is).
    """
    if not isinstance(result, DeformableResult):
        raise InputError(f"result must be a DeformableResult, got {type(result).__name__}")
    out = []
    points = grid_points(result.cbct_grid)
    for k in range(result.cbct_grid.shape[0]):
        pts = points[k] + result.cbct_to_ct[k]
        kji = ct_grid.lps_to_index(pts.reshape(-1, 3))
        inside = np.all((kji > -0.5) & (kji < np.asarray(ct_grid.shape) - 0.5), axis=1)
        z = np.clip(kji[inside, 0], 0, ct_grid.shape[0] - 1)
        if z.size == 0:
            out.append([])
            continue
        lo, hi = int(np.floor(z.min())), int(np.ceil(z.max()))
        out.append(list(range(lo, hi + 1)))
    return out


def synthetic_ct(ct: Volume, cbct: Volume, result: DeformableResult, *, body: Volume | None = None, return_info: bool = False):
    """Synthetic CT of the day on the CBCT grid.

    Parameters
    ----------
    ct : Volume
        Planning CT, HU.
    cbct : Volume
        Today's CBCT (the one registered in ``result``).
    result : DeformableResult
        From :func:`~art.registration.register_deformable`.
    body : Volume of bool, optional, keyword-only
        Today's body on the CBCT grid; thresholded from the CBCT (and the
        warped CT outside the field of view) when omitted. -1000 HU outside.
    return_info : bool, keyword-only
        Also return a dict with the calibration (``slope``, ``intercept``,
        ``fit_voxels``) and the number of voxels taken from the CBCT.

    Returns
    -------
    Volume
        HU, float32, on ``cbct.grid`` (and the info dict when asked).
    """
    if not isinstance(result, DeformableResult):
        raise InputError(f"result must be a DeformableResult, got {type(result).__name__}")
    if not isinstance(cbct, Volume) or not cbct.grid.same_as(result.cbct_grid):
        raise InputError("cbct must be the Volume registered in result (same grid)")
    cg = cbct.grid
    warped = warp_ct(ct, result).array
    fov = field_of_view(cbct)
    if body is not None:
        if not isinstance(body, Volume) or not body.grid.same_as(cg):
            raise InputError("body must be a mask Volume on the CBCT grid")
        bm = np.asarray(body.array, dtype=bool)
    else:
        bm = _body_mask(cbct) | (_body_mask(Volume(warped, cg)) & ~fov)
    region = bm & fov
    raw = cbct.array.astype(np.float32)
    shade = shading_correction(raw, warped, region, cg.spacing)
    corr = np.where(raw > -900.0, raw - shade, raw)
    # linear calibration on well-registered tissue
    sel = region & (warped > _TISSUE) & (corr > _TISSUE)
    slope, intercept, n_fit = 1.0, 0.0, int(sel.sum())
    if n_fit > 100:
        # regress the (noisy) CBCT on the CT, then invert: CBCT noise does not bias the slope
        x, y = warped[sel].astype(np.float64), corr[sel].astype(np.float64)
        c, d = 1.0, 0.0
        for _ in range(2):
            c, d = np.polyfit(x, y, 1)
            keep = np.abs(c * x + d - y) < 150.0
            if keep.sum() < 100:
                break
            x, y = x[keep], y[keep]
        if c > 0.2:
            slope, intercept, n_fit = float(1.0 / c), float(-d / c), int(x.size)
    calibrated = (slope * corr + intercept).astype(np.float32)
    calibrated = np.clip(calibrated, -1000.0, 3071.0)
    inner = region & ndimage.binary_erosion(bm, structure=_ball(10.0, cg.spacing))
    new_gas = inner & (calibrated < _GAS) & (warped > _TISSUE)
    gone_gas = inner & (warped < _GAS) & (calibrated > _TISSUE)
    take = new_gas | gone_gas
    out = np.where(take, calibrated, warped).astype(np.float32)
    out[~bm] = -1000.0
    vol = Volume(out, cg)
    if return_info:
        return vol, {"slope": slope, "intercept": intercept, "fit_voxels": n_fit, "cbct_voxels": int(take.sum()), "new_gas_voxels": int(new_gas.sum()), "gone_gas_voxels": int(gone_gas.sum())}
    return vol
