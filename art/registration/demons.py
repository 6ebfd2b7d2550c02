"""Multi-resolution demons (SimpleITK): steps 5–6 of :mod:`art.registration.deformable`'s method.

The weight that fades the deformable part to the rigid map (outside the body,
at the lateral and anterior/posterior grid borders, near bone), one demons
filter per resolution level, and the level loop (with the shading re-estimated
before the finest level). Fields are float32 ``(z, y, x, 3)`` LPS
``(dx, dy, dz)`` in mm, the deformable part only (relative to the rigid map).
SimpleITK is imported inside the functions that need it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from art.errors import ArtError
from art.geometry import Grid, Volume
from art.registration.deformable_images import _BONE_HU, _WINDOW, _ball, _Fixed, _fixed_image, _Frame, _ImageOptions
from art.registration.fields import grid_points, sample_field, sample_image
from art.registration.rigid import RigidResult


# --------------------------------------------------------------- helpers
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


def _resample_field(u: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    pts = grid_points(dst)
    d, _ = sample_field(u, src, pts)
    return d


# --------------------------------------------------------------- the fade to the rigid map
def _rigid_fade_weight(body: np.ndarray, cg: Grid) -> np.ndarray:
    """Step 6: weight in [0, 1] of the deformable part, 0 (rigid) outside the body and at the transaxial grid borders.

    Parameters
    ----------
    body : ndarray of bool, ``cg.shape`` (z, y, x)
        The body on the CBCT grid.
    cg : Grid
        The CBCT grid.

    Returns
    -------
    ndarray, float32, ``cg.shape``
        The body dilated by 10 mm and smoothed (10 mm), times a 20 mm ramp
        at the y and x borders (not at the z border).
    """
    sp = cg.spacing
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
    return wbody


def _fade_near_bone(wbody: np.ndarray, corr: np.ndarray, region: np.ndarray, spacing) -> int:
    """Step 6 (``rigid_bones``): multiply ``wbody`` in place by a 10 mm ramp from the bone; returns the bone voxel count.

    Parameters
    ----------
    wbody : ndarray, float32, (z, y, x)
        The fade weight, updated in place.
    corr : ndarray, (z, y, x)
        The corrected CBCT, HU; bone is where its 1-mm smoothing exceeds 200 HU, in ``region``.
    region : ndarray of bool, (z, y, x)
    spacing : (dz, dy, dx)
        Voxel size, mm.
    """
    # bones move with the rigid (bony) match: the field fades in over 10 mm from them
    bone = (ndimage.gaussian_filter(corr, [1.0 / s for s in spacing], truncate=2.0) > _BONE_HU) & region
    if bone.any():
        dbone = ndimage.distance_transform_edt(~bone, sampling=spacing)
        wbody *= np.clip((dbone - 1.0) / 10.0, 0.0, 1.0).astype(np.float32)
    return int(bone.sum())


# --------------------------------------------------------------- one level
@dataclass(frozen=True)
class _DemonsSettings:
    """The demons filter's settings (see :func:`~art.registration.deformable.register_deformable`).

    Attributes
    ----------
    method : {"symmetric", "diffeomorphic"}
    smoothing_mm, update_smoothing_mm : float
        Gaussian sigmas of the field and of the update (0: off), mm.
    max_step_voxels : float
        Largest update per iteration, voxels.
    threshold_hu : float
        Intensity-difference threshold, HU.
    """

    method: str
    smoothing_mm: float
    update_smoothing_mm: float
    max_step_voxels: float
    threshold_hu: float


def _demons_filter(settings: _DemonsSettings, n_it: int, lg: Grid):
    """A SimpleITK demons filter for one level on ``lg`` (Gaussian widths converted to its mean voxel size)."""
    import SimpleITK as sitk

    if settings.method == "diffeomorphic":
        filt = sitk.DiffeomorphicDemonsRegistrationFilter()
        filt.SetUseGradientType(filt.Symmetric)
    else:
        filt = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    filt.SetNumberOfIterations(n_it)
    filt.SetSmoothDisplacementField(True)
    # ITK takes the Gaussian widths in voxels
    vox = float(np.mean(lg.spacing))
    filt.SetStandardDeviations(max(0.5, float(settings.smoothing_mm) / vox))
    filt.SetUseImageSpacing(True)
    if settings.update_smoothing_mm > 0:
        filt.SetSmoothUpdateField(True)
        filt.SetUpdateFieldStandardDeviations(max(0.5, float(settings.update_smoothing_mm) / vox))
    filt.SetMaximumUpdateStepLength(float(settings.max_step_voxels))
    filt.SetIntensityDifferenceThreshold(settings.threshold_hu)
    return filt


def _level_inputs(fix_w, mov_w, u, prev_grid: Grid, cg: Grid, lg: Grid, factor: int, li: int):
    """The fixed and moving images and the starting field of level ``li`` on its grid ``lg``.

    Parameters
    ----------
    fix_w, mov_w : ndarray, (z, y, x) on ``cg``
        The demons' images, HU.
    u : ndarray, float32, ``prev_grid.shape + (3,)``
        The field so far (LPS mm), on the previous level's grid.
    prev_grid, cg, lg : Grid
        The previous level's grid, the CBCT grid, this level's grid.
    factor : int
        This level's down-sampling factor; the images are smoothed
        (sigma ``0.5 (factor - 1)`` voxels) before being sampled on ``lg``.
    li : int
        Level index (0: the field starts at zero).

    Returns
    -------
    f_img, m_img : ndarray, ``lg.shape``
    u_l : ndarray, float32, ``lg.shape + (3,)``
    """
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
    return f_img, m_img, u_l


def _demons_level(f_img, m_img, u_l, lg: Grid, n_it: int, li: int, settings: _DemonsSettings) -> np.ndarray:
    """Run ``n_it`` demons iterations on ``lg`` from ``u_l``; returns the new field, float32 ``lg.shape + (3,)`` (LPS mm).

    Raises ArtError when SimpleITK fails.
    """
    import SimpleITK as sitk

    filt = _demons_filter(settings, n_it, lg)
    try:
        out = filt.Execute(_to_sitk(f_img, lg), _to_sitk(m_img, lg), _field_to_sitk(u_l, lg))
    except RuntimeError as exc:
        raise ArtError(f"deformable registration failed at level {li}: {str(exc).splitlines()[-1] if str(exc) else exc}") from exc
    return sitk.GetArrayFromImage(out).astype(np.float32)


# --------------------------------------------------------------- the levels
@dataclass(frozen=True)
class _LevelInputs:
    """What the level loop needs besides the settings.

    Attributes
    ----------
    frame : _Frame
        The CT on the CBCT grid and the masks.
    ct : Volume
        The planning CT (for the shading re-estimate).
    rigid : RigidResult
    opts : _ImageOptions
        How the fixed image is rebuilt before the finest level.
    mov_w : ndarray, (z, y, x)
        The demons' moving image, HU.
    wbody : ndarray, float32, (z, y, x)
        The fade weight to the rigid map.
    """

    frame: _Frame
    ct: Volume
    rigid: RigidResult
    opts: _ImageOptions
    mov_w: np.ndarray
    wbody: np.ndarray


def _run_levels(inp: _LevelInputs, fixed: _Fixed, levels, iterations, settings: _DemonsSettings, level_times: list) -> tuple[np.ndarray, _Fixed]:
    """Step 5: the demons, coarse to fine; the shading is re-estimated against the deformed CT before the finest level.

    Parameters
    ----------
    inp : _LevelInputs
    fixed : _Fixed
        The fixed image from the rigidly placed CT.
    levels, iterations : lists of int
        Down-sampling factor and demons iterations per level.
    settings : _DemonsSettings
    level_times : list
        Each level's wall time (s) is appended to it.

    Returns
    -------
    u : ndarray, float32, (z, y, x, 3)
        The deformable part on the CBCT grid, LPS mm.
    fixed : _Fixed
        The fixed image last used (re-estimated when there are several levels).
    """
    cg = inp.frame.grid
    u = np.zeros(cg.shape + (3,), dtype=np.float32)
    prev_grid = cg
    for li, (factor, n_it) in enumerate(zip(levels, iterations)):
        tl = time.perf_counter()
        lg = _level_grid(cg, factor)
        if li == len(levels) - 1 and li > 0:
            # re-estimate the shading against the deformed CT before the finest level
            u_c = u if prev_grid is cg else _resample_field(u, prev_grid, cg)
            fixed = _fixed_image(inp.frame, inp.ct, inp.rigid, u_c, inp.opts)
        f_img, m_img, u_l = _level_inputs(fixed.image, inp.mov_w, u, prev_grid, cg, lg, factor, li)
        if n_it > 0:
            u_l = _demons_level(f_img, m_img, u_l, lg, n_it, li, settings)
            # fade to zero (rigid) outside the body
            wl = sample_image(inp.wbody, cg, grid_points(lg), fill_value=0.0) if lg is not cg else inp.wbody
            u_l *= wl[..., None]
        u, prev_grid = u_l, lg
        level_times.append(round(time.perf_counter() - tl, 3))
    if prev_grid is not cg:
        u = _resample_field(u, prev_grid, cg)
    return u, fixed
