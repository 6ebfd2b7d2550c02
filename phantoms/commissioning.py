"""IMRT commissioning test cases in the style of AAPM TG-119.

Each case is a water-equivalent cylindrical phantom (HU 0 inside a 30 cm
diameter cylinder along the patient's z axis, -1000 HU air around it) with
target and avoidance structures and a protocol (TOML text and the parsed
:class:`~art.protocol.Protocol`). The phantom centre is the LPS
origin (0, 0, 0) and the isocentre; voxel centres lie symmetrically about it
(an even number of voxels along each axis), so the boundaries at whole
millimetres fall between voxel centres and the voxelised volumes match the
analytic ones closely.

Voxels belong to a structure when their centre lies inside it.

Cases
-----
:func:`c_shape`
    A C-shaped PTV (inner radius 15 mm, outer radius 37 mm, 80 mm long, the
    opening of the C facing anterior, 30 mm wide) around a central core
    (cylinder of radius 10 mm, 100 mm long): a 5 mm gap between them.
    Goals: PTV D95% >= 50 Gy, PTV D10% <= 55 Gy, Core D10% <= 25 Gy (easy)
    or <= 10 Gy (hard); 9 equispaced beams (0, 40, ..., 320 degrees).
:func:`multi_target`
    Three cylindrical targets of 40 mm diameter and 40 mm length stacked along
    z without gaps: PTV_Superior, PTV_Central, PTV_Inferior. Goals:
    Central D99% >= 50 Gy, D10% <= 53 Gy; Superior D99% >= 25 Gy,
    D10% <= 35 Gy; Inferior D99% >= 12.5 Gy, D10% <= 25 Gy; 7 equispaced beams.

Both prescribe in 25 fractions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from art.errors import InputError
from art.geometry import Grid, Volume
from art.protocol import Protocol, parse_protocol
from art.structures import Structure, StructureSet

__all__ = ["CommissioningCase", "c_shape", "multi_target", "phantom_grid"]

BODY_HU = 0.0
AIR_HU = -1000.0

# C-shape (mm)
C_INNER_RADIUS = 15.0
C_OUTER_RADIUS = 37.0
C_LENGTH = 80.0
C_OPENING_WIDTH = 30.0
CORE_RADIUS = 10.0
CORE_LENGTH = 100.0

# multi-target (mm)
MT_RADIUS = 20.0
MT_LENGTH = 40.0


@dataclass
class CommissioningCase:
    """A commissioning test case.

    Attributes
    ----------
    name : str
    ct : Volume
        float32 HU on a grid centred on the LPS origin.
    structures : StructureSet
        BODY (EXTERNAL), targets (PTV) and avoidance structures (ORGAN), on the CT grid.
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


def _even_count(extent_mm: float, spacing_mm: float) -> int:
    n = int(math.ceil(extent_mm / spacing_mm - 1e-9))
    return n + (n % 2)


def phantom_grid(*, spacing: Sequence[float] = (2.5, 2.5, 2.5), diameter_mm: float = 300.0, length_mm: float = 150.0, margin_mm: float = 10.0) -> Grid:
    """A grid centred on the LPS origin holding a cylinder along z.

    Parameters
    ----------
    spacing : (dz, dy, dx) floats, keyword-only
        Voxel size, mm.
    diameter_mm : float, keyword-only
        Cylinder diameter; the grid adds ``margin_mm`` of air on each side in x and y.
    length_mm : float, keyword-only
        Extent along z (the cylinder fills it).
    margin_mm : float, keyword-only

    Returns
    -------
    Grid
        Identity direction, an even number of voxels along each axis.
    """
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(s > 0 for s in sp):
        raise InputError(f"spacing must be three positive numbers (dz, dy, dx) in mm, got {spacing!r}")
    if not (diameter_mm > 0 and length_mm > 0 and margin_mm >= 0):
        raise InputError("diameter_mm and length_mm must be positive, margin_mm non-negative")
    nz = _even_count(length_mm, sp[0])
    ny = _even_count(diameter_mm + 2 * margin_mm, sp[1])
    nx = _even_count(diameter_mm + 2 * margin_mm, sp[2])
    origin = (-(nx - 1) / 2 * sp[2], -(ny - 1) / 2 * sp[1], -(nz - 1) / 2 * sp[0])
    return Grid(shape=(nz, ny, nx), spacing=sp, origin=origin)


