"""Rigid registration of the daily CBCT to the planning CT (SimpleITK, mutual information).

Conventions
-----------
* Fixed image: the CBCT; moving image: the planning CT. The transform found
  maps **CBCT LPS points to planning-CT LPS points**: the tissue seen at CBCT
  point ``y`` is the planning tissue at ``T(y)`` (``T`` ≈ the inverse of the
  set-up error ``s`` of :mod:`art_phantoms.pelvis`).
* ``T(y) = R (y - c) + c + t`` with ``c`` the rotation centre (the CBCT
  isocentre unless given), ``R`` = ``matrix_4x4[:3, :3]``.
* ``rotation_deg`` are the right-handed angles ``(rx, ry, rz)`` about LPS x, y,
  z with ``R = Rz Ry Rx`` (the phantom's convention): the rotation that
  *corrects* the patient, ≈ minus the set-up rotation for small angles.
* ``couch_shift_mm`` = ``c - T^-1(c)``: the LPS translation (mm) to apply to
  the patient (couch) so that the tissue planned at the isocentre returns to
  it. For a pure set-up translation ``t_s`` (anatomy found at ``x + t_s``) it
  is ``-t_s``. Example: a patient lying 3 mm too far left (+x) gives
  ``couch_shift_mm[0] = -3``.
* A CBCT in its own frame of reference: ``initial_matrix`` (the link between
  the frames, CBCT → CT, from the imaging system's Spatial Registration) is the
  starting point; ``matrix_4x4`` then still maps CBCT LPS points (its frame) to
  planning-CT LPS points, and ``couch_shift_mm`` is measured from the link
  (``c - Δ^-1(c)``, ``Δ = link^-1 T``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from art.errors import InputError
from art.geometry import Grid, Volume

__all__ = ["RigidResult", "register_rigid", "euler_from_matrix"]


def euler_from_matrix(r: np.ndarray) -> tuple[float, float, float]:
    """Angles ``(rx, ry, rz)`` in degrees with ``r = Rz Ry Rx`` (right-handed, LPS axes)."""
    r = np.asarray(r, dtype=np.float64)
    ry = -math.asin(max(-1.0, min(1.0, r[2, 0])))
    rx = math.atan2(r[2, 1], r[2, 2])
    rz = math.atan2(r[1, 0], r[0, 0])
    return (math.degrees(rx), math.degrees(ry), math.degrees(rz))


@dataclass
class RigidResult:
    """A rigid CBCT → planning-CT registration.

    Attributes
    ----------
    matrix_4x4 : ndarray (4, 4), float64
        Homogeneous matrix mapping CBCT LPS points (x, y, z, 1) in mm to
        planning-CT LPS points: ``T(y) = M[:3, :3] @ y + M[:3, 3]``.
    rotation_deg : (rx, ry, rz)
        Angles of ``M[:3, :3] = Rz Ry Rx``, degrees (the correcting rotation).
        For a CBCT in its own frame: of ``link^-1 M``, the rotation beyond the
        frame link (also for ``translation_mm`` and ``couch_shift_mm``).
    translation_mm : (x, y, z)
        ``t`` in ``T(y) = R (y - c) + c + t``, mm.
    center_mm : (x, y, z)
        The rotation centre ``c`` (isocentre), LPS mm.
    couch_shift_mm : (x, y, z)
        ``c - T^-1(c)``: the LPS shift (mm) to apply to the patient; ≈ minus
        the set-up error.
    metric_value : float
        Final Mattes mutual information (negative: lower is better).
    time_s : float
        Wall time of the registration.
    info : dict
        Optimiser details (iterations, stop condition, mask used).
    """

    matrix_4x4: np.ndarray
    rotation_deg: tuple
    translation_mm: tuple
    center_mm: tuple
    couch_shift_mm: tuple
    metric_value: float
    time_s: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def inverse_matrix(self) -> np.ndarray:
        """Matrix mapping planning-CT LPS points to CBCT LPS points."""
        return np.linalg.inv(self.matrix_4x4)

    def cbct_to_ct_points(self, points) -> np.ndarray:
        """Map CBCT LPS points (..., 3) to planning-CT LPS points, mm."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.matrix_4x4[:3, :3].T + self.matrix_4x4[:3, 3]

    def ct_to_cbct_points(self, points) -> np.ndarray:
        """Map planning-CT LPS points (..., 3) to CBCT LPS points, mm."""
        p = np.asarray(points, dtype=np.float64)
        inv = self.inverse_matrix
        return p @ inv[:3, :3].T + inv[:3, 3]

    def to_sitk(self):
        """The transform as a ``SimpleITK.AffineTransform`` (fixed = CBCT → moving = CT)."""
        import SimpleITK as sitk

        tx = sitk.AffineTransform(3)
        tx.SetMatrix(tuple(self.matrix_4x4[:3, :3].ravel()))
        tx.SetTranslation(tuple(self.matrix_4x4[:3, 3]))
        return tx

    @classmethod
    def identity(cls, center_mm=(0.0, 0.0, 0.0)) -> "RigidResult":
        """No motion (for tests and for skipping the rigid step)."""
        return cls(np.eye(4), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), tuple(float(v) for v in center_mm), (0.0, 0.0, 0.0), float("nan"))

    def to_dict(self) -> dict:
        """JSON-friendly summary."""
        return {
            "matrix_4x4": [[float(v) for v in row] for row in self.matrix_4x4],
            "maps": "CBCT LPS mm -> planning CT LPS mm",
            "rotation_deg": [float(v) for v in self.rotation_deg],
            "translation_mm": [float(v) for v in self.translation_mm],
            "center_mm": [float(v) for v in self.center_mm],
            "couch_shift_mm": [float(v) for v in self.couch_shift_mm],
            "metric_value": float(self.metric_value),
            "time_s": float(self.time_s),
        }


