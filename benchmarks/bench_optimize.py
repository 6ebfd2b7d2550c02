"""Benchmark of the fluence-map optimiser (art.optimize.fmo).

Cases
-----
prostate   the demo patient (art_phantoms.make_pelvis(seed=0)), 7 beams,
           art.dose.influence_matrix on a 3 mm grid, 5 mm bixels, the shipped
           prostate protocol's goals (60 Gy in 20, docs/protocol.md).
cshape     the TG-119-style C-shape (art_phantoms.commissioning.c_shape), 9 beams,
           its own protocol (50 Gy in 25).
synthetic  the analytic cases of art.optimize.synthetic (no dose engine), for
           reference.

For each: matrix size, optimisation time (cold; wall and CPU), a warm-started
re-optimisation on the same matrix, and for the prostate a daily
re-optimisation: the matrix of fraction 1's anatomy (make_fraction truth),
started from the reference weights mapped onto its beamlets
(art.optimize.neighbours.transfer_weights); iterations per stage, peak
resident memory, goal values. Prints a table and writes
benchmarks/results/optimize.json (benchmarks/results/optimize_cvxpy.json with
ART_BENCH_METHOD=cvxpy, the reference method).

Wall times on a shared machine are inflated by other processes' load; the CPU
time (process_time) says what the work costs.

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

from art.optimize.fmo import optimize_fluence
from art.optimize.neighbours import distance_rows, neighbours_from_influence, transfer_weights
from art.protocol import Goal, Prescription, parse_metric
from art.optimize.voxels import build_structure_voxels

OUT = Path(__file__).parent / "results" / ("optimize.json" if os.environ.get("ART_BENCH_METHOD", "lbfgs") == "lbfgs" else "optimize_cvxpy.json")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


METHOD = os.environ.get("ART_BENCH_METHOD", "lbfgs")


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def show(label, r, wall, cpu):
    print(f"   {label}: {wall:.1f} s wall, {cpu:.1f} s CPU ({r.method}, {r.iterations} it, setup {r.setup_time_s:.1f} s, {r.n_voxels_used} voxels used), {len(r.goals) - len(r.failed)}/{len(r.goals)} goals met")
    for s in r.stages:
        print(f"     stage {s.name:<11} {s.status:<16} {s.wall_time_s:6.1f} s {s.iterations:4d} it")
    for g in r.goals:
        print("     " + g.describe())


def run_optimisation(name, matrix, svs, goals, rx, *, fractions=1, neighbours=None, distance=None, extra=None, daily=None) -> dict:
    """Cold optimisation, warm re-optimisation on the same matrix and (``daily``) on a daily matrix."""
    rec: dict = {"case": name, "method": METHOD, "n_voxels": int(matrix.shape[0]), "n_beamlets": int(matrix.shape[1]), "nnz": int(matrix.nnz)}
    rec.update(extra or {})
    print(f"{name}: optimising {rec['n_voxels']} voxels x {rec['n_beamlets']} beamlets ({rec['nnz']} nnz), method {METHOD}", flush=True)
    kw = dict(fractions=fractions, method=METHOD)
    t0 = time.perf_counter()
    r, rec["cold_s"], rec["cold_cpu_s"] = timed(lambda: optimize_fluence(
        matrix, svs, goals, rx, beamlet_neighbours=neighbours, distance_to_target_mm=distance, **kw,
        progress=lambda msg, f: print(f"  [{time.perf_counter() - t0:6.1f} s] {msg}", flush=True)))
    rec["cold"] = r.to_dict()
    r2, rec["warm_same_matrix_s"], rec["warm_same_matrix_cpu_s"] = timed(lambda: optimize_fluence(
        matrix, svs, goals, rx, beamlet_neighbours=neighbours, distance_to_target_mm=distance, warm_start=r, **kw))
    rec["warm_same_matrix"] = r2.to_dict()
    r3 = None
    if daily is not None:
        d_matrix, d_svs, d_nb, d_dist, w0 = daily(r.raw_weights)
        rec["daily_n_beamlets"] = int(d_matrix.shape[1])
        r3, rec["warm_daily_s"], rec["warm_daily_cpu_s"] = timed(lambda: optimize_fluence(
            d_matrix, d_svs, goals, rx, beamlet_neighbours=d_nb, distance_to_target_mm=d_dist, warm_start=w0, **kw))
        rec["warm_daily"] = r3.to_dict()
    rec["peak_rss_mb"] = peak_rss_mb()
    print(f"\n== {name}: {rec['n_voxels']} voxels x {rec['n_beamlets']} beamlets, {rec['nnz']} nnz; peak RSS {rec['peak_rss_mb']:.0f} MB")
    show("cold", r, rec["cold_s"], rec["cold_cpu_s"])
    show("warm (same matrix)", r2, rec["warm_same_matrix_s"], rec["warm_same_matrix_cpu_s"])
    if r3 is not None:
        show("warm (daily matrix, fraction 1)", r3, rec["warm_daily_s"], rec["warm_daily_cpu_s"])
    return rec


def case_prostate() -> dict:
    from art_phantoms.pelvis import make_fraction, make_pelvis

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
    names = ["PTV", "Rectum", "Bladder", "FemoralHead_L", "FemoralHead_R"]
    svs = build_structure_voxels(im, pc.structures, names=names)

    def daily(ref_weights):
        # the anatomy of fraction 1 (truth daily CT and structures), same beams: the daily re-plan's matrix
        tr = make_fraction(pc, fraction=1).truth
        dm = influence_matrix(tr.daily_ct, tr.structures, beams, dose_grid_mm=3.0, bixel_mm=5.0, target="PTV")
        d_svs = build_structure_voxels(dm, tr.structures, names=names)
        return dm.matrix, d_svs, neighbours_from_influence(dm), distance_rows(dm, tr.structures, "PTV"), transfer_weights(im, ref_weights, dm)

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
        "prostate (make_pelvis seed 0, 7 beams)", im.matrix, svs, goals, rx, fractions=rx.fractions,
        neighbours=neighbours_from_influence(im), distance=distance_rows(im, pc.structures, "PTV"),
        extra={"phantom_s": t_ph, "influence_matrix_s": t_im}, daily=daily,
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
    svs = build_structure_voxels(im, cs.structures, names=["PTV", "Core"])
    return run_optimisation(
        "cshape (TG-119 easy, 9 beams)", im.matrix, svs, list(p.goals), p.prescription, fractions=p.prescription.fractions,
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
