"""Benchmark of the fluence-map optimiser (art.optimize.fmo).

Cases
-----
prostate   the demo patient (art_phantoms.make_pelvis(seed=0)), 7 beams,
           art.dose.influence_matrix on a 3 mm grid, 5 mm bixels, the DESIGN.md
           example protocol goals (60 Gy in 20).
cshape     the TG-119-style C-shape (art_phantoms.commissioning.c_shape), 9 beams,
           its own protocol (50 Gy in 25).
synthetic  the analytic cases of art.optimize.synthetic (no dose engine), for
           reference.

For each: matrix size, optimisation time (cold), a warm-started re-optimisation
on the same matrix (the best case for a daily re-plan), iterations per stage,
peak resident memory, goal values. Prints a table and writes
benchmarks/results/optimize.json.

Usage: ``.venv/bin/python benchmarks/bench_optimize.py [case ...]``
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from scipy import ndimage

from art.optimize.fmo import optimize_fluence
from art.optimize.protocol import Goal, Prescription, parse_metric
from art.optimize.voxels import build_structure_voxels

OUT = Path(__file__).parent / "results" / "optimize.json"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def neighbours_from_influence(im) -> np.ndarray:
    """Pairs of beamlets adjacent in the same beam (same BEV row or column)."""
    b = im.bixel_mm
    ix = np.round(im.bev_x_mm / b - 0.5).astype(np.int64)
    iy = np.round(im.bev_y_mm / b - 0.5).astype(np.int64)
    key = {(int(k), int(x), int(y)): j for j, (k, x, y) in enumerate(zip(im.beam_index, ix, iy))}
    pairs = []
    for j, (k, x, y) in enumerate(zip(im.beam_index, ix, iy)):
        for dx, dy in ((1, 0), (0, 1)):
            o = key.get((int(k), int(x + dx), int(y + dy)))
            if o is not None:
                pairs.append((j, o))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def distance_rows(im, structures, target: str) -> np.ndarray:
    from art.geometry import resample_mask

    s = structures[target]
    m = s.mask if s.grid.same_as(im.dose_grid) else resample_mask(s.volume, im.dose_grid).array
    dist = ndimage.distance_transform_edt(~m, sampling=im.dose_grid.spacing)
    return dist.ravel()[im.voxel_indices].astype(np.float32)


def run_optimisation(name, matrix, svs, goals, rx, *, neighbours=None, distance=None, extra=None) -> dict:
    rec: dict = {"case": name, "n_voxels": int(matrix.shape[0]), "n_beamlets": int(matrix.shape[1]), "nnz": int(matrix.nnz)}
    rec.update(extra or {})
    print(f"{name}: optimising {rec['n_voxels']} voxels x {rec['n_beamlets']} beamlets ({rec['nnz']} nnz)", flush=True)
    t = time.perf_counter()
    r = optimize_fluence(matrix, svs, goals, rx, beamlet_neighbours=neighbours, distance_to_target_mm=distance,
                         progress=lambda msg, f: print(f"  [{time.perf_counter() - t:6.1f} s] {msg}", flush=True))
    rec["cold_s"] = time.perf_counter() - t
    rec["cold"] = r.to_dict()
    t = time.perf_counter()
    r2 = optimize_fluence(matrix, svs, goals, rx, beamlet_neighbours=neighbours, distance_to_target_mm=distance, warm_start=r)
    rec["warm_s"] = time.perf_counter() - t
    rec["warm"] = r2.to_dict()
    rec["peak_rss_mb"] = peak_rss_mb()
    print(f"\n== {name}: {rec['n_voxels']} voxels x {rec['n_beamlets']} beamlets, {rec['nnz']} nnz")
    print(f"   cold {rec['cold_s']:.1f} s ({r.iterations} it, setup {r.setup_time_s:.1f} s, {r.n_voxels_used} voxels used); warm {rec['warm_s']:.1f} s ({r2.iterations} it); peak RSS {rec['peak_rss_mb']:.0f} MB")
    for s in r.stages:
        print(f"   stage {s.name:<11} {s.status:<10} {s.wall_time_s:6.1f} s {s.iterations:4d} it")
    for g in r.goals:
        print("   " + g.describe())
    return rec


def case_prostate() -> dict:
    from art_phantoms.pelvis import make_pelvis

    from art.dose.influence import influence_matrix
    from art.plan import Beam

    t = time.perf_counter()
    pc = make_pelvis(seed=0)
    t_ph = time.perf_counter() - t
    iso = pc.structures["PTV"].centroid_lps()
    angles = [0, 51, 103, 154, 206, 257, 309]
    beams = [Beam(f"B{i}", float(a), isocenter_lps=tuple(iso)) for i, a in enumerate(angles)]
    t = time.perf_counter()
    im = influence_matrix(pc.ct, pc.structures, beams, dose_grid_mm=3.0, bixel_mm=5.0, target="PTV", progress=True)
    t_im = time.perf_counter() - t
    rx = Prescription("PTV", 60.0, 20)
    matrix = (im.matrix * np.float32(rx.fractions)).tocsr()  # per fraction -> course
    names = ["PTV", "Rectum", "Bladder", "FemoralHead_L", "FemoralHead_R"]
    svs = build_structure_voxels(im, pc.structures, names=names)
    g = lambda s, m, p, lo=None, hi=None: Goal(s, parse_metric(m), at_least=lo, at_most=hi, priority=p)  # noqa: E731
    goals = [
        g("PTV", "D95%", 1, lo=57.0),
        g("PTV", "Dmax", 2, hi=64.2),
        g("Rectum", "V50Gy", 2, hi=20.0),
        g("Rectum", "V60Gy", 3, hi=5.0),
        g("Bladder", "V50Gy", 3, hi=25.0),
        g("FemoralHead_L", "Dmax", 3, hi=45.0),
        g("FemoralHead_R", "Dmax", 3, hi=45.0),
    ]
    return run_optimisation(
        "prostate (make_pelvis seed 0, 7 beams)", matrix, svs, goals, rx,
        neighbours=neighbours_from_influence(im), distance=distance_rows(im, pc.structures, "PTV"),
        extra={"phantom_s": t_ph, "influence_matrix_s": t_im},
    )


def case_cshape() -> dict:
    from art_phantoms.commissioning import c_shape

    from art.dose.influence import influence_matrix
    from art.plan import Beam

    cs = c_shape()
    p = cs.protocol
    beams = [Beam(f"B{i}", float(a), isocenter_lps=(0.0, 0.0, 0.0)) for i, a in enumerate(p.beams.gantry_angles)]
    t = time.perf_counter()
    im = influence_matrix(cs.ct, cs.structures, beams, dose_grid_mm=p.dose_grid_mm, bixel_mm=p.beams.bixel_mm, target=p.prescription.target, progress=True)
    t_im = time.perf_counter() - t
    matrix = (im.matrix * np.float32(p.prescription.fractions)).tocsr()
    svs = build_structure_voxels(im, cs.structures, names=["PTV", "Core"])
    return run_optimisation(
        "cshape (TG-119 easy, 9 beams)", matrix, svs, list(p.goals), p.prescription,
        neighbours=neighbours_from_influence(im), distance=distance_rows(im, cs.structures, "PTV"),
        extra={"influence_matrix_s": t_im},
    )


def case_synthetic(kind: str, n_beams: int) -> dict:
    from art.optimize.synthetic import synthetic_case

    c = synthetic_case(kind, n_beams=n_beams, grid_mm=3.0, bixel_mm=5.0, body_radius_mm=120.0, length_mm=100.0)
    rx = Prescription("PTV", 60.0, 20)
    g = lambda s, m, p, lo=None, hi=None: Goal(s, parse_metric(m), at_least=lo, at_most=hi, priority=p)  # noqa: E731
    if kind == "prostate":
        goals = [g("PTV", "D95%", 1, lo=57.0), g("PTV", "Dmax", 2, hi=64.2), g("Rectum", "V50Gy", 2, hi=20.0), g("Bladder", "V40Gy", 3, hi=20.0)]
    else:
        goals = [g("PTV", "D95%", 1, lo=57.0), g("PTV", "D10%", 2, hi=66.0), g("Core", "D10%", 2, hi=30.0)]
    return run_optimisation(f"synthetic {kind} ({n_beams} beams)", c.matrix, c.structures, goals, rx, neighbours=c.beamlet_neighbours, distance=c.distance_to_target_mm)


CASES = {
    "prostate": case_prostate,
    "cshape": case_cshape,
    "synthetic-prostate": lambda: case_synthetic("prostate", 7),
    "synthetic-cshape": lambda: case_synthetic("cshape", 9),
}


def main(argv: list[str]) -> int:
    wanted = argv or list(CASES)
    results = []
    for name in wanted:
        try:
            results.append(CASES[name]())
        except Exception as exc:  # a missing dependency or a failure is recorded, not faked
            print(f"\n== {name}: FAILED ({type(exc).__name__}: {exc})")
            traceback.print_exc()
            results.append({"case": name, "error": f"{type(exc).__name__}: {exc}"})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    OUT.write_text(json.dumps(doc, indent=2))
    print(f"\nwrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
