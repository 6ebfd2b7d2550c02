"""IMRT commissioning test cases in the style of AAPM TG-119.

Each case is a water-equivalent phantom (HU 0 inside a body, -1000 HU air
around it) with target and avoidance structures and a protocol (TOML text and
the parsed :class:`~art.protocol.Protocol`). The phantom centre is the LPS
origin (0, 0, 0) and the isocentre; voxel centres lie symmetrically about it
(an even number of voxels along each axis), so the boundaries at whole
millimetres fall between voxel centres and the voxelised volumes match the
analytic ones closely.

Every structure is drawn by its polygons on the CT slice planes, the masks
derived from them (voxel centre inside): see
:mod:`art_phantoms.commissioning_geometry`. :func:`write_case` writes a case
as CT series, RTSTRUCT (the polygons as given) and ``protocol.toml``.

Cases
-----
:func:`c_shape`
    A C-shaped PTV (inner radius 15 mm, outer radius 37 mm, 80 mm long, the
    opening of the C facing anterior, 30 mm wide) around a central core
    (cylinder of radius 10 mm, 100 mm long): a 5 mm gap between them, in a
    30 cm diameter cylinder.
    Goals: PTV D95% >= 50 Gy, PTV D10% <= 55 Gy, Core D10% <= 25 Gy (easy)
    or <= 10 Gy (hard); 9 equispaced beams (0, 40, ..., 320 degrees).
:func:`multi_target`
    Three cylindrical targets of 40 mm diameter and 40 mm length stacked along
    z without gaps: PTV_Superior, PTV_Central, PTV_Inferior. Goals:
    Central D99% >= 50 Gy, D10% <= 53 Gy; Superior D99% >= 25 Gy,
    D10% <= 35 Gy; Inferior D99% >= 12.5 Gy, D10% <= 25 Gy; 7 equispaced beams.
:func:`prostate`, :func:`head_neck`
    The TG-119 prostate and head-and-neck geometries, approximated
    analytically (:mod:`art_phantoms.commissioning_tg119`).

The C-shape and multi-target cases prescribe 50 Gy in 25 fractions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from art.protocol import parse_protocol
from art.structures import Structure, StructureSet

from .commissioning_geometry import (
    AIR_HU,
    BODY_HU,
    CommissioningCase,
    angles,
    arc,
    circle,
    elliptic_body,
    phantom_grid,
    polygon_structure,
    protocol_text,
    segment,
    slice_planes,
    write_case,
)
from .commissioning_tg119 import head_neck, prostate

__all__ = [
    "AIR_HU",
    "BODY_HU",
    "CASES",
    "CommissioningCase",
    "c_shape",
    "head_neck",
    "multi_target",
    "phantom_grid",
    "prostate",
    "write_case",
]  # fmt: skip

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


def c_outline(r_in: float = C_INNER_RADIUS, r_out: float = C_OUTER_RADIUS, half_opening: float = C_OPENING_WIDTH / 2) -> np.ndarray:
    """The C's cross-section: the annulus ``r_in``–``r_out`` less the strip ``|x| < half_opening`` on its anterior (-y) side.

    Needs ``half_opening >= r_in`` (the strip's edges leave the inner circle
    whole on the anterior side, as in the TG-119 C, where they are tangent to it).

    Returns
    -------
    ndarray, shape (n, 2)
        One closed outline, LPS (x, y) mm.
    """
    w = half_opening
    h = math.sqrt(r_out**2 - w**2)
    t0 = math.atan2(-h, w)  # outer circle meets the strip's right edge (x = +w, y < 0)
    return np.concatenate([
        arc(0.0, 0.0, r_out, t0, 2 * math.pi + math.atan2(-h, -w)),  # counter-clockwise round the posterior side
        segment((-w, -h), (-w, 0.0)),
        arc(0.0, 0.0, r_in, math.pi, 0.0) if w == r_in else segment((-w, 0.0), (w, 0.0)),  # inner edge, posterior half
        segment((w, 0.0), (w, -h)),
    ])  # fmt: skip


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
        Structures BODY, PTV and Core (polygons on the CT slices); isocentre at the origin.
    """
    grid = phantom_grid(spacing=spacing, diameter_mm=300.0, length_mm=150.0)
    ct, body = elliptic_body(grid, 150.0, 150.0)
    c, core = c_outline(), circle(0.0, 0.0, CORE_RADIUS)
    structures = StructureSet(
        grid,
        [
            body,
            polygon_structure("PTV", grid, [(z, [c]) for z in slice_planes(grid, -C_LENGTH / 2, C_LENGTH / 2)], roi_type="PTV", color=(255, 0, 0)),
            polygon_structure("Core", grid, [(z, [core]) for z in slice_planes(grid, -CORE_LENGTH / 2, CORE_LENGTH / 2)], color=(0, 128, 255)),
        ],
    )
    core_limit = 10.0 if hard else 25.0
    name = f"TG-119 C-shape ({'hard' if hard else 'easy'}) 50 Gy in {fractions}"
    goals = [
        ("PTV", "D95%", "at_least", 50.0, 1),
        ("Core", "D10%", "at_most", core_limit, 2),
        ("PTV", "D10%", "at_most", 55.0, 2),
    ]
    text = protocol_text(name, "PTV", 50.0, fractions, angles(9), dose_grid_mm, goals)
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
        Structures BODY, PTV_Superior (z in [20, 60] mm), PTV_Central
        ([-20, 20]), PTV_Inferior ([-60, -20]), each drawn on the slices
        between its ends; prescription 50 Gy to PTV_Central; isocentre at the origin.
    """
    grid = phantom_grid(spacing=spacing, diameter_mm=300.0, length_mm=160.0)
    ct, body = elliptic_body(grid, 150.0, 150.0)
    disc, h = circle(0.0, 0.0, MT_RADIUS), MT_LENGTH

    def cylinder(name: str, z0: float, color: tuple[int, int, int]) -> Structure:
        return polygon_structure(name, grid, [(z, [disc]) for z in slice_planes(grid, z0, z0 + h)], roi_type="PTV", color=color)

    structures = StructureSet(
        grid,
        [
            body,
            cylinder("PTV_Superior", h / 2, (255, 160, 0)),
            cylinder("PTV_Central", -h / 2, (255, 0, 0)),
            cylinder("PTV_Inferior", -1.5 * h, (255, 0, 160)),
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
    text = protocol_text(name, "PTV_Central", 50.0, fractions, angles(7), dose_grid_mm, goals)
    return CommissioningCase(name, ct, structures, text, parse_protocol(text, source=f"<{name}>"))


#: Every case by the name the harness uses, with how to make it.
CASES = {
    "c_shape_easy": lambda: c_shape(),
    "c_shape_hard": lambda: c_shape(hard=True),
    "multi_target": lambda: multi_target(),
    "prostate": lambda: prostate(),
    "head_neck": lambda: head_neck(),
}
