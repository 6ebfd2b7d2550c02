"""Shared pieces of the commissioning cases: the case record, the grid, analytic polygons, structures, protocols, files.

The structures of every commissioning case are defined by their **polygons**:
closed planar contours drawn on the CT slice planes (z = the centre of each CT
slice where the structure exists), with vertices on the analytic outline and
edges of at most :data:`EDGE_MM` (0.5 mm). The polygons are the truth; the
voxel mask of a structure is derived from them by the rule of art's RTSTRUCT
reader (a voxel belongs to the structure when its centre is inside the polygons
of its slice, even-odd rule: :func:`art.io.rtstruct.rasterise_contours`), so
that an RTSTRUCT written from the case (:func:`write_case`) writes the
polygons as given and reads back to the same masks. Coordinates are rounded to
0.1 µm so that they are written exactly as DICOM decimal strings.

By the slab rule of :mod:`art.evaluate.polygons` (each plane stands for a slab
half-way to its neighbours, half-spacing end caps) a structure drawn on the
slice centres between two slice edges is exactly as long as the analytic
solid; an ellipsoid is measured by the midpoint rule of its cross-sections.

Outlines (2-D, LPS x and y in mm) are built from pieces that each leave out
their end point (the start of the next piece): :func:`arc`, :func:`ellipse_arc`,
:func:`segment`; :func:`ellipse_minus_disk` gives the cross-section of an
ellipsoid notched by a cylinder (the prostate against the rectum).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from art.errors import InputError
from art.geometry import Grid, Volume
from art.protocol import Protocol
from art.structures import Structure, StructureSet

__all__ = [
    "AIR_HU",
    "BODY_HU",
    "EDGE_MM",
    "CommissioningCase",
    "angles",
    "arc",
    "circle",
    "ellipse",
    "ellipse_arc",
    "ellipse_minus_disk",
    "elliptic_body",
    "phantom_grid",
    "polygon_structure",
    "protocol_text",
    "segment",
    "slice_planes",
    "with_frame_of_reference",
    "write_case",
]  # fmt: skip

EDGE_MM = 0.5
"""Longest polygon edge, mm."""

BODY_HU = 0.0
AIR_HU = -1000.0

_DECIMALS = 4  # vertices rounded to 0.1 µm: written exactly as DICOM DS


@dataclass
class CommissioningCase:
    """A commissioning test case.

    Attributes
    ----------
    name : str
    ct : Volume
        float32 HU on a grid centred on the LPS origin.
    structures : StructureSet
        BODY (EXTERNAL), targets (PTV/CTV) and avoidance structures (ORGAN), on
        the CT grid, each with its polygons (``contours``, frame of reference
        None: :func:`write_case` sets the CT's).
    protocol_text : str
        The protocol as TOML (write it as ``protocol.toml``).
    protocol : Protocol
        ``parse_protocol(protocol_text)``.
    """

    name: str
    ct: Volume
    structures: StructureSet
    protocol_text: str
    protocol: Protocol


# ----------------------------------------------------------------------------- grid
def _even_count(extent_mm: float, spacing_mm: float) -> int:
    n = math.ceil(extent_mm / spacing_mm - 1e-9)
    return n + (n % 2)


def phantom_grid(
    *, spacing: Sequence[float] = (2.5, 2.5, 2.5), diameter_mm: float = 300.0, length_mm: float = 150.0,
    margin_mm: float = 10.0, height_mm: float | None = None,
) -> Grid:  # fmt: skip
    """A grid centred on the LPS origin holding a (elliptic) cylinder along z.

    Parameters
    ----------
    spacing : (dz, dy, dx) floats, keyword-only
        Voxel size, mm.
    diameter_mm : float, keyword-only
        Cylinder width along x (and along y unless ``height_mm``); the grid adds
        ``margin_mm`` of air on each side in x and y.
    length_mm : float, keyword-only
        Extent along z (the cylinder fills it).
    margin_mm : float, keyword-only
    height_mm : float, optional, keyword-only
        Cylinder extent along y (an elliptic body); default ``diameter_mm``.

    Returns
    -------
    Grid
        Identity direction, an even number of voxels along each axis, so that
        voxel centres lie symmetrically about the origin and whole millimetres
        fall between them.
    """
    sp = tuple(float(s) for s in spacing)
    height = diameter_mm if height_mm is None else height_mm
    if len(sp) != 3 or not all(s > 0 for s in sp):
        raise InputError(f"spacing must be three positive numbers (dz, dy, dx) in mm, got {spacing!r}")
    if not (diameter_mm > 0 and height > 0 and length_mm > 0 and margin_mm >= 0):
        raise InputError("diameter_mm, height_mm and length_mm must be positive, margin_mm non-negative")
    nz = _even_count(length_mm, sp[0])
    ny = _even_count(height + 2 * margin_mm, sp[1])
    nx = _even_count(diameter_mm + 2 * margin_mm, sp[2])
    origin = (-(nx - 1) / 2 * sp[2], -(ny - 1) / 2 * sp[1], -(nz - 1) / 2 * sp[0])
    return Grid(shape=(nz, ny, nx), spacing=sp, origin=origin)


def slice_planes(grid: Grid, z_lo: float, z_hi: float) -> np.ndarray:
    """The CT slice centres (mm) strictly between ``z_lo`` and ``z_hi``: the planes a structure spanning them is drawn on."""
    z = grid.axis_positions()[0]
    return z[(z > z_lo + 1e-9) & (z < z_hi - 1e-9)]


# ----------------------------------------------------------------------------- outline pieces (2-D, each without its end point)
def _count(length_mm: float) -> int:
    return max(1, math.ceil(length_mm / EDGE_MM - 1e-9))


def arc(cx: float, cy: float, r: float, t0: float, t1: float) -> np.ndarray:
    """Points of the circle arc of radius ``r`` about (cx, cy) from angle ``t0`` to ``t1`` (rad, either way), end left out.

    Returns
    -------
    ndarray, shape (n, 2)
        LPS (x, y) mm, chords of at most :data:`EDGE_MM`.
    """
    n = _count(abs(t1 - t0) * r)
    t = t0 + (t1 - t0) * np.arange(n) / n
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t)])


def ellipse_arc(cx: float, cy: float, a: float, b: float, t0: float, t1: float) -> np.ndarray:
    """Points of the ellipse (semi-axes ``a`` along x, ``b`` along y) from parameter ``t0`` to ``t1``, end left out.

    The point of parameter t is (cx + a cos t, cy + b sin t); the points are
    equally spaced in arc length, chords of at most :data:`EDGE_MM`.
    """
    fine = np.linspace(t0, t1, 4001)
    xy = np.column_stack([a * np.cos(fine), b * np.sin(fine)])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    n = _count(float(s[-1]))
    t = np.interp(s[-1] * np.arange(n) / n, s, fine)
    return np.column_stack([cx + a * np.cos(t), cy + b * np.sin(t)])


def segment(p0: Sequence[float], p1: Sequence[float]) -> np.ndarray:
    """Points of the straight segment from ``p0`` to ``p1`` (x, y), end left out."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    n = _count(float(np.linalg.norm(p1 - p0)))
    return p0 + (p1 - p0) * (np.arange(n) / n)[:, None]


def circle(cx: float, cy: float, r: float) -> np.ndarray:
    """A whole circle, counter-clockwise from angle 0."""
    return arc(cx, cy, r, 0.0, 2 * math.pi)


def ellipse(cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """A whole ellipse, counter-clockwise from parameter 0."""
    return ellipse_arc(cx, cy, a, b, 0.0, 2 * math.pi)


def _bisect(f: Callable[[float], float], lo: float, hi: float) -> float:
    """The root of ``f`` between ``lo`` and ``hi`` (signs differ), to 1e-13 rad."""
    flo = f(lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (f(mid) < 0) == (flo < 0):
            lo, flo = mid, f(mid)
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return 0.5 * (lo + hi)


def ellipse_minus_disk(a: float, b: float, disk_y: float, r: float) -> list[np.ndarray]:
    """The outline of the ellipse (semi-axes a, b about the origin) less the disk of radius ``r`` about (0, ``disk_y``).

    The disk's centre must lie beyond the ellipse on the +y side
    (``disk_y > b``, the rectum posterior to the prostate): the disk then
    either misses the ellipse (the whole ellipse is returned) or cuts a notch
    into its +y side.

    Returns
    -------
    list of ndarray, each of shape (n, 2)
        One closed outline (LPS x, y mm).
    """
    if not disk_y > b:
        raise InputError("ellipse_minus_disk: the disk's centre must lie beyond the ellipse (disk_y > b)")

    def g(alpha: float) -> float:  # < 0: the disk point at angle -pi/2 + alpha lies inside the ellipse
        t = -math.pi / 2 + alpha
        return (r * math.cos(t) / a) ** 2 + ((disk_y + r * math.sin(t)) / b) ** 2 - 1.0

    if g(0.0) >= 0.0:
        return [ellipse(0.0, 0.0, a, b)]
    alpha = _bisect(g, 0.0, math.pi / 2)
    px, py = r * math.cos(-math.pi / 2 + alpha), disk_y + r * math.sin(-math.pi / 2 + alpha)  # right corner (x > 0)
    t_r = math.atan2(py / b, px / a)
    outer = ellipse_arc(0.0, 0.0, a, b, t_r, -math.pi - t_r)  # right corner, anterior side, left corner
    notch = arc(0.0, disk_y, r, -math.pi / 2 - alpha, -math.pi / 2 + alpha)  # left corner, notch bottom, back
    return [np.concatenate([outer, notch])]


# ----------------------------------------------------------------------------- structures
def _plane_polygons(outlines_by_z: Sequence[tuple[float, Sequence[np.ndarray]]]) -> tuple[np.ndarray, ...]:
    polys = []
    for z, outlines in outlines_by_z:
        for xy in outlines:
            if len(xy) >= 3:
                polys.append(np.round(np.column_stack([xy, np.full(len(xy), float(z))]), _DECIMALS))
    return tuple(polys)


def polygon_structure(
    name: str, grid: Grid, outlines_by_z: Sequence[tuple[float, Sequence[np.ndarray]]], *,
    roi_type: str = "ORGAN", color: tuple[int, int, int] = (255, 0, 0),
) -> Structure:  # fmt: skip
    """A structure drawn by its polygons; the mask is their rasterisation on ``grid`` (voxel centre inside).

    Parameters
    ----------
    name : str
    grid : Grid
        The CT grid.
    outlines_by_z : sequence of (z, outlines)
        Per plane (z in mm, a CT slice centre), its closed 2-D outlines (n, 2)
        in LPS x, y mm; outlines of one plane combine by the even-odd rule.
    roi_type, color : keyword-only

    Returns
    -------
    Structure
        With ``contours`` (LPS (n, 3), rounded to 0.1 µm) and
        ``frame_of_reference_uid`` None.
    """
    from art.io.rtstruct import rasterise_contours

    polys = _plane_polygons(outlines_by_z)
    if not polys:
        raise InputError(f"structure {name!r}: no polygon")
    mask = rasterise_contours(list(polys), grid)
    return Structure(name, mask, grid, roi_type=roi_type, color=color, contours=polys)


def elliptic_body(grid: Grid, a: float, b: float) -> tuple[Volume, Structure]:
    """The water-equivalent body: an elliptic cylinder (semi-axes ``a`` along x, ``b`` along y) over the whole grid.

    Returns
    -------
    ct : Volume
        float32, :data:`BODY_HU` inside the BODY mask, :data:`AIR_HU` outside.
    body : Structure
        ``BODY`` (EXTERNAL), drawn on every slice.
    """
    outline = circle(0.0, 0.0, a) if a == b else ellipse(0.0, 0.0, a, b)
    z = grid.axis_positions()[0]
    body = polygon_structure("BODY", grid, [(zk, [outline]) for zk in z], roi_type="EXTERNAL", color=(0, 255, 0))
    ct = np.where(body.mask, np.float32(BODY_HU), np.float32(AIR_HU)).astype(np.float32)
    return Volume(ct, grid), body


def with_frame_of_reference(structures: StructureSet, frame_of_reference_uid: str) -> StructureSet:
    """The same structures with their polygons placed in ``frame_of_reference_uid`` (that of the CT they are written on)."""
    out = StructureSet(structures.grid)
    for s in structures:
        out.add(Structure(s.name, s.mask, s.grid, roi_type=s.roi_type, color=s.color, contours=s.contours,
                          frame_of_reference_uid=frame_of_reference_uid if s.contours is not None else None))
    return out


# ----------------------------------------------------------------------------- protocol
def angles(n: int) -> list[float]:
    """``n`` equispaced gantry angles in whole degrees from 0 (e.g. 0, 51, 103, ... for 7)."""
    return [float(round(360.0 * i / n)) for i in range(n)]


def _fmt(x: float) -> str:
    s = f"{x:g}"
    return s if ("." in s or "e" in s) else s + ".0"


def protocol_text(name: str, target: str, dose_gy: float, fractions: int, gantry: list[float], grid_mm: float, goals: list[tuple]) -> str:
    """The protocol TOML of a case: 6X beams at ``gantry`` about the origin, 5 mm bixels, goals ``(structure, metric, bound, value, priority)``."""
    angle_text = ", ".join(f"{a:g}" for a in gantry)
    lines = [
        f'name = "{name}"', "",
        "[prescription]", f'target = "{target}"', f"dose_gy = {_fmt(dose_gy)}", f"fractions = {fractions}", "",
        "[beams]", 'energy = "6X"', f"gantry_angles = [{angle_text}]", "isocenter = [0.0, 0.0, 0.0]   # phantom centre, LPS mm",
        "bixel_mm = 5.0", "",
        "[dose]", f"grid_mm = {_fmt(grid_mm)}",
    ]  # fmt: skip
    for structure, metric, bound, value, priority in goals:
        lines += ["", "[[goals]]", f'structure = "{structure}"', f'metric = "{metric}"', f"{bound} = {_fmt(value)}", f"priority = {priority}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- files
def write_case(case: CommissioningCase, folder: str | Path) -> dict[str, Path]:
    """Write a case as ``CT/`` (CT Image Storage series), ``RTSTRUCT.dcm`` (the polygons as given) and ``protocol.toml``.

    The patient is synthetic (``ART^Commissioning``); UIDs are derived from the
    case name, so the same case gives the same files.

    Parameters
    ----------
    case : CommissioningCase
    folder : str or Path
        Created if needed; the three entries must not exist yet.

    Returns
    -------
    dict
        ``{"ct": ..., "rtstruct": ..., "protocol": ...}`` paths.
    """
    from art.io.dicom_common import PatientInfo
    from art.io.rtstruct import write_rtstruct
    from art.io.series import write_image_series
    from art.io.uids import new_uid

    folder = Path(folder)
    paths = {"ct": folder / "CT", "rtstruct": folder / "RTSTRUCT.dcm", "protocol": folder / "protocol.toml"}
    if any(p.exists() for p in paths.values()):
        raise InputError(f"{folder}: the case is already written there (CT/, RTSTRUCT.dcm or protocol.toml exists)")
    folder.mkdir(parents=True, exist_ok=True)

    def uid(kind: str) -> str:
        return new_uid(entropy=("art-commissioning", case.name, kind))

    patient = PatientInfo(name="ART^Commissioning", id="ARTCOMM", birth_date="", sex="O")
    ct = write_image_series(
        case.ct, paths["ct"], patient=patient, frame_of_reference_uid=uid("frame-of-reference"),
        study_instance_uid=uid("study"), series_instance_uid=uid("ct"), series_description=case.name[:64], series_number=1,
    )  # fmt: skip
    structures = with_frame_of_reference(case.structures, ct.frame_of_reference_uid)
    write_rtstruct(structures, ct, paths["rtstruct"], label="commissioning", series_instance_uid=uid("rtstruct-series"),
                   sop_instance_uid=uid("rtstruct"), generation_algorithm="MANUAL")
    paths["protocol"].write_text(case.protocol_text, encoding="utf-8")
    return paths
