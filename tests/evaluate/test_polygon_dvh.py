"""DVH from the RTSTRUCT polygons (issue 15, item 2), checked against an independent implementation.

The reference (tests/independent_dvh.py, shared with the commissioning
harness) shares no code with :mod:`art.evaluate.polygons`: points on a
regular 0.25 mm grid in each contour plane, inside by ``matplotlib.path``
(polygons of a plane combined by XOR = even-odd), the slab
rule (each plane half-way to its neighbours, half-spacing end caps) sampled
with points every 0.25 mm along z, the dose interpolated at every point with
``scipy.interpolate.RegularGridInterpolator`` (linear, clamped to the
outermost voxel centres) and the metrics read off the sorted points. Dose
fields are analytic; a linear field is interpolated exactly, so there the
reference is the continuous truth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from art.errors import ArtError, GeometryError, InputError
from art.evaluate import (
    dvh,
    evaluate_goals,
    occupancy,
    polygon_occupancy,
    polygon_samples,
    polygon_volume_cc,
    structure_samples,
)
from art.evaluate.metrics import evaluate_metric
from art.geometry import Grid, Volume
from art.protocol import Goal, parse_metric
from art.structures import Structure
from tests.independent_dvh import reference_metrics, reference_samples

RX = 60.0  # prescription, Gy: tolerances are 0.5 % (1 % near-max/min) of it
TOL, TOL_NEAR = 0.005 * RX, 0.01 * RX
TINY = Grid((1, 1, 1), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def circle(r: float, z: float, *, n: int = 180, cx: float = 0.0, cy: float = 0.0, cw: bool = False) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False) * (-1 if cw else 1)
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, float(z))])


def polygon_structure(polys, name: str = "S") -> Structure:
    """A structure known only by its polygons (the mask is a placeholder, unused in polygon mode)."""
    return Structure(name, np.zeros(TINY.shape, bool), TINY, contours=tuple(polys))


def art_metrics(dose: Volume, s: Structure) -> dict[str, float]:
    d, v, _ = structure_samples(dose, s, mode="polygons")
    res = {m: evaluate_metric(m, d, v) for m in ("D98%", "D95%", "D50%", "D2%", "Dmax", "Dmin", "Dmean")}
    res["volume_cc"] = float(v.sum())
    return res


def compare(got: dict, ref: dict) -> None:
    for m, r in ref.items():
        if m == "volume_cc":
            assert got[m] == pytest.approx(r, rel=0.005), m
        else:
            tol = TOL_NEAR if m in ("Dmax", "Dmin") else TOL
            assert abs(got[m] - r) <= tol, f"{m}: art {got[m]:.3f} Gy, reference {r:.3f} Gy"


def lps_field(grid: Grid, f) -> Volume:
    x, y, z = grid.lps_coordinates(np.float64)
    return Volume(np.asarray(f(x, y, z), dtype=np.float32), grid)


# ---------------------------------------------------------------- analytic cases
DOSE_GRID = Grid((24, 36, 36), (2.5, 2.5, 2.5), (-43.3, -41.9, -28.7))  # voxel centres off the contour planes


def test_sphere_in_a_linear_gradient_matches_the_reference_and_the_analytic_mean():
    r = 20.0  # 33.5 cc
    polys = [circle(math.sqrt(r * r - z * z), z) for z in np.arange(-18.75, 19.0, 2.5)]
    s = polygon_structure(polys, "Sphere")
    dose = lps_field(DOSE_GRID, lambda x, y, z: RX + 0.5 * x + 0.2 * y - 0.3 * z)  # up to 0.62 Gy/mm
    got, ref = art_metrics(dose, s), reference_metrics(*reference_samples(polys, dose))
    compare(got, ref)
    assert abs(got["Dmean"] - RX) <= 0.05  # a sphere in a linear field: the mean is the centre dose
    # D50% is the centre dose too (the field is symmetric about the centre)
    assert abs(got["D50%"] - RX) <= 0.1


def test_thin_ring_in_a_steep_field_matches_the_reference():
    # a 3 mm shell (12-15 mm) around a core, 30 mm long: 7.6 cc; dose 60 Gy in the core falling 3 Gy/mm
    polys = [p for z in np.arange(-13.75, 14.0, 2.5) for p in (circle(15.0, z), circle(12.0, z, cw=True))]
    s = polygon_structure(polys, "Shell")
    dose = lps_field(DOSE_GRID, lambda x, y, z: np.where(np.hypot(x, y) < 10, RX, RX - 3.0 * (np.hypot(x, y) - 10)))
    got, ref = art_metrics(dose, s), reference_metrics(*reference_samples(polys, dose))
    assert ref["volume_cc"] > 5.0
    compare(got, ref)
    # the dose falls 9 Gy across the shell: the mean is near the middle, well apart from the ends
    assert ref["Dmin"] + 3 < got["Dmean"] < ref["Dmax"] - 3


def test_steep_gradient_along_z_is_sampled_along_z_too():
    # a cylinder (radius 20 mm, 25 mm long: 31 cc) abutting a high-dose region below it, the dose
    # falling 2.5 Gy/mm along z (TG-119's stacked targets): each 2.5 mm dose slice spans 6 Gy
    polys = [circle(20.0, z) for z in np.arange(1.25, 25.0, 2.5)]
    s = polygon_structure(polys, "Superior")
    dose = lps_field(DOSE_GRID, lambda x, y, z: np.clip(RX - 2.5 * (z + 5.0), 10.0, RX))
    ref_samples = reference_samples(polys, dose, step=0.5, zstep=0.05)  # 0.125 Gy between the reference's z samples
    got, ref = art_metrics(dose, s), reference_metrics(*ref_samples)
    compare(got, ref)
    d, v, _ = structure_samples(dose, s, mode="polygons")
    for pct in (5.0, 10.0, 30.0, 90.0):
        assert abs(evaluate_metric(f"D{pct:g}%", d, v) - reference_metrics_at(*ref_samples, pct)) <= TOL, pct


def reference_metrics_at(d: np.ndarray, v: np.ndarray, percent: float) -> float:
    order = np.argsort(-d)
    cum = np.cumsum(v[order])
    return float(d[order][min(np.searchsorted(cum, percent / 100 * cum[-1]), d.size - 1)])


def test_c_shape_around_a_core_matches_the_reference():
    # TG-119-like C: an annulus 15-25 mm open towards +x, 25 mm long (~24 cc), dose falling from a core
    t = np.linspace(np.deg2rad(40), np.deg2rad(320), 120)
    ring2d = np.concatenate([np.column_stack([25 * np.cos(t), 25 * np.sin(t)]), np.column_stack([15 * np.cos(t[::-1]), 15 * np.sin(t[::-1])])])
    polys = [np.column_stack([ring2d, np.full(len(ring2d), z)]) for z in np.arange(-11.25, 11.3, 2.5)]
    s = polygon_structure(polys, "PTV_C")
    dose = lps_field(DOSE_GRID, lambda x, y, z: RX * np.clip(1.2 - 0.012 * np.hypot(x - 5, y), 0, None) + 0.1 * z)
    got, ref = art_metrics(dose, s), reference_metrics(*reference_samples(polys, dose))
    assert ref["volume_cc"] > 5.0
    compare(got, ref)


def test_structure_partly_outside_the_dose_grid_is_refused_naming_it():
    x_edge = DOSE_GRID.origin[0] - 1.25  # the grid's first voxel edge along x
    polys = [circle(10.0, z, cx=x_edge + 8.0) for z in np.arange(-5.0, 5.1, 2.5)]  # reaches 2 mm beyond it
    dose = lps_field(DOSE_GRID, lambda x, y, z: RX + 0 * x)
    with pytest.raises(GeometryError, match=r"'Rectum'.*outside the dose grid"):
        structure_samples(dose, polygon_structure(polys, "Rectum"), mode="polygons")
    with pytest.raises(GeometryError, match="Rectum"):
        polygon_occupancy(polygon_structure(polys, "Rectum"), DOSE_GRID)
    # along z only through the end cap: planes inside the grid, the half-spacing cap beyond its last edge
    z_top = DOSE_GRID.origin[2] + 2.5 * (DOSE_GRID.shape[0] - 0.5)
    polys_z = [circle(8.0, z) for z in (z_top - 5.5, z_top - 3.0, z_top - 0.5)]
    with pytest.raises(GeometryError, match=r"'Bladder'.*along z.*end caps"):
        structure_samples(dose, polygon_structure(polys_z, "Bladder"), mode="polygons")
    # exactly touching the edge (cap ends on it) is inside
    polys_ok = [circle(8.0, z) for z in (z_top - 6.25, z_top - 3.75, z_top - 1.25)]
    d, _v, _ = structure_samples(dose, polygon_structure(polys_ok, "Bladder"), mode="polygons")
    assert np.allclose(d, RX, atol=1e-4)


# ---------------------------------------------------------------- volumes and the slab rule
def shoelace(p):
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def test_sphere_volume_from_polygons_by_the_slab_rule():
    r, h = 30.0, 2.5
    zs = np.arange(-r + h / 2, r, h)  # 24 planes; slabs with end caps cover exactly [-30, 30]
    polys = [circle(math.sqrt(r * r - z * z), z, n=720) for z in zs]
    s = polygon_structure(polys, "Sphere")
    by_rule = sum(shoelace(p) * h for p in polys) / 1000.0  # each plane one spacing thick
    assert polygon_volume_cc(s) == pytest.approx(by_rule, rel=1e-9)
    # midpoint rule of the sphere's cross-sections: 4/3 pi r^3 + pi r h^2 / 6 (the polygons' inscribed-area loss aside)
    analytic = 4 / 3 * math.pi * r**3 / 1000.0
    assert by_rule == pytest.approx(analytic + math.pi * r * h * h / 6 / 1000.0, rel=2e-4)
    assert abs(by_rule / analytic - 1) < 0.002
    grid = Grid((30, 30, 30), (2.5, 2.5, 2.5), (-35.9, -36.6, -36.1))
    occ = polygon_occupancy(s, grid)
    assert float(occ.array.sum()) * grid.voxel_volume_cc == pytest.approx(by_rule, rel=1e-3)
    _, v = polygon_samples(lps_field(grid, lambda x, y, z: 1.0 + 0.01 * x), s)
    assert float(v.sum()) == pytest.approx(by_rule, rel=1e-3)


def test_end_cap_rule_on_a_cylinder():
    r = 10.0
    polys = [circle(r, z, n=720) for z in np.arange(0.0, 20.1, 2.5)]  # 9 planes from z = 0 to 20 mm
    s = polygon_structure(polys, "Cyl")
    area = shoelace(polys[0])
    # half-slice end caps: the cylinder stands for z = -1.25 .. 21.25 (22.5 mm, not 20)
    assert polygon_volume_cc(s) == pytest.approx(area * 22.5 / 1000.0, rel=1e-9)
    # dose slices centred at z = -2.5, 0, ... 22.5 with edges at -1.25, 1.25, ...: the caps fill the end slices fully
    grid = Grid((13, 12, 12), (2.5, 2.5, 2.5), (-13.75, -13.75, -5.0))
    per_slice = polygon_occupancy(s, grid).array.sum(axis=(1, 2)) * 2.5 * 2.5  # mm² per dose slice
    assert per_slice[0] == 0 and per_slice[-1] == 0  # z = -5 and 25: beyond the caps
    assert np.allclose(per_slice[1:-1][per_slice[1:-1] > 0], area, rtol=2e-3)
    assert np.count_nonzero(per_slice > 0) == 9
    # dose slices shifted by half a slice: the end slices [-2.5, 0] and [20, 22.5] get half
    shifted = Grid((13, 12, 12), (2.5, 2.5, 2.5), (-13.75, -13.75, -3.75))
    ps = polygon_occupancy(s, shifted).array.sum(axis=(1, 2)) * 2.5 * 2.5
    nz = np.flatnonzero(ps > 1e-6)
    assert ps[nz[0]] == pytest.approx(area / 2, rel=2e-3) and ps[nz[-1]] == pytest.approx(area / 2, rel=2e-3)
    assert np.allclose(ps[nz[1:-1]], area, rtol=2e-3) and nz.size == 10


def test_a_wide_gap_is_a_break_not_bridged():
    r, h = 8.0, 2.5
    lower = [circle(r, z, n=360) for z in (0.0, 2.5, 5.0)]
    upper = [circle(r, z, n=360) for z in (30.0, 32.5, 35.0)]  # 25 mm gap: two separate pieces
    s = polygon_structure(lower + upper, "Nodes")
    area = shoelace(lower[0])
    assert polygon_volume_cc(s) == pytest.approx(2 * 3 * h * area / 1000.0, rel=1e-9)
    # a single plane needs a thickness
    single = polygon_structure([circle(r, 0.0)], "Marker")
    with pytest.raises(GeometryError, match="'Marker'.*single plane"):
        polygon_volume_cc(single)
    assert polygon_volume_cc(single, plane_thickness_mm=3.0) == pytest.approx(shoelace(circle(r, 0.0)) * 3.0 / 1000.0)


def test_holes_islands_and_keyhole_contours_by_even_odd():
    outer, inner, island = circle(15.0, 0.0), circle(10.0, 0.0), circle(4.0, 0.0)
    planes = [[p.copy() for p in (outer, inner, island)] for _ in range(3)]
    for k, ps in enumerate(planes):
        for p in ps:
            p[:, 2] = 2.5 * k
    s = polygon_structure([p for ps in planes for p in ps], "Ring")
    area = shoelace(outer) - shoelace(inner) + shoelace(island)
    assert polygon_volume_cc(s) == pytest.approx(area * 7.5 / 1000.0, rel=1e-9)
    grid = Grid((6, 16, 16), (2.5, 2.5, 2.5), (-18.75, -18.75, -5.0))
    assert float(polygon_occupancy(s, grid).array.sum()) * grid.voxel_volume_cc == pytest.approx(area * 7.5 / 1000, rel=3e-3)
    # a keyhole: the hole reached by a zero-width channel (edges overlap, never cross) is accepted
    t = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    o = np.column_stack([15 * np.cos(t), 15 * np.sin(t)])
    i = np.column_stack([10 * np.cos(-t), 10 * np.sin(-t)])
    key = np.concatenate([o, o[:1], i, i[:1]])
    keyhole = [np.column_stack([key, np.full(len(key), z)]) for z in (0.0, 2.5, 5.0)]
    kv = polygon_volume_cc(polygon_structure(keyhole, "Keyhole"))  # the signed area of a keyhole is the ring's
    occ = float(polygon_occupancy(polygon_structure(keyhole, "Keyhole"), grid).array.sum()) * grid.voxel_volume_cc
    ring_area = shoelace(o) - shoelace(i)
    assert kv == pytest.approx(ring_area * 7.5 / 1000, rel=1e-6) and occ == pytest.approx(kv, rel=3e-3)


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "poly, match",
    [
        (np.array([[0, 0, 5.0], [0, 0, 5.0], [10, 0, 5.0]]), r"'Bad'.*z = 5.00 mm.*fewer than 3 distinct points"),
        (np.array([[0, 0, 5.0], [5, 5, 5.0], [10, 10, 5.0], [3, 3, 5.0]]), r"'Bad'.*z = 5.00 mm.*no area"),
        (np.array([[0, 0, 5.0], [10, 0, 5.0], [10, 10, 5.5], [0, 10, 5.0]]), r"'Bad'.*not planar"),
        (np.array([[0, 0, 5.0], [10, 10, 5.0], [10, 0, 5.0], [0, 10, 5.0]]), r"'Bad'.*z = 5.00 mm.*self-intersecting"),
        (np.array([[0, 0, 5.0], [10, 10, 5.0], [10, 0, 5.0], [0, 6, 5.0]]), r"'Bad'.*z = 5.00 mm.*self-intersecting \(edge 1 crosses edge 3"),
    ],
    ids=["open", "degenerate", "off-plane", "bow-tie", "self-intersecting"],
)
def test_bad_contours_are_refused_naming_structure_and_plane(poly, match):
    good = [circle(20.0, z) for z in (0.0, 2.5)]
    s = polygon_structure(good + [poly], "Bad")
    with pytest.raises(InputError, match=match):
        polygon_occupancy(s, DOSE_GRID)
    with pytest.raises(InputError, match=match):
        polygon_volume_cc(s)


def test_self_intersection_found_in_a_long_contour():
    p = circle(20.0, 0.0, n=800)
    p[[100, 500]] = p[[500, 100]]  # two far apart points swapped: edges cross the interior
    with pytest.raises(InputError, match="self-intersecting"):
        polygon_volume_cc(polygon_structure([p, circle(20.0, 2.5, n=800)], "Long"))


def test_structure_without_polygons_and_oblique_dose_grid_are_refused():
    mask_only = Structure("AI_Prostate", np.ones((2, 2, 2), bool), Grid((2, 2, 2), (2.5, 2.5, 2.5), (0, 0, 0)))
    dose = lps_field(DOSE_GRID, lambda x, y, z: RX + 0 * x)
    with pytest.raises(InputError, match="'AI_Prostate' has no contour polygons"):
        evaluate_goals(dose, [mask_only], [Goal("AI_Prostate", parse_metric("D95%"), at_least=57.0)], mode="polygons")
    s = polygon_structure([circle(5.0, z) for z in (0.0, 2.5)], "PTV")
    c, sn = math.cos(0.3), math.sin(0.3)
    oblique = Grid((10, 10, 10), (2.5, 2.5, 2.5), (-10, -10, -10), direction=(1, 0, 0, 0, c, -sn, 0, sn, c))
    with pytest.raises(GeometryError, match="'PTV'.*not axial"):
        polygon_occupancy(s, oblique)
    with pytest.raises(ArtError, match="step_mm"):
        polygon_occupancy(s, DOSE_GRID, step_mm=0.0)


# ---------------------------------------------------------------- the evaluation paths agree
def test_rotated_and_flipped_dose_grids_give_the_same_metrics():
    polys = [circle(math.sqrt(400 - z * z), z) for z in np.arange(-18.75, 19.0, 2.5)]
    s = polygon_structure(polys, "Sphere")
    f = lambda x, y, z: RX + 0.4 * x - 0.25 * y + 0.2 * z
    base = art_metrics(lps_field(DOSE_GRID, f), s)
    c, sn = math.cos(0.5), math.sin(0.5)
    rotated = Grid((24, 40, 40), (2.5, 2.5, 2.5), (0.0, -52.0, -28.7), direction=(c, -sn, 0, sn, c, 0, 0, 0, 1))
    flipped = Grid((24, 36, 36), (2.5, 2.5, 2.5), (-43.3, -41.9, 28.8), direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    for g in (rotated, flipped):
        got = art_metrics(lps_field(g, f), s)
        for m in base:
            assert got[m] == pytest.approx(base[m], abs=0.05 if m != "volume_cc" else 0.01 * base[m]), m


def test_goals_dvh_and_occupancy_take_the_polygon_path():
    polys = [circle(math.sqrt(400 - z * z), z) for z in np.arange(-18.75, 19.0, 2.5)]
    s = polygon_structure(polys, "PTV")
    dose = lps_field(DOSE_GRID, lambda x, y, z: RX + 0.5 * x)
    d, v, _ = structure_samples(dose, s, mode="polygons")
    goals = [Goal("PTV", parse_metric("D95%"), at_least=50.0), Goal("PTV", parse_metric("V60Gy"), at_most=40.0, priority=2)]
    res = evaluate_goals(dose, {"PTV": s}, goals, mode="polygons")
    assert res[0].value == evaluate_metric("D95%", d, v) and res[0].met
    assert res[1].value == pytest.approx(50.0, abs=0.5) and not res[1].met  # half the sphere gets >= the centre dose
    curve = dvh(dose, s, mode="polygons", bin_width_gy=0.01)
    assert curve.total_volume_cc == pytest.approx(float(v.sum()))
    k = round(60.0 / 0.01)
    assert curve.volume_cc[k] == pytest.approx(float(v[d >= curve.dose_gy[k]].sum()))
    assert float(occupancy(s, DOSE_GRID, mode="polygons").array.sum()) * DOSE_GRID.voxel_volume_cc == pytest.approx(float(v.sum()), rel=1e-6)


def test_large_structures_get_coarser_cells_within_tolerance():
    polys = [circle(math.sqrt(400 - z * z), z) for z in np.arange(-18.75, 19.0, 2.5)]
    s = polygon_structure(polys, "PTV")
    dose = lps_field(DOSE_GRID, lambda x, y, z: RX + 0.5 * x - 0.2 * z)
    d, v = polygon_samples(dose, s)
    dc, vc = polygon_samples(dose, s, max_cells=100_000)  # ~1 mm cells instead of 0.25 mm
    assert dc.size < d.size  # fewer distinct doses (samples are pooled by dose)
    assert float(vc.sum()) == pytest.approx(float(v.sum()), rel=0.01)
    for m in ("D98%", "D50%", "D2%", "Dmean", "Dmax"):
        assert abs(evaluate_metric(m, dc, vc) - evaluate_metric(m, d, v)) <= TOL, m