def _check_volume(v, name: str) -> Volume:
    if not isinstance(v, Volume):
        raise InputError(f"{name} must be a Volume, got {type(v).__name__}")
    if min(v.shape) < 4:
        raise InputError(f"{name} is too small to register: shape {v.shape}")
    if not np.all(np.isfinite(v.array)):
        raise InputError(f"{name} holds non-finite values")
    return v


def field_of_view(cbct: Volume) -> np.ndarray:
    """The reconstructed field of view of a CBCT, shape ``cbct.shape``, bool.

    Columns (fixed y, x) whose value is constant along z are padding outside
    the reconstructed cylinder (truncation); everything else is inside.
    """
    a = cbct.array
    const = np.all(a == a[:1], axis=0) if a.shape[0] > 1 else np.zeros(a.shape[1:], dtype=bool)
    return np.broadcast_to(~const[None], a.shape).copy()


def body_mask(image: Volume, *, threshold_hu: float = -500.0) -> np.ndarray:
    """Body of a CT or CBCT: the largest component above ``threshold_hu``, holes filled (bool)."""
    m = image.array > threshold_hu
    lab, n = ndimage.label(m)
    if n == 0:
        return m
    sizes = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1))
    m = lab == (int(np.argmax(sizes)) + 1)
    m = ndimage.binary_fill_holes(m)
    # fill internal gas pockets slice by slice too (open at the volume's ends)
    for k in range(m.shape[0]):
        m[k] = ndimage.binary_fill_holes(m[k])
    return m


def _bone_com(arr: np.ndarray, grid: Grid, mask: np.ndarray | None, threshold: float) -> np.ndarray | None:
    b = arr > threshold
    if mask is not None:
        b &= mask
    if b.sum() < 20:
        return None
    return grid.index_to_lps(np.argwhere(b).mean(axis=0))


