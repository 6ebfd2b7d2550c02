"""Deformation maths for dose accumulation: inverse field, dose pull, energy/mass transfer, Jacobian.

Conventions
-----------
* Arrays are ``(z, y, x)``; a displacement field ``u`` has shape
  ``grid.shape + (3,)`` and holds LPS ``(dx, dy, dz)`` in mm (the convention of
  :mod:`art.registration.fields` and of
  :class:`art.io.registration.DeformableRegistration`).
* ``u`` on ``u_grid`` (the day's frame: the CBCT's, where the day's dose
  lies) stands for the map ``φ(p) = p + u(p)``: the daily point ``p``
  corresponds to the planning-CT point ``φ(p)``. The DREG that ``art replan``
  writes gives exactly this (``displacement`` on ``grid``, matrices applied).
* Between grid points ``u`` is interpolated trilinearly; beyond the grid's
  outer voxel centres it is held at its value there (nearest extension), and
  voxels where it is undefined (NaN, as a DREG may mark them) take the value
  of the nearest defined voxel.
* Any grid orientation is handled: positions go through each grid's own
  index ↔ LPS affine (:attr:`art.geometry.Grid.affine`, as
  :meth:`~art.geometry.Grid.index_to_lps` and ``lps_to_index`` do).
* Dose in Gy. Density is the relative electron density of
  :func:`art.dose.hu_to_density` (water = 1; :func:`density_volume`), taken
  as the mass density in g/cm³: the two agree within a few per cent for soft
  tissue, less well for bone.

Work runs in slabs of whole z-slices (about half a million points each) on a
few threads, so memory stays at about 300 MB whatever the grid
(:mod:`art.course._warp_kernels`). docs/course.md ("How the dose is
accumulated") explains the two methods and the choices made.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from art.course import _warp_kernels as _k
from art.errors import InputError
from art.geometry import Grid, Volume, resample

__all__ = [
    "InverseReport",
    "inverse_displacement",
    "pull_dose",
    "accumulate_energy",
    "jacobian_determinant",
    "integral_dose_j",
    "density_volume",
]


@dataclass(frozen=True)
class InverseReport:
    """How well :func:`inverse_displacement` inverted the field.

    Attributes
    ----------
    max_residual_mm, mean_residual_mm : float
        Largest and mean ``|φ(x + v(x)) − x|`` over the target voxels, mm
        (``φ`` with ``u`` interpolated as the module describes).
    iterations : int
        Fixed-point evaluations used by the slowest voxel.
    converged : bool
        Every voxel reached ``tol_mm``.
    unconverged_voxels : int
        Voxels left above ``tol_mm`` (where the field folds or is not invertible).
    """

    max_residual_mm: float
    mean_residual_mm: float
    iterations: int
    converged: bool
    unconverged_voxels: int

    def to_dict(self) -> dict:
        """JSON-friendly copy."""
        return asdict(self)


# ---------------------------------------------------------------------------- validation
def _check_grid(grid: Any, name: str) -> Grid:
    if not isinstance(grid, Grid):
        raise InputError(f"{name} must be an art.geometry.Grid, got {type(grid).__name__}")
    return grid


def _check_volume(vol: Any, name: str) -> Volume:
    if not isinstance(vol, Volume):
        raise InputError(f"{name} must be an art.geometry.Volume, got {type(vol).__name__}")
    a = np.asarray(vol.array)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{name} must hold numbers, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} holds non-finite values (NaN or inf)")
    return vol


def _check_field(u: Any, u_grid: Any, name: str = "u", grid_name: str = "u_grid") -> np.ndarray:
    """``u`` as a float array of shape ``u_grid.shape + (3,)``, undefined voxels filled from the nearest defined one."""
    grid = _check_grid(u_grid, grid_name)
    a = np.asarray(u)
    if a.shape != grid.shape + (3,):
        raise InputError(f"{name} has shape {a.shape}; it must be {grid_name}.shape + (3,) = {grid.shape + (3,)} (LPS dx, dy, dz in mm)")
    if not np.issubdtype(a.dtype, np.floating):
        if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"{name} must hold numbers, got dtype {a.dtype}")
        a = a.astype(np.float32)
    if np.isinf(a).any():
        raise InputError(f"{name} holds infinite displacements")
    bad = np.isnan(a).any(axis=-1)
    if bad.any():
        if bad.all():
            raise InputError(f"{name} is undefined (NaN) everywhere")
        nearest = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        a = a[tuple(nearest)]
    return a


def _check_number(value: Any, name: str, *, integer: bool = False, above: float = 0.0) -> Any:
    try:
        v = int(value) if integer else float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number, got {value!r}") from exc
    if isinstance(value, bool) or (integer and v != value) or not math.isfinite(v) or v <= above:
        raise InputError(f"{name} must be {'an integer' if integer else 'a number'} above {above:g}, got {value!r}")
    return v


def _on_grid(vol: Volume, grid: Grid) -> np.ndarray:
    """``vol``'s values on ``grid``: its own array when the grids agree, else resampled linearly (0 outside)."""
    if vol.grid.same_as(grid):
        return np.asarray(vol.array)
    return resample(vol, grid, order=1, fill_value=0.0).array


