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

from art.dose._setup import equivalent_square, prepare
from art.dose.beam_geometry import BeamFrame
from art.dose.engine import beam_points, beamlet_block, fluence_dose, kernel_terms
from art.dose.kernel import fit_kernel, gaussian_bin_integrals
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
        Dose not stored (threshold + lateral cut-off) / full pencil-beam dose, for unit weights.
    stats : dict
        Timings (s) and counts.
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
    cutoff_mm: float = 60.0,
    hu_table: HUTable | None = None,
    patient_position: str = "HFS",
    measure_dropped: bool = True,
    compensate: bool = True,
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
        Entries below ``threshold × (largest possible entry of the beam)`` are dropped.
    cutoff_mm : float, keyword-only
        Lateral reach: voxels whose BEV position is more than this outside the
        beamlets' bounding box get no entries.
    compensate : bool, keyword-only
        Row-sum-preserving truncation (default): in every voxel row of a beam, the
        kept entries are scaled so that their sum equals the full pencil-beam sum
        over that beam's beamlets. The dose of a uniform fluence is then exact and
        the broad scatter of dropped entries is credited to the nearby beamlets
        that were kept (an approximation whose error for modulated fluences is
        second order; ``stats["truncated_fraction"]`` is the share before compensation).
    measure_dropped : bool, keyword-only
        Compute the dropped dose fraction exactly (costs a little extra time).
    workers : int, keyword-only
        Beams computed in parallel threads (default: up to 2).
    progress : bool, keyword-only
        Print one line per beam on stderr.

    Returns
    -------
    InfluenceMatrix
    """
    t_start = time.perf_counter()
    if machine is None:
        machine = load_machine()
    if not beams:
        raise InputError("influence_matrix needs at least one beam")
    b = float(bixel_mm)
    if not np.isfinite(b) or b <= 0:
        raise InputError(f"bixel_mm must be positive, got {bixel_mm!r}")
    if not (0 <= threshold < 1):
        raise InputError(f"threshold must be in [0, 1), got {threshold!r}")
    kernel = fit_kernel(machine)
    setup = prepare(ct, structures, dose_grid_mm=dose_grid_mm, voxels=voxels, body=body, hu_table=hu_table)
    tgt_pts, tgt_half_diag = _target_points(structures, target)
    n_vox = setup.voxel_indices.size
    rows_all, cols_all, vals_all = [], [], []
    beam_index, bx, by, sc_list = [], [], [], []
    stored = full = outside = truncated = 0.0
    col0 = 0
    timings = {"setup_s": time.perf_counter() - t_start}
    from scipy.special import erf

    wk, sk = kernel.at(kernel.depths_mm)

    def one_beam(k: int, beam: Beam) -> dict:
        t0 = time.perf_counter()
        frame = BeamFrame.of(beam, patient_position=patient_position)
        ix, iy = select_bixels(frame, tgt_pts, bixel_mm=b, margin_mm=margin_mm + tgt_half_diag)
        x0, y0 = ix.min(), iy.min()
        ex = (x0 + np.arange(ix.max() - x0 + 2)) * b
        ey = (y0 + np.arange(iy.max() - y0 + 2)) * b
        col_x, col_y = ix - x0, iy - y0
        nb = ix.size
        sc = float(machine.head_scatter(equivalent_square(ex[-1] - ex[0], ey[-1] - ey[0])))
        u, v, z = frame.to_bev(setup.points)
        reach = (z > 0) & (u >= ex[0] - cutoff_mm) & (u <= ex[-1] + cutoff_mm) & (v >= ey[0] - cutoff_mm) & (v <= ey[-1] + cutoff_mm)
        ridx = np.flatnonzero(reach)
        pts = beam_points(setup.density, frame, setup.points[ridx])
        amp, sig = kernel_terms(kernel, pts)
        amp *= sc
        # the largest entry any voxel can get from a beamlet of this beam
        zmin = float(pts.z.min()) if ridx.size else kernel.sad_mm
        peak = (kernel.sad_mm / zmin) ** 2 * np.max(np.sum(wk * erf(b / (2 * np.sqrt(2) * sk * kernel.sad_mm / zmin)) ** 2, axis=1))
        thr = threshold * peak * sc
        chunk = max(256, int(2_000_000 // max(nb, 1)))
        bmask = np.zeros((ey.size - 1, ex.size - 1), np.float32)
        bmask[col_y, col_x] = 1.0
        n_entry = amp.shape[1] if not compensate else min(2, amp.shape[1])
        exf, eyf = ex.astype(np.float32), ey.astype(np.float32)
        from scipy.spatial import cKDTree

        tree = cKDTree(np.column_stack([(ix + 0.5) * b, (iy + 0.5) * b]))
        res = {"rows": [], "cols": [], "vals": [], "stored": 0.0, "full": 0.0, "truncated": 0.0, "outside": 0.0}
        for a0 in range(0, ridx.size, chunk):
            e0 = min(ridx.size, a0 + chunk)
            uu, vv = pts.u[a0:e0], pts.v[a0:e0]
            row_full = np.zeros(e0 - a0, np.float64)
            gxs, gys = [], []
            ub = np.zeros(e0 - a0, np.float32)
            for i in range(amp.shape[1]):
                gx = gaussian_bin_integrals(uu, sig[a0:e0, i], exf) * amp[a0:e0, i : i + 1]
                gy = gaussian_bin_integrals(vv, sig[a0:e0, i], eyf)
                # exact sum over this beam's beamlets, all kernel components
                row_full += np.einsum("nx,nx->n", gy @ bmask, gx)
                if i < n_entry:
                    gxs.append(gx)
                    gys.append(gy)
                    ub += gx.max(axis=1) * gy.max(axis=1)
            # rows that may hold an entry above the threshold get the full block
            near = np.flatnonzero(ub >= thr) if threshold > 0 else np.arange(e0 - a0)
            blk = None
            for gx, gy in zip(gxs, gys):
                term = gx[near][:, col_x] * gy[near][:, col_y]
                blk = term if blk is None else blk + term
            if blk is None:
                blk = np.zeros((0, nb), np.float32)
            keep = blk >= thr
            r, c = np.nonzero(keep)
            r = near[r]
            vals = blk[keep] if blk.size else np.zeros(0, np.float32)
            if compensate:
                # every other voxel with dose keeps its largest entry (nearest beamlet)
                has = np.zeros(e0 - a0, bool)
                has[r] = True
                er = np.flatnonzero(~has & (row_full > 0))
                if er.size:
                    _, j = tree.query(np.column_stack([uu[er], vv[er]]))
                    ev = sum(gx[er, col_x[j]] * gy[er, col_y[j]] for gx, gy in zip(gxs, gys))
                    r = np.concatenate([r, er])
                    c = np.concatenate([c, j])
                    vals = np.concatenate([vals, np.maximum(ev, 1e-30)])
                row_kept = np.bincount(r, weights=vals, minlength=e0 - a0)
                fac = np.where(row_kept > 0, row_full / np.maximum(row_kept, 1e-30), 0.0)
                res["truncated"] += float(row_full.sum() - row_kept.sum())
                vals = vals * fac[r]
            res["rows"].append((ridx[a0:e0][r]).astype(np.int32))
            res["cols"].append(c.astype(np.int32))
            res["vals"].append(vals.astype(np.float32))
            res["stored"] += float(vals.sum(dtype=np.float64))
            res["full"] += float(row_full.sum())
        if measure_dropped and ridx.size < n_vox:
            # dose beyond the lateral reach, estimated on every 8th such voxel
            oidx = np.flatnonzero(~reach & (z > 0))[::8]
            if oidx.size:
                opts = beam_points(setup.density, frame, setup.points[oidx], lateral_step_mm=5.0)
                oamp, osig = kernel_terms(kernel, opts)
                res["outside"] = 8.0 * sc * float(fluence_dose(oamp, osig, opts.u, opts.v, ex, ey, bmask).sum(dtype=np.float64))
        res.update(nb=nb, ix=ix, iy=iy, sc=sc, n_reach=ridx.size, time=time.perf_counter() - t0)
        if progress:
            print(f"  dose matrix: beam {k + 1}/{len(beams)} ({beam.name}): {nb} beamlets, {ridx.size} voxels, {res['time']:.1f} s", file=sys.stderr)
        return res

    if workers is None:
        workers = min(2, len(beams), os.cpu_count() or 1)
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda kb: one_beam(*kb), enumerate(beams)))
    else:
        results = [one_beam(k, bm) for k, bm in enumerate(beams)]
    for k, res in enumerate(results):
        rows_all.extend(res["rows"])
        cols_all.extend([c + col0 for c in res["cols"]])
        vals_all.extend(res["vals"])
        stored += res["stored"]
        full += res["full"]
        truncated += res["truncated"]
        outside += res["outside"]
        beam_index.append(np.full(res["nb"], k, np.int32))
        bx.append((res["ix"] + 0.5) * b)
        by.append((res["iy"] + 0.5) * b)
        sc_list.append(res["sc"])
        col0 += res["nb"]
        timings[f"beam{k}_s"] = res["time"]
    del results
    t0 = time.perf_counter()
    rows = np.concatenate(rows_all) if rows_all else np.zeros(0, np.int32)
    cols = np.concatenate(cols_all) if cols_all else np.zeros(0, np.int32)
    vals = np.concatenate(vals_all) if vals_all else np.zeros(0, np.float32)
    del rows_all, cols_all, vals_all
    mat = sp.csr_matrix((vals, (rows, cols)), shape=(n_vox, col0), dtype=np.float32)
    mat.sum_duplicates()
    timings["assemble_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    total = full + outside
    dropped = (total - stored) / total if total > 0 else 0.0
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
        dropped_fraction=float(dropped),
        stats={**timings, "nnz": int(mat.nnz), "dropped_threshold": float((full - stored) / total) if total else 0.0, "truncated_fraction": float((truncated if compensate else full - stored) / total) if total else 0.0, "dropped_outside_reach": float(outside / total) if total else 0.0},
    )
