"""Structure occupancy of dose voxels from the RTSTRUCT polygons, as planning systems compute it.

A structure read from an RTSTRUCT keeps its closed planar polygons
(:attr:`art.structures.Structure.contours`, LPS mm). :func:`polygon_occupancy`
measures, for every voxel of a dose grid, the fraction of it inside the
structure drawn by those polygons — not by a voxel mask re-traced from them —
so that a DVH from art's RTDOSE and an RTSTRUCT gives the numbers any
planning system or DVH tool gives from the same two files.

The rules
---------
In-plane (on each contour plane)
    Polygons on one plane combine by the **even-odd rule** (a point inside an
    odd number of them is inside: holes drawn as inner contours, islands).
    Each dose voxel is split into ``sy × sx`` equal sub-cells, ``sy =
    ceil(dy / step_mm)``, ``sx = ceil(dx / step_mm)`` (``step_mm`` = 0.5 mm by
    default, so a 2.5 mm dose grid gets 5 × 5); a sub-cell counts when its
    centre is inside (scanline test; a centre exactly on an edge counts on the
    left/top edge, not on the right/bottom one). The in-plane fraction of the
    voxel is the share of its sub-cells inside.
Between planes (the slab rule, "half-slice end caps")
    The planes of a structure, sorted along z at ``z_1 < … < z_m``, each stand
    for a slab of constant cross-section: from half-way to the previous plane
    to half-way to the next one. The first and last planes extend **half the
    spacing to their one neighbour** beyond themselves (end caps). So with
    uniform contour spacing ``s`` every plane is a slab ``s`` thick centred on
    it and a structure drawn on ``m`` planes is ``m · s`` long — the
    convention of the common planning systems, which treat a contour as
    standing for the whole CT slice it is drawn on (the Eclipse and RayStation
    documentation describe structure volumes that way; not verified here
    against those systems). A gap wider than ``gap_factor`` (2.5) times the
    median plane spacing is a **break** (the structure is absent there, e.g.
    two separate nodules): the planes on either side get end caps as above
    instead of bridging it; a plane with breaks on both sides is a slab one
    median spacing thick. A structure drawn on a single plane has no spacing
    to go by and is refused (:class:`~art.errors.GeometryError`) unless
    ``plane_thickness_mm`` is given.
Dose voxels along z
    Dose voxel ``k`` spans ``z_k ± dz/2``; it takes from every slab it
    overlaps the slab's in-plane fraction times the overlapping length over
    ``dz`` (length-weighted). The occupancy of a voxel is at most 1.

Geometry
--------
Dose grids with their slices perpendicular to LPS z (direction with third
column ±(0, 0, 1): axial, any in-plane rotation or flip) are handled; others
are refused. A structure reaching outside the dose grid (polygons beyond the
outermost voxel edges in-plane, or slabs with their end caps beyond the
first/last dose slice's edges) is a :class:`~art.errors.GeometryError` naming
it: never truncated.

Contours refused (:class:`~art.errors.InputError` naming the structure and
the plane's z in mm): fewer than three distinct points (open), no area
(degenerate: all points on a line), not planar (z varying by more than
0.01 mm), self-intersecting (two edges of one polygon crossing; edges that
only touch, as in "keyhole" contours, are accepted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from art.errors import GeometryError, InputError
from art.geometry import Grid, Volume
from art.structures import Structure

__all__ = ["polygon_occupancy", "polygon_volume_cc", "contour_slabs", "ContourSlabs", "PLANE_TOLERANCE_MM"]

#: Points of one contour (and contours of one plane) may differ in z by this much, mm.
PLANE_TOLERANCE_MM = 0.01
#: Coverage of the dose grid is checked with this slack, mm.
_EDGE_TOLERANCE_MM = 1e-3
#: Consecutive points closer than this (mm) are one point.
_DUPLICATE_MM = 1e-6
#: A polygon with an area below this (mm²) encloses nothing.
_MIN_AREA_MM2 = 1e-4


@dataclass(frozen=True)
class ContourSlabs:
    """The contour planes of a structure and the slab each stands for.

    Attributes
    ----------
    name : str
        Structure name.
    z_mm : ndarray of float64, shape (m,)
        LPS z of each plane, mm, ascending.
    lo_mm, hi_mm : ndarray of float64, shape (m,)
        The slab of each plane along z, mm (``lo_mm[p] <= z_mm[p] <= hi_mm[p]``).
    polygons : tuple of tuple of ndarray
        Per plane, its polygons as (n, 2) arrays of LPS (x, y), mm; cleaned
        (no repeated points).
    area_mm2 : ndarray of float64, shape (m,)
        Area of each plane's cross-section (even-odd), mm².
    """

    name: str
    z_mm: np.ndarray
    lo_mm: np.ndarray
    hi_mm: np.ndarray
    polygons: tuple
    area_mm2: np.ndarray

    @property
    def volume_cc(self) -> float:
        """Σ area × slab thickness, cc: the structure's volume by the slab rule (exact for the polygons)."""
        return float(np.sum(self.area_mm2 * (self.hi_mm - self.lo_mm))) / 1000.0


