"""art.course.warp against analytic deformations: uniform dose, rigid shifts, inverse, energy, Jacobian.

Convention under test: ``u`` on ``u_grid`` maps the daily point ``p`` to the planning point
``p + u(p)``; the accumulated dose at planning point ``x`` is the day's dose at ``φ⁻¹(x)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from art.course.warp import (
    InverseReport,
    accumulate_energy,
    density_volume,
    integral_dose_j,
    inverse_displacement,
    jacobian_determinant,
    pull_dose,
)
from art.errors import InputError
from art.geometry import Grid, Volume
from art.registration.fields import grid_points, sample_image
from tests.conftest import rotation_direction

GRID = Grid(shape=(32, 36, 40), spacing=(2.5, 2.5, 2.5), origin=(-50.0, -45.0, -40.0))
CENTRE = np.array([0.0, 0.0, 0.0])  # LPS centre of GRID (x, y, z)


def sinusoid(p: np.ndarray) -> np.ndarray:
    """A smooth invertible field, up to 8 mm (|∇u| < 0.5), LPS (dx, dy, dz) at points (..., 3)."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return np.stack([
        8.0 * np.sin(2 * np.pi * y / 130.0) * np.cos(2 * np.pi * z / 150.0),
        6.0 * np.sin(2 * np.pi * z / 100.0 + 0.3) * np.cos(2 * np.pi * x / 110.0),
        7.0 * np.sin(2 * np.pi * x / 110.0 + 0.5),
    ], axis=-1)  # fmt: skip


ROTATION = np.array(rotation_direction(6.0, "z")).reshape(3, 3) @ np.array(rotation_direction(-4.0, "x")).reshape(3, 3)
TRANSLATION = np.array([3.0, -2.0, 4.5])


def rigid(p: np.ndarray) -> np.ndarray:
    """A rotation (6° about z, -4° about x, around the grid centre) and a translation, as a displacement."""
    return (p - CENTRE) @ ROTATION.T + CENTRE + TRANSLATION - p


def rigid_inverse(x: np.ndarray) -> np.ndarray:
    return (x - CENTRE - TRANSLATION) @ ROTATION + CENTRE


def field_on(fn, grid: Grid) -> np.ndarray:
    return fn(grid_points(grid)).astype(np.float32)


