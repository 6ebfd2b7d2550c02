"""The TG-119 prostate and head-and-neck commissioning geometries, approximated analytically.

AAPM Task Group 119 (Ezzell et al., "IMRT commissioning: Multiple institution
planning and dosimetry comparisons, a report from AAPM Task Group 119",
Med. Phys. 36(11):5359-5373, 2009) distributed its structure sets as DICOM
files, which are not available here. These cases rebuild the two anatomical
ones from shapes: every outline is an ellipse, circle, straight line or a
boolean of them, drawn as polygons on the CT slice planes
(:mod:`art_phantoms.commissioning_geometry`), in a water-equivalent body
(HU 0 elliptic cylinder, air around it). Dimensions follow the task group's
description as recalled in this project's work on issue 15 (not checked against the
report's text here); positions that the description leaves open were chosen
as stated below. LPS: +x is the patient's left, +y posterior, +z superior.

:func:`prostate`
    Body 320 x 220 mm (elliptic), 180 mm long. Prostate (CTV): an ellipsoid of
    40 (RL) x 26 (AP) x 65 (SI) mm about the origin, indented posteriorly by the
    rectum. Rectum: a cylinder of 15 mm diameter along z (100 mm long, z from
    -50 to 50 mm) whose axis lies 17.5 mm posterior of the centre, so that it
    abuts the prostate's indented posterior side (indentation 3 mm deep).
    PTV: the ellipsoid grown by 6 mm along each axis (52 x 38 x 77 mm) with
    the notch moved 6 mm posterior: an approximation of a 6 mm margin around
    the CTV. The PTV holds 47 % of the rectum's cross-section on the central
    plane and 22 % of its volume (TG-119: "about a third" on the central
    slices). Bladder: an ellipsoid of 50 x 40 x 50 mm about (0, -5, 50) mm;
    TG-119 centres it on the prostate's superior aspect, which with these
    ellipsoids would put 38 % of the bladder in the PTV and make its D10 goal
    impossible with PTV D95 >= 75.6 Gy; 17.5 mm further superior and 5 mm
    anterior, 7 % lies in the PTV. Goals (75.6 Gy in 42 fractions, 7
    equispaced beams): PTV D95 >= 75.6 Gy, PTV D5 <= 83 Gy, Rectum D30 <= 70 Gy,
    Rectum D10 <= 75 Gy, Bladder D30 <= 70 Gy, Bladder D10 <= 75 Gy.
:func:`head_neck`
    Body 120 (RL) x 150 (AP) mm (elliptic), 150 mm long. PTV (60 mm long, z
    from -30 to 30 mm): all the volume inside the body retracted by 6 mm
    (the ellipse 108 x 138 mm, an approximation of a 6 mm inset) anterior of
    y = 35 mm, less a disk of 15 mm radius about the cord: a horseshoe
    round the cord whose posterior limbs stand for the posterior neck nodes.
    Cord: a cylinder of 10 mm diameter along z (120 mm long) about (0, 30) mm,
    10 mm from the PTV. Parotids: ellipsoids of 24 (RL) x 32 (AP) x 40 (SI) mm
    about (+-42, 25, 36) mm, lateral, their inferior 14 mm beside the PTV's
    superior end: a quarter of each lies in the PTV. Goals (50 Gy in 25 fractions, 9 equispaced beams): PTV
    D90 >= 50 Gy, PTV D99 >= 46.5 Gy, PTV D20 <= 55 Gy, Cord Dmax <= 40 Gy
    (Dmax = D0.03cc), each parotid D50 <= 20 Gy.

The target coverage goals are priority 1, all others priority 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from art.protocol import parse_protocol
from art.structures import StructureSet

from .commissioning_geometry import (
    CommissioningCase,
    angles,
    arc,
    circle,
    ellipse,
    ellipse_arc,
    ellipse_minus_disk,
    elliptic_body,
    phantom_grid,
    polygon_structure,
    protocol_text,
    segment,
    slice_planes,
)

__all__ = ["HEAD_NECK", "PROSTATE", "head_neck", "horseshoe", "prostate"]

#: Prostate geometry (mm): body semi-axes, CTV and PTV ellipsoid semi-axes, rectum, bladder.
PROSTATE = {
    "body": (160.0, 110.0), "length": 180.0,
    "ctv": (20.0, 13.0, 32.5), "margin": 6.0,
    "rectum_y": 17.5, "rectum_r": 7.5, "rectum_z": (-50.0, 50.0),
    "bladder": (25.0, 20.0, 25.0), "bladder_centre": (0.0, -5.0, 50.0),
}  # fmt: skip

#: Head-and-neck geometry (mm).
HEAD_NECK = {
    "body": (60.0, 75.0), "length": 150.0, "inset": 6.0,
    "ptv_z": (-30.0, 30.0), "ptv_posterior_y": 35.0,
    "cord_y": 30.0, "cord_r": 5.0, "cord_gap": 10.0, "cord_z": (-60.0, 60.0),
    "parotid": (12.0, 16.0, 20.0), "parotid_centre": (42.0, 25.0, 36.0),
}  # fmt: skip


def _ellipsoid_section(semi: tuple[float, float, float], dz: float) -> tuple[float, float] | None:
    """Semi-axes (x, y) of an ellipsoid's cross-section ``dz`` from its centre, None beyond it (or under 0.25 mm)."""
    s = 1.0 - (dz / semi[2]) ** 2
    if s <= 0.0:
        return None
    a, b = semi[0] * math.sqrt(s), semi[1] * math.sqrt(s)
    return (a, b) if min(a, b) >= 0.25 else None


