"""The images the demons see: steps 1–4 of :mod:`art.registration.deformable`'s method.

The planning CT placed on the CBCT grid through the rigid map, the CBCT's
shading correction (:func:`shading_correction`), gas in-painting, the guide
structures' signed-distance edges, windowing and pre-smoothing, and the
noise-adaptive demons threshold. Arrays are ``(z, y, x)`` on the CBCT grid
unless said otherwise; intensities in HU, lengths in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from art.errors import InputError
from art.geometry import Grid, Volume
from art.registration.fields import apply_matrix, grid_points, sample_image
from art.registration.rigid import RigidResult, body_mask, field_of_view

__all__ = ["shading_correction"]

_WINDOW = (-250.0, 250.0)
_GAS_HU = -400.0
_BONE_HU = 200.0


# --------------------------------------------------------------- helpers
def _normconv(values: np.ndarray, weights: np.ndarray, sigma_vox) -> np.ndarray:
    num = ndimage.gaussian_filter((values * weights).astype(np.float32), sigma_vox, mode="nearest", truncate=3.0)
    den = ndimage.gaussian_filter(weights.astype(np.float32), sigma_vox, mode="nearest", truncate=3.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-3, num / np.maximum(den, 1e-6), 0.0)
    return out.astype(np.float32)


def shading_correction(cbct: np.ndarray, reference: np.ndarray, region: np.ndarray, spacing, *, sigma_mm: float = 25.0) -> np.ndarray:
    """Smooth additive correction field (HU) such that ``cbct - field`` ≈ ``reference`` in soft tissue.

    Parameters
    ----------
    cbct, reference : ndarray, float32, same shape (z, y, x)
        The CBCT and the planning CT placed on the CBCT grid, HU.
    region : ndarray of bool
        Voxels that may be used (body, field of view).
    spacing : (dz, dy, dx)
        Voxel size, mm.
    sigma_mm : float, keyword-only
        Block size (mm) of the robust estimate; the shading is assumed smoother.

    Returns
    -------
    ndarray, float32
        The field, subtracted from the CBCT (voxels above -900 HU).
        Robust to misregistration and gas: the median of ``cbct - reference``
        over the soft tissue (-200 ... 200 HU in both) of each block of about
        ``sigma_mm``, blocks with too few such voxels filled from their
        neighbours, smoothed over 1.5 blocks and interpolated back.
    """
    soft = region & (reference > -200) & (reference < 200) & (cbct > -400) & (cbct < 400)
    if soft.sum() < 100:
        return np.zeros(cbct.shape, dtype=np.float32)
    diff = (cbct - reference).astype(np.float32)
    med = float(np.median(diff[soft]))
    b = [max(1, int(round(sigma_mm / s))) for s in spacing]
    nb = [int(np.ceil(n / k)) for n, k in zip(cbct.shape, b)]
    pad = [(0, nbi * k - n) for nbi, k, n in zip(nb, b, cbct.shape)]
    d = np.pad(np.where(soft, diff, np.nan), pad, constant_values=np.nan)
    d = d.reshape(nb[0], b[0], nb[1], b[1], nb[2], b[2]).transpose(0, 2, 4, 1, 3, 5).reshape(nb[0], nb[1], nb[2], -1)
    count = np.sum(np.isfinite(d), axis=-1)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            blk = np.nanmedian(d, axis=-1)
    ok = count >= 0.2 * d.shape[-1]
    blk = np.where(ok, blk, 0.0).astype(np.float32)
    smooth = _normconv(blk, ok, [1.5, 1.5, 1.5])
    smooth = np.where(ndimage.gaussian_filter(ok.astype(np.float32), 1.5) > 1e-3, smooth, med).astype(np.float32)
    # block centres -> voxel positions (linear interpolation, edges held)
    coords = [(np.arange(n) - (k - 1) / 2.0) / k for n, k in zip(cbct.shape, b)]
    zz, yy, xx = np.meshgrid(*coords, indexing="ij", sparse=True)
    zz, yy, xx = np.broadcast_arrays(zz, yy, xx)
    out = ndimage.map_coordinates(smooth, [zz, yy, xx], order=1, mode="nearest", prefilter=False)
    return out.astype(np.float32)


def _ball(radius_mm: float, spacing) -> np.ndarray:
    r = [max(1, int(round(radius_mm / s))) for s in spacing]
    zz, yy, xx = np.ogrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1, -r[2] : r[2] + 1]
    return ((zz * spacing[0]) ** 2 + (yy * spacing[1]) ** 2 + (xx * spacing[2]) ** 2) <= radius_mm**2


def _inpaint_gas(img: np.ndarray, body: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Replace gas inside the body by the surrounding tissue; returns (image, gas mask)."""
    inner = ndimage.binary_erosion(body, structure=_ball(10.0, spacing))
    gas = (img < _GAS_HU) & inner
    if not gas.any():
        return img, gas
    gas = ndimage.binary_dilation(gas, structure=_ball(max(spacing), spacing)) & inner
    fill = _normconv(np.clip(img, -200, 400), ~gas & body, [4.0 / s for s in spacing])
    out = img.copy()
    out[gas] = fill[gas]
    return out, gas


