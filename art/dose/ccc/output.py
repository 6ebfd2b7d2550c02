"""The output correction of the collapsed-cone model: equivalent squares of apertures, and the
beam with its MU (segments) or fluence (beamlet maps) scaled by the correction.

The kernels' phantom scatter is not the machine's for small fields (the generic 6X table gives a
3×3 cm² S_p of 0.92, the kernels 0.97), so, as clinical collapsed-cone systems do, the model
carries an ``output_correction`` table (``ccc.output_correction``: ``field_sizes_mm``,
``factor``; fitted by :mod:`art.dose.ccc.commission`) by equivalent square: the table's dose per
MU of a square field over the engine's, 1 for the calibration field. It is applied in the TERMA
per segment, by the equivalent square ``4 · area / perimeter`` of the segment's open aperture
(the union of its leaf-pair openings clipped to the jaws), interpolated in the table and clamped
to its ends. A beam given by a beamlet fluence map (no segments) uses the equivalent square of
the region where its fluence is > 0 (the bixels' union, its staircase perimeter).

The depth correction (``ccc.depth_correction``) is a factor by equivalent square **and** radiological
depth, applied to the TERMA (:mod:`art.dose.ccc.terma`): :func:`depth_parts` splits a beam's
segments between the table's field sizes (linear weights in the equivalent square, clamped to the
table's ends), so that each part's fluence carries one row of factors over depth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from art.dose.ccc.model import CCCModel
from art.dose.machine import Machine
from art.plan import Beam


def aperture_equivalent_square(leaf_positions, boundaries_mm, jaws) -> float:
    """Equivalent square ``4 · area / perimeter`` (mm) of an MLC aperture inside the jaws.

    Parameters
    ----------
    leaf_positions : (2, n_pairs) array
        Bank X1 (row 0) and X2 (row 1) tip positions, mm at the isocentre plane.
    boundaries_mm : (n_pairs + 1,) array
        Leaf-pair boundaries along Y, increasing, mm.
    jaws : (x1, x2, y1, y2)
        Jaw positions, mm.

    Returns
    -------
    float
        The side of the equivalent square, mm; 0 for a closed aperture. For a rectangle X × Y it
        is ``2XY / (X + Y)``.
    """
    lp = np.asarray(leaf_positions, dtype=np.float64)
    bnd = np.asarray(boundaries_mm, dtype=np.float64)
    x1, x2, y1, y2 = (float(v) for v in jaws)
    heights = np.clip(bnd[1:], y1, y2) - np.clip(bnd[:-1], y1, y2)
    lo = np.maximum(lp[0], x1)
    hi = np.minimum(lp[1], x2)
    rows = heights > 0  # the pairs inside the jaws: consecutive, each one interval [lo, hi]
    lo, hi, heights = lo[rows], hi[rows], heights[rows]
    is_open = hi > lo
    lo, hi = np.where(is_open, lo, 0.0), np.where(is_open, hi, 0.0)
    area = float(np.sum((hi - lo) * heights))
    if area <= 0:
        return 0.0
    # vertical edges: both ends of every open row; horizontal: between consecutive rows (and the
    # closed rows beyond the ends) the length covered by exactly one of the two intervals
    lo_p, hi_p = np.concatenate([[0.0], lo, [0.0]]), np.concatenate([[0.0], hi, [0.0]])
    width = hi_p - lo_p
    overlap = np.clip(np.minimum(hi_p[1:], hi_p[:-1]) - np.maximum(lo_p[1:], lo_p[:-1]), 0.0, None)
    perimeter = 2.0 * float(np.sum(heights[is_open])) + float(np.sum(width[1:] + width[:-1] - 2.0 * overlap))
    return 4.0 * area / perimeter


def mask_equivalent_square(mask, x_edges, y_edges) -> float:
    """Equivalent square ``4 · area / perimeter`` (mm) of the union of the pixels where ``mask``
    (ny, nx) is true on the grid of ``x_edges`` (nx + 1) × ``y_edges`` (ny + 1) mm; 0 if empty."""
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    hx = np.diff(np.asarray(x_edges, dtype=np.float64))
    hy = np.diff(np.asarray(y_edges, dtype=np.float64))
    area = float(hy @ np.asarray(mask, dtype=bool) @ hx)
    if area <= 0:
        return 0.0
    across_y = (m[1:, 1:-1] != m[:-1, 1:-1]).sum(axis=0)  # (nx,) horizontal edges per column
    across_x = (m[1:-1, 1:] != m[1:-1, :-1]).sum(axis=1)  # (ny,) vertical edges per row
    return 4.0 * area / float(across_y @ hx + across_x @ hy)


def output_correction(model: CCCModel, equivalent_square_mm) -> np.ndarray:
    """The model's output correction at equivalent squares (mm): interpolated, clamped; 1 when absent."""
    s = np.asarray(equivalent_square_mm, dtype=np.float64)
    if model.output_field_mm.size == 0:
        return np.ones_like(s)
    return np.interp(s, model.output_field_mm, model.output_factor)