def _coordinates(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y, x = grid.axis_positions()
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _body(grid: Grid, diameter_mm: float) -> tuple[Volume, Structure]:
    z, y, x = _coordinates(grid)
    body = np.broadcast_to((x**2 + y**2) <= (diameter_mm / 2) ** 2, grid.shape).copy()
    ct = np.where(body, np.float32(BODY_HU), np.float32(AIR_HU)).astype(np.float32)
    return Volume(ct, grid), Structure("BODY", body, grid, roi_type="EXTERNAL", color=(0, 255, 0))


def _angles(n: int) -> list[float]:
    return [float(round(360.0 * i / n)) for i in range(n)]  # whole degrees, e.g. 0, 51, 103, ... for 7


def _fmt(x: float) -> str:
    s = f"{x:g}"
    return s if ("." in s or "e" in s) else s + ".0"


def _protocol_text(name: str, target: str, dose_gy: float, fractions: int, angles: list[float], grid_mm: float, goals: list[tuple]) -> str:
    angle_text = ", ".join(f"{a:g}" for a in angles)
    lines = [
        f'name = "{name}"',
        "",
        "[prescription]",
        f'target = "{target}"',
        f"dose_gy = {_fmt(dose_gy)}",
        f"fractions = {fractions}",
        "",
        "[beams]",
        'energy = "6X"',
        f"gantry_angles = [{angle_text}]",
        "isocenter = [0.0, 0.0, 0.0]   # phantom centre, LPS mm",
        "bixel_mm = 5.0",
        "",
        "[dose]",
        f"grid_mm = {_fmt(grid_mm)}",
    ]
    for structure, metric, bound, value, priority in goals:
        lines += [
            "",
            "[[goals]]",
            f'structure = "{structure}"',
            f'metric = "{metric}"',
            f"{bound} = {_fmt(value)}",
            f"priority = {priority}",
        ]
    return "\n".join(lines) + "\n"


def c_shape(
    *,
    hard: bool = False,
    spacing: Sequence[float] = (2.5, 2.5, 2.5),
    fractions: int = 25,
    dose_grid_mm: float = 3.0,
) -> CommissioningCase:
    """The TG-119-style C-shape case.

    Parameters
    ----------
    hard : bool, keyword-only
        Core goal D10% <= 10 Gy instead of <= 25 Gy.
    spacing : (dz, dy, dx) floats, keyword-only
        CT voxel size, mm (default 2.5 mm: 60 slices, 128 x 128).
    fractions : int, keyword-only
        Number of fractions for 50 Gy.
    dose_grid_mm : float, keyword-only
        ``[dose] grid_mm`` of the protocol.

    Returns
    -------
    CommissioningCase
        Structures BODY, PTV and Core; isocentre at the origin.
    """
    grid = phantom_grid(spacing=spacing, diameter_mm=300.0, length_mm=150.0)
    ct, body = _body(grid, 300.0)
    z, y, x = _coordinates(grid)
    r2 = x**2 + y**2
    opening = (y < 0) & (np.abs(x) < C_OPENING_WIDTH / 2)  # anterior is -y in LPS
    ring = (r2 >= C_INNER_RADIUS**2) & (r2 <= C_OUTER_RADIUS**2) & ~opening
    ptv = np.broadcast_to(ring & (np.abs(z) < C_LENGTH / 2), grid.shape).copy()
    core = np.broadcast_to((r2 <= CORE_RADIUS**2) & (np.abs(z) < CORE_LENGTH / 2), grid.shape).copy()
    structures = StructureSet(
        grid,
        [
            body,
            Structure("PTV", ptv, grid, roi_type="PTV", color=(255, 0, 0)),
            Structure("Core", core, grid, roi_type="ORGAN", color=(0, 128, 255)),
        ],
    )
    core_limit = 10.0 if hard else 25.0
    name = f"TG-119 C-shape ({'hard' if hard else 'easy'}) 50 Gy in {fractions}"
    goals = [
        ("PTV", "D95%", "at_least", 50.0, 1),
        ("Core", "D10%", "at_most", core_limit, 2),
        ("PTV", "D10%", "at_most", 55.0, 2),
    ]
    text = _protocol_text(name, "PTV", 50.0, fractions, _angles(9), dose_grid_mm, goals)
    return CommissioningCase(name, ct, structures, text, parse_protocol(text, source=f"<{name}>"))


def multi_target(
    *,
    spacing: Sequence[float] = (2.5, 2.5, 2.5),
    fractions: int = 25,
    dose_grid_mm: float = 3.0,
) -> CommissioningCase:
    """The TG-119-style multi-target case: three stacked cylinders.

    Parameters
    ----------
    spacing : (dz, dy, dx) floats, keyword-only
        CT voxel size, mm (default 2.5 mm: 64 slices, 128 x 128).
    fractions : int, keyword-only
    dose_grid_mm : float, keyword-only

    Returns
    -------
    CommissioningCase
        Structures BODY, PTV_Superior (z in [20, 60) mm), PTV_Central
        ([-20, 20)), PTV_Inferior ([-60, -20)); prescription 50 Gy to
        PTV_Central; isocentre at the origin.
    """
    grid = phantom_grid(spacing=spacing, diameter_mm=300.0, length_mm=160.0)
    ct, body = _body(grid, 300.0)
    z, y, x = _coordinates(grid)
    disc = (x**2 + y**2) <= MT_RADIUS**2
    h = MT_LENGTH
    sup = np.broadcast_to(disc & (z >= h / 2) & (z < 1.5 * h), grid.shape).copy()
    cen = np.broadcast_to(disc & (z >= -h / 2) & (z < h / 2), grid.shape).copy()
    inf = np.broadcast_to(disc & (z >= -1.5 * h) & (z < -h / 2), grid.shape).copy()
    structures = StructureSet(
        grid,
        [
            body,
            Structure("PTV_Superior", sup, grid, roi_type="PTV", color=(255, 160, 0)),
            Structure("PTV_Central", cen, grid, roi_type="PTV", color=(255, 0, 0)),
            Structure("PTV_Inferior", inf, grid, roi_type="PTV", color=(255, 0, 160)),
        ],
    )
    name = f"TG-119 multi-target 50 Gy in {fractions}"
    goals = [
        ("PTV_Central", "D99%", "at_least", 50.0, 1),
        ("PTV_Superior", "D99%", "at_least", 25.0, 1),
        ("PTV_Inferior", "D99%", "at_least", 12.5, 1),
        ("PTV_Central", "D10%", "at_most", 53.0, 2),
        ("PTV_Superior", "D10%", "at_most", 35.0, 2),
        ("PTV_Inferior", "D10%", "at_most", 25.0, 2),
    ]
    text = _protocol_text(name, "PTV_Central", 50.0, fractions, _angles(7), dose_grid_mm, goals)
    return CommissioningCase(name, ct, structures, text, parse_protocol(text, source=f"<{name}>"))
