"""Dose-influence matrix (voxels × beamlets), sparse CSR float32.

Units: ``matrix[i, j]`` is the dose in Gy **per fraction** at voxel ``voxel_indices[i]``
of ``dose_grid`` per unit weight of beamlet ``j``, a weight of 1 being the fluence
that 1 MU delivers through that open bixel (head scatter of the beam's beamlet
bounding box included). ``D @ w`` is the per-fraction dose; multiply by the number
of fractions for the course (:meth:`InfluenceMatrix.dose` does it for you).

Ordering: rows follow ``voxel_indices`` (ascending flat C-order indices into the
dose grid's ``(z, y, x)`` array); columns are grouped by beam in the order the
beams were given, and inside a beam ordered by BEV y (leaf-pair direction), then x.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from art.backend import backend_name, get_namespace
from art.blas import single_threaded_blas
from art.dose._setup import prepare
from art.dose.influence_beam import SUM_KEYS, BeamColumns, BeamContext, beam_columns
from art.dose.kernel import fit_kernel
from art.dose.machine import HUTable, Machine, load_machine
from art.errors import InputError
from art.geometry import Grid, Volume
from art.plan import Beam
from art.structures import StructureSet


@dataclass
class InfluenceMatrix:
    """A dose-influence matrix and what it refers to.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, (n_voxels, n_beamlets), float32
        Gy per fraction per unit beamlet weight (MU-equivalent).
    dose_grid : Grid
    voxel_indices : (n_voxels,) int64, flat indices into ``dose_grid`` (ascending)
    beam_index : (n_beamlets,) int32, index into ``beams``
    bev_x_mm, bev_y_mm : (n_beamlets,) float64, bixel centres at the isocentre plane (IEC b)
    bixel_mm : float
    beams : list of Beam
    head_scatter : (n_beams,) S_c applied to each beam's beamlets
    dropped_fraction : float
        (untruncated pencil-beam dose − stored dose) / untruncated dose, for unit
        weights, summed over the voxels and beams (block masses below the floor and,
        with a cut-off, dose outside the lateral reach).
    stats : dict
        Timings and counts: wall seconds (``setup_s``, ``beam<k>_s``, ``assemble_s``,
        ``total_s``), CPU seconds of the thread doing the work (``setup_cpu_s``,
        ``beam<k>_cpu_s`` split into ``_cpu_trace_s``, ``_cpu_near_s``, ``_cpu_far_s``,
        ``_cpu_csr_s``; ``assemble_cpu_s``), voxels reached / near per beam,
        ``nnz`` (and per beam ``_nnz_near``, ``_nnz_far``), dose-accounting fractions.
    """

    matrix: sp.csr_matrix
    dose_grid: Grid
    voxel_indices: np.ndarray
    beam_index: np.ndarray
    bev_x_mm: np.ndarray
    bev_y_mm: np.ndarray
    bixel_mm: float
    beams: list
    head_scatter: np.ndarray
    dropped_fraction: float
    stats: dict = field(default_factory=dict)

    @property
    def n_voxels(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_beamlets(self) -> int:
        return int(self.matrix.shape[1])

    def beamlet_table(self) -> np.ndarray:
        """Structured array (beam, x_mm, y_mm) per beamlet column."""
        t = np.zeros(self.n_beamlets, dtype=[("beam", "i4"), ("x_mm", "f8"), ("y_mm", "f8")])
        t["beam"], t["x_mm"], t["y_mm"] = self.beam_index, self.bev_x_mm, self.bev_y_mm
        return t

    def columns(self, beam: int) -> np.ndarray:
        """Column indices of one beam's beamlets."""
        return np.flatnonzero(self.beam_index == beam)

    def dose(self, weights, *, fractions: int = 1) -> Volume:
        """Dose on the dose grid (Gy): ``fractions × D @ weights``, 0 outside the voxel set.

        Parameters
        ----------
        weights : (n_beamlets,) array_like, non-negative MU-equivalent per fraction
        fractions : int, keyword-only
        """
        w = np.asarray(weights, dtype=np.float32).reshape(-1)
        if w.size != self.n_beamlets:
            raise InputError(f"weights must have {self.n_beamlets} values, got {w.size}")
        d = np.zeros(self.dose_grid.size, dtype=np.float32)
        d[self.voxel_indices] = (self.matrix @ w) * float(fractions)
        return Volume(d.reshape(self.dose_grid.shape), self.dose_grid)

    def fluence_maps(self, weights) -> list[tuple[np.ndarray, dict]]:
        """Per beam: the weights as a 2-D map (ny, nx) and its ``fluence_grid`` (bixel edges at iso)."""
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        out = []
        b = self.bixel_mm
        for k in range(len(self.beams)):
            cols = self.columns(k)
            ix = np.round(self.bev_x_mm[cols] / b - 0.5).astype(int)
            iy = np.round(self.bev_y_mm[cols] / b - 0.5).astype(int)
            x0, y0 = ix.min(), iy.min()
            m = np.zeros((iy.max() - y0 + 1, ix.max() - x0 + 1))
            m[iy - y0, ix - x0] = w[cols]
            grid = {"x_edges_mm": (x0 + np.arange(m.shape[1] + 1)) * b, "y_edges_mm": (y0 + np.arange(m.shape[0] + 1)) * b}
            out.append((m, grid))
        return out


