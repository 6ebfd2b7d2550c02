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

from art.errors import GeometryError, InputError
from art.geometry import Grid, Volume
from art.registration.deformable_images import _ball  # noqa: F401  (re-exported: art.registration.synthetic_ct uses it)
from art.registration.deformable_images import shading_correction  # re-exported (public; see __all__)
from art.registration.deformable_images import _Fixed, _fixed_image, _Frame, _ImageOptions
from art.registration.deformable_images import _ct_on_cbct_grid, _demons_threshold, _guide_edges, _moving_image, _rigid_mae
from art.registration.demons import _DemonsSettings, _fade_near_bone, _field_to_sitk, _LevelInputs, _rigid_fade_weight, _run_levels
from art.registration.fields import apply_matrix, grid_points, jacobian_determinant, sample_field, sample_image
from art.registration.rigid import RigidResult, body_mask

__all__ = ["DeformableResult", "register_deformable", "shading_correction", "extend_field", "EDGE_FADE_MM"]

#: Beyond the CBCT grid the deformable part fades to the rigid map over this distance (mm).
EDGE_FADE_MM = 30.0


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


# --------------------------------------------------------------- the field beyond the grid
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


def extend_onto_padded(u: np.ndarray, grid: Grid, pad, *, fade_mm: float = EDGE_FADE_MM) -> np.ndarray:
    """:func:`extend_field` at the voxel centres of ``grid.pad(pad)``: the border values continued
    (edge padding) times the same fade ``max(0, 1 - distance / fade_mm)``, without interpolating
    (the padded grid's voxels are the grid's continued, whole indices).

    Returns
    -------
    ndarray, float32, shape ``grid.pad(pad).shape + (3,)``
    """
    pad = [int(v) for v in np.broadcast_to(np.asarray(pad), (3,))]
    d2 = np.zeros(tuple(n + 2 * p for n, p in zip(grid.shape, pad)), dtype=np.float64)
    for ax, (n, p, s) in enumerate(zip(grid.shape, pad, grid.spacing)):
        i = np.arange(-p, n + p)
        beyond = np.maximum(np.maximum(-i, i - (n - 1)), 0) * float(s)
        d2 += (beyond**2).reshape([-1 if a == ax else 1 for a in range(3)])
    w = np.clip(1.0 - np.sqrt(d2) / float(fade_mm), 0.0, 1.0).astype(np.float32)
    return np.pad(np.asarray(u, dtype=np.float32), [(p, p) for p in pad] + [(0, 0)], mode="edge") * w[..., None]


