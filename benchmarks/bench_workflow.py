"""Benchmark: the whole demo (``art demo``) and ``art replan`` per stage (issue 8), and delivered vs reported (issue 15).

Runs :func:`art.jobs.demo_job` (demo patient → reference plan → daily CBCT → adapted plan)
into a temporary folder, prints the time of every stage and the total, peak memory, whether
the scheduled plan misses a goal the adapted plan meets (adaptation matters), and the
goal table; writes ``benchmarks/results/workflow.json``.

**Reported vs exported**: every reported goal of the reference and adapted plans against the
test-side independent DVH (``tests/independent_dvh.py``: pydicom, no art code) of the exported
RTDOSE.dcm + RTSTRUCT.dcm.

**Delivered vs reported**: the exported adapted RT Plan is recomputed (same engine, same
export grid) on the phantom's truth of the day (the true daily CT and true structures that
``art phantom`` writes, never seen by ``art replan``) and its goals evaluated as ``art replan``
evaluates them; the difference true − reported per goal (Gy, or % / cc for volume goals)
measures registration, contour propagation, synthetic-CT and evaluation errors together.
Target: every priority-1 target goal within 1 % of the prescription.

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
    res["reported_vs_exported"] = reported_vs_exported(out, summary)
    res["delivered_vs_reported"] = delivered_vs_reported(out, summary)
    dst = Path(__file__).resolve().parent / "results" / "workflow.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(res, indent=2))
    print(f"wrote {dst}")
    if args.keep:
        shutil.copytree(out, args.keep, dirs_exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)


def reported_vs_exported(demo: Path, summary: dict) -> dict:
    """Every reported goal of the reference and adapted plans against the independent DVH (tests/independent_dvh.py)
    of the exported RTDOSE.dcm + RTSTRUCT.dcm (issue 15's done-when: within 0.5 Gy, same verdicts)."""
    import sys
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from tests.independent_dvh import evaluate_files

    goals = tomllib.loads((demo / "patient" / "protocol.toml").read_text())["goals"]
    plans = {"reference": summary["reference"]["plans"]["reference"]["goals"], "adapted": summary["adaptive"]["plans"]["adapted"]["goals"]}
    out = {}
    for name, reported in plans.items():
        ind = evaluate_files(demo / name / "RTDOSE.dcm", demo / name / "RTSTRUCT.dcm", goals)
        rows = [{"structure": r["structure"], "metric": r["metric"], "unit": r["unit"], "reported": r["value"], "independent": round(i["value"], 4),
                 "difference": round(r["value"] - i["value"], 4), "met_reported": r["met"], "met_independent": i["met"]}
                for r, i in zip(reported, ind)]  # fmt: skip
        worst = max(abs(x["difference"]) for x in rows if x["unit"] == "Gy")
        same = all(x["met_reported"] == x["met_independent"] for x in rows)
        print(f"{name}: reported vs independent DVH of the exported files: largest difference {worst:.3f} Gy, same verdicts: {same}")
        out[name] = {"goals": rows, "largest_difference_gy": worst, "same_verdicts": same}
    return out


def delivered_vs_reported(demo: Path, summary: dict) -> dict:
    """The adapted RT Plan recomputed on the day's true CT with the true structures, goal by goal against the report."""
    from art.dose import load_machine
    from art.final_dose import evaluate, evaluation_structures, final_dose
    from art.io.rtplan import read_rtplan
    from art.io.rtdose import read_rtdose
    from art.protocol import load_protocol
    from art_phantoms.write import load_truth

    machine = load_machine()
    protocol = load_protocol(demo / "reference" / "protocol.toml")
    truth = load_truth(demo / "patient", 1)
    plan = read_rtplan(demo / "adapted" / "RTPLAN.dcm", machine=machine)
    plan.fractions = int(protocol.prescription.fractions)
    grid = read_rtdose(demo / "adapted" / "RTDOSE.dcm").grid  # the same export grid
    structures = evaluation_structures(truth.structures)
    true_goals = evaluate(final_dose(truth.daily_ct, plan, machine, structures, grid), structures, protocol)
    reported = summary["adaptive"]["plans"]["adapted"]["goals"]
    rx = float(protocol.prescription.dose_gy)
    target_types = {s.name for s in truth.structures if s.roi_type.upper() in ("PTV", "CTV", "GTV")}
    rows = []
    print(f"\ndelivered (true anatomy) vs reported, adapted plan (prescription {rx:g} Gy):")
    print(f"  {'P':>2} {'structure':<14} {'metric':<8} {'reported':>9} {'true':>9} {'true-rep':>9}  unit")
    for r, t in zip(reported, true_goals):
        diff = float(t.value) - float(r["value"])
        row = {"structure": r["structure"], "metric": r["metric"], "priority": r["priority"], "unit": r["unit"],
               "reported": r["value"], "true": round(float(t.value), 4), "difference": round(diff, 4),
               "met_reported": r["met"], "met_true": bool(t.met)}  # fmt: skip
        if r["unit"] == "Gy":
            row["difference_percent_of_prescription"] = round(100.0 * diff / rx, 3)
        rows.append(row)
        print(f"  {r['priority']:>2} {r['structure']:<14} {r['metric']:<8} {r['value']:9.3f} {t.value:9.3f} {diff:+9.3f}  {r['unit']}"
              f"{'' if t.met == r['met'] else '  (verdict differs)'}")  # fmt: skip
    p1_targets = [r for r in rows if r["priority"] == 1 and r["structure"] in target_types and r["unit"] == "Gy"]
    within = all(abs(r["difference_percent_of_prescription"]) <= 1.0 for r in p1_targets)
    print(f"priority-1 target goals within 1 % of the prescription: {within} "
          f"(largest {max((abs(r['difference_percent_of_prescription']) for r in p1_targets), default=0.0):.2f} %)")  # fmt: skip
    return {"goals": rows, "priority1_targets_within_1_percent": within}


if __name__ == "__main__":
    main()
