"""Slab phantoms and comparison measures shared by the collapsed-cone validation scripts.

NumPy and SciPy, no art import: ``benchmarks/ccc_reference.py`` (the independent WiscPlan
collapsed-cone engine) and ``benchmarks/ccc_validation.py`` (art's engines) describe the
same phantoms on the same grid through this module, and tests/benchmarks/test_ccc_common.py
checks the measures on analytic inputs.

Geometry (LPS mm, arrays (z, y, x)): a 30 cm cube of water whose anterior surface lies on
y = 0, with ``AIR_MM`` of air (density 0.001) in front; a beam at gantry 0 enters along +y
(anterior → posterior) with the isocentre on the surface at (0, 0, 0), i.e. SSD 100 cm for
SAD 100 cm. Depth below the surface = y. The slabs span the whole cube laterally; their
faces lie on voxel faces for 2, 2.5 and 5 mm grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE_MM = 300.0
"""Side of the phantom cube (depth 0–300 mm, lateral ±150 mm)."""
AIR_MM = 20.0
"""Air in front of the surface, inside the grid."""
AIR_DENSITY = 0.001
"""Relative density of air (the art HU table's −1000 HU)."""
SAD_MM = 1000.0
FIELDS_MM = (30.0, 100.0)
"""Square field sides at the isocentre plane (= the surface)."""
LUNG_DENSITY = 0.25
BONE_DENSITY = 1.6

#: case -> slabs (depth from mm, depth to mm, relative density, material); water elsewhere.
CASES: dict[str, tuple[tuple[float, float, float, str], ...]] = {
    "water": (),
    "lung": ((30.0, 90.0, LUNG_DENSITY, "lung"),),
    "bone": ((30.0, 50.0, BONE_DENSITY, "bone"),),
}

PROFILE_DEPTH_MM = 60.0
"""Depth of the lateral profiles: the middle of the lung slab (water in the other phantoms)."""
SLAB_SCORE_MM = {"lung": (40.0, 80.0), "bone": (35.0, 45.0)}
"""Part of each slab over which its dose is averaged (away from the interfaces: 10 mm in lung, 5 mm in bone)."""
LUNG_SCORE_MM = SLAB_SCORE_MM["lung"]
CAX_RANGE_MM = (15.0, 250.0)
"""Central-axis depths compared: from d_max (15 mm) to 5 cm before the exit surface."""
NORM_DEPTH_MM = 100.0
"""Depth in the water phantom at which the reference engine is scaled to the machine data."""


@dataclass(frozen=True)
class PhantomGrid:
    """The phantoms' voxel grid: ``shape`` (nz, ny, nx), isotropic ``spacing_mm``,
    ``origin`` (x, y, z) LPS mm of the centre of voxel [0, 0, 0] (art.geometry.Grid's convention)."""

    shape: tuple[int, int, int]
    spacing_mm: float
    origin: tuple[float, float, float]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along z, y (= depth) and x, mm."""
        nz, ny, nx = self.shape
        s = self.spacing_mm
        return (self.origin[2] + s * np.arange(nz), self.origin[1] + s * np.arange(ny), self.origin[0] + s * np.arange(nx))


def phantom_grid(spacing_mm: float = 2.5) -> PhantomGrid:
    """The grid of every phantom at ``spacing_mm``: voxel faces on y = 0 and on every slab face,
    an odd number of voxels laterally so that a row and a slice of voxel centres lie on the axis."""
    s = float(spacing_mm)
    if s <= 0:
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm!r}")
    faces = [AIR_MM, SIZE_MM] + [f for slabs in CASES.values() for a, b, _, _ in slabs for f in (a, b)]
    if any(abs(f / s - round(f / s)) > 1e-9 for f in faces):
        raise ValueError(f"spacing_mm {s:g} does not put voxel faces on the slab faces {sorted(set(faces))}")
    n_lat = int(round(SIZE_MM / s)) + 1
    ny = int(round((AIR_MM + SIZE_MM) / s))
    half = (n_lat - 1) * s / 2
    return PhantomGrid((n_lat, ny, n_lat), s, (-half, -AIR_MM + s / 2, -half))


def depth_density(case: str, depth_mm) -> np.ndarray:
    """Relative density at depths below the surface (air in front, water behind and between slabs)."""
    if case not in CASES:
        raise ValueError(f"unknown phantom {case!r}; known: {', '.join(CASES)}")
    d = np.asarray(depth_mm, dtype=np.float64)
    rho = np.where(d < 0, AIR_DENSITY, 1.0)
    for lo, hi, value, _ in CASES[case]:
        rho = np.where((d >= lo) & (d < hi), value, rho)
    return rho


def density_array(case: str, grid: PhantomGrid) -> np.ndarray:
    """(nz, ny, nx) float32 relative densities of a phantom (voxel centres)."""
    _, y, _ = grid.axes()
    col = depth_density(case, y).astype(np.float32)
    return np.broadcast_to(col[None, :, None], grid.shape).copy()


# ----------------------------------------------------------------------------- measures


def dose_at(depth_mm, dose, at_mm: float) -> float:
    """Dose interpolated at one depth (linear)."""
    return float(np.interp(at_mm, np.asarray(depth_mm, float), np.asarray(dose, float)))


def cax_difference(depth_mm, dose, ref, *, depth_range=CAX_RANGE_MM) -> dict:
    """Local central-axis difference of ``dose`` from ``ref`` (same depths), in % of ``ref``.

    Returns ``{"max_abs_pct", "mean_abs_pct", "mean_pct"}`` over the depths inside ``depth_range``
    (mm, inclusive); ``mean_pct`` is signed (positive: ``dose`` above ``ref``).
    """
    d = np.asarray(depth_mm, float)
    a, b = np.asarray(dose, float), np.asarray(ref, float)
    sel = (d >= depth_range[0]) & (d <= depth_range[1])
    if not np.any(sel):
        raise ValueError(f"no depth in {depth_range}")
    diff = 100.0 * (a[sel] / b[sel] - 1.0)
    return {"max_abs_pct": float(np.max(np.abs(diff))), "mean_abs_pct": float(np.mean(np.abs(diff))), "mean_pct": float(np.mean(diff))}


def _crossing(x: np.ndarray, p: np.ndarray, level: float) -> float:
    """Position where ``p`` (starting above ``level`` at x[0]) first falls below ``level``.

    Between the two samples around the crossing the profile is interpolated by a monotone cubic
    (PCHIP): on 2.5 mm samples of an error-function edge of σ ≥ 3 mm the 80–20 width is then within
    0.1 mm, where linear interpolation overestimates it by up to 0.4 mm."""
    from scipy.interpolate import PchipInterpolator
    from scipy.optimize import brentq

    below = np.flatnonzero(p < level)
    if below.size == 0 or below[0] == 0:
        return float("nan")
    i = below[0]
    lo, hi = max(0, i - 3), min(x.size, i + 3)
    f = PchipInterpolator(x[lo:hi], p[lo:hi])
    return float(brentq(lambda t: float(f(t)) - level, x[i - 1], x[i]))


def profile_edges(x_mm, profile, levels=(0.8, 0.5, 0.2)) -> dict[float, tuple[float, float]]:
    """For each level (fraction of the profile's value on the axis, x = 0): the distances from
    the axis at which a field centred on x = 0 falls below it, (left, right), mm."""
    x = np.asarray(x_mm, float)
    p = np.asarray(profile, float)
    p = p / float(np.interp(0.0, x, p))
    right, left = x >= 0, x <= 0
    out = {}
    for lev in levels:
        r = _crossing(x[right], p[right], lev)
        l_ = _crossing(-x[left][::-1], p[left][::-1], lev)
        out[lev] = (l_, r)
    return out


def penumbra_80_20(x_mm, profile) -> float:
    """80 %–20 % penumbra (mm) of a lateral profile centred on x = 0, the mean of both edges,
    levels relative to the value on the axis."""
    e = profile_edges(x_mm, profile, (0.8, 0.2))
    return float(np.mean([e[0.2][0] - e[0.8][0], e[0.2][1] - e[0.8][1]]))


def field_width_50(x_mm, profile) -> float:
    """Full width at 50 % of the value on the axis, mm."""
    left, right = profile_edges(x_mm, profile, (0.5,))[0.5]
    return float(left + right)


def lung_drop(depth_mm, dose, ref, *, depth_range=LUNG_SCORE_MM) -> float:
    """Mean dose of ``dose`` over ``depth_range`` relative to ``ref``'s, in % (negative: lower)."""
    d = np.asarray(depth_mm, float)
    sel = (d >= depth_range[0]) & (d <= depth_range[1])
    if not np.any(sel):
        raise ValueError(f"no depth in {depth_range}")
    return float(100.0 * (np.mean(np.asarray(dose, float)[sel]) / np.mean(np.asarray(ref, float)[sel]) - 1.0))
