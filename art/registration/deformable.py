"""Deformable registration of the daily CBCT to the planning CT (diffeomorphic demons).

Method
------
1. The planning CT is placed on the CBCT grid through the rigid result.
2. The CBCT is intensity-corrected against it: a smooth shading/offset field
   (block medians, blocks of ``shading_sigma_mm``, of the CBCT − CT
   difference over soft tissue, smoothed; robust to misregistered organs and
   gas) is subtracted, so the demons' intensity-equality assumption holds.
   The correction is re-estimated before the finest level, against the
   deformed CT.
3. Gas pockets (< -400 HU inside the body) are in-painted from the tissue
   around them in both images, and the CBCT outside its reconstructed field of
   view is replaced by the CT (no force there): gas that is only in today's
   rectum must not pull the tissue.
4. Both images are windowed to [-250, 250] HU; each guide structure adds
   ``guide_weight_hu · tanh(signed distance / 4 mm)`` to both images (the
   CBCT's AI mask to the CBCT, the planning mask to the CT), so their
   boundaries become strong, consistent edges.
5. Both images are pre-smoothed (``presmooth_mm``); multi-resolution demons
   (SimpleITK fast symmetric forces by default, diffeomorphic on request),
   Gaussian smoothing of the field (``smoothing_mm``) at each iteration, no
   update where ``|fixed - moving|`` is below a noise-adaptive threshold
   (1.5 x the robust residual noise, at least ``intensity_threshold_hu``) so
   noise in flat regions does not drive the field.
6. The deformable part fades to the rigid map outside the body, at the
   grid's lateral and anterior/posterior borders (the transaxial field-of-view
   edge, 20 mm) and (``rigid_bones``) within 10 mm of bone (> 200 HU): the
   pelvic bones move with the rigid bony match. It is *not* forced to the
   rigid map at the superior/inferior border: tissue moving across the CBCT's
   first or last slice (above a filling bladder) keeps its motion there.
   Beyond the grid the deformable part is held at its value on the grid's
   border and fades linearly to the rigid map over ``EDGE_FADE_MM`` (30 mm),
   so both maps stay continuous and invertible there.

Conventions
-----------
Displacement fields are float32 arrays ``(nz, ny, nx, 3)`` holding LPS
``(dx, dy, dz)`` in mm; a field ``d`` on a grid stands for ``p -> p + d(p)``.

* ``cbct_to_ct`` (on the CBCT grid): the CBCT voxel ``y`` shows the planning
  tissue at ``y + cbct_to_ct(y)`` (planning-CT frame). Same convention as the
  phantom's ``DailyTruth.daily_to_planning``. Includes the rigid part.
* ``ct_to_cbct`` (on the planning grid): the planning point ``x`` is found at
  ``x + ct_to_cbct(x)`` in the CBCT. Same as ``DailyTruth.planning_to_daily``.
  Beyond the CBCT's grid it joins the rigid map within ``EDGE_FADE_MM``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from art.errors import ArtError, GeometryError, InputError
from art.geometry import Grid, Volume
from art.registration.fields import apply_matrix, grid_points, jacobian_determinant, sample_field, sample_image
from art.registration.rigid import RigidResult, body_mask, field_of_view

__all__ = ["DeformableResult", "register_deformable", "shading_correction", "extend_field", "EDGE_FADE_MM"]

#: Beyond the CBCT grid the deformable part fades to the rigid map over this distance (mm).
EDGE_FADE_MM = 30.0

_WINDOW = (-250.0, 250.0)
_GAS_HU = -400.0
_BONE_HU = 200.0


@dataclass
class DeformableResult:
    """A deformable CBCT ↔ planning-CT registration.

    Attributes
    ----------
    cbct_to_ct : ndarray, float32, shape ``cbct_grid.shape + (3,)``
        On the CBCT grid; CBCT voxel ``y`` shows the planning tissue at
        ``y + cbct_to_ct[y]`` (LPS mm, components dx, dy, dz). Rigid part included.
    ct_to_cbct : ndarray, float32, shape ``ct_grid.shape + (3,)``
        On the planning grid: planning point ``x`` lies at ``x + ct_to_cbct[x]``
        in the CBCT (the inverse map; rigid once more than ``EDGE_FADE_MM``
        beyond the CBCT's grid).
    cbct_grid, ct_grid : Grid
        The grids of the two fields.
    rigid : RigidResult
        The rigid registration it started from.
    quality : dict
        ``jacobian_min``, ``jacobian_max``, ``folded_voxels`` (det <= 0 inside
        the body) for the CBCT-grid field (``*_cbct``) and the planning-grid
        field (``*_ct``); ``mean_displacement_mm`` / ``max_displacement_mm``
        (deformable part only, inside the CBCT body, relative to the rigid
        map); ``inverse_consistency_mean_mm`` / ``_max_mm`` (inside the CBCT
        body); ``intensity_mae_hu`` before and after (corrected CBCT vs CT in
        the body).
    time_s : float
        Wall time (s) of the deformable step (without the rigid step).
    info : dict
        Parameters used, per-level timings, the calibration.
    """

    cbct_to_ct: np.ndarray
    ct_to_cbct: np.ndarray
    cbct_grid: Grid
    ct_grid: Grid
    rigid: RigidResult
    quality: dict = field(default_factory=dict)
    time_s: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def cbct_to_ct_volumes(self) -> tuple[Volume, Volume, Volume]:
        """The CBCT-grid field as three Volumes (dx, dy, dz), mm."""
        return tuple(Volume(np.ascontiguousarray(self.cbct_to_ct[..., a]), self.cbct_grid) for a in range(3))  # type: ignore[return-value]

    @property
    def ct_to_cbct_volumes(self) -> tuple[Volume, Volume, Volume]:
        """The planning-grid field as three Volumes (dx, dy, dz), mm."""
        return tuple(Volume(np.ascontiguousarray(self.ct_to_cbct[..., a]), self.ct_grid) for a in range(3))  # type: ignore[return-value]

    def cbct_to_ct_points(self, points) -> np.ndarray:
        """Map LPS points (..., 3) of the CBCT frame to the planning frame.

        Deformable inside the CBCT grid; beyond it the deformable part is held
        at the border value and fades to the rigid map over ``EDGE_FADE_MM``
        (the same extension the inverse field was computed with).
        """
        p = np.asarray(points, dtype=np.float64)
        # the deformable part u(y) = T^-1(y + cbct_to_ct(y)) - y (T affine, so interpolating it is exact)
        g = grid_points(self.cbct_grid)
        u = (apply_matrix(self.rigid.inverse_matrix, g + self.cbct_to_ct) - g).astype(np.float32)
        return apply_matrix(self.rigid.matrix_4x4, p + extend_field(u, self.cbct_grid, p))

    def ct_to_cbct_points(self, points) -> np.ndarray:
        """Map planning LPS points (..., 3) into the CBCT frame (deformable on the planning grid, rigid outside)."""
        p = np.asarray(points, dtype=np.float64)
        d, inside = sample_field(self.ct_to_cbct, self.ct_grid, p)
        rig = self.rigid.ct_to_cbct_points(p)
        return np.where(inside[..., None], p + d, rig)

    def save(self, folder) -> None:
        """Write ``registration.json`` (rigid matrix, quality, grids) and ``fields.npz`` (both fields, float32) in ``folder``.

        See docs/registration.md ("Export format").
        """
        import json
        from pathlib import Path

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "fields.npz", cbct_to_ct=self.cbct_to_ct, ct_to_cbct=self.ct_to_cbct)
        doc = {
            "format": "art.registration/1",
            "rigid": self.rigid.to_dict(),
            "cbct_grid": self.cbct_grid.to_dict(),
            "ct_grid": self.ct_grid.to_dict(),
            "fields": {
                "cbct_to_ct": "on cbct_grid, (z,y,x,3) float32, LPS (dx,dy,dz) mm: CBCT voxel y shows planning tissue at y + d(y)",
                "ct_to_cbct": "on ct_grid, (z,y,x,3) float32, LPS (dx,dy,dz) mm: planning point x lies at x + u(x) in the CBCT",
            },
            "quality": _jsonable(self.quality),
            "time_s": self.time_s,
        }
        (out / "registration.json").write_text(json.dumps(doc, indent=2))


def _jsonable(d):
    if isinstance(d, dict):
        return {str(k): _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, (np.floating, np.integer)):
        return d.item()
    return d


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


def _signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.full(mask.shape, 50.0, dtype=np.float32)
    out = ndimage.distance_transform_edt(~mask, sampling=spacing)
    inn = ndimage.distance_transform_edt(mask, sampling=spacing)
    return (out - inn).astype(np.float32)


def _to_sitk(arr: np.ndarray, grid: Grid):
    return Volume(arr.astype(np.float32, copy=False), grid).to_sitk()


def _field_to_sitk(u: np.ndarray, grid: Grid):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(u.astype(np.float64), isVector=True)
    img.SetSpacing(grid.spacing_xyz)
    img.SetOrigin(grid.origin)
    img.SetDirection(grid.direction)
    return img


def _level_grid(grid: Grid, factor: int) -> Grid:
    if factor == 1:
        return grid
    return grid.with_spacing(tuple(s * factor for s in grid.spacing))


def extend_field(u: np.ndarray, grid: Grid, points: np.ndarray, *, fade_mm: float = EDGE_FADE_MM) -> np.ndarray:
    """A displacement field on an axis-aligned ``grid`` evaluated anywhere, faded to zero beyond the grid.

    Inside the grid (between the outer voxel centres): trilinear interpolation.
    Beyond it: the value at the nearest border point, times
    ``max(0, 1 - distance / fade_mm)``.

    Parameters
    ----------
    u : ndarray, shape ``grid.shape + (3,)``
        LPS (dx, dy, dz), mm.
    points : ndarray, shape (..., 3)
        LPS points, mm.

    Returns
    -------
    ndarray, float32, shape ``points.shape``
    """
    kji = grid.lps_to_index(np.asarray(points, dtype=np.float64).reshape(-1, 3))
    top = np.asarray(grid.shape, dtype=np.float64) - 1.0
    clamped = np.clip(kji, 0.0, top)
    dist = np.linalg.norm((kji - clamped) * np.asarray(grid.spacing), axis=1)
    w = np.clip(1.0 - dist / float(fade_mm), 0.0, 1.0).astype(np.float32)
    out = np.empty((kji.shape[0], 3), dtype=np.float32)
    c = clamped.T
    for a in range(3):
        out[:, a] = ndimage.map_coordinates(u[..., a], c, order=1, mode="nearest", prefilter=False) * w
    return out.reshape(np.shape(points))


def _resample_field(u: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    pts = grid_points(dst)
    d, _ = sample_field(u, src, pts)
    return d


# --------------------------------------------------------------- main
def register_deformable(
    ct: Volume,
    cbct: Volume,
    *,
    rigid: RigidResult,
    body_mask: Volume | None = None,
    guide_structures: dict | None = None,
    guide_weight_hu: float = 150.0,
    levels=(4, 2, 1),
    iterations=(80, 60, 20),
    smoothing_mm: float = 6.0,
    update_smoothing_mm: float = 0.0,
    max_step_voxels: float = 2.0,
    shading_sigma_mm: float = 25.0,
    ct_body: Volume | None = None,
    method: str = "symmetric",
    presmooth_mm: float = 1.0,
    intensity_threshold_hu: float = 10.0,
    rigid_bones: bool = True,
) -> DeformableResult:
    """Deformable registration of the CBCT (fixed) to the planning CT (moving).

    Parameters
    ----------
    ct : Volume
        Planning CT, HU.
    cbct : Volume
        Daily CBCT, HU-like (shading, offset, noise, truncation tolerated);
        axis-aligned grid.
    rigid : RigidResult, keyword-only
        From :func:`~art.registration.register_rigid` (CBCT → CT points).
    body_mask : Volume of bool, optional, keyword-only
        Body on the CBCT grid (e.g. the AI BODY); thresholded (> -500 HU,
        holes filled) when omitted. The displacement is forced to the rigid
        map outside it (smoothly).
    guide_structures : dict name -> (ct_mask, cbct_mask), optional, keyword-only
        Organs contoured on both images (planning mask as a Volume on the CT
        grid, today's AI mask as a Volume on the CBCT grid): their boundaries
        are added to both images as strong edges (see the module notes), so
        the registration honours them.
    guide_weight_hu : float, keyword-only
        Strength (HU) of each guide structure's edge.
    levels : sequence of int, keyword-only
        Down-sampling factor per resolution level (coarse to fine).
    iterations : sequence of int, keyword-only
        Demons iterations per level.
    smoothing_mm : float, keyword-only
        Gaussian sigma (mm) of the displacement field regularisation.
    update_smoothing_mm : float, keyword-only
        Gaussian sigma (mm) of the update field (0: off).
    max_step_voxels : float, keyword-only
        Largest update per iteration, voxels.
    shading_sigma_mm : float, keyword-only
        Width of the CBCT shading correction (see :func:`shading_correction`).
    ct_body : Volume of bool, optional, keyword-only
        Planning BODY on the CT grid, for the quality figures of ``ct_to_cbct``
        (thresholded when omitted).
    method : {"symmetric", "diffeomorphic"}, keyword-only
        SimpleITK's fast symmetric-forces demons (default, faster) or
        diffeomorphic demons (exponential updates). Folding is checked either way.
    presmooth_mm : float, keyword-only
        Gaussian sigma (mm) applied to both images before the demons (noise).
    intensity_threshold_hu : float, keyword-only
        Least demons intensity-difference threshold (HU); the one used is
        max(this, 1.5 x the measured residual noise), see ``info``.
    rigid_bones : bool, keyword-only
        Keep the bones (and 10 mm around them, fading in) on the rigid map.

    Returns
    -------
    DeformableResult
        Both fields (see the module notes for their conventions) and quality figures.
    """
    import SimpleITK as sitk

    if not isinstance(ct, Volume) or not isinstance(cbct, Volume):
        raise InputError("ct and cbct must be Volumes")
    if not isinstance(rigid, RigidResult):
        raise InputError(f"rigid must be a RigidResult, got {type(rigid).__name__}")
    if not cbct.grid.is_axis_aligned or not ct.grid.is_axis_aligned:
        raise GeometryError("register_deformable needs axis-aligned CT and CBCT grids")
    levels = [int(v) for v in levels]
    iterations = [int(v) for v in iterations]
    if len(levels) != len(iterations) or not levels or any(v < 1 for v in levels) or any(v < 0 for v in iterations):
        raise InputError("levels and iterations must be non-empty, of equal length, levels >= 1, iterations >= 0")
    if method not in ("symmetric", "diffeomorphic"):
        raise InputError(f"method must be 'symmetric' or 'diffeomorphic', got {method!r}")
    if smoothing_mm <= 0:
        raise InputError(f"smoothing_mm must be positive, got {smoothing_mm}")
    t0 = time.perf_counter()
    cg = cbct.grid
    sp = cg.spacing
    info: dict = {"levels": levels, "iterations": iterations, "smoothing_mm": smoothing_mm, "level_times_s": []}

    # ---- CT on the CBCT grid through the rigid map
    pts = grid_points(cg)
    rig_pts = apply_matrix(rigid.matrix_4x4, pts)
    ct_r = sample_image(ct.array, ct.grid, rig_pts, fill_value=-1000.0)
    fov = field_of_view(cbct)
    if body_mask is not None:
        if not isinstance(body_mask, Volume) or not body_mask.grid.same_as(cg):
            raise InputError("body_mask must be a mask Volume on the CBCT grid")
        body = np.asarray(body_mask.array, dtype=bool)
    else:
        from art.registration.rigid import body_mask as _bm

        body = _bm(cbct) | (_bm(Volume(ct_r, cg)) & ~fov)
    region = body & fov
    raw = cbct.array.astype(np.float32)

    # ---- guide structures as signed-distance edges
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
    has_guides = bool(guide_structures)

    # ---- body weight: the field fades to the rigid map outside the body
    wbody = ndimage.gaussian_filter(ndimage.binary_dilation(body, structure=_ball(10.0, sp)).astype(np.float32), [10.0 / s for s in sp], mode="nearest")
    # ... and at the grid's lateral and anterior/posterior borders (the transaxial field-of-view edge, where
    # truncation leaves unreliable intensities). Not at the superior/inferior border: tissue moving across the
    # CBCT's first or last slice keeps its motion, and extend_field carries it beyond the grid to the rigid map.
    for ax in (1, 2):
        n, s = cg.shape[ax], sp[ax]
        dist = np.minimum(np.arange(n), np.arange(n)[::-1]) * s  # mm from the outer voxel centres
        ramp = np.clip((dist - s) / 20.0, 0.0, 1.0).astype(np.float32)
        shape = [1, 1, 1]
        shape[ax] = n
        wbody *= ramp.reshape(shape)

    def prepare(u: np.ndarray | None):
        """Fixed and moving images on the CBCT grid (moving warped by u for the shading estimate)."""
        if u is None:
            ref = ct_r
        else:
            ref = sample_image(ct.array, ct.grid, apply_matrix(rigid.matrix_4x4, pts + u), fill_value=-1000.0)
        s = shading_correction(raw, ref, region, sp, sigma_mm=shading_sigma_mm)
        corr = np.where(raw > -900.0, raw - s, raw)
        corr = np.where(fov, corr, ct_r)
        corr, gas_f = _inpaint_gas(corr, body, sp)
        return corr, s, gas_f, ref

    corr, shade, gas_f, _ = prepare(None)
    if rigid_bones:
        # bones move with the rigid (bony) match: the field fades in over 10 mm from them
        bone = (ndimage.gaussian_filter(corr, [1.0 / s for s in sp], truncate=2.0) > _BONE_HU) & region
        if bone.any():
            dbone = ndimage.distance_transform_edt(~bone, sampling=sp)
            wbody *= np.clip((dbone - 1.0) / 10.0, 0.0, 1.0).astype(np.float32)
        info["bone_voxels"] = int(bone.sum())
    mov, gas_m = _inpaint_gas(ct_r, body, sp)
    mae_before = float(np.mean(np.abs(raw - ct_r)[region])) if region.any() else float("nan")
    mae_corr = float(np.mean(np.abs(corr - ct_r)[region & ~gas_f])) if region.any() else float("nan")
    info["gas_voxels_cbct"] = int(gas_f.sum())

    def images(corr_img):
        f = np.clip(corr_img, *_WINDOW)
        if presmooth_mm > 0:
            f = ndimage.gaussian_filter(f, [presmooth_mm / s for s in sp], truncate=3.0)
        if has_guides:
            f = f + guide_f
        return f

    mov_w = np.clip(mov, *_WINDOW)
    if presmooth_mm > 0:
        mov_w = ndimage.gaussian_filter(mov_w, [presmooth_mm / s for s in sp], truncate=3.0)
    if has_guides:
        gm = sample_image(guide_m_ct, ct.grid, rig_pts, fill_value=guide_weight_hu)
        mov_w = mov_w + gm
    fix_w = images(corr)

    # noise-adaptive demons threshold: the residual noise of (fixed - moving) in soft tissue after pre-smoothing
    soft = region & ~gas_f & (np.abs(mov) < 200)
    if soft.sum() > 100:
        dd = (fix_w - mov_w)[soft]
        noise = float(1.4826 * np.median(np.abs(dd - np.median(dd))))
    else:
        noise = 0.0
    threshold = max(float(intensity_threshold_hu), 1.5 * noise)
    info["residual_noise_hu"] = noise
    info["intensity_threshold_hu"] = threshold

    u = np.zeros(cg.shape + (3,), dtype=np.float32)
    prev_grid = cg
    for li, (factor, n_it) in enumerate(zip(levels, iterations)):
        tl = time.perf_counter()
        lg = _level_grid(cg, factor)
        if li == len(levels) - 1 and li > 0:
            # re-estimate the shading against the deformed CT before the finest level
            u_c = u if prev_grid is cg else _resample_field(u, prev_grid, cg)
            corr, shade, gas_f, _ = prepare(u_c)
            fix_w = images(corr)
        if lg is cg:
            f_img, m_img = fix_w, mov_w
            u_l = u if prev_grid is cg else _resample_field(u, prev_grid, lg)
        else:
            sig = [max(0.0, 0.5 * (factor - 1)) * 1.0] * 3
            f_s = ndimage.gaussian_filter(fix_w, sig) if factor > 1 else fix_w
            m_s = ndimage.gaussian_filter(mov_w, sig) if factor > 1 else mov_w
            lp = grid_points(lg)
            f_img = sample_image(f_s, cg, lp, fill_value=float(_WINDOW[0]))
            m_img = sample_image(m_s, cg, lp, fill_value=float(_WINDOW[0]))
            u_l = _resample_field(u, prev_grid, lg) if li > 0 else np.zeros(lg.shape + (3,), dtype=np.float32)
        if n_it > 0:
            if method == "diffeomorphic":
                filt = sitk.DiffeomorphicDemonsRegistrationFilter()
                filt.SetUseGradientType(filt.Symmetric)
            else:
                filt = sitk.FastSymmetricForcesDemonsRegistrationFilter()
            filt.SetNumberOfIterations(n_it)
            filt.SetSmoothDisplacementField(True)
            # ITK takes the Gaussian widths in voxels
            vox = float(np.mean(lg.spacing))
            filt.SetStandardDeviations(max(0.5, float(smoothing_mm) / vox))
            filt.SetUseImageSpacing(True)
            if update_smoothing_mm > 0:
                filt.SetSmoothUpdateField(True)
                filt.SetUpdateFieldStandardDeviations(max(0.5, float(update_smoothing_mm) / vox))
            filt.SetMaximumUpdateStepLength(float(max_step_voxels))
            filt.SetIntensityDifferenceThreshold(threshold)
            try:
                out = filt.Execute(_to_sitk(f_img, lg), _to_sitk(m_img, lg), _field_to_sitk(u_l, lg))
            except RuntimeError as exc:
                raise ArtError(f"deformable registration failed at level {li}: {str(exc).splitlines()[-1] if str(exc) else exc}") from exc
            u_l = sitk.GetArrayFromImage(out).astype(np.float32)
            # fade to zero (rigid) outside the body
            wl = sample_image(wbody, cg, grid_points(lg), fill_value=0.0) if lg is not cg else wbody
            u_l *= wl[..., None]
        u, prev_grid = u_l, lg
        info["level_times_s"].append(round(time.perf_counter() - tl, 3))
    if prev_grid is not cg:
        u = _resample_field(u, prev_grid, cg)

    # ---- total fields
    cbct_to_ct = (apply_matrix(rigid.matrix_4x4, pts + u) - pts).astype(np.float32)
    tinv = time.perf_counter()
    # the inverse is computed on the CBCT grid grown by the edge fade, where the extended field reaches zero
    pg = cg.pad([int(np.ceil(EDGE_FADE_MM / s)) + 1 for s in sp])
    u_pg = extend_field(u, cg, grid_points(pg))
    w_img = sitk.InvertDisplacementField(
        _field_to_sitk(u_pg, pg), maximumNumberOfIterations=30, maxErrorToleranceThreshold=0.05, meanErrorToleranceThreshold=0.001, enforceBoundaryCondition=True
    )
    del u_pg
    w = sitk.GetArrayFromImage(w_img).astype(np.float32)
    xp = grid_points(ct.grid)
    yprime = apply_matrix(rigid.inverse_matrix, xp)
    wd, inside = sample_field(w, pg, yprime)
    wd[~inside] = 0.0
    ct_to_cbct = (yprime + wd - xp).astype(np.float32)
    info["inverse_time_s"] = round(time.perf_counter() - tinv, 3)
    del xp, yprime, wd

    # ---- quality
    jac_cb = jacobian_determinant(u, sp)
    jac_ct = jacobian_determinant(ct_to_cbct, ct.grid.spacing)
    if ct_body is not None:
        ctb = np.asarray(ct_body.array, dtype=bool)
    else:
        from art.registration.rigid import body_mask as _bm

        ctb = _bm(ct)
    mag = np.linalg.norm(u, axis=-1)[body]
    # inverse consistency inside the CBCT body: y -> T(y+u) -> back through ct_to_cbct
    q = pts[body] + cbct_to_ct[body]
    back, _ = sample_field(ct_to_cbct, ct.grid, q)
    ic = np.linalg.norm(q + back - pts[body], axis=-1)
    warped = sample_image(ct.array, ct.grid, pts + cbct_to_ct, fill_value=-1000.0)
    ok = region & ~gas_f
    quality = {
        "jacobian_min_cbct": float(jac_cb[body].min()) if body.any() else float("nan"),
        "jacobian_max_cbct": float(jac_cb[body].max()) if body.any() else float("nan"),
        "folded_voxels_cbct": int(np.count_nonzero(jac_cb[body] <= 0)),
        "jacobian_min_ct": float(jac_ct[ctb].min()) if ctb.any() else float("nan"),
        "jacobian_max_ct": float(jac_ct[ctb].max()) if ctb.any() else float("nan"),
        "folded_voxels_ct": int(np.count_nonzero(jac_ct[ctb] <= 0)),
        "mean_displacement_mm": float(mag.mean()) if mag.size else 0.0,
        "max_displacement_mm": float(mag.max()) if mag.size else 0.0,
        "inverse_consistency_mean_mm": float(ic.mean()) if ic.size else 0.0,
        "inverse_consistency_max_mm": float(ic.max()) if ic.size else 0.0,
        "intensity_mae_raw_hu": mae_before,
        "intensity_mae_corrected_rigid_hu": mae_corr,
        "intensity_mae_corrected_deformed_hu": float(np.mean(np.abs(corr - warped)[ok])) if ok.any() else float("nan"),
    }
    info["shading_range_hu"] = [float(shade[region].min()), float(shade[region].max())] if region.any() else [0.0, 0.0]
    return DeformableResult(
        cbct_to_ct=cbct_to_ct,
        ct_to_cbct=ct_to_cbct,
        cbct_grid=cg,
        ct_grid=ct.grid,
        rigid=rigid,
        quality=quality,
        time_s=time.perf_counter() - t0,
        info=info,
    )
