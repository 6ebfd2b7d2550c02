"""Benchmark: the collapsed-cone engine on the demo patient's plan (issue 19: ≤ 60 s on 2 cores, ≤ 4 GB).

Builds the demo patient (``art_phantoms.make_pelvis``, seed 0), makes its reference plan with the
workflow (7 beams, ~150 MLC segments; ~40 s, not timed) and computes the plan's dose with
``art.dose.ccc.dose`` on the 2.5 mm export grid (``art.final_dose.final_grid``), inside the BODY:
once cold (the engine's water calibration for the grid spacing included) and once warm. Prints
the wall and CPU times, the peak RSS, the machine's load average, and the CCC against the pencil
beam in the PTV (mean ratio; within-BODY 95th percentile |ΔD| in % of the prescription); writes
``benchmarks/results/ccc.json``.

Run: ``.venv/bin/python benchmarks/bench_ccc.py [--seed 0] [--backend numpy|cupy]``.
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


def _plan(seed: int):
    from art.protocol import parse_protocol
    from art.workflow import make_plan
    from art_phantoms import default_protocol_text, make_pelvis

    case = make_pelvis(seed=seed)
    protocol = parse_protocol(default_protocol_text())
    result = make_plan(case.ct, case.structures, protocol, correction=False)
    return case, protocol, result.plan


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None, help="numpy or cupy (default: art's)")
    args = ap.parse_args()

    import art.dose as pencil
    from art.dose import ccc
    from art.final_dose import final_grid
    from art.geometry import resample_mask

    case, protocol, plan = _plan(args.seed)
    grid = final_grid(case.ct.grid)
    n_seg = sum(len(b.segments) for b in plan.beams)
    print(f"plan: {len(plan.beams)} beams, {n_seg} segments; export grid {grid.shape} at {grid.spacing[0]} mm")
    load0 = os.getloadavg()[0]

    def run():
        return ccc.dose(case.ct, plan, dose_grid=grid, structures=case.structures, backend=args.backend)

    cold, wall_cold, cpu_cold = _timed(run)
    warm, wall_warm, cpu_warm = _timed(run)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    pb, wall_pb, _ = _timed(lambda: pencil.dose(case.ct, plan, dose_grid=grid, structures=case.structures))
    ptv = resample_mask(case.structures["PTV"].volume, grid, mode="nearest").array
    body = resample_mask(case.structures.external().volume, grid, mode="nearest").array
    rx = float(protocol.prescription.dose_gy)
    diff = np.abs(warm.array - pb.array)[body & (np.maximum(warm.array, pb.array) > 0.1 * rx)]
    res = {
        "beams": len(plan.beams), "segments": n_seg, "grid_shape": list(grid.shape), "grid_mm": grid.spacing[0],
        "backend": args.backend or "default", "wall_cold_s": round(wall_cold, 2), "cpu_cold_s": round(cpu_cold, 2),
        "wall_warm_s": round(wall_warm, 2), "cpu_warm_s": round(cpu_warm, 2), "peak_rss_mb": round(peak_mb, 1),
        "pencil_beam_wall_s": round(wall_pb, 2), "ptv_mean_ccc_over_pb": round(float(warm.array[ptv].mean() / pb.array[ptv].mean()), 4),
        "body_p95_abs_diff_percent_of_rx": round(float(np.percentile(diff, 95) / rx * 100), 2),
        "load_avg_1min_start": round(load0, 2), "load_avg_1min_end": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
    }  # fmt: skip
    for k, v in res.items():
        print(f"  {k:<36} {v}")
    out = Path(__file__).resolve().parent / "results" / "ccc.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