# --------------------------------------------------------------- main
def register_deformable(
    ct: Volume, cbct: Volume, *, rigid: RigidResult, body_mask: Volume | None = None, guide_structures: dict | None = None,
    guide_weight_hu: float = 150.0, levels=(4, 2, 1), iterations=(80, 60, 20), smoothing_mm: float = 6.0,
    update_smoothing_mm: float = 0.0, max_step_voxels: float = 2.0, shading_sigma_mm: float = 25.0, ct_body: Volume | None = None,
    method: str = "symmetric", presmooth_mm: float = 1.0, intensity_threshold_hu: float = 10.0, rigid_bones: bool = True,
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
    levels, iterations = _check_arguments(ct, cbct, rigid, levels, iterations, method, smoothing_mm)
    t0 = time.perf_counter()
    info: dict = {"levels": levels, "iterations": iterations, "smoothing_mm": smoothing_mm, "level_times_s": []}
    # steps 1-4 and 6: the fixed and moving images, the fade weight to the rigid map, the demons threshold
    inputs, fixed, mae_rigid, threshold = _demons_inputs(
        ct, cbct, rigid, body_mask, guide_structures, guide_weight_hu, shading_sigma_mm, presmooth_mm, intensity_threshold_hu, rigid_bones, info
    )
    # step 5: the demons, coarse to fine
    settings = _DemonsSettings(method, smoothing_mm, update_smoothing_mm, max_step_voxels, threshold)
    u, fixed = _run_levels(inputs, fixed, levels, iterations, settings, info["level_times_s"])
    # the total fields: on the CBCT grid, and its inverse on the planning grid
    pts = inputs.frame.pts
    cbct_to_ct = (apply_matrix(rigid.matrix_4x4, pts + u) - pts).astype(np.float32)
    tinv = time.perf_counter()
    ct_to_cbct = _inverse_field(u, cbct.grid, ct.grid, rigid)
    info["inverse_time_s"] = round(time.perf_counter() - tinv, 3)
    quality = _quality(ct, ct_body, inputs.frame, fixed, u, cbct_to_ct, ct_to_cbct, mae_rigid)
    region, shade = inputs.frame.region, fixed.shade
    info["shading_range_hu"] = [float(shade[region].min()), float(shade[region].max())] if region.any() else [0.0, 0.0]
    return DeformableResult(cbct_to_ct=cbct_to_ct, ct_to_cbct=ct_to_cbct, cbct_grid=cbct.grid, ct_grid=ct.grid, rigid=rigid, quality=quality, time_s=time.perf_counter() - t0, info=info)


# --------------------------------------------------------------- stages
def _check_arguments(ct, cbct, rigid, levels, iterations, method: str, smoothing_mm: float) -> tuple[list[int], list[int]]:
    """Validate :func:`register_deformable`'s arguments (InputError, GeometryError); returns ``levels`` and ``iterations`` as lists of int."""
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
    return levels, iterations


def _demons_inputs(
    ct: Volume, cbct: Volume, rigid: RigidResult, given_body, guide_structures, guide_weight_hu: float, shading_sigma_mm: float,
    presmooth_mm: float, intensity_threshold_hu: float, rigid_bones: bool, info: dict,
) -> tuple[_LevelInputs, _Fixed, tuple[float, float], float]:
    """Steps 1–4 and the fade weight (step 6): everything the demons levels start from.

    Parameters
    ----------
    ct, cbct, rigid, guide_structures, guide_weight_hu, shading_sigma_mm, presmooth_mm, intensity_threshold_hu, rigid_bones
        As for :func:`register_deformable`.
    given_body : Volume of bool or None
        ``register_deformable``'s ``body_mask``.
    info : dict
        ``bone_voxels`` (with ``rigid_bones``), ``gas_voxels_cbct``,
        ``residual_noise_hu`` and ``intensity_threshold_hu`` are added, in this order.

    Returns
    -------
    inputs : _LevelInputs
        The CT on the CBCT grid, the moving image, the fade weight (float32, (z, y, x)).
    fixed : _Fixed
        The shading-corrected CBCT and the fixed image against the rigidly placed CT.
    mae_rigid : (float, float)
        Mean |CBCT − CT| in the body after the rigid step, raw and corrected, HU.
    threshold : float
        The demons' intensity-difference threshold, HU.
    """
    cg = cbct.grid
    frame = _ct_on_cbct_grid(ct, cbct, rigid, given_body)
    guide_f, guide_m_ct = _guide_edges(ct, cg, guide_structures, guide_weight_hu)
    has_guides = bool(guide_structures)
    wbody = _rigid_fade_weight(frame.body, cg)
    opts = _ImageOptions(shading_sigma_mm=shading_sigma_mm, presmooth_mm=presmooth_mm, guide=guide_f if has_guides else None)
    fixed = _fixed_image(frame, ct, rigid, None, opts)
    if rigid_bones:
        info["bone_voxels"] = _fade_near_bone(wbody, fixed.corr, frame.region, cg.spacing)
    mov, mov_w = _moving_image(frame, ct, guide_m_ct if has_guides else None, guide_weight_hu, presmooth_mm)
    mae_rigid = _rigid_mae(frame, fixed)
    info["gas_voxels_cbct"] = int(fixed.gas.sum())
    noise, threshold = _demons_threshold(fixed.image, mov_w, mov, frame, fixed.gas, intensity_threshold_hu)
    info["residual_noise_hu"] = noise
    info["intensity_threshold_hu"] = threshold
    inputs = _LevelInputs(frame=frame, ct=ct, rigid=rigid, opts=opts, mov_w=mov_w, wbody=wbody)
    return inputs, fixed, mae_rigid, threshold


def _inverse_field(u: np.ndarray, cg: Grid, ct_grid: Grid, rigid: RigidResult) -> np.ndarray:
    """The planning-grid field ``ct_to_cbct`` (float32, ``ct_grid.shape + (3,)``, LPS mm) from the deformable part.

    Parameters
    ----------
    u : ndarray, float32, ``cg.shape + (3,)``
        The deformable part on the CBCT grid ``cg`` (LPS mm).
    cg, ct_grid : Grid
        The CBCT and planning grids.
    rigid : RigidResult

    Notes
    -----
    ``u`` is extended (:func:`extend_field`) to the CBCT grid grown by
    ``EDGE_FADE_MM``, inverted there (SimpleITK), and sampled at the
    planning voxels mapped rigidly into the CBCT frame (zero beyond).
    """
    import SimpleITK as sitk

    sp = cg.spacing
    # the inverse is computed on the CBCT grid grown by the edge fade, where the extended field reaches zero
    pad = [int(np.ceil(EDGE_FADE_MM / s)) + 1 for s in sp]
    pg = cg.pad(pad)
    u_pg = extend_onto_padded(u, cg, pad)
    w_img = sitk.InvertDisplacementField(
        _field_to_sitk(u_pg, pg), maximumNumberOfIterations=30, maxErrorToleranceThreshold=0.05, meanErrorToleranceThreshold=0.001, enforceBoundaryCondition=True
    )
    del u_pg
    w = sitk.GetArrayFromImage(w_img).astype(np.float32)
    xp = grid_points(ct_grid)
    yprime = apply_matrix(rigid.inverse_matrix, xp)
    wd, inside = sample_field(w, pg, yprime)
    wd[~inside] = 0.0
    return (yprime + wd - xp).astype(np.float32)


def _quality(ct: Volume, ct_body, frame: _Frame, fixed: _Fixed, u, cbct_to_ct, ct_to_cbct, mae_rigid) -> dict:
    """The quality figures of :attr:`DeformableResult.quality`.

    Parameters
    ----------
    ct : Volume
        The planning CT, HU.
    ct_body : Volume of bool or None
        Planning BODY on the CT grid (thresholded from ``ct`` when None).
    frame : _Frame
        The CBCT grid, its body and region.
    fixed : _Fixed
        The corrected CBCT last used, and its gas.
    u, cbct_to_ct : ndarray, float32, (z, y, x, 3)
        Deformable part and total field on the CBCT grid, LPS mm.
    ct_to_cbct : ndarray, float32, ``ct.grid.shape + (3,)``
        The inverse field on the planning grid, LPS mm.
    mae_rigid : (float, float)
        From the rigid step (raw, corrected), HU.

    Returns
    -------
    dict
    """
    body, pts, region = frame.body, frame.pts, frame.region
    jac_cb = jacobian_determinant(u, frame.grid.spacing)
    jac_ct = jacobian_determinant(ct_to_cbct, ct.grid.spacing)
    if ct_body is not None:
        ctb = np.asarray(ct_body.array, dtype=bool)
    else:
        ctb = body_mask(ct)
    mag = np.linalg.norm(u, axis=-1)[body]
    # inverse consistency inside the CBCT body: y -> T(y+u) -> back through ct_to_cbct
    q = pts[body] + cbct_to_ct[body]
    back, _ = sample_field(ct_to_cbct, ct.grid, q)
    ic = np.linalg.norm(q + back - pts[body], axis=-1)
    warped = sample_image(ct.array, ct.grid, pts + cbct_to_ct, fill_value=-1000.0)
    ok = region & ~fixed.gas
    return {
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
        "intensity_mae_raw_hu": mae_rigid[0],
        "intensity_mae_corrected_rigid_hu": mae_rigid[1],
        "intensity_mae_corrected_deformed_hu": float(np.mean(np.abs(fixed.corr - warped)[ok])) if ok.any() else float("nan"),
    }