#: Beyond this distance from a mask (mm) :func:`_signed_distance` may give this value instead of the
#: exact distance: the guides use ``tanh(d / 4 mm)``, which is 1 in float32 from d = 37 mm on.
_GUIDE_REACH_MM = 50.0


def _signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Signed distance (mm, float32, + outside) to the mask's boundary, exact up to :data:`_GUIDE_REACH_MM`
    outside it (beyond: that value). The transforms run on the mask's bounding box grown by the reach:
    a voxel inside it has its nearest other-side voxel inside it too (the same distances as on the
    whole grid, to the bit)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.full(mask.shape, _GUIDE_REACH_MM, dtype=np.float32)
    from art.threads import parallel

    grow = [int(np.ceil(_GUIDE_REACH_MM / float(s))) + 1 for s in spacing]
    box = tuple(slice(max(int(np.min(ix)) - g, 0), min(int(np.max(ix)) + g + 1, n)) for ix, g, n in zip(np.nonzero(mask), grow, mask.shape))
    sub = mask[box]
    # the two transforms on two threads (SciPy releases the GIL in them): the same arrays, sooner
    out, inn = parallel(lambda m: ndimage.distance_transform_edt(m, sampling=spacing), [~sub, sub])
    full = np.full(mask.shape, _GUIDE_REACH_MM, dtype=np.float32)
    full[box] = np.minimum(out - inn, _GUIDE_REACH_MM)
    return full


# --------------------------------------------------------------- stages
@dataclass(frozen=True)
class _Frame:
    """The planning CT brought onto the CBCT grid, and the masks there.

    Attributes
    ----------
    grid : Grid
        The CBCT grid, shape (z, y, x).
    pts : ndarray, float64, (z, y, x, 3)
        LPS centres (mm) of the CBCT voxels.
    rig_pts : ndarray, float64, (z, y, x, 3)
        ``pts`` mapped to the planning frame by the rigid transform, mm.
    ct_r : ndarray, (z, y, x)
        The planning CT sampled there (HU, -1000 outside the CT).
    fov, body, region : ndarray of bool, (z, y, x)
        The CBCT's reconstructed field of view, the body, and their intersection.
    raw : ndarray, float32, (z, y, x)
        The CBCT, HU.
    """

    grid: Grid
    pts: np.ndarray
    rig_pts: np.ndarray
    ct_r: np.ndarray
    fov: np.ndarray
    body: np.ndarray
    region: np.ndarray
    raw: np.ndarray


def _ct_on_cbct_grid(ct: Volume, cbct: Volume, rigid: RigidResult, given_body: Volume | None) -> _Frame:
    """Step 1: the planning CT placed on the CBCT grid through the rigid map, and the body there.

    Parameters
    ----------
    ct, cbct : Volume
        Planning CT and daily CBCT, HU.
    rigid : RigidResult
        CBCT → planning-CT points.
    given_body : Volume of bool or None
        Body on the CBCT grid; when None, the thresholded CBCT body united with
        the CT's body outside the CBCT's field of view.

    Returns
    -------
    _Frame
    """
    cg = cbct.grid
    pts = grid_points(cg)
    rig_pts = apply_matrix(rigid.matrix_4x4, pts)
    ct_r = sample_image(ct.array, ct.grid, rig_pts, fill_value=-1000.0)
    fov = field_of_view(cbct)
    if given_body is not None:
        if not isinstance(given_body, Volume) or not given_body.grid.same_as(cg):
            raise InputError("body_mask must be a mask Volume on the CBCT grid")
        body = np.asarray(given_body.array, dtype=bool)
    else:
        body = body_mask(cbct) | (body_mask(Volume(ct_r, cg)) & ~fov)
    region = body & fov
    raw = cbct.array.astype(np.float32)
    return _Frame(grid=cg, pts=pts, rig_pts=rig_pts, ct_r=ct_r, fov=fov, body=body, region=region, raw=raw)


