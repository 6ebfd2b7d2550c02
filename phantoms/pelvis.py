"""The digital male pelvis: planning CT, structures, daily anatomy and CBCT.

The anatomy is analytic: a set of simple solids (ellipsoids, capsules, lofted
super-ellipses, a curved tube, spherical shells) described by a JSON-friendly
parameter dictionary sampled from the seed. :func:`_label_points` gives the
tissue label at any LPS points, so the same anatomy is rendered on the
planning grid and, for a daily fraction, at the deformed positions
``y + d(y)`` of the CBCT grid without resampling blur.

Coordinates are LPS mm: ``x`` to the patient's left, ``y`` posterior, ``z``
superior; left structures have ``x > 0``. Arrays are ``(z, y, x)``.

Daily variation (:func:`make_fraction`)
---------------------------------------
A stationary velocity field ``v`` (mm) is built on an internal grid around the
pelvic organs from localised components:

* bladder filling: scaling about a point at the bladder base
  (``v_i = a_i (p - c0)_i``, ``sum a_i = ln(1 + filling)``, shared 25 / 30 /
  45 % between x, y, z so that the bladder fills mostly cranially) inside a
  flat-top region enclosing the bladder before and after, with a Gaussian
  fall-off (15 mm); the rate is calibrated (on a coarse grid, at most three
  tries) so that the mean Jacobian determinant over the bladder matches the
  requested volume ratio, and the achieved ratio is reported in the params;
* rectal filling: radial scaling about the rectal axis (``a_r = ln(1 + r)``,
  ``r`` the relative change in rectal radius) in a window from 25 mm below to
  45 mm above the prostate centre;
* prostate motion: the rigid motion ``p -> R (p - c) + c + t`` about the
  prostate centre ``c`` (``R`` a rotation about the left-right axis) written as
  a stationary field (a rotation about a shifted axis plus the translation along
  it), with weight 1 on a region that contains the prostate along its path; the
  prostate region overrides the bladder and rectal components
  (``v = w_p v_p + (1 - w_p)(v_b + v_r)``) so the prostate moves exactly;
* bone: ``v`` is multiplied by a ramp of the (Gaussian-smoothed, 3 mm)
  distance to bone that is 0 within 7 mm of bone and 1 beyond 15 mm (prostate
  component) or 23 mm (bladder and rectal components), so bones do not deform
  and the tissue next to them is not sheared too hard. The prostate moves
  exactly as requested while it stays about 15 mm clear of bone (the sampled
  motions do; the symphysis lies 20-26 mm in front of it).

The fields are smooth on the scale of the grids: for the sampled daily
variations, ``exp(-v) o exp(v)`` sampled on the output grids (3 x 2 x 2 mm)
is the identity within 0.5 mm everywhere in the body (typically < 0.05 mm at
the 99th percentile), and the Jacobian determinant stays above about 0.4.
Extreme requests (prostate shifts towards bone of 7 mm or more, rectal
filling > 30 %, bladder filling > 60 %) compress the tissue more and the
residual grows beyond 1 mm; very large bladder fillings are limited by the
bone and fall short of the request (see ``bladder_volume_ratio_achieved``).

The deformation ``phi = exp(v)`` and its inverse ``exp(-v)`` come from scaling
and squaring (:mod:`art_phantoms.deformation`). A rigid set-up error
``s(p) = R_s (p - iso) + iso + t_s`` (``iso`` = planned isocentre, the PTV
centroid) follows. So the planning point ``x`` appears in the CBCT at
``s(phi(x))`` and the CBCT voxel ``y`` shows the planning tissue at
``phi^-1(s^-1(y))``.

Where the parts live
--------------------
This module makes the planning case (:func:`make_pelvis`) and re-exports
:func:`make_fraction`. The parameters are sampled in
:mod:`art_phantoms.sampling`, the solids and the pelvis geometry are in
:mod:`art_phantoms.anatomy`, labels, HU image and structures in
:mod:`art_phantoms.render`, the fraction in :mod:`art_phantoms.daily` and its
velocity field in :mod:`art_phantoms.daily_field`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from art.errors import InputError
from art.geometry import Grid, Volume

from .cases import PlanningCase
from .checks import _check_seed, _jsonify, _number, _triple
from .daily import make_fraction
from .deformation import grid_points
from .render import LABELS, PROSTATE, SV_PROX, _label_points, _render, _structure_set
from .sampling import _sample_anatomy, _sample_gas

__all__ = ["make_pelvis", "make_fraction", "LABELS", "PTV_MARGIN_MM"]

PTV_MARGIN_MM = 7.0


def _expand(mask: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """Isotropic expansion by ``margin_mm`` (exact Euclidean distance, anisotropic voxels)."""
    if margin_mm <= 0 or not mask.any():
        return mask.copy()
    pad = [int(math.ceil(margin_mm / s)) + 1 for s in spacing]
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    dist = ndimage.distance_transform_edt(~mask[sl], sampling=spacing)
    out = np.zeros_like(mask)
    out[sl] = dist <= margin_mm + 1e-6
    return out


def _planning_grid(spacing, field_mm) -> Grid:
    """The planning CT grid: ``field_mm`` (z, y, x) at ``spacing`` (dz, dy, dx), mm, centred on LPS (0, 0, 0)."""
    shape = tuple(max(1, int(round(f / s))) for f, s in zip(field_mm, spacing))
    origin = tuple(-(n - 1) * s / 2.0 for n, s in zip(shape[::-1], spacing[::-1]))
    return Grid(shape=shape, spacing=spacing, origin=origin)


def make_pelvis(
    *,
    seed: int = 0,
    spacing: Sequence[float] = (3.0, 2.0, 2.0),
    field_mm: Sequence[float] = (250.0, 300.0, 400.0),
    rectal_gas: bool = False,
    ptv_margin_mm: float = PTV_MARGIN_MM,
) -> PlanningCase:
    """A digital male pelvis for prostate planning.

    Parameters
    ----------
    seed : int, keyword-only
        Non-negative seed; the same seed gives identical arrays.
    spacing : (dz, dy, dx), keyword-only
        Voxel size of the planning CT, mm.
    field_mm : (z, y, x), keyword-only
        Extent of the planning CT, mm (default 25 x 30 x 40 cm), centred on
        LPS (0, 0, 0).
    rectal_gas : bool, keyword-only
        Put one or two gas pockets in the rectum of the planning CT.
    ptv_margin_mm : float, keyword-only
        Isotropic CTV-to-PTV margin (Euclidean distance), mm.

    Returns
    -------
    PlanningCase
        CT (HU, float32, (z, y, x)), structures (BODY, PTV, CTV, Prostate,
        SeminalVesicles, Bladder, Rectum, FemoralHead_L, FemoralHead_R,
        Bones) and the sampled parameters.

    Notes
    -----
    The anatomy: elliptical body (~35-39 cm lateral, ~22-27 cm AP) with a
    subcutaneous fat layer (-85 ... -110 HU) over muscle (38-50 HU); pelvic fat
    around the organs; bony pelvis (cortical shell 1000-1200 HU over
    trabecular 200-300 HU): symphysis, pubic rami, ischia, acetabula, iliac
    wings, sacrum and coccyx, femoral heads (diameter 44-50 mm) with necks,
    trochanters and shafts; prostate (25-55 cc, 35-45 HU), seminal vesicles,
    bladder (150-350 cc, 3 mm wall, urine 5-15 HU), rectum (tube with a 3 mm
    wall, curving with the sacrum) and bowel loops. The CT is blurred lightly
    (1 mm in z, 0.7 mm in-plane) and carries correlated Gaussian noise of
    10-15 HU. The CTV is the prostate and the proximal 15 mm (from their
    base) of the seminal vesicles; the PTV is the CTV expanded by
    ``ptv_margin_mm`` in every direction, cut to the body.
    """
    seed = _check_seed(seed, "seed")
    spacing = _triple(spacing, "spacing", positive=True)
    field_mm = _triple(field_mm, "field_mm", positive=True)
    margin = _number(ptv_margin_mm, "ptv_margin_mm", 0.0, 30.0)
    if field_mm[0] < 120 or field_mm[1] < 260 or field_mm[2] < 300:
        raise InputError(f"field_mm must be at least (120, 260, 300) mm to hold the pelvis, got {field_mm}")
    ss_anat, ss_gas, ss_noise = np.random.SeedSequence(seed).spawn(3)
    p = _sample_anatomy(np.random.default_rng(ss_anat))
    gas = _sample_gas(np.random.default_rng(ss_gas), p) if rectal_gas else []
    grid = _planning_grid(spacing, field_mm)
    x, y, z = grid_points(grid, dtype=np.float32)
    lab, fh_l, fh_r = _label_points(p, x, y, z, gas)
    del x, y, z
    ct = _render(p, lab, grid, np.random.default_rng(ss_noise))
    lab3 = lab.reshape(grid.shape)
    ctv = (lab3 == PROSTATE) | (lab3 == SV_PROX)
    ptv = _expand(ctv, grid.spacing, margin)
    structures = _structure_set(grid, lab, fh_l, fh_r, ptv)
    iso = structures["PTV"].centroid_lps()
    params = {
        "site": "prostate",
        "seed": seed,
        "spacing": list(spacing),
        "field_mm": list(field_mm),
        "rectal_gas": bool(rectal_gas),
        "gas": gas,
        "ptv_margin_mm": margin,
        "isocenter_mm": iso,
        "volumes_cc": {s.name: s.volume_cc for s in structures},
        "anatomy": p,
    }
    return PlanningCase(ct=Volume(ct, grid), structures=structures, seed=seed, params=_jsonify(params))