def register_rigid(
    ct: Volume,
    cbct: Volume,
    *,
    ct_body: Volume | None = None,
    focus: str = "bones",
    center_mm=None,
    bone_threshold_hu: float = 400.0,
    shrink_factors=(4, 2, 1),
    smoothing_mm=(6.0, 3.0, 0.0),
    sampling: float = 0.25,
    iterations: int = 200,
    seed: int = 0,
    initial_matrix=None,
) -> RigidResult:
    """Rigid (6 degrees of freedom) registration of a CBCT to the planning CT.

    Mattes mutual information (50 bins, so CBCT shading and HU offsets do not
    matter much), regular-step gradient descent, three resolution levels,
    initialised by aligning the centres of mass of the bone (voxels above
    ``bone_threshold_hu``) seen in both images over the CBCT's extent.

    Parameters
    ----------
    ct : Volume
        Planning CT, HU (moving image).
    cbct : Volume
        Daily CBCT, HU-like (fixed image); voxels outside its reconstructed
        field of view (columns constant along z) are ignored.
    ct_body : Volume of bool, optional, keyword-only
        Body mask on ``ct.grid`` (the planning BODY); limits the CT bone
        search for the initialisation. Thresholded from the CT when omitted.
    focus : {"bones", "body"}, keyword-only
        ``"bones"`` (default, a bony match): the metric is evaluated within
        10 mm of the CBCT's bone; ``"body"``: over the whole body in the field
        of view.
    center_mm : (x, y, z) or None, keyword-only
        Rotation centre and the point whose shift is ``couch_shift_mm``;
        defaults to the centre of the CBCT grid (the isocentre for a CBCT
        centred on it).
    bone_threshold_hu : float, keyword-only
        Bone threshold (HU) for the initialisation and the bone focus.
    shrink_factors, smoothing_mm : sequences, keyword-only
        Resolution pyramid (shrink per level; Gaussian sigma in mm per level).
    sampling : float, keyword-only
        Fraction of the mask's voxels sampled by the metric (0 < f <= 1).
    iterations : int, keyword-only
        Maximum iterations per level.
    seed : int, keyword-only
        Seed of the metric's random sampling (the result is reproducible).
    initial_matrix : array-like (4, 4), optional, keyword-only
        Rigid starting estimate CBCT LPS → CT LPS (mm): the link of a CBCT in its own frame
        (from the imaging system's REG); the bone centres of mass refine its translation and
        rotation, translation and couch shift are measured from it. None: identity (one frame).

    Returns
    -------
    RigidResult
        See its attributes; ``matrix_4x4`` maps CBCT LPS points to CT LPS points.
    """
    import SimpleITK as sitk

    ct, cbct = _check_arguments(ct, cbct, focus, sampling, shrink_factors, smoothing_mm)
    t0 = time.perf_counter()
    cg = cbct.grid
    center = _rotation_centre(cg, center_mm)
    cb_body, ctb = _bodies(ct, cbct, ct_body)
    link = _check_initial(initial_matrix)  # the frame link (identity in one frame); bone centres of mass refine it
    translation = _initial_translation(ct, cbct, cb_body, ctb, bone_threshold_hu, link)
    # ---- images and masks
    fixed, moving = (sitk.Cast(v.to_sitk(), sitk.sitkFloat32) for v in (cbct, ct))
    mask = _metric_mask(cbct, cb_body, focus, bone_threshold_hu)
    fixed_mask = Volume(mask.astype(np.uint8), cg).to_sitk()
    # ---- transform, metric, optimiser, pyramid; run single-threaded
    tx = _initial_transform(center, translation, link)
    reg = _registration_method(fixed_mask, tx, sampling=sampling, seed=seed, iterations=iterations, shrink_factors=shrink_factors, smoothing_mm=smoothing_mm)
    _execute_single_threaded(reg, fixed, moving)
    return _result(_matrix_of(tx), center, float(reg.GetMetricValue()), t0, translation, reg, focus, mask, link)


def _check_arguments(ct, cbct, focus: str, sampling: float, shrink_factors, smoothing_mm) -> tuple[Volume, Volume]:
    """Validate :func:`register_rigid`'s arguments (InputError); returns ``(ct, cbct)``."""
    ct = _check_volume(ct, "ct")
    cbct = _check_volume(cbct, "cbct")
    if focus not in ("bones", "body"):
        raise InputError(f"focus must be 'bones' or 'body', got {focus!r}")
    if not 0 < sampling <= 1:
        raise InputError(f"sampling must lie in (0, 1], got {sampling}")
    if len(shrink_factors) != len(smoothing_mm) or not shrink_factors:
        raise InputError("shrink_factors and smoothing_mm must be non-empty and of equal length")
    return ct, cbct


def _rotation_centre(cg: Grid, center_mm) -> np.ndarray:
    """The rotation centre, LPS mm, float64 (3,): ``center_mm``, or the centre of the CBCT grid ``cg`` when None."""
    if center_mm is None:
        center = cg.index_to_lps((np.asarray(cg.shape, dtype=np.float64) - 1) / 2.0)
    else:
        center = np.asarray([float(v) for v in center_mm])
        if center.shape != (3,) or not np.all(np.isfinite(center)):
            raise InputError(f"center_mm must be three finite numbers, got {center_mm!r}")
    return center


