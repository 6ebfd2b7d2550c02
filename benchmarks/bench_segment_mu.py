"""Benchmark of the segment-MU stage (art.optimize.segment_mu, cvxpy + Clarabel) on the demo patient.

The demo patient (``art_phantoms.make_pelvis(seed=0)``) and the default protocol
(``art_phantoms.default_protocol_text()``, 60 Gy in 20, 7 beams, 3 mm grid; ``--grid-mm 5``
for a coarser one) are planned with ``art.workflow.make_plan`` (optimisation, sequencing,
segment-weight refinement, normalisation: the stage's input). Then the per-segment dose
matrix ``influence.matrix @ segment_beamlet_matrix(plan, influence)`` (Gy per MU per
fraction on the optimiser's grid), the structures' voxels with fractional occupancy, and
the segment-MU stage with the machine's MU limits. Prints, and writes to
``benchmarks/results/segment_mu.json``: segments, programme variables, the stage's time
(target ≤ 10 s on 2 cores), the stages, and each goal before and after on the same dose
(the matrix dose of the segments; the workflow's own values on the engine dose are listed
too). The machine is shared (2 cores, other jobs): the load average is recorded with the
timing.

Usage: ``PYTHONPATH=.pypath .venv/bin/python benchmarks/bench_segment_mu.py [--grid-mm 5] [--cache FILE]``
(``--cache``: keep the planned case in a pickle and reuse it on the next run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import platform
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "segment_mu.json"


def planned_case(grid_mm: float | None, cache: str | None) -> tuple:
    """(PlanResult, protocol, structures, make_plan seconds), from ``cache`` when it exists."""
    if cache and Path(cache).exists():
        with open(cache, "rb") as fh:
            d = pickle.load(fh)
        return d["res"], d["prot"], d["ss"], d.get("plan_s", float("nan"))
    from art.protocol import parse_protocol
    from art.workflow import make_plan
    from art_phantoms import default_protocol_text, make_pelvis

    case = make_pelvis(seed=0)
    prot = parse_protocol(default_protocol_text())
    if grid_mm is not None:
        prot = dataclasses.replace(prot, dose_grid_mm=float(grid_mm))
    t = time.perf_counter()
    res = make_plan(case.ct, case.structures, prot)
    plan_s = time.perf_counter() - t
    if cache:
        with open(cache, "wb") as fh:
            pickle.dump({"res": res, "prot": prot, "ss": case.structures, "plan_s": plan_s}, fh)
    return res, prot, case.structures, plan_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid-mm", type=float, default=None, help="dose grid (default: the protocol's 3 mm)")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--solver", default="CLARABEL")
    args = ap.parse_args()

    from art.delivery import segment_beamlet_matrix
    from art.dose import load_machine
    from art.optimize.segment_mu import optimize_plan_segment_mu
    from art.optimize.voxels import build_structure_voxels

    res, prot, ss, plan_s = planned_case(args.grid_mm, args.cache)
    im, plan, machine = res.influence, res.plan, load_machine()
    print(f"make_plan: {plan_s:.1f} s; {im.n_voxels} voxels x {im.n_beamlets} beamlets", flush=True)
    t = time.perf_counter()
    svs = build_structure_voxels(im, ss, names=sorted(set(prot.structure_names)), fractional=True)
    s_mat = segment_beamlet_matrix(plan, im, machine)
    a = (im.matrix @ s_mat.astype(np.float32).tocsc()).tocsr().astype(np.float64)  # the stage works in float64
    prep_s = time.perf_counter() - t
    n_seg = a.shape[1]
    print(f"segment dose matrix: {a.shape[0]} x {n_seg} segments, {a.nnz} non-zeros, {prep_s:.1f} s", flush=True)
    load_before = os.getloadavg()
    t = time.perf_counter()
    new_plan, r = optimize_plan_segment_mu(plan, a, svs, prot, machine=machine, solver=args.solver)
    stage_s = time.perf_counter() - t
    load_after = os.getloadavg()
    print(f"segment-MU stage: {stage_s:.2f} s (result.time_s {r.time_s:.2f}), load average {load_before[0]:.2f} -> {load_after[0]:.2f}", flush=True)
    print(r.message)
    for st in r.stages:
        print(f"  {st['name']:<28} {st['status']:<18} iterations {st['iterations']}  cuts {st.get('cuts', '-')}  solver {st['solve_time_s']:.2f} s  wall {st['wall_time_s']:.2f} s  vars {st.get('n_variables', '-')}")
    engine = {(g.structure, g.metric): g.value for g in res.goals}
    print(f"  {'goal':<34} {'before':>9} {'after':>9}  engine(before)")
    rows = []
    for g in r.goals:
        key = (g.goal.structure, g.goal.metric.text)
        print(f"  P{g.goal.priority} {g.goal.structure} {g.goal.metric.text} {g.goal.describe():<14} {g.value_before:9.3f} {g.value:9.3f}  {engine.get(key, float('nan')):.3f}  {'met' if g.met else 'MISSED'}{'' if g.bound_met else ' (bound not met)'}")
        rows.append({"structure": g.goal.structure, "metric": g.goal.metric.text, "goal": g.goal.describe(), "priority": g.goal.priority,
                     "before": round(g.value_before, 4), "after": round(g.value, 4), "met_before": g.met_before, "met": g.met,
                     "bound_met": g.bound_met, "bound_values_gy": [round(v, 4) for v in g.bound_values_gy], "engine_before": engine.get(key)})  # fmt: skip
    mu_b, mu_a = plan.total_mu, new_plan.total_mu
    out = {
        "case": "make_pelvis(seed=0), default protocol" + (f", grid {args.grid_mm} mm" if args.grid_mm else ""),
        "machine": platform.node(), "cpus": os.cpu_count(), "solver": args.solver,
        "make_plan_s": round(plan_s, 1), "matrix_s": round(prep_s, 2), "segments": n_seg, "matrix_nnz": int(a.nnz),
        "n_variables": r.n_variables, "stage_s": round(stage_s, 2), "load_avg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "status": r.status, "message": r.message, "corrections": r.corrections,
        "achieved_priorities": list(r.achieved_priorities), "missed_priorities": list(r.missed_priorities),
        "segments_after": int(sum(len(b.segments) for b in new_plan.beams)),
        "mu_per_beam_before": {k: round(v, 2) for k, v in mu_b.items()}, "mu_per_beam_after": {k: round(v, 2) for k, v in mu_a.items()},
        "stages": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in st.items()} for st in r.stages],
        "goals": rows,
    }  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