def analytic_jacobian(fn, p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    m = np.zeros(p.shape[:-1] + (3, 3))
    for c in range(3):
        d = np.zeros(3)
        d[c] = eps
        m[..., :, c] = (fn(p + d) - fn(p - d)) / (2 * eps)
    return np.linalg.det(np.eye(3) + m)


def preimage_inside(grid: Grid, pre: np.ndarray, margin_voxels: float) -> np.ndarray:
    """Planning voxels whose daily point lies at least ``margin_voxels`` inside ``grid``."""
    return grid.contains(pre, margin_voxels=-margin_voxels)


def interior(shape, n: int = 2) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[n:-n, n:-n, n:-n] = True
    return m


def smooth_density(grid: Grid) -> Volume:
    p = grid_points(grid)
    return Volume((1.0 + 0.3 * np.sin(p[..., 0] / 15.0) * np.cos(p[..., 2] / 20.0)).astype(np.float32), grid)


def consistent_day_density(fn, grid: Grid, rho_target: Volume) -> Volume:
    """ρ_day = ρ_target∘φ · J: the day's tissue has the planning mass (mass-conserving deformation)."""
    p = grid_points(grid)
    rho = sample_image(rho_target.array, rho_target.grid, p + fn(p), fill_value=1.0) * analytic_jacobian(fn, p)
    return Volume(rho.astype(np.float32), grid)


# ------------------------------------------------------------------ uniform dose in, uniform dose out
@pytest.mark.parametrize("fn, inverse_fn", [(sinusoid, None), (rigid, rigid_inverse)], ids=["sinusoid", "rotation+translation"])
def test_uniform_dose_pulls_to_the_same_uniform_dose(fn, inverse_fn):
    u = field_on(fn, GRID)
    dose = Volume(np.full(GRID.shape, 2.0, np.float32), GRID)
    v = inverse_displacement(u, GRID, GRID)
    out = pull_dose(dose, u, GRID, GRID, inverse=v).array
    x = grid_points(GRID)
    pre = x + v if inverse_fn is None else inverse_fn(x)
    inside, outside = preimage_inside(GRID, pre, 0.5), ~GRID.contains(pre, margin_voxels=0.5)
    assert inside.sum() > 0.5 * GRID.size and outside.sum() > 0.02 * GRID.size
    np.testing.assert_allclose(out[inside], 2.0, rtol=1e-6)
    assert np.all(out[outside] == 0.0)  # beyond the day's dose grid: nothing


@pytest.mark.parametrize("fn", [sinusoid, rigid], ids=["sinusoid", "rotation+translation"])
def test_uniform_dose_stays_uniform_by_energy_transfer(fn):
    u = field_on(fn, GRID)
    rho_t = smooth_density(GRID)
    rho_day = consistent_day_density(fn, GRID, rho_t)
    dose = Volume(np.full(GRID.shape, 2.0, np.float32), GRID)
    x = grid_points(GRID)
    sel = preimage_inside(GRID, x + inverse_displacement(u, GRID, GRID), 2.0) & interior(GRID.shape)
    assert sel.sum() > 0.4 * GRID.size
    out = accumulate_energy(dose, rho_day, u, GRID, GRID, rho_t).array
    assert np.max(np.abs(out[sel] / 2.0 - 1.0)) < 0.01
    # dividing by the planning mass instead (consistent densities): the deposit's ripple stays below 1 % with 3 sub-points
    own = accumulate_energy(dose, rho_day, u, GRID, GRID, rho_t, max_mass_ratio=math.inf, subsample=3).array
    assert np.max(np.abs(own[sel] / 2.0 - 1.0)) < 0.01


# ------------------------------------------------------------------ rigid shifts move the dose exactly
SHIFT_GRID = Grid(shape=(20, 24, 28), spacing=(2.5, 2.5, 2.5), origin=(-30.0, -25.0, -20.0))


def test_whole_voxel_shift_moves_a_random_pattern_exactly():
    t = np.array([5.0, -2.5, 7.5])  # (x, y, z) mm = (2, -1, 3) voxels (i, j, k)
    rng = np.random.default_rng(1)
    day = rng.uniform(0.5, 3.0, SHIFT_GRID.shape).astype(np.float32)
    u = np.broadcast_to(t.astype(np.float32), SHIFT_GRID.shape + (3,))
    out = pull_dose(Volume(day, SHIFT_GRID), u, SHIFT_GRID, SHIFT_GRID).array
    # planning voxel [k, j, i] shows the day's voxel [k - 3, j + 1, i - 2]
    np.testing.assert_allclose(out[3:, :-1, 2:], day[:-3, 1:, :-2], atol=1e-6)
    assert np.all(out[:3] == 0) and np.all(out[:, -1] == 0) and np.all(out[:, :, :2] == 0)
    rho = Volume(np.ones(SHIFT_GRID.shape, np.float32), SHIFT_GRID)
    energy = accumulate_energy(Volume(day, SHIFT_GRID), rho, u, SHIFT_GRID, SHIFT_GRID, rho).array
    np.testing.assert_allclose(energy[3:, :-1, 2:], day[:-3, 1:, :-2], rtol=1e-5)


def multilinear(p: np.ndarray) -> np.ndarray:
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return 2.0 + 0.01 * x + 0.02 * y - 0.015 * z + 2e-4 * x * y - 1e-4 * y * z + 5e-6 * x * y * z


def test_sub_voxel_shift_moves_the_dose_exactly():
    """Trilinear interpolation reproduces a multilinear dose exactly: the result is the analytically shifted pattern."""
    t = np.array([1.1, -0.7, 0.4])
    p = grid_points(SHIFT_GRID)
    day = Volume(multilinear(p).astype(np.float32), SHIFT_GRID)
    u = np.broadcast_to(t.astype(np.float32), SHIFT_GRID.shape + (3,))
    expected = multilinear(p - t)
    sel = SHIFT_GRID.contains(p - t, margin_voxels=-1.0)
    pulled = pull_dose(day, u, SHIFT_GRID, SHIFT_GRID).array
    np.testing.assert_allclose(pulled[sel], expected[sel], atol=2e-5)
    rho = Volume(np.ones(SHIFT_GRID.shape, np.float32), SHIFT_GRID)
    for s in (1, 2):
        energy = accumulate_energy(day, rho, u, SHIFT_GRID, SHIFT_GRID, rho, subsample=s).array
        np.testing.assert_allclose(energy[sel & interior(SHIFT_GRID.shape)], expected[sel & interior(SHIFT_GRID.shape)], atol=2e-5)


def test_shift_between_oblique_and_different_grids():
    """Daily dose, field and planning grids all differ (one rotated): a linear dose still moves exactly."""
    d = np.array(rotation_direction(30.0, "z")).reshape(3, 3) @ np.array(rotation_direction(10.0, "x")).reshape(3, 3)
    dose_grid = Grid(shape=(20, 22, 24), spacing=(2.5, 2.0, 2.2), origin=(-15.0, -30.0, -22.0), direction=tuple(d.reshape(-1)))
    u_grid = Grid(shape=(12, 14, 16), spacing=(5.0, 5.0, 5.0), origin=(-40.0, -40.0, -30.0))
    target = Grid(shape=(18, 20, 22), spacing=(2.5, 2.5, 2.5), origin=(-20.0, -20.0, -15.0))
    t = np.array([-2.3, 1.7, 3.1])

    def linear(q):
        return 1.5 + 0.02 * q[..., 0] - 0.01 * q[..., 1] + 0.03 * q[..., 2]

    day = Volume(linear(grid_points(dose_grid)).astype(np.float32), dose_grid)
    u = np.broadcast_to(t.astype(np.float32), u_grid.shape + (3,))
    x = grid_points(target)
    sel = dose_grid.contains(x - t, margin_voxels=-1.0)
    assert sel.sum() > 0.2 * target.size
    out = pull_dose(day, u, u_grid, target).array
    np.testing.assert_allclose(out[sel], linear(x - t)[sel], atol=2e-5)


def test_pull_inverts_only_where_the_days_dose_can_reach():
    """Without a given inverse, pull_dose inverts the field near the day's dose only: same result, and its report."""
    u = field_on(sinusoid, GRID)
    dose_grid = Grid(shape=(16, 18, 20), spacing=(2.0, 2.0, 2.0), origin=(-15.0, -20.0, -18.0))
    q = grid_points(dose_grid)
    day = Volume(np.clip(2.0 - np.linalg.norm(q - [4.0, -2.0, 0.0], axis=-1) / 8.0, 0.0, None).astype(np.float32), dose_grid)
    full = pull_dose(day, u, GRID, GRID, inverse=inverse_displacement(u, GRID, GRID)).array
    near, report = pull_dose(day, u, GRID, GRID, return_report=True)
    assert isinstance(report, InverseReport) and report.converged and report.max_residual_mm <= 0.01
    assert (full > 0).sum() > 100
    np.testing.assert_allclose(near.array, full, atol=2e-3)  # both inverses within 0.01 mm; the dose slope is 0.25 Gy/mm
    none, report = pull_dose(Volume(np.zeros(dose_grid.shape, np.float32), dose_grid), u, GRID, GRID, return_report=True)
    assert not none.array.any() and report.converged


# ------------------------------------------------------------------ the inverse field
def test_inverse_field_composes_to_identity():
    u = field_on(sinusoid, GRID)
    v, report = inverse_displacement(u, GRID, GRID, return_report=True)
    assert isinstance(report, InverseReport) and report.converged and report.max_residual_mm <= 0.01
    assert v.shape == GRID.shape + (3,) and v.dtype == np.float32
    x = grid_points(GRID)
    y = x + v
    inside = preimage_inside(GRID, y, 1.0)
    assert inside.sum() > 0.5 * GRID.size
    err = np.linalg.norm(y + sinusoid(y) - x, axis=-1)  # with the analytic field, not the interpolated one
    assert err[inside].max() < 0.05


def test_inverse_of_a_rigid_motion_on_an_oblique_grid_and_a_large_grid():
    """An affine field is interpolated exactly, so the inverse matches the analytic one; also from the coarse start."""
    d = np.array(rotation_direction(20.0, "y")).reshape(3, 3)
    target = Grid(shape=(16, 18, 20), spacing=(2.0, 3.0, 2.5), origin=(-20.0, -25.0, -15.0), direction=tuple(d.reshape(-1)))
    u = field_on(rigid, GRID)
    x = grid_points(target)
    v = inverse_displacement(u, GRID, target)
    inside = preimage_inside(GRID, rigid_inverse(x), 0.0)
    assert inside.mean() > 0.9
    assert np.abs(x + v - rigid_inverse(x))[inside].max() < 0.02
    large = Grid(shape=(40, 72, 80), spacing=(2.5, 1.25, 1.25), origin=(-50.0, -45.0, -50.0))  # > 200 000 voxels: coarse start
    v, report = inverse_displacement(u, GRID, large, return_report=True)
    xl = grid_points(large)
    inside = preimage_inside(GRID, rigid_inverse(xl), 0.0)
    assert report.converged and np.abs(xl + v - rigid_inverse(xl))[inside].max() < 0.02


def test_inverse_of_a_strong_compression_converges_quickly():
    """det(I + ∇u) down to 0.04: plain fixed-point steps shrink the error by only 0.96 there; Newton steps finish it."""
    from scipy.special import erf

    def squeeze(p, c=0.97, s=12.0):
        out = np.zeros(p.shape)
        out[..., 0] = -c * s * np.sqrt(np.pi / 2) * erf((p[..., 0] - 3.0) / (s * np.sqrt(2)))
        return out

    u = field_on(squeeze, GRID)
    assert jacobian_determinant(u, GRID).min() < 0.05
    v, report = inverse_displacement(u, GRID, GRID, return_report=True)
    assert report.converged and report.iterations <= 15
    x = grid_points(GRID)
    y = x + v
    inside = preimage_inside(GRID, y, 1.0)
    assert np.linalg.norm(y + squeeze(y) - x, axis=-1)[inside].max() < 0.05


# ------------------------------------------------------------------ energy conservation
def test_energy_is_conserved_for_a_dose_inside():
    u = field_on(sinusoid, GRID)
    p = grid_points(GRID)
    day = Volume((3.0 * np.exp(-((p - [-5.0, 2.0, 0.0]) ** 2).sum(-1) / (2 * 12.0**2))).astype(np.float32), GRID)
    rho_t = smooth_density(GRID)
    rho_day = consistent_day_density(sinusoid, GRID, rho_t)
    delivered = integral_dose_j(day, rho_day)
    out = accumulate_energy(day, rho_day, u, GRID, GRID, rho_t)
    assert integral_dose_j(out, rho_t) == pytest.approx(delivered, rel=0.005)
    # with the planning mass as divisor energy is conserved whatever the day's densities
    warped_only = Volume(sample_image(rho_t.array, GRID, p + sinusoid(p), fill_value=1.0), GRID)  # no Jacobian: mass not conserved
    own = accumulate_energy(day, warped_only, u, GRID, GRID, rho_t, max_mass_ratio=math.inf)
    assert integral_dose_j(own, rho_t) == pytest.approx(integral_dose_j(day, warped_only), rel=0.005)
    # the pull does not conserve energy exactly, but is close for this mild field
    assert integral_dose_j(pull_dose(day, u, GRID, GRID), rho_t) == pytest.approx(delivered, rel=0.02)


def test_tissue_registered_onto_planning_gas_gets_a_bounded_dose():
    """Planning gas where the day had tissue: energy per planning mass would explode; per arrived mass it does not."""
    g = SHIFT_GRID
    p = grid_points(g)
    gas = np.linalg.norm(p - [0.0, 0.0, 5.0], axis=-1) < 8.0
    rho_t = Volume(np.where(gas, 0.001, 1.0).astype(np.float32), g)
    rho_day = Volume(np.ones(g.shape, np.float32), g)
    dose = Volume(np.full(g.shape, 2.0, np.float32), g)
    u = np.zeros(g.shape + (3,), np.float32)
    default = accumulate_energy(dose, rho_day, u, g, g, rho_t).array
    np.testing.assert_allclose(default[interior(g.shape, 1)], 2.0, rtol=1e-6)
    unbounded = accumulate_energy(dose, rho_day, u, g, g, rho_t, max_mass_ratio=math.inf).array
    assert unbounded[gas].max() > 100.0
    bounded = accumulate_energy(dose, rho_day, u, g, g, rho_t, max_mass_ratio=2.0).array
    assert bounded.max() <= 4.0 + 1e-4 and bounded[gas].max() > 3.9


# ------------------------------------------------------------------ Jacobian, integral dose, density
def test_jacobian_of_a_uniform_scaling_and_of_an_affine_field_on_an_oblique_grid():
    s = 1.07
    u = field_on(lambda p: (s - 1.0) * (p - CENTRE), GRID)
    np.testing.assert_allclose(jacobian_determinant(u, GRID), s**3, rtol=1e-5)
    d = np.array(rotation_direction(35.0, "z")).reshape(3, 3) @ np.array(rotation_direction(15.0, "y")).reshape(3, 3)
    oblique = Grid(shape=(10, 12, 14), spacing=(3.0, 2.0, 1.5), origin=(5.0, -8.0, 2.0), direction=tuple(d.reshape(-1)))
    m = np.array([[1.1, 0.05, -0.02], [0.03, 0.92, 0.04], [-0.06, 0.02, 1.03]])
    u = field_on(lambda p: p @ (m - np.eye(3)).T, oblique)
    np.testing.assert_allclose(jacobian_determinant(u, oblique), np.linalg.det(m), rtol=1e-5)


def test_integral_dose_of_a_litre_of_water():
    g = Grid(shape=(40, 40, 40), spacing=(2.5, 2.5, 2.5), origin=(0.0, 0.0, 0.0))  # 10 cm cube: 1 kg of water
    dose = Volume(np.full(g.shape, 2.0, np.float32), g)
    assert integral_dose_j(dose, Volume(np.ones(g.shape, np.float32), g)) == pytest.approx(2.0, rel=1e-6)


def test_density_volume_uses_the_dose_engines_calibration():
    from art.dose import hu_to_density

    g = Grid(shape=(4, 5, 6), spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0))
    hu = np.linspace(-1000, 1500, g.size).reshape(g.shape).astype(np.float32)
    out = density_volume(Volume(hu, g))
    np.testing.assert_allclose(out.array, hu_to_density(hu))
    wider = g.pad(2)  # beyond the CT: air
    assert density_volume(Volume(np.zeros(g.shape, np.float32), g), wider).array[0, 0, 0] == pytest.approx(float(hu_to_density(-1000.0)))