# ---------------------------------------------------------------------------- the inverse field
def inverse_displacement(
    u: np.ndarray,
    u_grid: Grid,
    target_grid: Grid,
    *,
    iterations: int = 50,
    tol_mm: float = 0.01,
    return_report: bool = False,
) -> np.ndarray | tuple[np.ndarray, InverseReport]:
    """The inverse of ``φ(p) = p + u(p)`` as a displacement field on another grid.

    Parameters
    ----------
    u : ndarray, shape ``u_grid.shape + (3,)``
        LPS ``(dx, dy, dz)`` in mm: the daily point ``p`` corresponds to the
        planning point ``p + u(p)``.
    u_grid : Grid
        Where ``u`` lies (the day's frame).
    target_grid : Grid
        Where the inverse is wanted (the planning CT's dose grid).
    iterations : int, keyword-only
        Most fixed-point evaluations per voxel.
    tol_mm : float, keyword-only
        A voxel stops once ``|φ(x + v(x)) − x| ≤ tol_mm`` (mm).
    return_report : bool, keyword-only
        Also return an :class:`InverseReport` (the residual).

    Returns
    -------
    v : ndarray, float32, shape ``target_grid.shape + (3,)``
        LPS mm: ``φ⁻¹(x) = x + v(x)``.
    report : InverseReport
        Only with ``return_report=True``.

    Notes
    -----
    ``v`` solves the fixed point ``v(x) = −u(x + v(x))`` by iteration from
    ``v = 0`` (on large grids: from the inverse on a grid twice as coarse,
    interpolated). Plain steps converge where ``|∇u| < 1``, slowly where the
    field compresses strongly; voxels still above ``tol_mm`` after 8 steps
    take Newton steps (``∇u`` by central differences). A voxel whose
    residual would grow halves its step instead (damping), so strongly
    expanding fields converge too; each keeps its best iterate.
    """
    field = _k.Field(_check_field(u, u_grid), u_grid)
    target = _check_grid(target_grid, "target_grid")
    iterations = _check_number(iterations, "iterations", integer=True)
    tol_mm = _check_number(tol_mm, "tol_mm")
    v, report = _inverse(field, target, iterations, tol_mm)
    return (v, report) if return_report else v


