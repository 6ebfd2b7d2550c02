"""Benchmark: the course — dose accumulation over the fractions (issue 20, ``art course``).

Builds a course of a digital patient (tests/course/truth.py :func:`build_course`: the coarse phantom of
tests/node/replan_case.py, seed ``--seed``, planned by ``art plan``, and one ``art replan`` per CBCT for
``--fractions`` fractions, 2–3 minutes each on 2 cores), or reuses one (``--course DIR``), then reports:

* ``art course`` on all fractions (:func:`art.course.job.course_job`): wall time by stage;
* **adding one fraction** to a course of the others: reading the fraction folder
  (:func:`~art.course.fraction.read_fraction`) and mapping its dose by both methods
  (:func:`~art.course.accumulate.add_fraction`) — target ≤ 10 s on 2 cores — and, beside it, the goal
  update (the new fraction's goals and the cumulative goals, from the planning structures' polygons);
* **the truth check** (issue item 4): the cumulative dose through art's registrations vs through the
  phantom's true deformations, gamma 3 %/2 mm within the body above 10 % of the delivered prescription
  (target ≥ 95 %) and the goal differences (Gy) at the full course's scale.

The machine is shared: times are inflated by other work running at the same time (load average recorded).

Run: ``.venv/bin/python benchmarks/bench_course.py [--fractions 5] [--seed 3] [--course DIR] [--grid-mm 2.5]``.
Writes ``benchmarks/results/bench_course.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_ADD_S = 10.0


def _course(args) -> tuple[dict, Path | None]:
    """The course to measure (reused or built) and the temporary folder to remove afterwards (None to keep)."""
    from tests.course.truth import build_course, existing_course

    if args.course:
        root = Path(args.course)
        found = existing_course(root) if root.exists() else None
        if found is not None and len(found["days"]) >= args.fractions:
            print(f"reusing the course in {root} ({args.fractions} of {len(found['days'])} fractions)")
            return {**found, "days": found["days"][: args.fractions]}, None
        if root.exists() and any(root.iterdir()):
            raise SystemExit(f"{root} holds no course of {args.fractions} fractions and is not empty")
        return build_course(root, fractions=args.fractions, seed=args.seed), None
    tmp = Path(tempfile.mkdtemp(prefix="bench_course_"))
    return build_course(tmp, fractions=args.fractions, seed=args.seed), tmp


def _course_job(course: dict, grid_mm: float, out: Path) -> dict:
    from art.course.job import course_job

    t = time.perf_counter()
    summary = course_job(course["reference"], course["days"], out, grid_mm=grid_mm, show=False)
    return {"wall_s": round(time.perf_counter() - t, 2), "stages_s": summary["timings_s"],
            "integral_dose_difference_percent": summary["uncertainty"]["integral_dose_difference_percent"],
            "projection_priority1_met": summary["projection"]["priority1_met"],
            "residuals_mm": [f["dose_warp_residual_mm"] for f in summary["fractions"]],
            "cumulative": [{k: r[k] for k in ("structure", "metric", "value", "scaled_goal", "planned", "met")} for r in summary["cumulative"]["goals"]],
            "projection": [{k: r[k] for k in ("structure", "metric", "value", "goal", "met")} for r in summary["projection"]["goals"]]}  # fmt: skip


def _add_one(course: dict, grid_mm: float) -> dict:
    """Time adding the last fraction to a course of the others (read + map by both methods; then the goal update)."""
    from art.course.accumulate import accumulate, add_fraction
    from art.course.fraction import read_fraction
    from art.dose import load_machine
    from art.final_dose import evaluate, evaluation_structures
    from art.geometry import Volume
    from art.reference import load_reference

    reference, machine = load_reference(course["reference"]), load_machine()
    days = course["days"]
    earlier = [read_fraction(d, reference, index=k, machine=machine) for k, d in enumerate(days[:-1], start=1)]
    base = accumulate(reference, earlier, grid_mm=grid_mm)
    structures, n_planned = evaluation_structures(reference.structures), int(reference.protocol.prescription.fractions)
    t0 = time.perf_counter()
    last = read_fraction(days[-1], reference, index=len(days), machine=machine)
    t1 = time.perf_counter()
    new = add_fraction(base, last)
    t2 = time.perf_counter()
    evaluate(Volume(new.per_fraction[-1].array * n_planned, new.grid), structures, reference.protocol)
    evaluate(Volume(new.dose.array * (n_planned / len(new.fractions)), new.grid), structures, reference.protocol)
    t3 = time.perf_counter()
    add_s = t2 - t0
    return {"fractions_before": len(earlier), "read_s": round(t1 - t0, 2), "map_both_methods_s": round(t2 - t1, 2), "add_s": round(add_s, 2),
            "goal_update_s": round(t3 - t2, 2), "add_with_goals_s": round(t3 - t0, 2), "target_add_s": TARGET_ADD_S,
            "add_within_target": add_s <= TARGET_ADD_S, "grid_shape_zyx": list(new.grid.shape), "grid_mm": grid_mm}  # fmt: skip


def _truth(course: dict, grid_mm: float) -> dict:
    from art.course.fraction import read_fraction
    from art.reference import load_reference
    from tests.course.truth import TARGET_PASS_PERCENT, truth_check

    reference = load_reference(course["reference"])
    fractions = [read_fraction(d, reference, index=k) for k, d in enumerate(course["days"], start=1)]
    r = truth_check(reference, fractions, course["patient"], list(range(1, len(fractions) + 1)), grid_mm=grid_mm)
    return {**r, "target_pass_percent": TARGET_PASS_PERCENT, "pass_within_target": r["gamma_pass_percent"] >= TARGET_PASS_PERCENT}


def _print(result: dict) -> None:
    job, add, tr = result["course_job"], result["add_one_fraction"], result["truth"]
    print(f"\nart course, {result['fractions']} fractions: {job['wall_s']:.1f} s  "
          + ", ".join(f"{k} {v:.1f} s" for k, v in job["stages_s"].items()))  # fmt: skip
    print(f"  integral dose pull vs energy: {job['integral_dose_difference_percent']:+.2f} %; inversion residuals (mm, where the dose reaches): {job['residuals_mm']}")
    print(f"adding fraction {add['fractions_before'] + 1}: read {add['read_s']:.1f} s + map (pull and energy) {add['map_both_methods_s']:.1f} s"
          f" = {add['add_s']:.1f} s (target ≤ {TARGET_ADD_S:g} s: {'met' if add['add_within_target'] else 'NOT met'});"
          f" goal update {add['goal_update_s']:.1f} s, in all {add['add_with_goals_s']:.1f} s")  # fmt: skip
    print(f"truth check: gamma 3 %/2 mm (> 10 % of {tr['norm_dose_gy']:g} Gy, in the body) pass {tr['gamma_pass_percent']:.2f} %"
          f" of {tr['gamma_voxels']} voxels (target ≥ {tr['target_pass_percent']:g} %: {'met' if tr['pass_within_target'] else 'NOT met'})")  # fmt: skip
    print("  goal differences art − truth at course scale (× N/n):")
    for g in tr["goals"]:
        print(f"    P{g['priority']} {g['structure']:<14} {g['metric']:<7} art {g['art']:8.2f} truth {g['truth']:8.2f}  Δ {g['difference']:+.2f} {g['unit']}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fractions", type=int, default=5, help="fractions in the course (default 5; each is one art replan)")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--course", help="folder of a course built before (reference/, patient/, dayK/), or where to build it")
    p.add_argument("--grid-mm", type=float, default=2.5, help="the planning CT's accumulation grid (mm)")
    args = p.parse_args(argv)
    if args.fractions < 2:
        raise SystemExit("--fractions must be at least 2 (adding one fraction to a course of the others)")
    t0 = time.perf_counter()
    course, tmp = _course(args)
    try:
        with tempfile.TemporaryDirectory() as out:
            job = _course_job(course, args.grid_mm, Path(out) / "course")
        result = {"fractions": len(course["days"]), "seed": args.seed, "grid_mm": args.grid_mm, "replan_s": [round(t, 1) for t in course["replan_s"]],
                  "course_job": job, "add_one_fraction": _add_one(course, args.grid_mm), "truth": _truth(course, args.grid_mm),
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                              "load_average": [round(v, 2) for v in os.getloadavg()]},
                  "total_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    _print(result)
    path = REPO / "benchmarks" / "results" / "bench_course.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {path.relative_to(REPO)}")
    return result


if __name__ == "__main__":
    main()