def _ellipsoid_planes(grid, semi, centre, notch=None) -> list[tuple[float, list[np.ndarray]]]:
    """Per CT slice plane, the outline of an ellipsoid (semi-axes, centre), notched by ``notch`` = (disk y, radius) if given."""
    out = []
    for z in slice_planes(grid, centre[2] - semi[2], centre[2] + semi[2]):
        ab = _ellipsoid_section(semi, z - centre[2])
        if ab is None:
            continue
        if notch is None:
            out.append((z, [ellipse(centre[0], centre[1], *ab)]))
        else:
            out.append((z, ellipse_minus_disk(ab[0], ab[1], notch[0], notch[1])))
    return out


def prostate(*, spacing: Sequence[float] = (2.5, 2.5, 2.5), dose_grid_mm: float = 3.0) -> CommissioningCase:
    """The TG-119-style prostate case (module notes: geometry, approximations, goals).

    Parameters
    ----------
    spacing : (dz, dy, dx) floats, keyword-only
        CT voxel size, mm (default 2.5 mm: 72 slices, 96 x 136).
    dose_grid_mm : float, keyword-only
        ``[dose] grid_mm`` of the protocol.

    Returns
    -------
    CommissioningCase
        Structures BODY, PTV, Prostate (CTV), Rectum, Bladder; 75.6 Gy in 42
        fractions to the PTV; 7 beams; isocentre at the origin.
    """
    g = PROSTATE
    grid = phantom_grid(spacing=spacing, diameter_mm=2 * g["body"][0], height_mm=2 * g["body"][1], length_mm=g["length"])
    ct, body = elliptic_body(grid, *g["body"])
    ctv, m, ry, rr = g["ctv"], g["margin"], g["rectum_y"], g["rectum_r"]
    ptv = (ctv[0] + m, ctv[1] + m, ctv[2] + m)
    rectum = circle(0.0, ry, rr)
    structures = StructureSet(
        grid,
        [
            body,
            polygon_structure("PTV", grid, _ellipsoid_planes(grid, ptv, (0.0, 0.0, 0.0), (ry + m, rr)), roi_type="PTV", color=(255, 0, 0)),
            polygon_structure("Prostate", grid, _ellipsoid_planes(grid, ctv, (0.0, 0.0, 0.0), (ry, rr)), roi_type="CTV", color=(255, 160, 0)),
            polygon_structure("Rectum", grid, [(z, [rectum]) for z in slice_planes(grid, *g["rectum_z"])], color=(128, 64, 0)),
            polygon_structure("Bladder", grid, _ellipsoid_planes(grid, g["bladder"], g["bladder_centre"]), color=(255, 255, 0)),
        ],
    )
    name = "TG-119 prostate 75.6 Gy in 42"
    goals = [
        ("PTV", "D95%", "at_least", 75.6, 1),
        ("PTV", "D5%", "at_most", 83.0, 2),
        ("Rectum", "D30%", "at_most", 70.0, 2),
        ("Rectum", "D10%", "at_most", 75.0, 2),
        ("Bladder", "D30%", "at_most", 70.0, 2),
        ("Bladder", "D10%", "at_most", 75.0, 2),
    ]
    text = protocol_text(name, "PTV", 75.6, 42, angles(7), dose_grid_mm, goals)
    return CommissioningCase(name, ct, structures, text, parse_protocol(text, source=f"<{name}>"))


