"""One beam's columns of the dose-influence matrix, stage by stage.

:func:`beam_columns` is what :func:`art.dose.influence.influence_matrix` runs for
each beam (in a worker thread when there are several workers). Its stages:

1. **beam geometry** (:func:`beam_geometry`): the beamlets whose bixel comes within
   the margin of the target's projection (:func:`select_bixels`), their block layout
   and the head-scatter factor of their bounding box;
2. **ray tracing** (:func:`voxel_reach`, :func:`trace_rays`): BEV position of every
   dose voxel, the voxels the beam reaches, their radiological depth (2 mm ray
   lattice near the beamlets, 5 mm for the scatter-only voxels);
3. **kernel evaluation** (:func:`kernel_samples`): per-voxel pencil-beam amplitudes
   and widths, near voxels first;
4. **block accounting** (:func:`entry_threshold`, :func:`block_entries`): the sparse
   entries chunk by chunk with the block-wise dose accounting of
   :mod:`art.dose.entries` (and, with a cut-off, :func:`dose_outside_reach`);
5. **CSR assembly** (:func:`_assemble_csr`): the beam's block, rows = the dose voxels,
   columns = the beam's beamlets (ordered by BEV y, then x); with a machine off-axis
   profile each column is scaled by the fluence ratio at its beamlet centre's radius
   (:func:`off_axis_columns`; the dose accounting sums stay those of unit fluence).

The machine's off-axis softening multiplies each voxel's kernel amplitudes
(:func:`art.dose.engine.softening_factor`), as in the plan dose.

All arrays are NumPy here; with ``xp`` = CuPy the chunks are moved to the device
for the entries and the results brought back.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from art.backend import to_numpy
from art.dose._setup import DoseSetup, equivalent_square
from art.dose.beam_geometry import BeamFrame
from art.dose.engine import BeamPoints, beam_points, fluence_dose, kernel_terms, softening_factor
from art.dose.entries import BlockLayout, block_layout, chunk_entries, far_entries, nearest_beamlet_map
from art.dose.kernel import PencilKernel
from art.dose.machine import Machine
from art.plan import Beam

#: voxels × beamlets per chunk of the per-beam computation (cache-sized temporaries)
_CHUNK_ELEMS = 3_000_000

#: the dose sums of a beam (Gy per unit weights, summed over voxels), see :class:`BeamColumns`
SUM_KEYS = ("full", "kept", "stored", "dropped", "outside", "test_full", "test_err")


@dataclass(frozen=True, eq=False)
class BeamContext:
    """What every beam of one influence-matrix build shares (read-only in the workers).

    Attributes
    ----------
    setup : DoseSetup
        Dose grid, density (relative electron density on the CT grid, (z, y, x)), the
        dose voxels' flat indices ``voxel_indices`` (n_voxels,) and LPS centres
        ``points`` (n_voxels, 3), mm.
    kernel : PencilKernel
    machine : Machine
    xp : module
        Array namespace of the entries (``numpy`` or ``cupy``).
    target_lps : (n_target, 3) float64
        LPS centres (mm) of the target's voxels (subsampled above 200 000).
    target_half_diag_mm : float
        Half the diagonal of a target voxel, mm (added to ``margin_mm``).
    kernel_w, kernel_s : (n_depths, n_components) float32
        Kernel weights and widths (mm at the isocentre) at the kernel's tabulated depths.
    bixel_mm, margin_mm : float
        Beamlet size and target margin at the isocentre plane, mm.
    block_bixels : int
        Side of the accounting blocks, in bixels.
    threshold, floor : float
        Relative entry threshold and block-mass floor (see ``influence_matrix``).
    cutoff_mm : float or None
    near_mm : float
    patient_position : str
    measure_dropped, compensate, progress : bool
    n_beams : int
        Number of beams of the build (for the progress lines).
    """

    setup: DoseSetup
    kernel: PencilKernel
    machine: Machine
    xp: Any
    target_lps: np.ndarray
    target_half_diag_mm: float
    kernel_w: np.ndarray
    kernel_s: np.ndarray
    bixel_mm: float
    margin_mm: float
    block_bixels: int
    threshold: float
    floor: float
    cutoff_mm: float | None
    near_mm: float
    patient_position: str
    measure_dropped: bool
    compensate: bool
    progress: bool
    n_beams: int


@dataclass
class BeamColumns:
    """One beam's block of the influence matrix and its bookkeeping.

    Attributes
    ----------
    mat : scipy.sparse.csr_matrix, (n_voxels, nb), float32
        Gy per fraction per unit beamlet weight; None once taken by the caller.
    ix, iy : (nb,) int64
        Integer BEV bixel indices of the beam's beamlets (bixel ``ix`` spans ``[ix b, (ix+1) b]``).
    head_scatter : float
        S_c of the beamlets' bounding box.
    sums : dict
        Dose sums over the voxels for unit weights (keys :data:`SUM_KEYS`): ``full``
        (untruncated), ``kept`` (entries above the threshold), ``stored`` (after the
        block accounting), ``dropped`` (block masses below the floor), ``outside``
        (beyond the cut-off, estimated), ``test_full`` and ``test_err`` (the random
        modulated test fluence's exact dose and Σ|stored − exact|).
    stats : dict
        Timings (wall and thread-CPU seconds) and counts, keyed by the suffix of the
        ``beam<k>_...`` entries of ``InfluenceMatrix.stats``, in that order.
    """

    mat: sp.csr_matrix | None
    ix: np.ndarray
    iy: np.ndarray
    head_scatter: float
    sums: dict
    stats: dict

    @property
    def nb(self) -> int:
        return int(self.ix.size)


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


# ------------------------------------------------------------ the driver of one beam
def beam_columns(k: int, beam: Beam, ctx: BeamContext) -> BeamColumns:
    """The influence-matrix columns of beam ``k`` (geometry only; segments ignored).

    Parameters
    ----------
    k : int
        Index of the beam in the build (seeds its random test fluence).
    beam : Beam
    ctx : BeamContext

    Returns
    -------
    BeamColumns
        CSR block (n_voxels, nb) float32 in Gy per fraction per unit weight, the
        beamlets' BEV indices, head scatter, dose sums and timings.
    """
    t0 = time.perf_counter()
    c0 = time.thread_time()
    geom = beam_geometry(beam, ctx)
    reach = voxel_reach(geom, ctx.setup.points, cutoff_mm=ctx.cutoff_mm, near_mm=ctx.near_mm)
    samples = kernel_samples(trace_rays(ctx.setup, geom.frame, reach), ctx.kernel, geom.head_scatter, reach.n_near, machine=ctx.machine)
    t_trace = time.perf_counter() - t0
    c_trace = time.thread_time() - c0
    thr = entry_threshold(reach, ctx, geom.head_scatter)
    nb = geom.nb
    test_w = np.random.default_rng(k).uniform(0.3, 1.7, nb).astype(np.float32) if ctx.measure_dropped else None
    chunk = max(256, int(_CHUNK_ELEMS // max(nb, geom.layout.mask.size, 1)))
    ent = block_entries(samples, geom.layout, nearest_beamlet_map(geom.layout), thr=thr, floor_gy=ctx.floor * thr,
                        compensate=ctx.compensate, test_weights=test_w, xp=ctx.xp, chunk=chunk)
    ent.sums["outside"] = dose_outside_reach(reach, geom, ctx)
    c1 = time.thread_time()
    mat = off_axis_columns(_assemble_csr(ent.rows, ent.cols, ent.vals, (ctx.setup.voxel_indices.size, nb)), geom, ctx)
    cpu_csr = time.thread_time() - c1
    wall = time.perf_counter() - t0
    stats = {"s": wall, "trace_s": t_trace, "cpu_s": time.thread_time() - c0, "cpu_trace_s": c_trace, "cpu_near_s": ent.cpu_near,
             "cpu_far_s": ent.cpu_far, "cpu_csr_s": cpu_csr, "n_reach": reach.ridx.size, "n_near": reach.n_near,
             "nnz_near": ent.nnz_near, "nnz_far": ent.nnz_far}
    if ctx.progress:
        print(f"  dose matrix: beam {k + 1}/{ctx.n_beams} ({beam.name}): {nb} beamlets, {reach.ridx.size} voxels, {wall:.1f} s", file=sys.stderr)
    return BeamColumns(mat=mat, ix=geom.ix, iy=geom.iy, head_scatter=geom.head_scatter, sums=ent.sums, stats=stats)


# ------------------------------------------------------------------ 1. beam geometry
@dataclass
class BeamGeometry:
    """The beamlets of one beam.

    Attributes
    ----------
    frame : BeamFrame
    ix, iy : (nb,) int64 BEV bixel indices, sorted by y then x
    layout : BlockLayout
        The beamlets on their bounding box, padded to whole accounting blocks.
    bbox_mm : (x0, x1, y0, y1)
        The beamlets' bounding box at the isocentre plane, mm.
    head_scatter : float
        S_c of that bounding box (equivalent square).
    """

    frame: BeamFrame
    ix: np.ndarray
    iy: np.ndarray
    layout: BlockLayout
    bbox_mm: tuple
    head_scatter: float

    @property
    def nb(self) -> int:
        return int(self.ix.size)


def beam_geometry(beam: Beam, ctx: BeamContext) -> BeamGeometry:
    """Beam frame, the beamlets that cover the target (plus margin), their block layout
    and the head scatter of their bounding box (a beamlet weight of 1 includes it)."""
    frame = BeamFrame.of(beam, patient_position=ctx.patient_position)
    b = ctx.bixel_mm
    ix, iy = select_bixels(frame, ctx.target_lps, bixel_mm=b, margin_mm=ctx.margin_mm + ctx.target_half_diag_mm)
    lay = block_layout(ix, iy, b, ctx.block_bixels)
    bx0, bx1 = (ix.min()) * b, (ix.max() + 1) * b
    by0, by1 = (iy.min()) * b, (iy.max() + 1) * b
    sc = float(ctx.machine.head_scatter(equivalent_square(bx1 - bx0, by1 - by0)))
    return BeamGeometry(frame=frame, ix=ix, iy=iy, layout=lay, bbox_mm=(bx0, bx1, by0, by1), head_scatter=sc)


# -------------------------------------------------------------------- 2. ray tracing
@dataclass
class VoxelReach:
    """Where the dose voxels lie for one beam.

    Attributes
    ----------
    u, v : (n_voxels,) float64
        BEV position at the isocentre plane, mm (non-finite at the source plane).
    z : (n_voxels,) float64
        Axial distance from the source, mm.
    front : (n_voxels,) bool
        In front of the source.
    reach : (n_voxels,) bool
        Voxels that get entries (``front``, and within ``cutoff_mm`` of the bounding box).
    ridx : (n_reach,) int64
        ``flatnonzero(reach)``.
    near : (n_reach,) bool
        Reached voxels within ``near_mm`` of the beamlets' bounding box.
    """

    u: np.ndarray
    v: np.ndarray
    z: np.ndarray
    front: np.ndarray
    reach: np.ndarray
    ridx: np.ndarray
    near: np.ndarray

    @property
    def n_near(self) -> int:
        return int(np.count_nonzero(self.near))


def voxel_reach(geom: BeamGeometry, points: np.ndarray, *, cutoff_mm: float | None, near_mm: float) -> VoxelReach:
    """BEV coordinates of the dose voxels ``points`` (n_voxels, 3) LPS mm, the voxels the
    beam reaches and those near its beamlets (distance outside the bounding box, mm)."""
    u, v, z = geom.frame.to_bev(points)
    front = np.isfinite(u) & (z > 0)
    bx0, bx1, by0, by1 = geom.bbox_mm
    out_x = np.maximum(bx0 - u, u - bx1)
    out_y = np.maximum(by0 - v, v - by1)
    outside = np.maximum(out_x, out_y)
    reach = front if cutoff_mm is None else front & (outside <= cutoff_mm)
    ridx = np.flatnonzero(reach)
    near = outside[ridx] <= near_mm
    return VoxelReach(u=u, v=v, z=z, front=front, reach=reach, ridx=ridx, near=near)


def trace_rays(setup: DoseSetup, frame: BeamFrame, reach: VoxelReach) -> list[tuple[np.ndarray, BeamPoints]]:
    """Radiological depth (and density) of the reached voxels: fine lattice near the
    beamlets, coarse for the scatter-only voxels.

    Returns
    -------
    list of (indices, BeamPoints)
        Near voxels first, then the far ones (each part only when not empty);
        ``indices`` index the dose voxels, ``BeamPoints`` holds (n,) float32 arrays.
    """
    u, v, z, ridx, near = reach.u, reach.v, reach.z, reach.ridx, reach.near
    parts = []
    for sel, step in ((near, 2.0), (~near, 5.0)):
        ii = ridx[sel]
        if ii.size:
            parts.append((ii, beam_points(setup.density, frame, setup.points[ii], lateral_step_mm=step, bev=(u[ii], v[ii], z[ii]))))
    return parts


# --------------------------------------------------------------- 3. kernel evaluation
@dataclass
class KernelSamples:
    """Pencil-beam terms of the reached voxels, near voxels first.

    Attributes
    ----------
    order : (n,) int64
        Dose-voxel index of each sample.
    u, v : (n,) float32
        BEV position at the isocentre plane, mm.
    amp : (n, n_components) float32
        Kernel amplitudes, Gy/MU, head scatter included.
    sig : (n, n_components) float32
        Kernel widths at the isocentre plane, mm.
    n_near : int
        The first ``n_near`` samples are the near voxels.
    """

    order: np.ndarray
    u: np.ndarray
    v: np.ndarray
    amp: np.ndarray
    sig: np.ndarray
    n_near: int


def kernel_samples(parts: list, kernel: PencilKernel, head_scatter: float, n_near: int, *, machine: Machine | None = None) -> KernelSamples:
    """Concatenate the traced parts (see :func:`trace_rays`) and evaluate the kernel's
    amplitudes (× ``head_scatter``, × the ``machine``'s off-axis softening factor when it has one)
    and widths at each voxel."""
    order = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    pu = np.concatenate([p[1].u for p in parts]) if parts else np.zeros(0, np.float32)
    pv = np.concatenate([p[1].v for p in parts]) if parts else np.zeros(0, np.float32)
    amps, sigs = [], []
    for _, p in parts:
        a_, s_ = kernel_terms(kernel, p)
        soft = None if machine is None else softening_factor(machine, p)
        if soft is not None:
            a_ = a_ * soft[:, None]
        amps.append(a_)
        sigs.append(s_)
    amp = np.concatenate(amps) * np.float32(head_scatter) if parts else np.zeros((0, kernel.n_components), np.float32)
    sig = np.concatenate(sigs) if parts else np.zeros((0, kernel.n_components), np.float32)
    return KernelSamples(order=order, u=pu, v=pv, amp=amp, sig=sig, n_near=n_near)


# ---------------------------------------------------------------- 4. block accounting
def entry_threshold(reach: VoxelReach, ctx: BeamContext, head_scatter: float) -> float:
    """Absolute entry threshold, Gy/MU: ``threshold`` × the largest entry any reached
    voxel can get from a beamlet of this beam (at the smallest source distance) × S_c."""
    from scipy.special import erf

    kernel, b, wk, sk = ctx.kernel, ctx.bixel_mm, ctx.kernel_w, ctx.kernel_s
    zmin = float(np.min(reach.z[reach.ridx])) if reach.ridx.size else kernel.sad_mm
    peak = (kernel.sad_mm / zmin) ** 2 * np.max(np.sum(wk * erf(b / (2 * np.sqrt(2) * sk * kernel.sad_mm / zmin)) ** 2, axis=1))
    return float(ctx.threshold * peak * head_scatter)


@dataclass
class BeamEntries:
    """Sparse entries of one beam as COO pieces (one per chunk), with their accounting.

    Attributes
    ----------
    rows : list of (m,) int32 dose-voxel indices
    cols : list of (m,) int32 beamlet columns within the beam
    vals : list of (m,) float32 Gy/MU
    sums : dict
        ``full``, ``kept``, ``stored``, ``dropped``, ``test_full``, ``test_err`` summed over the chunks.
    cpu_near, cpu_far : float
        Thread-CPU seconds in the near and far entries.
    nnz_near, nnz_far : int
    """

    rows: list
    cols: list
    vals: list
    sums: dict
    cpu_near: float = 0.0
    cpu_far: float = 0.0
    nnz_near: int = 0
    nnz_far: int = 0


def block_entries(samples: KernelSamples, layout: BlockLayout, nearest: np.ndarray, *, thr: float, floor_gy: float,
                  compensate: bool, test_weights: np.ndarray | None, xp: Any, chunk: int) -> BeamEntries:
    """Entries of all reached voxels, chunk by chunk (no chunk straddles the near/far split):
    :func:`art.dose.entries.chunk_entries` for the near voxels (threshold ``thr``, block
    masses below ``floor_gy`` dropped), :func:`art.dose.entries.far_entries` for the far
    ones (one entry on the ``nearest`` (ny, nx) beamlet)."""
    ent = BeamEntries([], [], [], dict.fromkeys(("full", "kept", "stored", "dropped", "test_full", "test_err"), 0.0))
    order, n_near = samples.order, samples.n_near
    a0 = 0
    while a0 < order.size:
        e0 = min(order.size, a0 + chunk)
        if a0 < n_near < e0:
            e0 = n_near
        q = (samples.amp[a0:e0], samples.sig[a0:e0], samples.u[a0:e0], samples.v[a0:e0])
        if xp is not np:
            q = tuple(xp.asarray(t) for t in q)
        c1 = time.thread_time()
        if a0 < n_near:
            ce = chunk_entries(*q, layout, thr=thr, floor=floor_gy, redistribute=compensate, test_weights=test_weights)
            ent.cpu_near += time.thread_time() - c1
            ent.nnz_near += int(ce.rows.shape[0])
        else:
            ce = far_entries(*q, layout, nearest, floor=floor_gy, redistribute=compensate, test_weights=test_weights)
            ent.cpu_far += time.thread_time() - c1
            ent.nnz_far += int(ce.rows.shape[0])
        rows = order[a0:e0][to_numpy(ce.rows)]
        ent.rows.append(rows.astype(np.int32))
        ent.cols.append(to_numpy(ce.cols).astype(np.int32))
        ent.vals.append(to_numpy(ce.vals).astype(np.float32))
        for key, val in (("full", ce.full), ("kept", ce.kept), ("stored", ce.stored), ("dropped", ce.dropped), ("test_full", ce.test_full), ("test_err", ce.test_abs_err)):
            ent.sums[key] += val
        a0 = e0
    return ent


def dose_outside_reach(reach: VoxelReach, geom: BeamGeometry, ctx: BeamContext) -> float:
    """Dose (Gy/MU, unit weights, summed over voxels) of the voxels beyond the cut-off,
    estimated on every 8th of them; 0 without a cut-off or without ``measure_dropped``."""
    if ctx.measure_dropped and ctx.cutoff_mm is not None:
        oidx = np.flatnonzero(reach.front & ~reach.reach)[::8]
        if oidx.size:
            setup, lay = ctx.setup, geom.layout
            opts = beam_points(setup.density, geom.frame, setup.points[oidx], lateral_step_mm=5.0)
            oamp, osig = kernel_terms(ctx.kernel, opts)
            soft = softening_factor(ctx.machine, opts)
            if soft is not None:
                oamp = oamp * soft[:, None]
            return 8.0 * geom.head_scatter * float(fluence_dose(oamp, osig, opts.u, opts.v, lay.x_edges, lay.y_edges, lay.mask).sum(dtype=np.float64))
    return 0.0


# -------------------------------------------------------------------- 5. CSR assembly
def off_axis_columns(mat: sp.csr_matrix, geom: BeamGeometry, ctx: BeamContext) -> sp.csr_matrix:
    """The beam's block with each column scaled by the machine's off-axis fluence ratio at its beamlet
    centre's radius (isocentre plane); unchanged when the machine's profile is flat."""
    if not ctx.machine.has_off_axis_fluence:
        return mat
    b = ctx.bixel_mm
    ratio = ctx.machine.off_axis_ratio(np.hypot((geom.ix + 0.5) * b, (geom.iy + 0.5) * b)).astype(np.float32)
    mat.data *= ratio[mat.indices]
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