def _target_points(structures: StructureSet, target: str | Sequence[str]) -> tuple[np.ndarray, float]:
    """LPS centres (n, 3) mm of the target voxels (the union over several targets; every k-th above
    200 000) and half the diagonal of a voxel of their grid, mm."""
    names = [target] if isinstance(target, str) else list(target)
    if not names:
        raise InputError("influence_matrix needs at least one target structure")
    pts, half = [], 0.0
    for name in names:
        s = structures[name]
        if s.is_empty:
            raise InputError(f"target structure {name!r} is empty")
        pts.append(s.grid.index_to_lps(np.argwhere(s.mask).astype(np.float64)))
        half = max(half, float(np.linalg.norm(s.grid.spacing)) / 2)
    p = np.concatenate(pts) if len(pts) > 1 else pts[0]
    if p.shape[0] > 200_000:
        p = p[:: int(np.ceil(p.shape[0] / 200_000))]
    return p, half


def _check_options(beams: list, bixel_mm: float, threshold: float, block_mm: float, cutoff_mm: float | None) -> float:
    """Refuse bad options (:class:`InputError`); returns ``bixel_mm`` as a float."""
    if not beams:
        raise InputError("influence_matrix needs at least one beam")
    b = float(bixel_mm)
    if not np.isfinite(b) or b <= 0:
        raise InputError(f"bixel_mm must be positive, got {bixel_mm!r}")
    if not (0 <= threshold < 1):
        raise InputError(f"threshold must be in [0, 1), got {threshold!r}")
    if not (np.isfinite(block_mm) and block_mm > 0):
        raise InputError(f"block_mm must be positive, got {block_mm!r}")
    if cutoff_mm is not None and not (cutoff_mm >= 0):
        raise InputError(f"cutoff_mm must be non-negative or None, got {cutoff_mm!r}")
    return b


