"""Benchmark of leaf sequencing (art.delivery) on the demo patient.

The pelvis phantom (art_phantoms.pelvis.make_pelvis(seed=0)), the 7 beams of the default
protocol (gantry 0, 51, 103, 154, 206, 257, 309), influence matrix on a 3 mm grid with 5 mm
bixels. Beamlet weights from a quick bounded least-squares fit (PTV to 3 Gy per fraction,
rectum and bladder pulled down, a light smoothness term) — a stand-in for the full
optimiser, which takes minutes. Then, for each sequencing setting: sequence, recompute the
dose of the segments with the plan-dose engine, and compare it with the optimised dose
(``D @ w``) by gamma 3 %/2 mm (global, 10 % threshold, inside the body); the same after the
segment-weight refinement. Also the gamma of the full-engine dose of the (unsequenced)
fluence plan, which separates the engine's own matrix-vs-recalculation difference from the
sequencing loss. Prints a table and writes benchmarks/results/delivery.json.

Usage: ``.venv/bin/python benchmarks/bench_delivery.py [--levels 10 ...] [--methods xia-verhey sweep]``
Timings are wall-clock on a shared 2-core machine (other jobs running inflate them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

OUT = Path(__file__).resolve().parent / "results" / "delivery.json"
ANGLES = (0, 51, 103, 154, 206, 257, 309)


def quick_weights(im, ss, rx_per_fraction: float) -> np.ndarray:
    from scipy.optimize import lsq_linear

    from art.geometry import resample_mask

    def rows_of(name):
        m = resample_mask(ss[name].volume, im.dose_grid).array.reshape(-1)
        pos = np.full(im.dose_grid.size, -1)
        pos[im.voxel_indices] = np.arange(im.n_voxels)
        r = pos[np.flatnonzero(m)]
        return r[r >= 0]

    blocks, rhs = [], []
    for name, target, weight in (("PTV", rx_per_fraction, 1.0), ("Rectum", 0.0, 0.25), ("Bladder", 0.0, 0.15)):
        r = rows_of(name)
        blocks.append(weight * im.matrix[r])
        rhs.append(np.full(r.size, weight * target))
    # smoothness: differences of neighbouring beamlets in a beam
    b = im.bixel_mm
    ix = np.round(im.bev_x_mm / b - 0.5).astype(np.int64)
    iy = np.round(im.bev_y_mm / b - 0.5).astype(np.int64)
    key = {(int(k), int(x), int(y)): j for j, (k, x, y) in enumerate(zip(im.beam_index, ix, iy))}
    pairs = [(j, key[(int(k), int(x + dx), int(y + dy))]) for j, (k, x, y) in enumerate(zip(im.beam_index, ix, iy))
             for dx, dy in ((1, 0), (0, 1)) if (int(k), int(x + dx), int(y + dy)) in key]
    p = np.asarray(pairs)
    scale = 0.02 * float(np.asarray(im.matrix.sum(axis=0)).max()) / max(1, len(rows_of("PTV"))) ** 0.5
    sm = sp.csr_matrix((np.r_[np.ones(len(p)), -np.ones(len(p))] * scale, (np.r_[np.arange(len(p)), np.arange(len(p))], np.r_[p[:, 0], p[:, 1]])), shape=(len(p), im.n_beamlets))
    a = sp.vstack(blocks + [sm]).tocsr().astype(np.float64)
    y = np.concatenate(rhs + [np.zeros(len(p))])
    res = lsq_linear(a, y, bounds=(0, np.inf), lsmr_tol="auto", max_iter=300)
    return res.x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", type=int, nargs="+", default=[10])
    ap.add_argument("--methods", nargs="+", default=["xia-verhey", "sweep"])
    ap.add_argument("--no-refine", action="store_true")
    args = ap.parse_args()

    from art.delivery import check_plan, refine_segment_weights, sequence_plan
    from art.dose import dose, influence_matrix, load_machine
    from art.evaluate.gamma import gamma_index
    from art.geometry import resample_mask
    from art.plan import Beam, Plan
    from art_phantoms.pelvis import make_pelvis

    t0 = time.perf_counter()
    case = make_pelvis(seed=args.seed)
    ct, ss = case.ct, case.structures
    machine = load_machine()
    iso = ss["PTV"].centroid_lps()
    beams = [Beam(f"G{g:03d}", float(g), isocenter_lps=iso) for g in ANGLES]
    fractions, rx = 20, 60.0
    t = time.perf_counter()
    im = influence_matrix(ct, ss, beams, machine, dose_grid_mm=3.0, bixel_mm=5.0)
    t_im = time.perf_counter() - t
    print(f"influence matrix: {im.n_voxels} voxels x {im.n_beamlets} beamlets, {t_im:.1f} s", flush=True)
    t = time.perf_counter()
    w = quick_weights(im, ss, rx / fractions)
    t_w = time.perf_counter() - t
    d_opt = im.dose(w, fractions=fractions)
    body = resample_mask(ss["BODY"].volume, im.dose_grid).array
    ptv = resample_mask(ss["PTV"].volume, im.dose_grid).array
    print(f"weights: {t_w:.1f} s, PTV mean {d_opt.array[ptv].mean():.2f} Gy", flush=True)
    flu_beams = [Beam(b.name, b.gantry_deg, isocenter_lps=iso, fluence=f, fluence_grid=g) for b, (f, g) in zip(beams, im.fluence_maps(w))]
    flu_plan = Plan(flu_beams, fractions, machine.name, label="bench", prescription={"target": "PTV", "dose_gy": rx})

    def gamma(ev):
        r = gamma_index(d_opt, ev, dose_percent=3.0, distance_mm=2.0, threshold_percent=10.0, mask=body)
        return r

    res: dict = {
        "case": f"make_pelvis(seed={args.seed})",
        "beams": len(beams),
        "beamlets": im.n_beamlets,
        "dose_grid_shape": list(im.dose_grid.shape),
        "influence_s": round(t_im, 1),
        "weights_s": round(t_w, 1),
        "weights_note": "quick bounded least squares (PTV 3 Gy/fx, rectum/bladder down, smoothness), not the full optimiser",
        "runs": [],
    }
    t = time.perf_counter()
    d_flu = dose(ct, flu_plan, machine, dose_grid_mm=3.0, structures=ss)
    t_dose = time.perf_counter() - t
    g = gamma(d_flu)
    res["fluence_plan_engine_vs_matrix"] = {"gamma_pass_percent": round(g.pass_rate, 2), "mean_gamma": round(g.mean_gamma, 3), "dose_s": round(t_dose, 1)}
    print(f"fluence plan (engine) vs optimised (matrix): gamma {g.pass_rate:.2f} %  [{t_dose:.1f} s dose]", flush=True)
    for method in args.methods:
        for levels in args.levels:
            t = time.perf_counter()
            seq, st = sequence_plan(flu_plan, machine, levels=levels, method=method)
            t_seq = time.perf_counter() - t
            problems = check_plan(seq, machine)
            t = time.perf_counter()
            d_seq = dose(ct, seq, machine, dose_grid_mm=3.0, structures=ss)
            t_d = time.perf_counter() - t
            t = time.perf_counter()
            g = gamma(d_seq)
            t_g = time.perf_counter() - t
            run = {
                "method": method,
                "levels": levels,
                "segments": st["n_segments"],
                "segments_per_beam": st["segments_per_beam"],
                "total_mu_per_fraction": round(st["total_mu"], 1),
                "mu_per_beam": {k: round(v, 1) for k, v in st["mu_per_beam"].items()},
                "mu_dropped": round(st["mu_dropped"], 2),
                "deliverable": not problems,
                "problems": problems[:5],
                "sequencing_s": round(t_seq, 2),
                "dose_s": round(t_d, 1),
                "gamma_s": round(t_g, 1),
                "gamma_pass_percent": round(g.pass_rate, 2),
                "mean_gamma": round(g.mean_gamma, 3),
                "n_evaluated": g.n_evaluated,
                "ptv_mean_gy": round(float(d_seq.array[ptv].mean()), 2),
                "ptv_mean_opt_gy": round(float(d_opt.array[ptv].mean()), 2),
            }
            print(f"{method:>10} L={levels:3d}: {st['n_segments']:4d} segments, {st['total_mu']:7.1f} MU/fx, seq {t_seq:.2f} s, "
                  f"gamma {g.pass_rate:.2f} % (3%/2mm, 10%, body), PTV mean {run['ptv_mean_gy']} vs {run['ptv_mean_opt_gy']} Gy, deliverable={not problems}", flush=True)
            if not args.no_refine:
                t = time.perf_counter()
                ref, rst = refine_segment_weights(seq, im, w, machine)
                t_r = time.perf_counter() - t
                d_ref = dose(ct, ref, machine, dose_grid_mm=3.0, structures=ss)
                g2 = gamma(d_ref)
                run["refined"] = {"gamma_pass_percent": round(g2.pass_rate, 2), "mean_gamma": round(g2.mean_gamma, 3),
                                  "total_mu_per_fraction": round(rst["mu_after"], 1), "rms_before": round(rst["rms_before"], 4),
                                  "rms_after": round(rst["rms_after"], 4), "refine_s": round(t_r, 1),
                                  "deliverable": not check_plan(ref, machine), "ptv_mean_gy": round(float(d_ref.array[ptv].mean()), 2)}
                print(f"{'':>10}  refined: gamma {g2.pass_rate:.2f} %, {rst['mu_after']:.1f} MU/fx, rms {rst['rms_before']:.4f} -> {rst['rms_after']:.4f}, {t_r:.1f} s", flush=True)
            res["runs"].append(run)
    res.update({
        "total_s": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "note": "timings on a shared 2-core machine, inflated by other jobs",
    })
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
