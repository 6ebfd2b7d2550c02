"""Step-and-shoot leaf sequencing: beamlet fluence → static MLC segments with MU.

Algorithm
---------
1. The fluence (beamlet weights, MU-equivalent per fraction, on the BEV grid at the
   isocentre plane) is resampled onto the machine's leaf pairs: each leaf pair gets
   the area-weighted mean of the fluence rows it covers; columns stay on the
   fluence grid's x edges, so leaf tips sit on bixel edges.
2. It is quantised to integer multiples of ``Δ = max / levels`` (rounding to nearest).
3. The integer map is decomposed into apertures with one opening per leaf pair:

   * ``method="xia-verhey"``: the intensity-level (power-of-two) reduction of
     Xia & Verhey, Med. Phys. 25 (1998) 1424: for ``Δ_k = 2^k, 2^{k-1}, …, 1`` the region
     where the residual is ``≥ Δ_k`` is delivered with weight ``Δ_k`` and subtracted.
     A leaf pair can open only one interval at a time, so a level whose region has
     ``m`` intervals in some row gives ``m`` segments (the ``j``-th interval of every row
     in segment ``j``).
   * ``method="sweep"`` (default): the unidirectional leaf sweep of Bortfeld et al., Int. J.
     Radiat. Oncol. Biol. Phys. 28 (1994) 723 (step-and-shoot form, also Siochi 1999):
     unit-weight apertures whose left and right leaves only move in +x, optimal
     total MU for a unidirectional sweep; consecutive identical apertures merged.
     On the demo pelvis (benchmarks/bench_delivery.py, 10 levels) it needs 2.9× fewer MU
     than the power-of-two reduction for a similar segment count, hence the default.

4. Machine constraints: minimum leaf gap (an opening narrower than it is widened
   symmetrically), no interdigitation when the machine forbids it (a segment whose
   consecutive open rows do not overlap, or, with per-segment jaws, whose open rows are
   separated by closed ones, is split into groups of rows; closed pairs are parked at
   the centre of their open neighbours' overlap, outside the Y jaws with per-segment
   jaws; with ``jaws="beam"`` such a closed pair leaks through its minimum gap), jaws
   around each segment's opening (or around the whole beam with ``jaws="beam"``)
   within the jaw limits; closed pairs are parked behind the X1 jaw when interdigitation
   is allowed (so that their minimum gap does not leak). Identical apertures are merged.
5. MU: in the dose engine a beamlet weight of 1 is the fluence that 1 MU gives
   through an open bixel with the head-scatter factor ``S_c`` of the beam's beamlet
   bounding box (``art.dose.influence``), while a segment's fluence is
   ``MU · S_c(segment jaws)`` (``art.dose.calc.segment_fluence``). A segment of
   quantised level ``n Δ`` therefore gets ``MU = n Δ · S_c(bbox) / S_c(jaws)``, so that
   the open part of the sequenced beam reproduces the quantised fluence exactly.
   MLC transmission (``machine.mlc.transmission`` times the closed area inside the
   jaws) is *not* subtracted: it adds a little dose, which
   :func:`art.delivery.refine.refine_segment_weights` can take out.
6. Segments below the minimum segment MU are dropped (``small_segments="drop"``) or
   those with at least half of it are raised to it (``"round"``); the MU lost and
   added are reported in the statistics.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from art.dose._setup import equivalent_square
from art.dose.machine import Machine, load_machine
from art.errors import InputError
from art.plan import Plan, Segment

METHODS = ("xia-verhey", "sweep")


# ----------------------------------------------------------------- helpers
def _edges(fluence_grid: Any, name: str, n: int) -> np.ndarray:
    if not isinstance(fluence_grid, dict) or name not in fluence_grid:
        raise InputError(f"fluence_grid must be a dict with {name!r} (mm at the isocentre plane)")
    e = np.asarray(fluence_grid[name], dtype=np.float64).reshape(-1)
    if e.shape != (n + 1,):
        raise InputError(f"fluence_grid[{name!r}] must have {n + 1} edges for the fluence shape, got {e.size}")
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise InputError(f"fluence_grid[{name!r}] must be finite and strictly increasing")
    return e


def _overlap(lo: np.ndarray, hi: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Length of [lo_i, hi_i] ∩ [a_k, b_k], shape (len(lo), len(a))."""
    return np.clip(np.minimum(hi[:, None], b[None, :]) - np.maximum(lo[:, None], a[None, :]), 0.0, None)