def _segment_squares(beam: Beam, machine: Machine) -> np.ndarray:
    """Equivalent squares (mm) of the beam's segments' apertures (:func:`aperture_equivalent_square`)."""
    bnd = machine.mlc.boundaries_mm
    return np.array([aperture_equivalent_square(g.leaf_positions, bnd, g.jaws) for g in beam.segments])


def _fluence_square(beam: Beam) -> float:
    """Equivalent square (mm) of the region of a beamlet fluence map with fluence > 0 (:func:`mask_equivalent_square`)."""
    return mask_equivalent_square(beam.fluence > 0, beam.fluence_grid["x_edges_mm"], beam.fluence_grid["y_edges_mm"])


def corrected_beam(beam: Beam, machine: Machine, model: CCCModel) -> Beam:
    """The beam with each segment's MU (or its fluence map) scaled by the model's output
    correction at the aperture's equivalent square (the beam itself when the model has none)."""
    if model.output_field_mm.size == 0:
        return beam
    if beam.segments:
        k = output_correction(model, _segment_squares(beam, machine))
        return dataclasses.replace(beam, segments=[dataclasses.replace(g, mu=g.mu * float(f)) for g, f in zip(beam.segments, k)])
    if beam.fluence is not None:
        return dataclasses.replace(beam, fluence=beam.fluence * float(output_correction(model, _fluence_square(beam))))
    return beam


def _hat_weights(nodes: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(len(s), len(nodes)) weights of linear interpolation at ``s`` between increasing ``nodes``, clamped."""
    w = np.zeros((s.size, nodes.size))
    if nodes.size == 1:
        w[:, 0] = 1.0
        return w
    x = np.clip(s, nodes[0], nodes[-1])
    j = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, nodes.size - 2)
    t = (x - nodes[j]) / (nodes[j + 1] - nodes[j])
    rows = np.arange(s.size)
    w[rows, j] = 1.0 - t
    w[rows, j + 1] += t
    return w


def depth_correction_row(model: CCCModel, equivalent_square_mm: float) -> np.ndarray:
    """The depth correction's factors over ``model.depth_mm`` at one equivalent square (mm), interpolated, clamped."""
    w = _hat_weights(model.depth_field_mm, np.array([float(equivalent_square_mm)]))[0]
    return w @ model.depth_factor


def depth_parts(beam: Beam, machine: Machine, model: CCCModel) -> list[tuple[Beam, np.ndarray | None]]:
    """The beam with its output correction (:func:`corrected_beam`), split for the depth correction:
    ``[(part, factors over model.depth_mm or None)]``.

    The parts' fluences add up to the corrected beam's. Segments: each segment's corrected MU shared
    between the two field sizes of the table around its aperture's equivalent square (linear weights,
    clamped to the table's ends), one part per field size used, with that size's row of factors. A
    beamlet fluence map: itself (corrected), with the row at the equivalent square of its region with
    fluence > 0. Without a depth correction in the model (or a beam with neither): ``[(corrected
    beam, None)]``. Each aperture's equivalent square is computed once for both corrections.
    """
    if model.depth_field_mm.size == 0:
        return [(corrected_beam(beam, machine, model), None)]
    if beam.segments:
        s = _segment_squares(beam, machine)
        k = output_correction(model, s)
        w = _hat_weights(model.depth_field_mm, s)
        parts = []
        for j in np.flatnonzero(w.max(axis=0) > 0):
            segs = [dataclasses.replace(g, mu=g.mu * float(kg) * float(wj)) for g, kg, wj in zip(beam.segments, k, w[:, j]) if wj > 0]
            parts.append((dataclasses.replace(beam, segments=segs), model.depth_factor[j]))
        return parts
    if beam.fluence is not None:
        s = _fluence_square(beam)
        if model.output_field_mm.size:
            beam = dataclasses.replace(beam, fluence=beam.fluence * float(output_correction(model, s)))
        return [(beam, depth_correction_row(model, s))]
    return [(beam, None)]
