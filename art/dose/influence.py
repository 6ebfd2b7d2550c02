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
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from art.dose._blas import single_threaded_blas
from art.dose._setup import equivalent_square, prepare
from art.dose.beam_geometry import BeamFrame
from art.backend import to_numpy
from art.dose.engine import beam_points, fluence_dose, kernel_terms
from art.dose.entries import block_layout, chunk_entries, far_entries, nearest_beamlet_map
from art.dose.kernel import fit_kernel
from art.dose.machine import HUTable, Machine, load_machine
from art.errors import InputError
from art.geometry import Grid, Volume
from art.plan import Beam
from art.structures import StructureSet

#: voxels × beamlets per chunk of the per-beam computation (cache-sized temporaries)
_CHUNK_ELEMS = 3_000_000


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


def _target_points(structures: StructureSet, target: str) -> np.ndarray:
    s = structures[target]
    if s.is_empty:
        raise InputError(f"target structure {target!r} is empty")
    idx = np.argwhere(s.mask)
    if idx.shape[0] > 200_000:
        idx = idx[:: int(np.ceil(idx.shape[0] / 200_000))]
    return s.grid.index_to_lps(idx.astype(np.float64)), float(np.linalg.norm(s.grid.spacing)) / 2


def select_bixels(frame: BeamFrame, target_lps: np.ndarray, *, bixel_mm: float, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Bixels (integer BEV indices ix, iy; bixel ``ix`` spans ``[ix b, (ix+1) b]``) whose
    area comes within ``margin_mm`` of the target's projection at the isocentre plane."""
    u, v, _ = frame.to_bev(target_lps)
    b = bixel_mm
    offs = np.arange(-margin_mm, margin_mm + 1e-9, max(b / 2, 1e-3))
    if offs[-1] < margin_mm:
        offs = np.append(offs, margin_mm)
    keys = set()
    for du in offs:
        for dv in offs:
            if du * du + dv * dv > margin_mm * margin_mm + 1e-9 and margin_mm > 0:
                continue
            ix = np.floor((u + du) / b).astype(np.int64)
            iy = np.floor((v + dv) / b).astype(np.int64)
            keys.update(zip(iy.tolist(), ix.tolist()))
    arr = np.array(sorted(keys), dtype=np.int64).reshape(-1, 2)
    return arr[:, 1], arr[:, 0]  # ix, iy sorted by y then x


def influence_matrix(
    ct: Volume,
    structures: StructureSet,
    beams: list[Beam],
    machine: Machine | None = None,
    *,
    dose_grid_mm: float | None = 3.0,
    bixel_mm: float = 5.0,
    target: str = "PTV",
    margin_mm: float = 5.0,
    voxels: str = "body",
    body: str | None = None,
    threshold: float = 2e-3,
    block_mm: float = 25.0,
    floor: float = 1e-3,
    cutoff_mm: float | None = None,
    near_mm: float = 30.0,
    hu_table: HUTable | None = None,
    patient_position: str = "HFS",
    measure_dropped: bool = True,
    compensate: bool = True,
    backend: str | None = "numpy",
    workers: int | None = None,
    progress: bool = False,
) -> InfluenceMatrix:
    """Pencil-beam dose-influence matrix of a set of beams.

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
    target : str, keyword-only
        Structure whose projection (plus ``margin_mm``) selects the beamlets.
    voxels : {"body", "all"}, keyword-only
        Rows: dose-grid voxels inside the body (≥ 25 % occupancy) or all voxels.
    threshold : float, keyword-only
        Entries below ``threshold × (largest possible entry of the beam)`` are not
        stored individually; their dose is accounted per block (``block_mm``).
    block_mm : float, keyword-only
        Side of the square blocks of beamlets (rounded to whole bixels) over which
        the dose of the entries below the threshold is credited to the block:
        to the voxel's kept entries of that block (scaled), or to one entry on the
        block's central beamlet. Exact for fluences constant over each block; see
        :mod:`art.dose.entries`. ``compensate=False`` turns this off (plain
        thresholding, which drops ~20 % of the dose with the broad scatter kernels).
    floor : float, keyword-only
        Block masses below ``floor × threshold × peak`` are dropped (and counted in
        ``dropped_fraction``).
    cutoff_mm : float or None, keyword-only
        Voxels whose BEV position is more than this outside the beamlets' bounding
        box get no entries (their dose is counted as dropped); None (default): no cut-off.
    near_mm : float, keyword-only
        Voxels within this distance of the beamlets' bounding box get their
        radiological depth on a 2 mm ray lattice, the others (which only receive
        broad scatter) on a 5 mm lattice.
    compensate : bool, keyword-only
        Block-wise dose accounting (default True), see ``block_mm``.
    measure_dropped : bool, keyword-only
        Also measure the error of a random modulated test fluence (uniform in
        [0.3, 1.7] per beamlet, seed 0) against its exact dose:
        ``stats["modulated_error"]`` = Σ|stored − exact| / Σ exact over voxels and beams.
    backend : {"numpy", "cupy"} or None, keyword-only
        Array backend of the numeric core (ray tracing stays on the CPU);
        None = :func:`art.backend.backend_name`. The matrix is returned as a SciPy CSR either way.
    workers : int, keyword-only
        Beams computed in parallel threads (default: up to 2; 1 with CuPy).
    progress : bool, keyword-only
        Print one line per beam on stderr.

    Returns
    -------
    InfluenceMatrix
        ``dropped_fraction`` = (exact dose − stored dose) / exact dose for unit
        weights, summed over the voxels and beams (exact = the untruncated pencil-beam
        dose of the same kernel at the same voxels).
    """
    t_start = time.perf_counter()
    c_start = time.thread_time()
    if machine is None:
        machine = load_machine()
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
    from art.backend import backend_name, get_namespace

    xp = get_namespace(backend or backend_name())
    kernel = fit_kernel(machine)
    setup = prepare(ct, structures, dose_grid_mm=dose_grid_mm, voxels=voxels, body=body, hu_table=hu_table)
    tgt_pts, tgt_half_diag = _target_points(structures, target)
    n_vox = setup.voxel_indices.size
    beam_index, bx, by, sc_list = [], [], [], []
    timings = {"setup_s": time.perf_counter() - t_start, "setup_cpu_s": time.thread_time() - c_start}
    from scipy.special import erf

    wk, sk = kernel.at(kernel.depths_mm)
    k_blk = max(1, int(round(block_mm / b)))

    def one_beam(k: int, beam: Beam) -> dict:
        t0 = time.perf_counter()
        c0 = time.thread_time()
        frame = BeamFrame.of(beam, patient_position=patient_position)
        ix, iy = select_bixels(frame, tgt_pts, bixel_mm=b, margin_mm=margin_mm + tgt_half_diag)
        lay = block_layout(ix, iy, b, k_blk)
        nb = ix.size
        bx0, bx1 = (ix.min()) * b, (ix.max() + 1) * b
        by0, by1 = (iy.min()) * b, (iy.max() + 1) * b
        sc = float(machine.head_scatter(equivalent_square(bx1 - bx0, by1 - by0)))
        u, v, z = frame.to_bev(setup.points)
        front = np.isfinite(u) & (z > 0)
        out_x = np.maximum(bx0 - u, u - bx1)
        out_y = np.maximum(by0 - v, v - by1)
        outside = np.maximum(out_x, out_y)
        reach = front if cutoff_mm is None else front & (outside <= cutoff_mm)
        ridx = np.flatnonzero(reach)
        near = outside[ridx] <= near_mm
        # radiological depth: fine lattice near the beamlets, coarse for the scatter-only voxels
        parts = []
        for sel, step in ((near, 2.0), (~near, 5.0)):
            ii = ridx[sel]
            if ii.size:
                parts.append((ii, beam_points(setup.density, frame, setup.points[ii], lateral_step_mm=step, bev=(u[ii], v[ii], z[ii]))))
        order = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        pu = np.concatenate([p[1].u for p in parts]) if parts else np.zeros(0, np.float32)
        pv = np.concatenate([p[1].v for p in parts]) if parts else np.zeros(0, np.float32)
        amps, sigs = [], []
        for _, p in parts:
            a_, s_ = kernel_terms(kernel, p)
            amps.append(a_)
            sigs.append(s_)
        amp = np.concatenate(amps) * np.float32(sc) if parts else np.zeros((0, kernel.n_components), np.float32)
        sig = np.concatenate(sigs) if parts else np.zeros((0, kernel.n_components), np.float32)
        t_trace = time.perf_counter() - t0
        c_trace = time.thread_time() - c0
        c_near = c_far = 0.0
        nnz_near = nnz_far = 0
        # the largest entry any voxel can get from a beamlet of this beam
        zmin = float(np.min(z[ridx])) if ridx.size else kernel.sad_mm
        peak = (kernel.sad_mm / zmin) ** 2 * np.max(np.sum(wk * erf(b / (2 * np.sqrt(2) * sk * kernel.sad_mm / zmin)) ** 2, axis=1))
        thr = float(threshold * peak * sc)
        test_w = np.random.default_rng(k).uniform(0.3, 1.7, nb).astype(np.float32) if measure_dropped else None
        chunk = max(256, int(_CHUNK_ELEMS // max(nb, lay.mask.size, 1)))
        res = {"rows": [], "cols": [], "vals": [], "full": 0.0, "kept": 0.0, "stored": 0.0, "dropped": 0.0, "test_full": 0.0, "test_err": 0.0}
        n_near = int(np.count_nonzero(near))
        nearest = nearest_beamlet_map(lay)
        a0 = 0
        while a0 < order.size:
            e0 = min(order.size, a0 + chunk)
            if a0 < n_near < e0:
                e0 = n_near
            q = (amp[a0:e0], sig[a0:e0], pu[a0:e0], pv[a0:e0])
            if xp is not np:
                q = tuple(xp.asarray(t) for t in q)
            c1 = time.thread_time()
            if a0 < n_near:
                ce = chunk_entries(*q, lay, thr=thr, floor=floor * thr, redistribute=compensate, test_weights=test_w)
                c_near += time.thread_time() - c1
                nnz_near += int(ce.rows.shape[0])
            else:
                ce = far_entries(*q, lay, nearest, floor=floor * thr, redistribute=compensate, test_weights=test_w)
                c_far += time.thread_time() - c1
                nnz_far += int(ce.rows.shape[0])
            rows = order[a0:e0][to_numpy(ce.rows)]
            res["rows"].append(rows.astype(np.int32))
            res["cols"].append(to_numpy(ce.cols).astype(np.int32))
            res["vals"].append(to_numpy(ce.vals).astype(np.float32))
            for key, val in (("full", ce.full), ("kept", ce.kept), ("stored", ce.stored), ("dropped", ce.dropped), ("test_full", ce.test_full), ("test_err", ce.test_abs_err)):
                res[key] += val
            a0 = e0
        if measure_dropped and cutoff_mm is not None:
            oidx = np.flatnonzero(front & ~reach)[::8]
            if oidx.size:
                opts = beam_points(setup.density, frame, setup.points[oidx], lateral_step_mm=5.0)
                oamp, osig = kernel_terms(kernel, opts)
                res["outside"] = 8.0 * sc * float(fluence_dose(oamp, osig, opts.u, opts.v, lay.x_edges, lay.y_edges, lay.mask).sum(dtype=np.float64))
        res.setdefault("outside", 0.0)
        c1 = time.thread_time()
        res["mat"] = _assemble_csr(res.pop("rows"), res.pop("cols"), res.pop("vals"), (n_vox, nb))
        res["cpu_csr"] = time.thread_time() - c1
        res.update(nb=nb, ix=ix, iy=iy, sc=sc, n_reach=ridx.size, n_near=n_near, time=time.perf_counter() - t0, trace=t_trace,
                   cpu=time.thread_time() - c0, cpu_trace=c_trace, cpu_near=c_near, cpu_far=c_far, nnz_near=nnz_near, nnz_far=nnz_far)
        if progress:
            print(f"  dose matrix: beam {k + 1}/{len(beams)} ({beam.name}): {nb} beamlets, {ridx.size} voxels, {res['time']:.1f} s", file=sys.stderr)
        return res

    if workers is None:
        workers = 1 if xp is not np else min(2, len(beams), os.cpu_count() or 1)
    with single_threaded_blas():
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda kb: one_beam(*kb), enumerate(beams)))
        else:
            results = [one_beam(k, bm) for k, bm in enumerate(beams)]
    tot = dict.fromkeys(("full", "kept", "stored", "dropped", "outside", "test_full", "test_err"), 0.0)
    col0 = 0
    mats = []
    for k, res in enumerate(results):
        mats.append(res.pop("mat"))
        for key in tot:
            tot[key] += res[key]
        beam_index.append(np.full(res["nb"], k, np.int32))
        bx.append((res["ix"] + 0.5) * b)
        by.append((res["iy"] + 0.5) * b)
        sc_list.append(res["sc"])
        col0 += res["nb"]
        timings[f"beam{k}_s"] = res["time"]
        timings[f"beam{k}_trace_s"] = res["trace"]
        for key in ("cpu", "cpu_trace", "cpu_near", "cpu_far", "cpu_csr"):
            timings[f"beam{k}_{key}_s"] = res[key]
        for key in ("n_reach", "n_near", "nnz_near", "nnz_far"):
            timings[f"beam{k}_{key}"] = res[key]
    del results
    t0 = time.perf_counter()
    c0 = time.thread_time()
    # per-beam CSRs (built in the workers) side by side: columns are grouped by beam
    mat = _hstack_csr(mats)
    del mats
    timings["assemble_s"] = time.perf_counter() - t0
    timings["assemble_cpu_s"] = time.thread_time() - c0
    timings["total_s"] = time.perf_counter() - t_start
    total = tot["full"] + tot["outside"]

    def frac(x: float) -> float:
        return float(x / total) if total > 0 else 0.0

    return InfluenceMatrix(
        matrix=mat,
        dose_grid=setup.dose_grid,
        voxel_indices=setup.voxel_indices,
        beam_index=np.concatenate(beam_index),
        bev_x_mm=np.concatenate(bx),
        bev_y_mm=np.concatenate(by),
        bixel_mm=b,
        beams=list(beams),
        head_scatter=np.asarray(sc_list),
        dropped_fraction=frac(total - tot["stored"]),
        stats={
            **timings,
            "nnz": int(mat.nnz),
            "backend": xp.__name__,
            "below_threshold_fraction": frac(tot["full"] - tot["kept"]),
            "redistributed_fraction": frac(tot["stored"] - tot["kept"]),
            "dropped_floor": frac(tot["dropped"]),
            "dropped_outside_reach": frac(tot["outside"]),
            "modulated_error": float(tot["test_err"] / tot["test_full"]) if tot["test_full"] > 0 else 0.0,
            "block_bixels": k_blk,
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
    start = indptr[:-1].copy()  # where the next block's entries of each row go
    col0 = 0
    for m, cnt in zip(mats, counts):
        shift = start - m.indptr[:-1]
        dest = np.repeat(shift, cnt)
        dest += np.arange(m.nnz, dtype=np.int64)
        data[dest] = m.data
        indices[dest] = m.indices + col0
        start += cnt
        col0 += m.shape[1]
        del dest
    mat = sp.csr_matrix((data, indices, indptr.astype(idx_dtype)), shape=(n_rows, n_cols))
    mat.has_sorted_indices = True  # each block is sorted and the column offsets increase
    return mat


def _assemble_csr(rows: list, cols: list, vals: list, shape: tuple[int, int]) -> sp.csr_matrix:
    """Canonical CSR (sorted indices, no duplicates) from per-chunk COO pieces without duplicates.

    The pieces come in ascending-row runs, so a stable (Timsort) sort by row is cheap;
    the columns inside each row are then sorted by SciPy.
    """
    n_rows, n_cols = shape
    if not rows:
        return sp.csr_matrix(shape, dtype=np.float32)
    r = np.concatenate(rows)
    counts = np.bincount(r, minlength=n_rows)
    idx_dtype = np.int32 if r.size < 2**31 and n_cols < 2**31 else np.int64
    indptr = np.zeros(n_rows + 1, idx_dtype)
    np.cumsum(counts, out=indptr[1:])
    order = np.argsort(r, kind="stable")
    del r
    indices = np.concatenate(cols)[order].astype(idx_dtype, copy=False)
    data = np.concatenate(vals)[order]
    del order
    mat = sp.csr_matrix((data, indices, indptr), shape=shape)
    mat.has_sorted_indices = False
    mat.sort_indices()
    return mat