def reference_head_scatter(fluence_grid: dict, machine: Machine) -> float:
    """S_c of the fluence grid's bounding box: the factor folded into a beamlet weight of 1
    by :func:`art.dose.influence_matrix` and :func:`art.dose.calc.beam_fluence`."""
    ex = np.asarray(fluence_grid["x_edges_mm"], dtype=np.float64)
    ey = np.asarray(fluence_grid["y_edges_mm"], dtype=np.float64)
    return float(machine.head_scatter(equivalent_square(ex[-1] - ex[0], ey[-1] - ey[0])))


def resample_to_leaves(fluence: np.ndarray, y_edges: np.ndarray, machine: Machine) -> np.ndarray:
    """Fluence rows → leaf pairs: area-weighted mean over each pair's width.

    Parameters
    ----------
    fluence : (ny, nx) ndarray
    y_edges : (ny + 1,) mm, BEV Y_b at the isocentre plane
    machine : Machine

    Returns
    -------
    (n_pairs, nx) float64

    Raises
    ------
    InputError
        If fluence lies outside the MLC's extent.
    """
    bnd = machine.mlc.boundaries_mm
    ov = _overlap(bnd[:-1], bnd[1:], y_edges[:-1], y_edges[1:])  # (n_pairs, ny)
    covered = ov.sum(axis=0)
    row_h = np.diff(y_edges)
    outside = (covered < row_h - 1e-6) & np.any(fluence > 0, axis=1)
    if np.any(outside):
        raise InputError(f"fluence rows {np.flatnonzero(outside).tolist()} lie (partly) outside the MLC ({bnd[0]} to {bnd[-1]} mm)")
    return (ov @ fluence) / np.diff(bnd)[:, None]


