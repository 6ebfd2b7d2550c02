"""Benchmark: the whole demo (``art demo``) and ``art replan`` per stage (issue 8).

Runs :func:`art.jobs.demo_job` (demo patient → reference plan → daily CBCT → adapted plan)
into a temporary folder, prints the time of every stage and the total, whether the
scheduled plan misses a goal the adapted plan meets (adaptation matters), and the
goal table; writes ``benchmarks/results/workflow.json``.

Run: ``.venv/bin/python benchmarks/bench_workflow.py [--seed 0] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="keep the demo output here")
    args = ap.parse_args()

    from art.jobs import demo_job, goal_comparison_table

    tmp = Path(tempfile.mkdtemp(prefix="art-bench-demo-"))
    out = tmp / "demo"
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    cpu0 = time.process_time()
    summary = demo_job(out, seed=args.seed, show=True)
    wall = time.perf_counter() - t
    cpu = time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    plans = summary["adaptive"]["plans"]
    sched = {(g["structure"], g["metric"]): g["met"] for g in plans["scheduled"]["goals"]}
    adap = {(g["structure"], g["metric"]): g["met"] for g in plans["adapted"]["goals"]}
    rescued = [f"{s} {m}" for (s, m), ok in adap.items() if ok and not sched[(s, m)]]
    replan_stages = {k: v for k, v in summary["timings_s"].items() if k.startswith("replan: ")}
    print("\nstage times (s):")
    for k, v in summary["timings_s"].items():
        print(f"  {k:<55} {v:8.1f}")
    print(f"\ndemo total wall {wall:.0f} s (CPU {cpu:.0f} s, load average at start {load0:.1f}), "
          f"art replan {sum(replan_stages.values()):.0f} s, peak RSS {peak:.0f} MB")
    print(goal_comparison_table(summary))
    print(f"goals the scheduled plan misses and the adapted plan meets: {rescued or 'none'}")
    res = {
        "benchmark": "workflow",
        "seed": args.seed,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_start": load0,
        "demo_wall_s": round(wall, 1),
        "demo_cpu_s": round(cpu, 1),
        "replan_wall_s": round(sum(replan_stages.values()), 1),
        "peak_rss_mb": round(peak, 1),
        "timings_s": summary["timings_s"],
        "adaptation_rescues": rescued,
        "recommendation": summary["adaptive"]["recommendation"],
        "reference_priority1_met": summary["reference"]["priority1_met"],
        "adapted_priority1_met": summary["adaptive"]["priority1_met"],
        "independent_check": summary["adaptive"]["independent_check"],
    }
    dst = Path(__file__).resolve().parent / "results" / "workflow.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(res, indent=2))
    print(f"wrote {dst}")
    if args.keep:
        shutil.copytree(out, args.keep, dirs_exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
