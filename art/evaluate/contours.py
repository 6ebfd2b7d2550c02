"""The contours of a structure as planes and slabs: checks, areas, the slab rule, the volume.

Used by :mod:`art.evaluate.polygons` (occupancy and DVH samples from the
polygons); its module notes give the rules: even-odd in a plane, each plane a
slab half-way to its neighbours with half-spacing end caps, breaks at gaps
wider than ``gap_factor`` × the median spacing, and the contours refused
(open, degenerate, off-plane, self-intersecting), each error naming the
structure and the plane's z (mm, LPS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from art.errors import GeometryError, InputError
from art.structures import Structure

__all__ = ["ContourSlabs", "contour_slabs", "polygon_volume_cc", "PLANE_TOLERANCE_MM"]

#: Points of one contour (and contours of one plane) may differ in z by this much, mm.
PLANE_TOLERANCE_MM = 0.01
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
    hit = _first_crossing(xy)
    if hit is not None:
        a, b = hit
        raise InputError(
            f"{where}: self-intersecting (edge {a + 1} crosses edge {b + 1} near "
            f"x = {xy[a, 0]:.1f}, y = {xy[a, 1]:.1f} mm); fix the contour in the planning system"
        )
    if abs(_signed_area(xy)) < _MIN_AREA_MM2:
        raise InputError(f"{where}: encloses no area (degenerate: its points lie on a line)")
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