# ------------------------------------------------------------------ bad input
def test_field_that_does_not_fit_its_grid_is_refused_naming_it():
    dose = Volume(np.ones(SHIFT_GRID.shape, np.float32), SHIFT_GRID)
    u = np.zeros(SHIFT_GRID.shape[::-1] + (3,), np.float32)
    for call in (lambda: inverse_displacement(u, SHIFT_GRID, SHIFT_GRID), lambda: pull_dose(dose, u, SHIFT_GRID, SHIFT_GRID),
                 lambda: accumulate_energy(dose, dose, u, SHIFT_GRID, SHIFT_GRID, dose)):  # fmt: skip
        with pytest.raises(InputError, match=r"^u has shape .*u_grid\.shape"):
            call()
    with pytest.raises(InputError, match="^u has shape"):
        inverse_displacement(np.zeros(SHIFT_GRID.shape + (2,)), SHIFT_GRID, SHIFT_GRID)
    with pytest.raises(InputError, match=r"^u has shape \(2, 2, 2, 3\); it must be grid\.shape"):
        jacobian_determinant(np.zeros((2, 2, 2, 3)), SHIFT_GRID)


def test_other_bad_inputs_name_the_parameter():
    g = SHIFT_GRID
    u = np.zeros(g.shape + (3,), np.float32)
    dose = Volume(np.ones(g.shape, np.float32), g)
    with pytest.raises(InputError, match="^dose must be an art.geometry.Volume"):
        pull_dose(np.ones(g.shape), u, g, g)
    with pytest.raises(InputError, match="^target_grid"):
        pull_dose(dose, u, g, (1, 2, 3))
    with pytest.raises(InputError, match="^inverse must be"):
        pull_dose(dose, u, g, g, inverse=np.zeros((2, 2, 2, 3)))
    with pytest.raises(InputError, match="^density_day must not be negative"):
        accumulate_energy(dose, Volume(-np.ones(g.shape, np.float32), g), u, g, g, dose)
    with pytest.raises(InputError, match="^dose holds non-finite"):
        integral_dose_j(Volume(np.full(g.shape, np.nan, np.float32), g), dose)
    with pytest.raises(InputError, match="^tol_mm"):
        inverse_displacement(u, g, g, tol_mm=0)
    with pytest.raises(InputError, match="^max_mass_ratio"):
        accumulate_energy(dose, dose, u, g, g, dose, max_mass_ratio=0.5)
    with pytest.raises(InputError, match="^u is undefined"):
        inverse_displacement(np.full(g.shape + (3,), np.nan), g, g)


def test_undefined_displacements_take_the_nearest_defined_value():
    g = SHIFT_GRID
    u = np.broadcast_to(np.float32([2.5, 0.0, 0.0]), g.shape + (3,)).copy()
    u[:, :, :3] = np.nan  # a DREG may mark voxels undefined
    v = inverse_displacement(u, g, g)
    np.testing.assert_allclose(v, np.broadcast_to([-2.5, 0.0, 0.0], v.shape), atol=1e-4)