def influence_matrix(
    ct: Volume, structures: StructureSet, beams: list[Beam], machine: Machine | None = None, *,
    dose_grid_mm: float | None = 3.0, bixel_mm: float = 5.0, target: str | Sequence[str] = "PTV", margin_mm: float = 5.0, voxels: str = "body",
    body: str | None = None, threshold: float = 2e-3, block_mm: float = 25.0, floor: float = 1e-3, cutoff_mm: float | None = None,
    near_mm: float = 30.0, hu_table: HUTable | None = None, patient_position: str = "HFS", measure_dropped: bool = True,
    compensate: bool = True, backend: str | None = "numpy", workers: int | None = None, progress: bool = False,
) -> InfluenceMatrix:
    """Pencil-beam dose-influence matrix of a set of beams (stages: :mod:`art.dose.influence_beam`).

    Parameters
    ----------
    ct : Volume
        Planning CT in HU.
    structures : StructureSet
        Must contain ``target`` and (for ``voxels="body"``) a BODY/EXTERNAL structure.
    beams : list of Beam
        Geometry only (gantry, collimator, couch, isocentre); segments are ignored.
    machine : Machine, optional
        Default: :func:`load_machine` ().
    dose_grid_mm : float or None, keyword-only
        Isotropic dose-grid spacing (mm; ``Grid.with_spacing`` of the CT grid); None = CT grid.
    bixel_mm : float, keyword-only
        Beamlet size at the isocentre plane (square), mm; bixel edges at multiples of it.
    target : str or sequence of str, keyword-only
        Structure(s) whose projection (plus ``margin_mm``) selects the beamlets (several: their union).
    voxels : {"body", "all"}, keyword-only
        Rows: dose-grid voxels inside the body (≥ 25 % occupancy) or all voxels.
    threshold : float, keyword-only
        Entries below ``threshold × (largest possible entry of the beam)`` are not
        stored individually; their dose is accounted per block (``block_mm``).
    block_mm : float, keyword-only
        Side of the square blocks of beamlets (rounded to whole bixels) over which the dose of the
        entries below the threshold is credited to the block: to the voxel's kept entries of that
        block (scaled), or to one entry on the block's central beamlet. Exact for fluences constant
        over each block; see :mod:`art.dose.entries`. ``compensate=False`` turns this off (plain
        thresholding, which drops ~20 % of the dose with the broad scatter kernels).
    floor : float, keyword-only
        Block masses below ``floor × threshold × peak`` are dropped (and counted in ``dropped_fraction``).
    cutoff_mm : float or None, keyword-only
        Voxels whose BEV position is more than this outside the beamlets' bounding box get no
        entries (their dose is counted as dropped); None (default): no cut-off.
    near_mm : float, keyword-only
        Voxels within this distance of the beamlets' bounding box get their radiological depth
        on a 2 mm ray lattice, the others (which only receive broad scatter) on a 5 mm lattice.
    compensate : bool, keyword-only
        Block-wise dose accounting (default True), see ``block_mm``.
    measure_dropped : bool, keyword-only
        Also measure the error of a random modulated test fluence (uniform in [0.3, 1.7] per beamlet,
        seed 0) against its exact dose: ``stats["modulated_error"]`` = Σ|stored − exact| / Σ exact over voxels and beams.
    backend : {"numpy", "cupy"} or None, keyword-only
        Array backend of the numeric core (ray tracing stays on the CPU); None = :func:`art.backend.backend_name`.
        The matrix is returned as a SciPy CSR either way.
    workers : int, keyword-only
        Beams computed in parallel threads (default: up to 2; 1 with CuPy).
    progress : bool, keyword-only
        Print one line per beam on stderr.

    Returns
    -------
    InfluenceMatrix
        ``dropped_fraction`` = (exact dose − stored dose) / exact dose for unit weights, summed over
        the voxels and beams (exact = the untruncated pencil-beam dose of the same kernel at the same voxels).
    """
    t_start, c_start = time.perf_counter(), time.thread_time()
    machine = load_machine() if machine is None else machine
    b = _check_options(beams, bixel_mm, threshold, block_mm, cutoff_mm)
    xp = get_namespace(backend or backend_name())
    kernel = fit_kernel(machine)
    setup = prepare(ct, structures, dose_grid_mm=dose_grid_mm, voxels=voxels, body=body, hu_table=hu_table)
    tgt_pts, tgt_half_diag = _target_points(structures, target)
    timings = {"setup_s": time.perf_counter() - t_start, "setup_cpu_s": time.thread_time() - c_start}
    wk, sk = kernel.at(kernel.depths_mm)
    ctx = BeamContext(setup=setup, kernel=kernel, machine=machine, xp=xp, target_lps=tgt_pts, target_half_diag_mm=tgt_half_diag,
                      kernel_w=wk, kernel_s=sk, bixel_mm=b, margin_mm=margin_mm, block_bixels=max(1, int(round(block_mm / b))),
                      threshold=threshold, floor=floor, cutoff_mm=cutoff_mm, near_mm=near_mm, patient_position=patient_position,
                      measure_dropped=measure_dropped, compensate=compensate, progress=progress, n_beams=len(beams))
    per_beam = _collect_beams(_compute_beams(ctx, beams, workers), b, timings)
    mat = _stack_blocks(per_beam, timings)
    timings["total_s"] = time.perf_counter() - t_start
    return _influence_result(mat, per_beam, ctx, beams, timings)


def _compute_beams(ctx: BeamContext, beams: list[Beam], workers: int | None) -> list[BeamColumns]:
    """:func:`beam_columns` of every beam, in beam order, with BLAS single-threaded.

    ``workers`` threads (default: 1 with CuPy, else up to 2, at most one per beam and CPU)
    share the beams; ``pool.map`` keeps the results in beam order.
    """
    if workers is None:
        workers = 1 if ctx.xp is not np else min(2, len(beams), os.cpu_count() or 1)
    with single_threaded_blas():
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda kb: beam_columns(*kb, ctx), enumerate(beams)))
        else:
            results = [beam_columns(k, bm, ctx) for k, bm in enumerate(beams)]
    return results


@dataclass
class _PerBeam:
    """The beams' results gathered in beam order (see :func:`_collect_beams`)."""

    mats: list  # CSR blocks (n_voxels, nb_k), float32
    totals: dict  # dose sums over voxels and beams, keys SUM_KEYS
    beam_index: list  # per beam (nb_k,) int32
    bev_x_mm: list  # per beam (nb_k,) float64 bixel centres, mm
    bev_y_mm: list
    head_scatter: list  # per beam S_c (float)
    bixel_mm: float