def _cleaned_polygon(p: np.ndarray, name: str) -> np.ndarray:
    """One contour checked and cleaned: (n, 3) LPS mm in, (n', 2) LPS (x, y) mm out.

    Raises :class:`InputError` (naming the structure and z) for an off-plane, open,
    degenerate or self-intersecting polygon.
    """
    p = np.asarray(p, dtype=np.float64)
    z = p[:, 2]
    where = f"structure {name!r}, contour at z = {float(np.mean(z)):.2f} mm"
    if float(np.ptp(z)) > PLANE_TOLERANCE_MM:
        raise InputError(f"{where}: not planar (z varies from {float(z.min()):.3f} to {float(z.max()):.3f} mm)")
    xy = p[:, :2]
    step = np.linalg.norm(xy - np.roll(xy, 1, axis=0), axis=1)
    xy = xy[step > _DUPLICATE_MM] if np.any(step > _DUPLICATE_MM) else xy[:1]
    if xy.shape[0] < 3:
        raise InputError(f"{where}: fewer than 3 distinct points (an open or degenerate contour)")
    if abs(_signed_area(xy)) < _MIN_AREA_MM2:
        raise InputError(f"{where}: encloses no area (degenerate: its points lie on a line)")
    hit = _first_crossing(xy)
    if hit is not None:
        a, b = hit
        raise InputError(
            f"{where}: self-intersecting (edge {a + 1} crosses edge {b + 1} near "
            f"x = {xy[a, 0]:.1f}, y = {xy[a, 1]:.1f} mm); fix the contour in the planning system"
        )
    return xy


def _signed_area(xy: np.ndarray) -> float:
    """Shoelace area of a closed polygon (n, 2), mm² (positive counter-clockwise)."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _first_crossing(xy: np.ndarray) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges of a closed polygon that properly cross, or None.

    Candidate pairs come from a sweep along y (an edge pairs with the edges whose
    lowest y lies in its y-range), so the cost is about linear for contours of
    many short edges. Touching or collinear overlap is not a crossing.
    """
    n = xy.shape[0]
    if n < 4:
        return None
    a, b = xy, np.roll(xy, -1, axis=0)
    ylo, yhi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    order = np.argsort(ylo, kind="stable")
    ys = ylo[order]
    end = np.searchsorted(ys, yhi[order], side="right")
    count = np.maximum(end - np.arange(n) - 1, 0)
    if count.sum() == 0:
        return None
    first = np.repeat(np.arange(n), count)
    starts = np.cumsum(count) - count
    second = first + 1 + (np.arange(first.size) - starts[first])
    i, j = order[first], order[second]
    gap = np.abs(i - j)
    keep = (gap != 1) & (gap != n - 1)
    xlo, xhi = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
    keep &= (xlo[i] <= xhi[j]) & (xlo[j] <= xhi[i])
    i, j = i[keep], j[keep]
    if i.size == 0:
        return None
    scale = float(np.ptp(xy, axis=0).max()) ** 2
    eps = 1e-12 * max(scale, 1e-12)

    def orient(p, q, r):
        v = (q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0])
        return np.where(np.abs(v) <= eps, 0.0, np.sign(v))

    d1, d2 = orient(a[i], b[i], a[j]), orient(a[i], b[i], b[j])
    d3, d4 = orient(a[j], b[j], a[i]), orient(a[j], b[j], b[i])
    cross = (d1 * d2 < 0) & (d3 * d4 < 0)
    if not cross.any():
        return None
    k = int(np.argmax(cross))
    return (int(min(i[k], j[k])), int(max(i[k], j[k])))