def _inverse(field: _k.Field, target: Grid, iterations: int, tol_mm: float) -> tuple[np.ndarray, InverseReport]:
    """:func:`inverse_displacement` on ``target``, started from the inverse on a grid twice as coarse when that pays."""
    start = None
    if target.size > 200_000 and min(target.shape) >= 8:  # each fine voxel then needs ~3 evaluations, not ~8
        coarse = Grid(shape=tuple((n - 1) // 2 + 1 for n in target.shape), spacing=tuple(2 * s for s in target.spacing), origin=target.origin,
                      direction=target.direction)  # fmt: skip
        start = _k.Field(_inverse(field, coarse, iterations, 4 * tol_mm)[0], coarse)
    v = np.empty(target.shape + (3,), dtype=np.float32)

    def slab(k: tuple[int, int]) -> tuple[float, float, int, int]:
        x = _k.slab_points(target, *k)
        vs, res, steps = _k.invert_points(field, x, iterations, tol_mm, None if start is None else start(x))
        v[k[0] : k[1]] = vs.T.reshape(k[1] - k[0], target.shape[1], target.shape[2], 3)
        return float(res.max()), float(res.sum()), steps, int(np.count_nonzero(res > tol_mm))

    parts = _k.parallel(slab, _k.z_slabs(target.shape))
    left = sum(p[3] for p in parts)
    report = InverseReport(max(p[0] for p in parts), sum(p[1] for p in parts) / target.size, max(p[2] for p in parts), left == 0, left)
    return v, report


# ---------------------------------------------------------------------------- dose pull
def pull_dose(
    dose: Volume, u: np.ndarray, u_grid: Grid, target_grid: Grid, *, inverse: np.ndarray | None = None, return_report: bool = False
) -> Volume | tuple[Volume, InverseReport | None]:
    """The day's dose on the planning grid by pulling: ``D_acc(x) = D_day(φ⁻¹(x))``.

    Parameters
    ----------
    dose : Volume
        The day's dose (Gy) on its own grid in the day's frame.
    u : ndarray, shape ``u_grid.shape + (3,)``
        The deformation (module conventions): ``φ(p) = p + u(p)``.
    u_grid : Grid
        Where ``u`` lies.
    target_grid : Grid
        The planning CT's dose grid.
    inverse : ndarray, shape ``target_grid.shape + (3,)``, keyword-only, optional
        ``v`` from :func:`inverse_displacement` (same ``u``, ``u_grid``,
        ``target_grid``) when already computed. Otherwise it is computed here
        (default tolerances), only on the planning voxels within ``max |u|``
        (+ 1 mm) of the day's non-zero dose: the others get 0 either way.
    return_report : bool, keyword-only
        Also return the :class:`InverseReport` of the inverse computed here
        (over those voxels; None when ``inverse`` was given).

    Returns
    -------
    Volume
        float32 Gy on ``target_grid``. The day's dose is interpolated
        trilinearly at ``x + v(x)``; where that lies outside the day's dose
        grid (beyond its outer voxel centres) the dose is 0.
    report : InverseReport or None
        Only with ``return_report=True``.

    Notes
    -----
    Pulling follows each planning voxel to where its tissue was on the day
    and reads the dose there. It does not conserve energy where the
    deformation changes volume (see :func:`accumulate_energy`).
    """
    _check_volume(dose, "dose")
    target = _check_grid(target_grid, "target_grid")
    a = _check_field(u, u_grid)
    out = np.zeros(target.shape, dtype=np.float32)
    report = None
    if inverse is not None:
        inverse = np.asarray(inverse)
        if inverse.shape != target.shape + (3,) or not np.all(np.isfinite(inverse)):
            raise InputError(f"inverse must be a finite field of shape target_grid.shape + (3,) = {target.shape + (3,)}, got {inverse.shape}")
        out[...] = _pull_on(dose, target, inverse)
    elif (region := _reachable(dose, a, target)) is None:
        report = InverseReport(0.0, 0.0, 0, True, 0)
    else:
        sub = target.crop(region)
        v, report = _inverse(_k.Field(a, u_grid), sub, 50, 0.01)
        out[region] = _pull_on(dose, sub, v)
    return (Volume(out, target), report) if return_report else Volume(out, target)


def _reachable(dose: Volume, u: np.ndarray, target: Grid) -> tuple[slice, slice, slice] | None:
    """Index box of the planning voxels whose pulled dose can be non-zero (None: none can)."""
    nonzero = np.asarray(dose.array) != 0
    if not nonzero.any():
        return None
    box = []
    for axis in range(3):
        idx = np.flatnonzero(nonzero.any(axis=tuple(b for b in range(3) if b != axis)))
        box.append((idx[0] - 1.0, idx[-1] + 1.0))  # trilinear interpolation reaches one voxel further
    corners = np.array([[k, j, i] for k in box[0] for j in box[1] for i in box[2]])
    t = target.lps_to_index(dose.grid.index_to_lps(corners))
    reach = (math.sqrt(float(np.max(np.einsum("...i,...i->...", u, u)))) + 1.0) / np.asarray(target.spacing)  # |v| ≤ max |u|
    lo = np.maximum(np.floor(t.min(axis=0) - reach), 0).astype(int)
    hi = np.minimum(np.ceil(t.max(axis=0) + reach), np.asarray(target.shape) - 1).astype(int)
    if np.any(lo > hi):
        return None
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _pull_on(dose: Volume, target: Grid, inverse: np.ndarray) -> np.ndarray:
    """The day's dose sampled trilinearly at ``x + inverse(x)`` for every voxel ``x`` of ``target`` (0 outside its grid)."""
    src = np.asarray(dose.array, dtype=np.float32)
    hi = np.asarray(dose.grid.shape, dtype=np.float64)[:, None] - 1
    to_dose = _k.to_index(dose.grid)
    out = np.empty(target.shape, dtype=np.float32)

    def slab(k: tuple[int, int]) -> None:
        x = _k.slab_points(target, *k)
        c = _k.affine(x + inverse[k[0] : k[1]].reshape(-1, 3).T, *to_dose)
        c = np.where((c < 0) & (c > -1e-6), 0.0, c)  # round-off at the outer voxel centres
        c = np.where((c > hi) & (c < hi + 1e-6), hi, c)
        vals = ndimage.map_coordinates(src, c, order=1, mode="constant", cval=0.0, prefilter=False)
        out[k[0] : k[1]] = vals.reshape(k[1] - k[0], target.shape[1], target.shape[2])

    _k.parallel(slab, _k.z_slabs(target.shape))
    return out


# ---------------------------------------------------------------------------- energy / mass transfer
def accumulate_energy(
    dose: Volume,
    density_day: Volume,
    u: np.ndarray,
    u_grid: Grid,
    target_grid: Grid,
    density_target: Volume,
    *,
    subsample: int | None = None,
    max_mass_ratio: float = 1.0,
) -> Volume:
    """The day's dose on the planning grid by energy/mass transfer (energy- and mass-conserving).

    Parameters
    ----------
    dose : Volume
        The day's dose (Gy) on its own grid in the day's frame.
    density_day : Volume
        The day's density (the synthetic CT through :func:`density_volume`);
        resampled onto the dose grid when on another grid.
    u : ndarray, shape ``u_grid.shape + (3,)``
        The deformation (module conventions): ``φ(p) = p + u(p)``.
    u_grid : Grid
        Where ``u`` lies.
    target_grid : Grid
        The planning CT's dose grid.
    density_target : Volume
        The planning CT's density (on ``target_grid``, else resampled); used when ``max_mass_ratio > 1``.
    subsample : int, keyword-only, optional
        Each daily voxel is split into ``subsample³`` sub-points. Default: the
        fewest that are no farther apart than the target's voxels (1 when the
        daily dose grid is as fine as the target grid, as in ``art course``),
        at least 2 when ``max_mass_ratio > 1`` (the planning-mass divisor does
        not cancel the deposit's sampling ripple: about 2 % with 2 sub-points
        per axis, 18 % with 1, under a smooth 8 mm deformation).
    max_mass_ratio : float, keyword-only
        ≥ 1. What the energy arriving in a planning voxel is divided by: 1
        (default) the mass that arrived with it (energy/mass transfer); above
        1, the planning voxel's own mass, held within this factor of the
        arrived mass; ``math.inf``, the planning voxel's mass alone.

    Returns
    -------
    Volume
        float32 Gy on ``target_grid``; 0 where nothing of the day arrives.

    Notes
    -----
    Each daily voxel's energy ``D · ρ_day · dV`` and mass ``ρ_day · dV`` are
    split over its ``subsample³`` sub-points; each sub-point is carried to
    ``φ(q)`` and shared among the 8 nearest planning voxels (trilinear
    weights; what lands beyond the target grid's outer voxel centres is
    lost). The dose is deposited energy / deposited mass: the mass-weighted
    mean of the day's dose over the tissue the registration brings into the
    voxel. So ``Σ D_acc · m_arrived = Σ E_day`` exactly, and a uniform dose
    stays uniform whatever the densities. Dividing by the planning voxel's
    mass (``ρ_target · dV``, spread by the deposit's kernel) conserves energy
    on the planning anatomy instead, but divides tissue energy by gas mass
    wherever the day's tissue is registered onto planning gas;
    ``max_mass_ratio`` allows it within a bound. docs/course.md gives the
    reasons.
    """
    _check_volume(dose, "dose")
    _check_volume(density_day, "density_day")
    _check_volume(density_target, "density_target")
    field = _k.Field(_check_field(u, u_grid), u_grid)
    target = _check_grid(target_grid, "target_grid")
    ratio = math.inf if max_mass_ratio == math.inf else _check_number(max_mass_ratio, "max_mass_ratio", above=1.0 - 1e-12)
    if subsample is None:  # 2 at least against the planning mass (see above)
        subsample = max(1 if ratio == 1.0 else 2, math.ceil(max(dose.grid.spacing) / min(target.spacing) - 1e-6))
    subsample = _check_number(subsample, "subsample", integer=True)
    rho_day = _on_grid(density_day, dose.grid)
    if (rho_day < 0).any():
        raise InputError("density_day must not be negative")
    energy, mass = _k.deposit(np.asarray(dose.array, dtype=np.float64), rho_day, dose.grid, field, target, subsample)
    if ratio > 1.0:
        own = _spread_mass(_on_grid(density_target, target), target, subsample)
        mass = own if ratio == math.inf else np.clip(own, mass / ratio, mass * ratio)
    out = np.divide(energy, mass, out=np.zeros_like(energy), where=mass > 0)
    return Volume(out.astype(np.float32), target)


def _spread_mass(rho: np.ndarray, grid: Grid, s: int) -> np.ndarray:
    """Voxel masses ``ρ · dV`` (g/cm³ · mm³) spread as the trilinear deposit of ``s³`` sub-points spreads a voxel.

    Per axis the deposit of a voxel's sub-points (offsets ``(m + 1/2)/s − 1/2``)
    reaches its neighbours with ``mean_m hat(±1 − o_m)``: (0, 1, 0) for one
    sub-point, (1/8, 3/4, 1/8) for two.
    """
    if (rho < 0).any():
        raise InputError("density_target must not be negative")
    o = (np.arange(s) + 0.5) / s - 0.5
    kernel = np.array([np.mean(np.clip(1 - np.abs(d - o), 0, None)) for d in (-1, 0, 1)])
    mass = rho.astype(np.float64)
    for axis in range(3):
        mass = ndimage.correlate1d(mass, kernel, axis=axis, mode="nearest")
    return mass * grid.voxel_volume_mm3


# ---------------------------------------------------------------------------- Jacobian, integral dose, density
def jacobian_determinant(u: np.ndarray, grid: Grid) -> np.ndarray:
    """Jacobian determinant of ``φ(p) = p + u(p)`` on ``grid`` (any orientation).

    Parameters
    ----------
    u : ndarray, shape ``grid.shape + (3,)``
        LPS ``(dx, dy, dz)`` in mm.
    grid : Grid
        Where ``u`` lies.

    Returns
    -------
    ndarray, float32, shape ``grid.shape``
        ``det(I + ∂u/∂p)``: the local volume ratio (planning volume per daily
        volume); ≤ 0 where the field folds. Central differences inside,
        one-sided at the grid's faces (an axis of one voxel counts as flat).
    """
    a = _check_field(u, grid, grid_name="grid")
    out = np.empty(grid.shape, dtype=np.float32)

    def slab(k: tuple[int, int]) -> None:
        out[k[0] : k[1]] = _k.jacobian_slab(a, grid, *k)

    _k.parallel(slab, _k.z_slabs(grid.shape, _k.CHUNK_POINTS // 4))
    return out


def integral_dose_j(dose: Volume, density: Volume) -> float:
    """Integral dose ``Σ D · ρ · dV`` in joules.

    Parameters
    ----------
    dose : Volume
        Gy.
    density : Volume
        Relative electron density taken as mass density (g/cm³); resampled
        onto the dose grid when on another grid (0 outside).

    Returns
    -------
    float
        J: Gy × kg, with ``ρ · dV`` in g (cm³ from the voxel volume) over 1000.
    """
    _check_volume(dose, "dose")
    _check_volume(density, "density")
    rho = _on_grid(density, dose.grid)
    grams = float(np.sum(np.asarray(dose.array, dtype=np.float64) * rho)) * dose.grid.voxel_volume_cc
    return grams / 1000.0


def density_volume(ct: Volume, grid: Grid | None = None, *, hu_table: Any = None) -> Volume:
    """Density of a CT on a grid, through the dose engine's HU calibration (:func:`art.dose.hu_to_density`).

    Parameters
    ----------
    ct : Volume
        CT numbers (HU): the synthetic CT of the day or the planning CT.
    grid : Grid, optional
        Where the density is wanted (a dose grid); the CT's own grid when
        omitted. The HU are resampled linearly (−1000 outside the CT) first.
    hu_table : art.dose.HUTable, keyword-only, optional
        The calibration; :func:`art.dose.load_hu_table`'s default when omitted.

    Returns
    -------
    Volume
        float32 relative electron density (water = 1) on ``grid``.
    """
    from art.dose.machine import hu_to_density

    _check_volume(ct, "ct")
    if grid is not None and not _check_grid(grid, "grid").same_as(ct.grid):
        ct = resample(ct, grid, order=1, fill_value=-1000.0)
    return Volume(hu_to_density(ct.array, hu_table), ct.grid)