def _collect_beams(results: list[BeamColumns], bixel_mm: float, timings: dict) -> _PerBeam:
    """Take the CSR blocks out of the beams' results, sum their dose accounting in beam
    order, build the column tables (bixel centres in mm) and add the ``beam<k>_...``
    entries to ``timings``."""
    per = _PerBeam([], dict.fromkeys(SUM_KEYS, 0.0), [], [], [], [], bixel_mm)
    for k, res in enumerate(results):
        per.mats.append(res.mat)
        res.mat = None
        for key in per.totals:
            per.totals[key] += res.sums[key]
        per.beam_index.append(np.full(res.nb, k, np.int32))
        per.bev_x_mm.append((res.ix + 0.5) * bixel_mm)
        per.bev_y_mm.append((res.iy + 0.5) * bixel_mm)
        per.head_scatter.append(res.head_scatter)
        for key, val in res.stats.items():
            timings[f"beam{k}_{key}"] = val
    return per


def _stack_blocks(per: _PerBeam, timings: dict) -> sp.csr_matrix:
    """The per-beam CSRs (built in the workers) side by side: columns are grouped by beam.
    Frees the blocks; adds ``assemble_s`` and ``assemble_cpu_s`` to ``timings``."""
    t0 = time.perf_counter()
    c0 = time.thread_time()
    mats, per.mats = per.mats, []
    mat = _hstack_csr(mats)
    del mats
    timings["assemble_s"] = time.perf_counter() - t0
    timings["assemble_cpu_s"] = time.thread_time() - c0
    return mat


def _fraction(x: float, total: float) -> float:
    return float(x / total) if total > 0 else 0.0


def _influence_result(mat: sp.csr_matrix, per: _PerBeam, ctx: BeamContext, beams: list[Beam], timings: dict) -> InfluenceMatrix:
    """The :class:`InfluenceMatrix` with its tables, dose-accounting fractions and ``stats``."""
    tot = per.totals
    total = tot["full"] + tot["outside"]
    return InfluenceMatrix(
        matrix=mat,
        dose_grid=ctx.setup.dose_grid,
        voxel_indices=ctx.setup.voxel_indices,
        beam_index=np.concatenate(per.beam_index),
        bev_x_mm=np.concatenate(per.bev_x_mm),
        bev_y_mm=np.concatenate(per.bev_y_mm),
        bixel_mm=per.bixel_mm,
        beams=list(beams),
        head_scatter=np.asarray(per.head_scatter),
        dropped_fraction=_fraction(total - tot["stored"], total),
        stats={
            **timings,
            "nnz": int(mat.nnz),
            "backend": ctx.xp.__name__,
            "below_threshold_fraction": _fraction(tot["full"] - tot["kept"], total),
            "redistributed_fraction": _fraction(tot["stored"] - tot["kept"], total),
            "dropped_floor": _fraction(tot["dropped"], total),
            "dropped_outside_reach": _fraction(tot["outside"], total),
            "modulated_error": float(tot["test_err"] / tot["test_full"]) if tot["test_full"] > 0 else 0.0,
            "block_bixels": ctx.block_bixels,
        },
    )


def _hstack_csr(mats: list) -> sp.csr_matrix:
    """Side-by-side concatenation of CSR blocks with sorted indices (vectorised scatter;
    SciPy's ``hstack`` copies row by row and is several times slower here)."""
    if len(mats) == 1:
        return mats[0]
    n_rows = mats[0].shape[0]
    counts = [np.diff(m.indptr).astype(np.int64) for m in mats]
    nnz = int(sum(m.nnz for m in mats))
    n_cols = int(sum(m.shape[1] for m in mats))
    idx_dtype = np.int32 if nnz < 2**31 and n_cols < 2**31 else np.int64
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.sum(counts, axis=0), out=indptr[1:])
    data = np.empty(nnz, np.float32)
    indices = np.empty(nnz, idx_dtype)
    starts, col0s = [], []  # where each block's entries of each row go, and its first column
    start, col0 = indptr[:-1].copy(), 0
    for m, cnt in zip(mats, counts):
        starts.append(start.copy())
        col0s.append(col0)
        start += cnt
        col0 += m.shape[1]

    def scatter(k: int) -> None:  # the blocks' destinations are disjoint: any order, any thread
        m = mats[k]
        dest = np.repeat(starts[k] - m.indptr[:-1], counts[k])
        dest += np.arange(m.nnz, dtype=np.int64)
        data[dest] = m.data
        indices[dest] = m.indices + col0s[k]

    from art.threads import parallel

    parallel(scatter, range(len(mats)), most=2)  # NumPy releases the GIL here
    mat = sp.csr_matrix((data, indices, indptr.astype(idx_dtype)), shape=(n_rows, n_cols))
    mat.has_sorted_indices = True  # each block is sorted and the column offsets increase
    return mat