def _guide_edges(ct: Volume, cg: Grid, guide_structures: dict | None, guide_weight_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 4 (guides): each guide structure as ``guide_weight_hu · tanh(signed distance / 4 mm)``.

    Parameters
    ----------
    ct : Volume
        The planning CT (its grid holds the planning masks).
    cg : Grid
        The CBCT grid.
    guide_structures : dict name -> (ct_mask, cbct_mask) or None
        Planning mask (Volume on the CT grid), today's mask (Volume on the CBCT grid).
    guide_weight_hu : float
        Strength of each edge, HU.

    Returns
    -------
    guide_f : ndarray, float32, ``cg.shape``
        Summed edges of today's masks (added to the CBCT), HU.
    guide_m_ct : ndarray, float32, ``ct.grid.shape``
        Summed edges of the planning masks on the CT grid (added to the CT), HU.
    """
    sp = cg.spacing
    guide_f = np.zeros(cg.shape, dtype=np.float32)
    guide_m_ct = np.zeros(ct.grid.shape, dtype=np.float32)
    for name, pair in (guide_structures or {}).items():
        try:
            ct_mask, cb_mask = pair
        except (TypeError, ValueError) as exc:
            raise InputError(f"guide_structures[{name!r}] must be a pair (ct_mask, cbct_mask)") from exc
        if not isinstance(ct_mask, Volume) or not ct_mask.grid.same_as(ct.grid):
            raise InputError(f"guide_structures[{name!r}]: the first mask must be a Volume on the planning CT grid")
        if not isinstance(cb_mask, Volume) or not cb_mask.grid.same_as(cg):
            raise InputError(f"guide_structures[{name!r}]: the second mask must be a Volume on the CBCT grid")
        guide_f += guide_weight_hu * np.tanh(_signed_distance(cb_mask.array, sp) / 4.0)
        guide_m_ct += guide_weight_hu * np.tanh(_signed_distance(ct_mask.array, ct.grid.spacing) / 4.0)
    return guide_f, guide_m_ct


@dataclass(frozen=True)
class _ImageOptions:
    """How the fixed image is built.

    Attributes
    ----------
    shading_sigma_mm : float
        Block size of :func:`shading_correction`, mm.
    presmooth_mm : float
        Gaussian sigma applied to both images (0: none), mm.
    guide : ndarray, float32, (z, y, x), or None
        Guide edges added to the fixed image (HU), None without guide structures.
    """

    shading_sigma_mm: float
    presmooth_mm: float
    guide: np.ndarray | None


@dataclass(frozen=True)
class _Fixed:
    """The corrected CBCT and the fixed image made from it.

    Attributes
    ----------
    corr : ndarray, (z, y, x)
        The CBCT less its shading, the CT outside the field of view, gas in-painted, HU.
    shade : ndarray, float32, (z, y, x)
        The shading field subtracted, HU.
    gas : ndarray of bool, (z, y, x)
        The in-painted gas.
    image : ndarray, (z, y, x)
        ``corr`` windowed, pre-smoothed, guide edges added: the demons' fixed image.
    """

    corr: np.ndarray
    shade: np.ndarray
    gas: np.ndarray
    image: np.ndarray


def _windowed(img: np.ndarray, spacing, presmooth_mm: float, guide: np.ndarray | None) -> np.ndarray:
    """Step 4–5: ``img`` clipped to the window, pre-smoothed (``presmooth_mm`` > 0), plus ``guide`` (HU) if given."""
    f = np.clip(img, *_WINDOW)
    if presmooth_mm > 0:
        f = ndimage.gaussian_filter(f, [presmooth_mm / s for s in spacing], truncate=3.0)
    if guide is not None:
        f = f + guide
    return f


def _fixed_image(frame: _Frame, ct: Volume, rigid: RigidResult, u: np.ndarray | None, opts: _ImageOptions) -> _Fixed:
    """Steps 2–4 for the CBCT: shading-corrected against the CT (warped by ``u``), gas in-painted, windowed.

    Parameters
    ----------
    frame : _Frame
    ct : Volume
        The planning CT, HU.
    rigid : RigidResult
    u : ndarray, float32, (z, y, x, 3) or None
        Deformable part (LPS mm, CBCT grid) the CT is warped by for the
        shading estimate; None: the rigidly placed CT.
    opts : _ImageOptions

    Returns
    -------
    _Fixed
    """
    sp = frame.grid.spacing
    if u is None:
        ref = frame.ct_r
    else:
        ref = sample_image(ct.array, ct.grid, apply_matrix(rigid.matrix_4x4, frame.pts + u), fill_value=-1000.0)
    s = shading_correction(frame.raw, ref, frame.region, sp, sigma_mm=opts.shading_sigma_mm)
    corr = np.where(frame.raw > -900.0, frame.raw - s, frame.raw)
    corr = np.where(frame.fov, corr, frame.ct_r)
    corr, gas_f = _inpaint_gas(corr, frame.body, sp)
    return _Fixed(corr=corr, shade=s, gas=gas_f, image=_windowed(corr, sp, opts.presmooth_mm, opts.guide))


def _moving_image(frame: _Frame, ct: Volume, guide_m_ct: np.ndarray | None, guide_weight_hu: float, presmooth_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps 3–5 for the planning CT on the CBCT grid: gas in-painted, windowed, pre-smoothed, guide edges added.

    Parameters
    ----------
    frame : _Frame
    ct : Volume
        The planning CT (grid of ``guide_m_ct``).
    guide_m_ct : ndarray, float32, ``ct.grid.shape``, or None
        Planning guide edges (HU), None without guide structures.
    guide_weight_hu : float
        Edge value beyond the CT (HU).
    presmooth_mm : float
        Gaussian sigma, mm (0: none).

    Returns
    -------
    mov : ndarray, (z, y, x)
        The CT on the CBCT grid with its gas in-painted, HU.
    mov_w : ndarray, (z, y, x)
        The demons' moving image.
    """
    mov, _ = _inpaint_gas(frame.ct_r, frame.body, frame.grid.spacing)
    gm = None if guide_m_ct is None else sample_image(guide_m_ct, ct.grid, frame.rig_pts, fill_value=guide_weight_hu)
    return mov, _windowed(mov, frame.grid.spacing, presmooth_mm, gm)


def _rigid_mae(frame: _Frame, fixed: _Fixed) -> tuple[float, float]:
    """Mean |CBCT − CT| (HU) in the region after the rigid step: raw CBCT, and corrected CBCT outside gas (nan: empty region)."""
    mae_before = float(np.mean(np.abs(frame.raw - frame.ct_r)[frame.region])) if frame.region.any() else float("nan")
    mae_corr = float(np.mean(np.abs(fixed.corr - frame.ct_r)[frame.region & ~fixed.gas])) if frame.region.any() else float("nan")
    return mae_before, mae_corr


def _demons_threshold(fix_w: np.ndarray, mov_w: np.ndarray, mov: np.ndarray, frame: _Frame, gas_f: np.ndarray, least_hu: float) -> tuple[float, float]:
    """The noise-adaptive demons threshold: residual noise of (fixed − moving) in soft tissue after pre-smoothing.

    Parameters
    ----------
    fix_w, mov_w : ndarray, (z, y, x)
        The demons' fixed and moving images, HU.
    mov : ndarray, (z, y, x)
        The in-painted CT on the CBCT grid (soft tissue: ``|mov| < 200`` HU).
    frame : _Frame
    gas_f : ndarray of bool
        The CBCT's in-painted gas (excluded).
    least_hu : float
        Least threshold, HU.

    Returns
    -------
    noise : float
        Robust standard deviation (1.4826 MAD) of the residual, HU (0 with too few voxels).
    threshold : float
        ``max(least_hu, 1.5 * noise)``, HU.
    """
    soft = frame.region & ~gas_f & (np.abs(mov) < 200)
    if soft.sum() > 100:
        dd = (fix_w - mov_w)[soft]
        noise = float(1.4826 * np.median(np.abs(dd - np.median(dd))))
    else:
        noise = 0.0
    threshold = max(float(least_hu), 1.5 * noise)
    return noise, threshold