def _bodies(ct: Volume, cbct: Volume, ct_body: Volume | None) -> tuple[np.ndarray, np.ndarray]:
    """The CBCT's body within its field of view and the planning body (bool, (z, y, x) on each grid).

    ``ct_body`` (a mask Volume on ``ct.grid``) is used when given, else the CT is
    thresholded (:func:`body_mask`). InputError when the CBCT shows no body.
    """
    fov = field_of_view(cbct)
    cb_body = body_mask(cbct) & fov
    if not cb_body.any():
        raise InputError("cbct: no body found (nothing above -500 HU inside the field of view)")
    if ct_body is not None:
        if not isinstance(ct_body, Volume) or not ct_body.grid.same_as(ct.grid):
            raise InputError("ct_body must be a mask Volume on the planning CT grid")
        ctb = np.asarray(ct_body.array, dtype=bool)
    else:
        ctb = body_mask(ct)
    return cb_body, ctb


def _check_initial(matrix) -> np.ndarray:
    """``initial_matrix`` as a rigid float64 (4, 4) matrix (identity for None), or InputError."""
    if matrix is None:
        return np.eye(4)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError(f"initial_matrix must be a finite 4 x 4 matrix, got shape {m.shape}")
    r = m[:3, :3]
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-9) or not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) <= 0:
        raise InputError("initial_matrix is not rigid (rotation part must be orthonormal with determinant +1, last row 0 0 0 1)")
    return m


def _initial_translation(ct: Volume, cbct: Volume, cb_body: np.ndarray, ctb: np.ndarray, bone_threshold_hu: float,
                         link: np.ndarray) -> np.ndarray:  # fmt: skip
    """Initial translation (LPS mm, float64 (3,), in the CBCT's frame): planning bone centre of mass minus the CBCT's.

    The planning bone (above ``bone_threshold_hu`` in ``ctb``), carried into the
    CBCT's frame by the inverse of ``link`` (CBCT → CT, identity in one frame),
    is restricted, three times, to what falls into the CBCT grid under the
    current estimate; zero when either image shows too little bone (< 20 voxels).
    The initial map is ``T0(y) = link(y + translation)``.
    """
    cg = cbct.grid
    translation = np.zeros(3)
    cb_com = _bone_com(cbct.array, cg, cb_body, bone_threshold_hu)
    if cb_com is not None:
        ctbone = (ct.array > bone_threshold_hu) & ctb
        pts_k = np.argwhere(ctbone)
        if len(pts_k):
            inv = np.linalg.inv(link)
            pts = ct.grid.index_to_lps(pts_k.astype(np.float64)) @ inv[:3, :3].T + inv[:3, 3]
            for _ in range(3):
                # CT bone that falls into the CBCT's field of view under the current estimate
                inside = cg.contains(pts - translation, margin_voxels=-0.5)
                if inside.sum() < 20:
                    break
                translation = pts[inside].mean(axis=0) - cb_com
    return translation


def _metric_mask(cbct: Volume, cb_body: np.ndarray, focus: str, bone_threshold_hu: float) -> np.ndarray:
    """Where the metric is evaluated (bool, (z, y, x) on the CBCT grid).

    ``focus="bones"``: within 10 mm of the CBCT's bone (above
    ``bone_threshold_hu``) in the body, or the whole body when that holds
    fewer than 1000 voxels; ``"body"``: the body ``cb_body``.
    """
    cg = cbct.grid
    if focus == "bones":
        bone = (cbct.array > bone_threshold_hu) & cb_body
        r = [max(1, int(round(10.0 / s))) for s in cg.spacing]
        st = np.zeros([2 * v + 1 for v in r], dtype=bool)
        zz, yy, xx = np.ogrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1, -r[2] : r[2] + 1]
        st[((zz * cg.spacing[0]) ** 2 + (yy * cg.spacing[1]) ** 2 + (xx * cg.spacing[2]) ** 2) <= 100.0] = True
        mask = ndimage.binary_dilation(bone, structure=st) & cb_body
        if mask.sum() < 1000:
            mask = cb_body
    else:
        mask = cb_body
    return mask