def _row_intervals(mask_row: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True as (first, last) column indices."""
    m = np.concatenate([[False], mask_row, [False]]).astype(np.int8)
    d = np.diff(m)
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def _decompose_xia_verhey(levels_map: np.ndarray) -> list[tuple[list, int]]:
    """Power-of-two intensity-level reduction. Returns apertures as (rows, weight) with
    ``rows[k]`` = (first, last) open column or None, weight in Δ units."""
    r = levels_map.astype(np.int64).copy()
    out = []
    if r.max() <= 0:
        return out
    d = 1 << int(np.floor(np.log2(r.max())))
    while d >= 1:
        region = r >= d
        if region.any():
            ivs = [_row_intervals(region[k]) for k in range(r.shape[0])]
            m = max(len(v) for v in ivs)
            for j in range(m):
                out.append(([v[j] if j < len(v) else None for v in ivs], d))
            r[region] -= d
        d //= 2
    assert not np.any(r), "intensity-level decomposition left a residual"
    return out


def _decompose_sweep(levels_map: np.ndarray) -> list[tuple[list, int]]:
    """Unidirectional sweep (Bortfeld 1994): unit apertures t = 1..max_k n_k, merged when identical."""
    a = levels_map.astype(np.int64)
    n_pairs, nx = a.shape
    pad = np.concatenate([np.zeros((n_pairs, 1), np.int64), a, np.zeros((n_pairs, 1), np.int64)], axis=1)
    inc = np.diff(pad, axis=1)  # (n_pairs, nx + 1)
    p = np.cumsum(np.clip(inc, 0, None), axis=1)[:, :nx]  # P_j
    n = np.cumsum(np.clip(-inc, 0, None), axis=1)[:, :nx]  # N_j
    units = p[:, -1] if nx else np.zeros(n_pairs, np.int64)
    total = int(units.max()) if units.size else 0
    out: list[tuple[list, int]] = []
    for t in range(1, total + 1):
        rows = []
        for k in range(n_pairs):
            if units[k] < t:
                rows.append(None)
                continue
            jl = int(np.searchsorted(p[k], t, side="left"))  # first j with P_j >= t
            jr = int(np.searchsorted(n[k], t, side="left")) - 1  # last j with N_j < t
            rows.append((jl, jr) if jl <= jr else None)
        if out and out[-1][0] == rows:
            out[-1] = (rows, out[-1][1] + 1)
        else:
            out.append((rows, 1))
    return out


def _split_interdigitation(rows: list, ex: np.ndarray, *, split_closed: bool) -> list[list]:
    """Split an aperture into groups whose consecutive open rows overlap in x (and, with
    ``split_closed``, are adjacent: a closed pair between open ones would leak through its
    minimum gap inside the jaws, as it cannot hide behind a jaw without interdigitating)."""
    open_k = [k for k, v in enumerate(rows) if v is not None]
    groups: list[list[int]] = []
    for k in open_k:
        if groups:
            p = groups[-1][-1]
            if split_closed and k != p + 1:
                groups.append([k])
                continue
            a = max(ex[rows[p][0]], ex[rows[k][0]])
            b = min(ex[rows[p][1] + 1], ex[rows[k][1] + 1])
            if a <= b:
                groups[-1].append(k)
                continue
        groups.append([k])
    out = []
    for g in groups:
        keep = set(g)
        out.append([v if k in keep else None for k, v in enumerate(rows)])
    return out


def _build_segment(rows: list, ex: np.ndarray, machine: Machine, jaws: tuple | None) -> tuple[np.ndarray, tuple]:
    """Leaf positions (2, n_pairs) and jaws of one aperture (``rows`` per pair)."""
    mlc = machine.mlc
    bnd = mlc.boundaries_mm
    lo_lim, hi_lim = mlc.position_limits_mm
    g = mlc.min_gap_mm
    n = mlc.n_pairs
    lp = np.full((2, n), np.nan)
    open_k = [k for k, v in enumerate(rows) if v is not None]
    for k in open_k:
        l, r = ex[rows[k][0]], ex[rows[k][1] + 1]
        if r - l < g:
            c = 0.5 * (l + r)
            l, r = c - g / 2, c + g / 2
        if l < lo_lim - 1e-9 or r > hi_lim + 1e-9:
            raise InputError(f"leaf pair {k}: opening {l:.1f} to {r:.1f} mm is outside the leaf limits {lo_lim} to {hi_lim} mm")
        lp[0, k], lp[1, k] = l, r
    if jaws is None:
        x1 = float(np.nanmin(lp[0]))
        x2 = float(np.nanmax(lp[1]))
        y1 = float(bnd[open_k[0]])
        y2 = float(bnd[open_k[-1] + 1])
        jaws = (x1, x2, y1, y2)
    x1, x2, y1, y2 = jaws
    if mlc.interdigitation:
        # closed pairs behind the X1 jaw (or X2 when X1 is at the leaf limit)
        if x1 - g >= lo_lim - 1e-9:
            park = (x1 - g, x1)
        elif x2 + g <= hi_lim + 1e-9:
            park = (x2, x2 + g)
        else:
            park = (x1, x1 + g)
        for k in range(n):
            if k not in open_k:
                lp[0, k], lp[1, k] = park
    else:
        # closed pairs at the centre of their open neighbours' overlap (never interdigitating)
        centre = np.full(n, np.nan)
        for i, k in enumerate(open_k):
            centre[k] = 0.5 * (lp[0, k] + lp[1, k])
            if i + 1 < len(open_k) and open_k[i + 1] > k + 1:
                q = open_k[i + 1]
                a = max(lp[0, k], lp[0, q])
                b = min(lp[1, k], lp[1, q])
                centre[k + 1 : q] = 0.5 * (a + b)
        centre[: open_k[0]] = centre[open_k[0]]
        centre[open_k[-1] + 1 :] = centre[open_k[-1]]
        closed = np.isnan(lp[0])
        lp[0, closed] = centre[closed] - g / 2
        lp[1, closed] = centre[closed] + g / 2
    return lp, (float(x1), float(x2), float(y1), float(y2))


def _check_jaws(jaws: tuple, machine: Machine) -> tuple:
    x1, x2, y1, y2 = jaws
    jx, jy = machine.jaw_x_limits_mm, machine.jaw_y_limits_mm
    if x1 < jx[0] - 1e-9 or x2 > jx[1] + 1e-9 or y1 < jy[0] - 1e-9 or y2 > jy[1] + 1e-9:
        raise InputError(
            f"the fluence needs jaws ({x1:.1f}, {x2:.1f}, {y1:.1f}, {y2:.1f}) mm, beyond the machine's jaw limits "
            f"x {jx} and y {jy} mm"
        )
    return jaws


# ------------------------------------------------------------------ public
def sequence_beam(
    fluence: Any,
    fluence_grid: dict,
    machine: Machine | None = None,
    *,
    levels: int = 10,
    method: str = "sweep",
    min_segment_mu: float | None = None,
    small_segments: str = "drop",
    jaws: str = "segment",
    return_stats: bool = False,
) -> list[Segment] | tuple[list[Segment], dict]:
    """Sequence one beam's fluence into step-and-shoot MLC segments.

    Parameters
    ----------
    fluence : (ny, nx) array_like
        Beamlet weights, MU-equivalent per fraction (as :meth:`art.dose.InfluenceMatrix.fluence_maps`),
        non-negative.
    fluence_grid : dict
        ``{"x_edges_mm": (nx+1,), "y_edges_mm": (ny+1,)}``, BEV (IEC b) at the isocentre plane, mm.
    machine : Machine, optional
        Default :func:`art.dose.load_machine` ().
    levels : int, keyword-only
        Number of intensity levels: the fluence is quantised to multiples of ``max / levels``.
    method : {"xia-verhey", "sweep"}, keyword-only
        Decomposition (see the module docstring).
    min_segment_mu : float, keyword-only
        Minimum MU of a segment; default ``machine.min_mu_per_segment``.
    small_segments : {"drop", "round"}, keyword-only
        Segments below the minimum MU are dropped, or (``"round"``) raised to it when they
        have at least half of it (dropped otherwise).
    jaws : {"segment", "beam"}, keyword-only
        Jaws around each segment's opening, or one jaw setting around the whole beam.
    return_stats : bool, keyword-only
        Also return a dict: ``n_segments``, ``mu`` (per fraction), ``delta_mu`` (level step),
        ``levels``, ``mu_dropped``, ``mu_added``, ``n_dropped``, ``quantisation_rms`` (RMS of
        quantised − resampled fluence over non-zero bixels, relative to the maximum).

    Returns
    -------
    list of Segment
        MU per fraction; empty when the fluence is zero. With ``return_stats``, ``(segments, stats)``.

    Raises
    ------
    InputError
        Invalid fluence or options, or a fluence the machine cannot deliver (outside the
        MLC, leaf or jaw limits, wider than the maximum leaf span).
    """
    machine = load_machine() if machine is None else machine
    f, ex, ey, min_mu = _check_inputs(fluence, fluence_grid, machine, levels=levels, method=method, min_segment_mu=min_segment_mu,
                                      small_segments=small_segments, jaws=jaws)
    stats: dict = {"n_segments": 0, "mu": 0.0, "delta_mu": 0.0, "levels": int(levels), "mu_dropped": 0.0,
                   "mu_added": 0.0, "n_dropped": 0, "quantisation_rms": 0.0, "method": method}
    a = resample_to_leaves(f, ey, machine)
    amax = float(a.max())
    if amax <= 0:
        return ([], stats) if return_stats else []
    q, stats["delta_mu"], stats["quantisation_rms"] = _quantise(a, amax, levels)
    apertures = _apertures(q, ex, machine, method=method, jaws=jaws)
    beam_jaws = _beam_jaws(q, ex, machine) if jaws == "beam" else None
    merged = _merged_segments(apertures, ex, ey, machine, beam_jaws, delta=stats["delta_mu"])
    segments = _apply_min_mu(merged, min_mu, small_segments, stats)
    stats["n_segments"] = len(segments)
    stats["mu"] = float(sum(s.mu for s in segments))
    return (segments, stats) if return_stats else segments


def _check_inputs(fluence: Any, fluence_grid: dict, machine: Machine, *, levels: int, method: str, min_segment_mu: float | None,
                  small_segments: str, jaws: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Refuse an invalid fluence, grid or option (:class:`InputError`, in the order of the arguments).

    Returns
    -------
    fluence : (ny, nx) float64
    x_edges, y_edges : (nx + 1,), (ny + 1,) float64, mm
    min_mu : float
        The minimum segment MU (``machine.min_mu_per_segment`` unless given).
    """
    f = np.asarray(fluence, dtype=np.float64)
    if f.ndim != 2 or f.size == 0:
        raise InputError(f"fluence must be a non-empty 2-D array (ny, nx), got shape {f.shape}")
    if not np.all(np.isfinite(f)) or np.any(f < 0):
        raise InputError("fluence must be finite and non-negative")
    ex = _edges(fluence_grid, "x_edges_mm", f.shape[1])
    ey = _edges(fluence_grid, "y_edges_mm", f.shape[0])
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 1 <= levels <= 1000:
        raise InputError(f"levels must be an integer from 1 to 1000, got {levels!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if small_segments not in ("drop", "round"):
        raise InputError(f"small_segments must be 'drop' or 'round', got {small_segments!r}")
    if jaws not in ("segment", "beam"):
        raise InputError(f"jaws must be 'segment' or 'beam', got {jaws!r}")
    min_mu = machine.min_mu_per_segment if min_segment_mu is None else float(min_segment_mu)
    if not np.isfinite(min_mu) or min_mu < 0:
        raise InputError(f"min_segment_mu must be a non-negative number, got {min_segment_mu!r}")
    return f, ex, ey, min_mu


def _quantise(a: np.ndarray, amax: float, levels: int) -> tuple[np.ndarray, float, float]:
    """Leaf-pair fluence ``a`` (n_pairs, nx), maximum ``amax`` > 0 → integer levels (n_pairs, nx)
    int64 of ``Δ = amax / levels`` (rounded to nearest), ``Δ`` (MU), and the RMS of
    quantised − resampled fluence over the non-zero bixels relative to ``amax``."""
    delta = amax / levels
    q = np.rint(a / delta).astype(np.int64)
    nz = a > 0
    return q, delta, float(np.sqrt(np.mean((q[nz] * delta - a[nz]) ** 2)) / amax)


def _apertures(q: np.ndarray, ex: np.ndarray, machine: Machine, *, method: str, jaws: str) -> list[tuple[list, int]]:
    """Apertures ``(rows, weight in Δ)`` of the level map ``q`` (n_pairs, nx): the decomposition
    ``method``, split where the machine forbids interdigitation (see :func:`_split_interdigitation`),
    without the apertures that open no pair; ``ex`` (nx + 1,) column edges, mm."""
    apertures = _decompose_xia_verhey(q) if method == "xia-verhey" else _decompose_sweep(q)
    if not machine.mlc.interdigitation:
        apertures = [(g, w) for rows, w in apertures for g in _split_interdigitation(rows, ex, split_closed=jaws == "segment")]
    return [(rows, w) for rows, w in apertures if any(v is not None for v in rows)]


def _beam_jaws(q: np.ndarray, ex: np.ndarray, machine: Machine) -> tuple:
    """Jaws (x1, x2, y1, y2) mm around every opened column and leaf pair of the level map
    ``q`` (n_pairs, nx), at least the minimum gap wide, within the jaw limits."""
    opened = np.flatnonzero(q.max(axis=1) > 0)
    cols = np.flatnonzero(q.max(axis=0) > 0)
    xs = [ex[cols[0]], ex[cols[-1] + 1]]
    g = machine.mlc.min_gap_mm
    if xs[1] - xs[0] < g:
        c = 0.5 * (xs[0] + xs[1])
        xs = [c - g / 2, c + g / 2]
    bnd = machine.mlc.boundaries_mm
    return _check_jaws((float(xs[0]), float(xs[1]), float(bnd[opened[0]]), float(bnd[opened[-1] + 1])), machine)


def _merged_segments(apertures: list, ex: np.ndarray, ey: np.ndarray, machine: Machine, beam_jaws: tuple | None, *, delta: float) -> list[list]:
    """Leaf positions, jaws and MU of each aperture, identical ones merged (MU added), in order
    of first appearance.

    An aperture of weight ``w`` gets ``MU = w Δ S_c(bbox) / S_c(jaws)`` (bbox: the fluence grid
    ``ex`` × ``ey``, mm); ``beam_jaws`` (or, if None, each aperture's own jaws) must lie within
    the machine's limits and the leaves within its maximum span.

    Returns
    -------
    list of [leaf_positions (2, n_pairs) mm, jaws (x1, x2, y1, y2) mm, MU]
    """
    sc_ref = reference_head_scatter({"x_edges_mm": ex, "y_edges_mm": ey}, machine)
    merged: dict[bytes, list] = {}
    order: list[bytes] = []
    for rows, w in apertures:
        lp, jw = _build_segment(rows, ex, machine, beam_jaws)
        _check_jaws(jw, machine)
        span = max(np.ptp(lp[0]), np.ptp(lp[1]))
        if span > machine.mlc.max_leaf_span_mm + 1e-6:
            raise InputError(f"segment needs a leaf span of {span:.1f} mm, more than the machine's {machine.mlc.max_leaf_span_mm} mm")
        sc = float(machine.head_scatter(equivalent_square(jw[1] - jw[0], jw[3] - jw[2])))
        mu = w * delta * sc_ref / sc
        key = np.round(lp, 6).tobytes() + np.round(np.array(jw), 6).tobytes()
        if key in merged:
            merged[key][2] += mu
        else:
            merged[key] = [lp, jw, mu]
            order.append(key)
    return [merged[key] for key in order]


def _apply_min_mu(merged: list[list], min_mu: float, small_segments: str, stats: dict) -> list[Segment]:
    """Segments of the merged apertures; those below ``min_mu`` are dropped or (``"round"``,
    with at least half of it) raised to it. Adds to ``stats["mu_added"]``, ``["mu_dropped"]``
    and ``["n_dropped"]``."""
    segments = []
    for lp, jw, mu in merged:
        if mu < min_mu:
            if small_segments == "round" and mu >= 0.5 * min_mu:
                stats["mu_added"] += min_mu - mu
                mu = min_mu
            else:
                stats["mu_dropped"] += mu
                stats["n_dropped"] += 1
                continue
        segments.append(Segment(lp, jw, mu))
    return segments


def segments_to_fluence(segments: list[Segment], fluence_grid: dict, machine: Machine | None = None, *, transmission: bool = False) -> np.ndarray:
    """Beamlet-weight equivalent of segments on a fluence grid (the inverse of :func:`sequence_beam`).

    Each bixel gets ``Σ MU · S_c(jaws) / S_c(bbox) · (open area fraction)`` (plus, with
    ``transmission``, ``machine.mlc.transmission`` × the closed area fraction inside the jaws),
    where ``S_c(bbox)`` is the head scatter of the fluence grid's bounding box, so that the
    result is directly comparable with the beamlet weights the segments were made from.

    Parameters
    ----------
    segments : list of Segment
    fluence_grid : dict
        ``{"x_edges_mm", "y_edges_mm"}`` (mm, BEV at the isocentre plane).
    machine : Machine, optional
    transmission : bool, keyword-only

    Returns
    -------
    (ny, nx) float64, MU-equivalent per fraction
    """
    machine = load_machine() if machine is None else machine
    ex = np.asarray(fluence_grid["x_edges_mm"], dtype=np.float64)
    ey = np.asarray(fluence_grid["y_edges_mm"], dtype=np.float64)
    sc_ref = reference_head_scatter(fluence_grid, machine)
    bnd = machine.mlc.boundaries_mm
    area = np.outer(np.diff(ey), np.diff(ex))
    out = np.zeros(area.shape)
    t = machine.mlc.transmission if transmission else 0.0
    for s in segments:
        lp = s.leaf_positions
        x1, x2, y1, y2 = s.jaws
        sc = float(machine.head_scatter(equivalent_square(x2 - x1, y2 - y1)))
        oy = _overlap(ey[:-1], ey[1:], np.clip(bnd[:-1], y1, y2), np.clip(bnd[1:], y1, y2))
        ox = _overlap(ex[:-1], ex[1:], np.maximum(lp[0], x1), np.minimum(lp[1], x2))
        open_frac = (oy @ ox.T) / area
        if t:
            jy = _overlap(ey[:-1], ey[1:], np.array([y1]), np.array([y2]))[:, 0]
            jx = _overlap(ex[:-1], ex[1:], np.array([x1]), np.array([x2]))[:, 0]
            open_frac = open_frac + t * np.clip(np.outer(jy, jx) / area - open_frac, 0.0, None)
        out += s.mu * sc / sc_ref * open_frac
    return out


def sequence_plan(plan: Plan, machine: Machine | None = None, **options: Any) -> tuple[Plan, dict]:
    """Sequence every beam of a fluence plan (see :func:`sequence_beam` for ``options``).

    Parameters
    ----------
    plan : Plan
        Beams with ``fluence`` and ``fluence_grid`` (beamlet weights, MU-equivalent per fraction).
    machine : Machine, optional
    **options
        Keyword options of :func:`sequence_beam` (``levels``, ``method``, ``min_segment_mu``,
        ``small_segments``, ``jaws``).

    Returns
    -------
    plan : Plan
        Same beams, fractions, label and prescription, with ``segments`` filled (MU per
        fraction) and the fluence kept.
    stats : dict
        ``beams``: per beam name the :func:`sequence_beam` statistics; ``n_segments`` and
        ``total_mu`` (per fraction) over the plan; ``mu_per_beam``; ``segments_per_beam``;
        ``mu_dropped``; ``options``.

    Raises
    ------
    InputError
        A beam without a fluence, or an option/fluence :func:`sequence_beam` refuses (the
        message names the beam).
    """
    if not isinstance(plan, Plan):
        raise InputError(f"plan must be an art.plan.Plan, got {type(plan).__name__}")
    machine = load_machine() if machine is None else machine
    options.pop("return_stats", None)
    beams, per = [], {}
    for b in plan.beams:
        if b.fluence is None:
            raise InputError(f"beam {b.name!r} has no fluence to sequence")
        try:
            segs, st = sequence_beam(b.fluence, b.fluence_grid, machine, return_stats=True, **options)
        except InputError as exc:
            raise InputError(f"beam {b.name!r}: {exc}") from exc
        except TypeError as exc:
            raise InputError(f"unknown sequencing option: {exc}") from exc
        if not segs:
            raise InputError(f"beam {b.name!r}: nothing left to deliver after sequencing (zero fluence or all segments below the minimum MU)")
        beams.append(dataclasses.replace(b, segments=segs))
        per[b.name] = st
    out = dataclasses.replace(plan, beams=beams)
    stats = {
        "beams": per,
        "segments_per_beam": {k: v["n_segments"] for k, v in per.items()},
        "mu_per_beam": {k: v["mu"] for k, v in per.items()},
        "n_segments": int(sum(v["n_segments"] for v in per.values())),
        "total_mu": float(sum(v["mu"] for v in per.values())),
        "mu_dropped": float(sum(v["mu_dropped"] for v in per.values())),
        "options": {k: v for k, v in options.items()},
    }
    return out, stats
