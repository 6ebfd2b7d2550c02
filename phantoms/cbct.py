"""Cone-beam CT simulation: the CBCT grid and the image degradations.

The simulated CBCT is the true daily CT (HU, with CT noise) degraded by, in
this order:

1. shading: a radial cupping (centre darker by ``shading_hu``, zero at the
   edge of the field of view) plus a slow random field (a linear gradient and
   a few wide Gaussians, at most about 0.3 ``shading_hu``). It scales the
   attenuation, ``HU' = HU + s(x) (HU + 1000) / 1000``, so air stays near -1000;
2. streaks from gas: thin dark and bright lines radiating, in each axial slice,
   from the gas pockets of that slice, fading with distance;
3. extra noise: Gaussian, slightly correlated in-plane, std ``noise_hu``;
4. a global HU offset ``hu_offset`` added everywhere;
5. truncation: voxels outside the circular field of view (diameter
   ``fov_diameter_mm``, centred on the isocentre axis) set to -1000.

Each is switched off alone by setting its amplitude to 0 (or the flag to
False); :meth:`CbctArtefacts.none` switches all off so that the CBCT equals
the true daily CT on the CBCT grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from art.errors import InputError
from art.geometry import Grid

__all__ = ["CbctArtefacts", "cbct_grid", "apply_artefacts", "correlated_noise"]

HU_OFFSET_RANGE = (-80.0, 60.0)


@dataclass
class CbctArtefacts:
    """Which CBCT degradations to simulate, and how strong.

    Parameters
    ----------
    noise_hu : float
        Standard deviation (HU) of the noise added on top of the CT noise.
    shading_hu : float
        Amplitude (HU in water) of the low-frequency cupping/shading.
    hu_offset : float or None
        Global HU offset; None draws one uniformly from -80 ... +60 HU.
    fov_diameter_mm : float
        Diameter of the circular reconstructed field of view; also the in-plane
        extent of the CBCT grid.
    length_mm : float
        Extent of the CBCT grid along z (superior-inferior).
    truncation : bool
        Set voxels outside the circular field of view to -1000 HU.
    streaks : bool
        Streaks radiating from gas pockets (only where gas is present).
    spacing : (dz, dy, dx) or None
        CBCT voxel size in mm; None uses the planning CT's spacing.
    """

    noise_hu: float = 40.0
    shading_hu: float = 80.0
    hu_offset: float | None = None
    fov_diameter_mm: float = 360.0
    length_mm: float = 200.0
    truncation: bool = True
    streaks: bool = True
    spacing: tuple | None = None

    def __post_init__(self) -> None:
        for name in ("noise_hu", "shading_hu"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"CbctArtefacts.{name} must be a finite number >= 0, got {v!r}")
        if self.hu_offset is not None and (not isinstance(self.hu_offset, (int, float)) or not math.isfinite(self.hu_offset)):
            raise InputError(f"CbctArtefacts.hu_offset must be a finite number or None, got {self.hu_offset!r}")
        for name in ("fov_diameter_mm", "length_mm"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InputError(f"CbctArtefacts.{name} must be a positive number, got {v!r}")
        if self.spacing is not None:
            try:
                sp = tuple(float(s) for s in self.spacing)
            except (TypeError, ValueError) as exc:
                raise InputError(f"CbctArtefacts.spacing must be three numbers (dz, dy, dx), got {self.spacing!r}") from exc
            if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
                raise InputError(f"CbctArtefacts.spacing must be three positive numbers (dz, dy, dx), got {self.spacing!r}")
            self.spacing = sp

    @classmethod
    def none(cls, **kwargs) -> "CbctArtefacts":
        """No degradation at all: the CBCT equals the true daily CT on the CBCT grid.

        Keyword arguments (e.g. ``fov_diameter_mm``) are passed on; geometry
        options keep their defaults otherwise.
        """
        base = dict(noise_hu=0.0, shading_hu=0.0, hu_offset=0.0, truncation=False, streaks=False)
        base.update(kwargs)
        return cls(**base)

    def to_dict(self) -> dict:
        """JSON-friendly copy."""
        d = asdict(self)
        if d["spacing"] is not None:
            d["spacing"] = list(d["spacing"])
        return d


def cbct_grid(isocenter_mm, spacing, *, fov_diameter_mm: float = 360.0, length_mm: float = 200.0) -> Grid:
    """The CBCT grid: axial, centred on the isocentre.

    Parameters
    ----------
    isocenter_mm : (x, y, z)
        LPS centre of the grid, mm.
    spacing : (dz, dy, dx)
        Voxel size, mm.
    fov_diameter_mm : float, keyword-only
        In-plane extent (square grid enclosing the circular field of view), mm.
    length_mm : float, keyword-only
        Extent along z, mm.

    Returns
    -------
    Grid
        ``shape = (round(length/dz), round(fov/dy), round(fov/dx))``, identity direction.
    """
    dz, dy, dx = (float(s) for s in spacing)
    shape = (max(1, round(length_mm / dz)), max(1, round(fov_diameter_mm / dy)), max(1, round(fov_diameter_mm / dx)))
    c = np.asarray(isocenter_mm, dtype=np.float64)
    origin = (
        c[0] - (shape[2] - 1) * dx / 2.0,
        c[1] - (shape[1] - 1) * dy / 2.0,
        c[2] - (shape[0] - 1) * dz / 2.0,
    )
    return Grid(shape=shape, spacing=(dz, dy, dx), origin=origin)


def correlated_noise(rng: np.random.Generator, shape, sigma_hu: float, *, corr_voxels=(0.0, 0.6, 0.6)) -> np.ndarray:
    """Gaussian noise of standard deviation ``sigma_hu``, smoothed by ``corr_voxels`` (z, y, x) and re-normalised."""
    n = rng.standard_normal(shape, dtype=np.float32)
    if any(c > 0 for c in corr_voxels):
        n = ndimage.gaussian_filter(n, sigma=corr_voxels, truncate=3.0)
        s = float(n.std())
        if s > 0:
            n /= s
    return (n * np.float32(sigma_hu)).astype(np.float32, copy=False)


def _radial(grid: Grid, isocenter_mm):
    zs, ys, xs = grid.axis_positions()
    r2d = np.sqrt((xs[None, :] - isocenter_mm[0]) ** 2 + (ys[:, None] - isocenter_mm[1]) ** 2)
    return zs, ys, xs, r2d


def _shading(grid: Grid, artefacts: CbctArtefacts, iso: np.ndarray, zs, ys, xs, r2d: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """The shading field: HU in water, float32, shape ``grid.shape``.

    A radial cupping (``-shading_hu`` on the axis, 0 at ``radius``, mm; ``r2d``
    the in-plane distance to the axis, (ny, nx), mm) plus a slow random field
    drawn from ``rng`` (a linear gradient and three wide Gaussians, at most
    about 0.3 ``shading_hu``). ``zs, ys, xs``: axis positions of ``grid``, mm;
    ``iso``: LPS mm, shape (3,).
    """
    amp = float(artefacts.shading_hu)
    cup = -amp * np.clip(1.0 - (r2d / radius) ** 2, 0.0, 1.0)  # (ny, nx)
    shade = np.broadcast_to(cup[None], grid.shape).astype(np.float32)
    # slow random field: linear gradient + 3 wide Gaussians, at most ~0.3 amp
    z3, y3, x3 = zs[:, None, None] - iso[2], ys[None, :, None] - iso[1], xs[None, None, :] - iso[0]
    g = rng.uniform(-1, 1, 3)
    g *= 0.1 * amp / max(np.linalg.norm(g), 1e-9)
    slow = (g[0] * x3 / radius + g[1] * y3 / radius + g[2] * z3 / radius).astype(np.float32)
    slow = np.broadcast_to(slow, grid.shape).copy()
    for _ in range(3):
        c = rng.uniform(-0.6, 0.6, 3) * np.array([radius, radius, artefacts.length_mm / 2.0])
        w = rng.uniform(60.0, 120.0)
        a = rng.uniform(-0.1, 0.1) * amp
        slow += (a * np.exp(-((x3 - c[0]) ** 2 + (y3 - c[1]) ** 2 + (z3 - c[2]) ** 2) / (2 * w * w))).astype(np.float32)
    return shade + slow


def _add_streaks(out: np.ndarray, gas_mask: np.ndarray, grid: Grid, xs, ys, rng: np.random.Generator) -> int:
    """Add, in each axial slice with gas, dark and bright lines radiating from the gas (HU, in place).

    ``out``: the image, HU, float32, ``grid.shape``; ``gas_mask``: bool,
    ``grid.shape``; ``xs, ys``: axis positions, mm. The strength grows with
    the gas area of the slice (full from 150 mm^2). Returns the number of
    slices with streaks.
    """
    dx, dy = grid.spacing[2], grid.spacing[1]
    xx, yy = xs[None, :], ys[:, None]
    n_slices = 0
    for k in np.flatnonzero(gas_mask.any(axis=(1, 2))):
        sl = gas_mask[k]
        area = float(sl.sum()) * dx * dy
        jj, ii = np.nonzero(sl)
        x0, y0 = float(xs[ii].mean()), float(ys[jj].mean())
        strength = min(1.0, area / 150.0)
        n_lines = int(rng.integers(6, 12))
        field = np.zeros(sl.shape, dtype=np.float32)
        rr = np.sqrt((xx - x0) ** 2 + (yy - y0) ** 2)
        for m in range(n_lines):
            th = rng.uniform(0.0, math.pi)
            amp = rng.uniform(60.0, 160.0) * strength * (1.0 if m % 2 else -1.0)
            width = rng.uniform(1.0, 2.0)
            dperp = -(xx - x0) * math.sin(th) + (yy - y0) * math.cos(th)
            field += (amp * np.exp(-(dperp**2) / (2 * width * width)) * np.exp(-rr / 120.0)).astype(np.float32)
        field[sl] = 0.0
        out[k] += field
        n_slices += 1
    return n_slices


def apply_artefacts(
    daily_hu: np.ndarray,
    grid: Grid,
    *,
    artefacts: CbctArtefacts,
    isocenter_mm,
    seed: int,
    gas_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Degrade a true daily CT into a CBCT.

    Parameters
    ----------
    daily_hu : ndarray, float32, shape ``grid.shape``
        The true daily CT on the CBCT grid, HU.
    grid : Grid
        The CBCT grid (axis-aligned).
    artefacts : CbctArtefacts, keyword-only
        What to simulate.
    isocenter_mm : (x, y, z), keyword-only
        Rotation axis of the CBCT (centre of the field of view), LPS mm.
    seed : int, keyword-only
        Seed of the artefact streams (noise, shading, offset, streaks).
    gas_mask : ndarray of bool, optional, keyword-only
        Gas voxels of the day (streak sources).

    Returns
    -------
    cbct : ndarray, float32, shape ``grid.shape``
    info : dict
        What was applied (JSON-serialisable): ``hu_offset``, ``noise_hu``,
        ``shading_hu``, ``streak_slices``, ``truncation``, ``fov_diameter_mm``.
    """
    if daily_hu.shape != grid.shape:
        raise InputError(f"daily_hu shape {daily_hu.shape} does not match the CBCT grid {grid.shape}")
    ss_noise, ss_shade, ss_offset, ss_streak = np.random.SeedSequence(int(seed)).spawn(4)
    out = np.array(daily_hu, dtype=np.float32, copy=True)
    iso = np.asarray(isocenter_mm, dtype=np.float64)
    zs, ys, xs, r2d = _radial(grid, iso)
    radius = artefacts.fov_diameter_mm / 2.0
    info: dict = {"noise_hu": float(artefacts.noise_hu), "shading_hu": float(artefacts.shading_hu), "truncation": bool(artefacts.truncation), "fov_diameter_mm": float(artefacts.fov_diameter_mm), "streak_slices": 0}

    # 1. shading (multiplicative on attenuation)
    if artefacts.shading_hu > 0:
        shade = _shading(grid, artefacts, iso, zs, ys, xs, r2d, radius, np.random.default_rng(ss_shade))
        out += shade * (np.clip(out, -1000.0, None) + 1000.0) / 1000.0

    # 2. streaks from gas
    if artefacts.streaks and gas_mask is not None and gas_mask.any():
        info["streak_slices"] = _add_streaks(out, gas_mask, grid, xs, ys, np.random.default_rng(ss_streak))

    # 3. noise
    if artefacts.noise_hu > 0:
        out += correlated_noise(np.random.default_rng(ss_noise), grid.shape, float(artefacts.noise_hu), corr_voxels=(0.0, 0.8, 0.8))

    # 4. offset
    if artefacts.hu_offset is None:
        offset = float(np.random.default_rng(ss_offset).uniform(*HU_OFFSET_RANGE))
    else:
        offset = float(artefacts.hu_offset)
    if offset != 0.0:
        out += np.float32(offset)
    info["hu_offset"] = offset

    # 5. truncation outside the circular field of view
    if artefacts.truncation:
        outside = r2d > radius
        out[:, outside] = -1000.0
    return out.astype(np.float32, copy=False), info