def _initial_transform(center: np.ndarray, translation: np.ndarray, link: np.ndarray):
    """A ``SimpleITK.Euler3DTransform`` (ZYX angles) about ``center``: ``T0(y) = link(y + translation)`` (LPS mm)."""
    import SimpleITK as sitk

    r = link[:3, :3]
    t0_center = r @ (center + translation) + link[:3, 3]
    tx = sitk.Euler3DTransform()
    tx.SetComputeZYX(True)
    tx.SetCenter(tuple(float(v) for v in center))
    tx.SetRotation(*(math.radians(a) for a in euler_from_matrix(r)))
    tx.SetTranslation(tuple(float(v) for v in t0_center - center))
    return tx


def _registration_method(fixed_mask, tx, *, sampling: float, seed: int, iterations: int, shrink_factors, smoothing_mm):
    """The ``SimpleITK.ImageRegistrationMethod``: Mattes MI (50 bins, seeded random sampling in ``fixed_mask``), linear
    interpolation, regular-step gradient descent, the pyramid (smoothing in mm); optimises ``tx`` in place."""
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # SimpleITK reads a seed of 0 as "seed from the wall clock" (sitkWallClock): never pass 0
    reg.SetMetricSamplingPercentage(float(sampling), int(seed) + 1)
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=int(iterations), relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([int(s) for s in shrink_factors])
    reg.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_mm])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(tx, inPlace=True)
    return reg


def _execute_single_threaded(reg, fixed, moving) -> None:
    """Run ``reg`` on one thread (the global default restored after); SimpleITK failures raise ArtError."""
    import SimpleITK as sitk

    # one thread (the registration and the metric's filters): a fixed summation order gives
    # bit-identical transforms for the same inputs, so the plan downstream is reproducible
    reg.SetNumberOfThreads(1)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        reg.Execute(fixed, moving)
    except RuntimeError as exc:  # SimpleITK raises RuntimeError for e.g. no overlap
        from art.errors import ArtError

        raise ArtError(f"rigid registration failed: {str(exc).splitlines()[-1] if str(exc) else exc}") from exc
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _matrix_of(tx) -> np.ndarray:
    """The 4x4 homogeneous matrix (float64) of a SimpleITK transform with centre, matrix and translation."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(tx.GetMatrix()).reshape(3, 3)
    c = np.asarray(tx.GetCenter())
    t = np.asarray(tx.GetTranslation())
    m[:3, 3] = c + t - m[:3, :3] @ c
    return m


def _result(m: np.ndarray, center: np.ndarray, metric: float, t0: float, translation: np.ndarray, reg, focus: str, mask: np.ndarray,
            link: np.ndarray) -> RigidResult:  # fmt: skip
    """The :class:`RigidResult` of matrix ``m`` (CBCT → CT) about ``center`` (LPS mm), timed from ``t0``, with the optimiser's details.

    Rotation, translation and couch shift describe ``Δ = link⁻¹ m``, the motion within the CBCT's frame
    beyond the frame link (``m`` itself in one frame): couch shift ``c − Δ⁻¹(c)``, translation ``Δ(c) − c``.
    """
    delta = np.linalg.inv(link) @ m
    inv = np.linalg.inv(delta)
    couch = center - (inv[:3, :3] @ center + inv[:3, 3])
    # translation about the requested centre
    trans = (delta[:3, :3] @ center + delta[:3, 3]) - center
    return RigidResult(
        matrix_4x4=m,
        rotation_deg=euler_from_matrix(delta[:3, :3]),
        translation_mm=tuple(float(v) for v in trans),
        center_mm=tuple(float(v) for v in center),
        couch_shift_mm=tuple(float(v) for v in couch),
        metric_value=metric,
        time_s=time.perf_counter() - t0,
        info={
            "initial_translation_mm": [float(v) for v in translation],
            "frame_link": None if np.allclose(link, np.eye(4)) else [[float(v) for v in row] for row in link],
            "iterations": int(reg.GetOptimizerIteration()),
            "stop": reg.GetOptimizerStopConditionDescription(),
            "focus": focus,
            "mask_voxels": int(mask.sum()),
        },
    )