def _even_odd_area(polys: list[np.ndarray]) -> float:
    """Area (mm²) of the even-odd union of non-self-intersecting polygons on one plane.

    Polygons that nest (holes, islands in holes) alternate in sign by depth; the
    area of each polygon is added when an even number of the others contains it
    and subtracted otherwise. Overlapping polygons that only partly intersect are
    measured by the point sampling in :func:`polygon_occupancy`, not here.
    """
    areas = [abs(_signed_area(p)) for p in polys]
    total = 0.0
    for n, p in enumerate(polys):
        depth = sum(1 for m, q in enumerate(polys) if m != n and _inside(q, p[0]))
        total += areas[n] if depth % 2 == 0 else -areas[n]
    return total


def _inside(poly: np.ndarray, pt: np.ndarray) -> bool:
    """Even-odd point-in-polygon test (ray casting towards +x)."""
    x, y = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    up = (y <= pt[1]) != (y1 <= pt[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x + (pt[1] - y) * (x1 - x) / (y1 - y)
    return bool(np.count_nonzero(up & (xc > pt[0])) % 2)


def _slab_bounds(z: np.ndarray, gap_factor: float, thickness: float | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The slab ``[lo, hi]`` (mm) of each plane at ``z`` (ascending); see the module notes."""
    m = z.size
    if m == 1:
        if thickness is None:
            raise GeometryError(
                f"structure {name!r} is drawn on a single plane (z = {z[0]:.2f} mm): its thickness is unknown; "
                "give plane_thickness_mm"
            )
        return z - thickness / 2.0, z + thickness / 2.0
    g = np.diff(z)
    s = float(np.median(g)) if thickness is None else float(thickness)
    bridged = g <= gap_factor * s
    below = np.concatenate([[np.nan], np.where(bridged, g, np.nan)])  # spacing to the plane below, NaN at a break/end
    above = np.concatenate([np.where(bridged, g, np.nan), [np.nan]])
    half_lo = np.where(np.isfinite(below), below, np.where(np.isfinite(above), above, s)) / 2.0
    half_hi = np.where(np.isfinite(above), above, np.where(np.isfinite(below), below, s)) / 2.0
    return z - half_lo, z + half_hi


def contour_slabs(structure: Structure, *, gap_factor: float = 2.5, plane_thickness_mm: float | None = None) -> ContourSlabs:
    """Check a structure's polygons and group them into planes with their slabs (the slab rule).

    Parameters
    ----------
    structure : Structure
        With ``contours`` (closed planar polygons, LPS mm).
    gap_factor : float, keyword-only
        A gap between consecutive planes wider than this times the median plane
        spacing is a break in the structure (see the module notes).
    plane_thickness_mm : float, optional, keyword-only
        Slab thickness for a structure drawn on a single plane; when given, it
        also replaces the median spacing as the reference for breaks.

    Returns
    -------
    ContourSlabs

    Raises
    ------
    InputError
        A structure without polygons, or an open, degenerate, off-plane or
        self-intersecting polygon (naming the structure and plane).
    GeometryError
        A single plane without ``plane_thickness_mm``.
    """
    if not isinstance(structure, Structure):
        raise InputError(f"structure must be a Structure, got {type(structure).__name__}")
    name = structure.name
    if not structure.contours:
        raise InputError(
            f"structure {name!r} has no contour polygons (it was made as a mask, not read from an RTSTRUCT): "
            "polygon-based evaluation needs them"
        )
    if not (isinstance(gap_factor, (int, float)) and gap_factor >= 1.0):
        raise InputError(f"gap_factor must be a number >= 1, got {gap_factor!r}")
    if plane_thickness_mm is not None and not (math.isfinite(plane_thickness_mm) and plane_thickness_mm > 0):
        raise InputError(f"plane_thickness_mm must be positive, got {plane_thickness_mm!r}")
    items = sorted(((float(np.mean(p[:, 2])), _cleaned_polygon(p, name)) for p in structure.contours), key=lambda t: t[0])
    zs: list[float] = []
    groups: list[list[np.ndarray]] = []
    for z, xy in items:
        if zs and z - zs[-1] <= PLANE_TOLERANCE_MM:
            groups[-1].append(xy)
        else:
            zs.append(z)
            groups.append([xy])
    z_arr = np.asarray(zs)
    lo, hi = _slab_bounds(z_arr, float(gap_factor), plane_thickness_mm, name)
    areas = np.array([_even_odd_area(g) for g in groups])
    return ContourSlabs(name, z_arr, lo, hi, tuple(tuple(g) for g in groups), areas)


def polygon_volume_cc(structure: Structure, *, gap_factor: float = 2.5, plane_thickness_mm: float | None = None) -> float:
    """Volume (cc) of a structure from its polygons by the slab rule: Σ plane area × slab thickness.

    Independent of any dose grid; see :func:`contour_slabs` for the parameters.
    """
    return contour_slabs(structure, gap_factor=gap_factor, plane_thickness_mm=plane_thickness_mm).volume_cc


def _fill_count(polys: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
    """Even-odd fill of polygons given in sub-grid coordinates (row, col; integers at sub-cell centres).

    Returns
    -------
    ndarray of bool, shape (rows, cols)
        Sub-cells whose centre is inside (half-open scanline rule).
    """
    y0 = np.concatenate([p[:, 0] for p in polys])
    x0 = np.concatenate([p[:, 1] for p in polys])
    y1 = np.concatenate([np.roll(p[:, 0], -1) for p in polys])
    x1 = np.concatenate([np.roll(p[:, 1], -1) for p in polys])
    ymin, ymax = np.minimum(y0, y1), np.maximum(y0, y1)
    rlo = np.maximum(np.ceil(ymin), 0).astype(np.int64)
    rhi = np.minimum(np.ceil(ymax) - 1, rows - 1).astype(np.int64)
    count = np.maximum(rhi - rlo + 1, 0)
    keep = (count > 0) & (ymax > ymin)
    if not keep.any():
        return np.zeros((rows, cols), dtype=bool)
    y0, x0, y1, x1, rlo, count = (a[keep] for a in (y0, x0, y1, x1, rlo, count))
    edge = np.repeat(np.arange(count.size), count)
    starts = np.cumsum(count) - count
    r = rlo[edge] + (np.arange(edge.size) - starts[edge])
    xr = x0[edge] + (r - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    col = np.clip(np.ceil(xr), 0, cols).astype(np.int64)
    flips = np.bincount(r * (cols + 1) + col, minlength=rows * (cols + 1)).reshape(rows, cols + 1)[:, :cols]
    return (np.cumsum(flips, axis=1, dtype=np.int32) & 1).astype(bool)


def _check_dose_grid(dose_grid: Grid, name: str) -> None:
    if not isinstance(dose_grid, Grid):
        raise InputError(f"dose_grid must be a Grid, got {type(dose_grid).__name__}")
    normal = dose_grid.slice_normal
    d = dose_grid.direction_matrix
    if abs(abs(normal[2]) - 1.0) > 1e-6 or abs(d[2, 0]) > 1e-6 or abs(d[2, 1]) > 1e-6:
        raise GeometryError(
            f"structure {name!r}: the dose grid's slices are not axial (slice normal {tuple(np.round(normal, 4))}); "
            "polygon evaluation needs dose slices perpendicular to z"
        )


def _outside(name: str, what: str, lo: float, hi: float, edge_lo: float, edge_hi: float) -> GeometryError:
    return GeometryError(
        f"structure {name!r} reaches outside the dose grid along {what} ({lo:.1f} to {hi:.1f} mm; the dose grid "
        f"covers {edge_lo:.1f} to {edge_hi:.1f} mm): compute or export the dose on a grid that covers it"
    )


def _in_plane_fraction(polys_ji: list[np.ndarray], shape: tuple[int, int], sub: tuple[int, int], name: str, dose_grid: Grid):
    """In-plane fraction of the dose voxels inside one plane's polygons.

    Parameters
    ----------
    polys_ji : list of ndarray, each (n, 2)
        The polygons in continuous dose-grid (row j, column i) indices.
    shape : (ny, nx)
        The dose grid's rows and columns.
    sub : (sy, sx)
        Sub-cells per dose voxel along rows and columns.

    Returns
    -------
    (j0, i0, frac) : the first row and column covered and the float64 fractions
    (rows, cols) of the voxels from there on.
    """
    ny, nx = shape
    sy, sx = sub
    allp = np.concatenate(polys_ji)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    tol = np.array([_EDGE_TOLERANCE_MM / dose_grid.spacing[1], _EDGE_TOLERANCE_MM / dose_grid.spacing[2]])
    if np.any(lo < -0.5 - tol) or np.any(hi > np.array([ny, nx]) - 0.5 + tol):
        pts = dose_grid.index_to_lps(np.column_stack([np.zeros(len(allp)), allp]))
        edges = dose_grid.index_to_lps(np.array([[0, -0.5, -0.5], [0, ny - 0.5, nx - 0.5]]))
        raise GeometryError(
            f"structure {name!r} reaches outside the dose grid in-plane (x {pts[:, 0].min():.1f} to {pts[:, 0].max():.1f} mm, "
            f"y {pts[:, 1].min():.1f} to {pts[:, 1].max():.1f} mm; the dose grid covers x {edges[:, 0].min():.1f} to "
            f"{edges[:, 0].max():.1f} mm, y {edges[:, 1].min():.1f} to {edges[:, 1].max():.1f} mm): "
            "compute or export the dose on a grid that covers it"
        )
    j0, i0 = (max(0, int(math.floor(v + 0.5))) for v in lo)
    j1, i1 = (min(n - 1, int(math.floor(v + 0.5))) for v, n in zip(hi, (ny, nx)))
    rows, cols = (j1 - j0 + 1) * sy, (i1 - i0 + 1) * sx
    fine = [np.column_stack([(p[:, 0] - j0 + 0.5) * sy - 0.5, (p[:, 1] - i0 + 0.5) * sx - 0.5]) for p in polys_ji]
    inside = _fill_count(fine, rows, cols)
    frac = inside.reshape(j1 - j0 + 1, sy, i1 - i0 + 1, sx).mean(axis=(1, 3), dtype=np.float64)
    return j0, i0, frac


def polygon_occupancy(
    structure: Structure,
    dose_grid: Grid,
    *,
    step_mm: float = 0.5,
    gap_factor: float = 2.5,
    plane_thickness_mm: float | None = None,
) -> Volume:
    """Fraction of each dose voxel inside a structure's RTSTRUCT polygons.

    In-plane by sub-cell sampling (even-odd rule), between planes by the slab
    rule with half-slice end caps; see the module notes for the rules.

    Parameters
    ----------
    structure : Structure
        With ``contours`` (closed planar polygons, LPS mm), as read from an RTSTRUCT.
    dose_grid : Grid
        The dose grid, shape (z, y, x), slices perpendicular to LPS z.
    step_mm : float, keyword-only
        Largest in-plane sub-cell size, mm (0.01–2.5; default 0.5): each dose
        voxel is split into ``ceil(dy / step_mm) × ceil(dx / step_mm)`` sub-cells.
    gap_factor : float, keyword-only
        Gaps wider than this times the median plane spacing are breaks.
    plane_thickness_mm : float, optional, keyword-only
        Slab thickness of a structure drawn on a single plane.

    Returns
    -------
    Volume
        float32 in [0, 1], shape ``dose_grid.shape`` (z, y, x), on ``dose_grid``.

    Raises
    ------
    GeometryError
        The structure reaches outside the dose grid (in-plane or with its
        slabs along z), or the dose slices are not axial; names the structure.
    InputError
        No polygons, or an open, degenerate, off-plane or self-intersecting
        polygon (names the structure and the plane's z); a bad ``step_mm``.
    """
    name = getattr(structure, "name", "structure")
    if not (isinstance(step_mm, (int, float)) and math.isfinite(step_mm) and 0.01 <= step_mm <= 2.5):
        raise InputError(f"step_mm must be a number of mm in 0.01–2.5, got {step_mm!r}")
    _check_dose_grid(dose_grid, name)
    slabs = contour_slabs(structure, gap_factor=gap_factor, plane_thickness_mm=plane_thickness_mm)
    nz, ny, nx = dose_grid.shape
    dz = dose_grid.spacing[0]
    # slabs as continuous slice indices (a flipped slice axis reverses them)
    ka, kb = (dose_grid.lps_to_index(np.column_stack([np.zeros_like(v), np.zeros_like(v), v]))[:, 0] for v in (slabs.lo_mm, slabs.hi_mm))
    k_lo, k_hi = np.minimum(ka, kb), np.maximum(ka, kb)
    tol_k = _EDGE_TOLERANCE_MM / dz
    if k_lo.min() < -0.5 - tol_k or k_hi.max() > nz - 0.5 + tol_k:
        edges = dose_grid.index_to_lps(np.array([[-0.5, 0, 0], [nz - 0.5, 0, 0]]))[:, 2]
        raise GeometryError(
            f"structure {name!r} reaches outside the dose grid along z ({slabs.lo_mm.min():.1f} to {slabs.hi_mm.max():.1f} mm "
            f"with its end caps; the dose grid covers {edges.min():.1f} to {edges.max():.1f} mm): "
            "compute or export the dose on a grid that covers it"
        )
    k_lo, k_hi = np.clip(k_lo, -0.5, nz - 0.5), np.clip(k_hi, -0.5, nz - 0.5)
    sub = tuple(max(1, int(math.ceil(sp / step_mm - 1e-9))) for sp in dose_grid.spacing[1:])
    out = np.zeros(dose_grid.shape, dtype=np.float32)
    for p, z in enumerate(slabs.z_mm):
        polys_ji = [dose_grid.lps_to_index(np.column_stack([xy, np.full(len(xy), z)]))[:, 1:] for xy in slabs.polygons[p]]
        j0, i0, frac = _in_plane_fraction(polys_ji, (ny, nx), sub, name, dose_grid)  # type: ignore[arg-type]
        if not frac.any():
            continue
        for k in range(int(math.floor(k_lo[p] + 0.5)), min(nz - 1, int(math.floor(k_hi[p] + 0.5))) + 1):
            overlap = min(k_hi[p], k + 0.5) - max(k_lo[p], k - 0.5)
            if overlap > 0:
                out[k, j0 : j0 + frac.shape[0], i0 : i0 + frac.shape[1]] += (overlap * frac).astype(np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    return Volume(out, dose_grid)