def horseshoe(a: float, b: float, y_posterior: float, disk_y: float, r: float) -> np.ndarray:
    """The ellipse (semi-axes a, b about the origin) anterior of ``y_posterior``, less the disk of radius ``r`` about (0, ``disk_y``).

    The disk must lie inside the ellipse and cross the line y = ``y_posterior``
    (|y_posterior - disk_y| < r): the outline is then a horseshoe open
    posteriorly round the disk.

    Returns
    -------
    ndarray, shape (n, 2)
        One closed outline, LPS (x, y) mm.
    """
    x_e = a * math.sqrt(1.0 - (y_posterior / b) ** 2)
    x_d = math.sqrt(r * r - (y_posterior - disk_y) ** 2)
    t_e = math.atan2(y_posterior / b, x_e / a)
    t_l, t_r = math.atan2(y_posterior - disk_y, -x_d), math.atan2(y_posterior - disk_y, x_d)
    return np.concatenate([
        segment((x_d, y_posterior), (x_e, y_posterior)),
        ellipse_arc(0.0, 0.0, a, b, t_e, -math.pi - t_e),  # down the left-hand (+x) side, across the anterior, up the other
        segment((-x_e, y_posterior), (-x_d, y_posterior)),
        arc(0.0, disk_y, r, t_l, t_r + 2 * math.pi),  # round the disk's anterior side
    ])  # fmt: skip


def head_neck(*, spacing: Sequence[float] = (2.5, 2.5, 2.5), dose_grid_mm: float = 3.0) -> CommissioningCase:
    """The TG-119-style head-and-neck case (module notes: geometry, approximations, goals).

    Parameters
    ----------
    spacing : (dz, dy, dx) floats, keyword-only
        CT voxel size, mm (default 2.5 mm: 60 slices, 68 x 56).
    dose_grid_mm : float, keyword-only
        ``[dose] grid_mm`` of the protocol.

    Returns
    -------
    CommissioningCase
        Structures BODY, PTV, Cord, Parotid_L (+x), Parotid_R (-x); 50 Gy in
        25 fractions to the PTV; 9 beams; isocentre at the origin.
    """
    g = HEAD_NECK
    grid = phantom_grid(spacing=spacing, diameter_mm=2 * g["body"][0], height_mm=2 * g["body"][1], length_mm=g["length"])
    ct, body = elliptic_body(grid, *g["body"])
    a, b = (s - g["inset"] for s in g["body"])
    ptv = horseshoe(a, b, g["ptv_posterior_y"], g["cord_y"], g["cord_r"] + g["cord_gap"])
    cord = circle(0.0, g["cord_y"], g["cord_r"])
    px, py, pz = g["parotid_centre"]
    structures = StructureSet(
        grid,
        [
            body,
            polygon_structure("PTV", grid, [(z, [ptv]) for z in slice_planes(grid, *g["ptv_z"])], roi_type="PTV", color=(255, 0, 0)),
            polygon_structure("Cord", grid, [(z, [cord]) for z in slice_planes(grid, *g["cord_z"])], color=(255, 255, 0)),
            polygon_structure("Parotid_L", grid, _ellipsoid_planes(grid, g["parotid"], (px, py, pz)), color=(0, 160, 255)),
            polygon_structure("Parotid_R", grid, _ellipsoid_planes(grid, g["parotid"], (-px, py, pz)), color=(0, 255, 160)),
        ],
    )
    name = "TG-119 head and neck 50 Gy in 25"
    goals = [
        ("PTV", "D90%", "at_least", 50.0, 1),
        ("PTV", "D99%", "at_least", 46.5, 1),
        ("PTV", "D20%", "at_most", 55.0, 2),
        ("Cord", "Dmax", "at_most", 40.0, 2),
        ("Parotid_L", "D50%", "at_most", 20.0, 2),
        ("Parotid_R", "D50%", "at_most", 20.0, 2),
    ]
    text = protocol_text(name, "PTV", 50.0, 25, angles(9), dose_grid_mm, goals)
    return CommissioningCase(name, ct, structures, text, parse_protocol(text, source=f"<{name}>"))
