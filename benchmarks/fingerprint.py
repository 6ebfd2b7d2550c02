"""Behaviour fingerprint: digests of everything a refactor must leave unchanged.

Runs (1) :func:`art.workflow.make_plan` on the seeded digital patient with the cheap
and the shipped protocol (the determinism tests' cases: SHA-256 of weights, influence
matrix, segments, doses and goal values) and (2) the whole demo (``art demo``), from
which it records every goal value of summary.json, the RTPLAN MU and the SHA-256 of
the RTDOSE pixel data of the reference and adapted plans (UIDs and dates excluded).

Run before and after a change that must not change behaviour, then compare:

    .venv/bin/python benchmarks/fingerprint.py --out /tmp/before.json
    ... change ...
    .venv/bin/python benchmarks/fingerprint.py --out /tmp/after.json --compare /tmp/before.json

Exit code 1 when ``--compare`` finds a difference (each one is printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def plan_fingerprint() -> dict[str, dict[str, str]]:
    sys.path.insert(0, str(REPO))
    from tests.reliability.test_determinism import plan_digests, run_plan

    return {f"make_plan fast={fast}": plan_digests(run_plan(fast=fast)) for fast in (True, False)}


def _goal_values(goals: list[dict]) -> dict[str, str]:
    return {f"{g['structure']} {g['metric']}": json.dumps(g, sort_keys=True) for g in goals}


def _rt_fingerprint(folder: Path) -> dict[str, str]:
    import pydicom

    out: dict[str, str] = {}
    plan = pydicom.dcmread(folder / "RTPLAN.dcm")
    out["RTPLAN MU"] = repr([str(b.BeamMeterset) for b in plan.FractionGroupSequence[0].ReferencedBeamSequence])
    cps = []
    for beam in plan.BeamSequence:
        for cp in beam.ControlPointSequence:
            cps.append(str(cp.CumulativeMetersetWeight))
            for pos in getattr(cp, "BeamLimitingDevicePositionSequence", []):
                cps.append(",".join(str(v) for v in pos.LeafJawPositions))
    out["RTPLAN control points"] = hashlib.sha256("|".join(cps).encode()).hexdigest()
    dose = pydicom.dcmread(folder / "RTDOSE.dcm")
    out["RTDOSE pixels"] = hashlib.sha256(dose.PixelData).hexdigest()
    out["RTDOSE scaling"] = str(dose.DoseGridScaling)
    out["RTDOSE grid"] = repr((dose.Rows, dose.Columns, str(dose.ImagePositionPatient), str(dose.PixelSpacing), str(dose.GridFrameOffsetVector)))
    return out


def _without_times(x):
    """``x`` without its timing entries (keys naming a time: they differ run to run)."""
    if isinstance(x, dict):
        return {k: _without_times(v) for k, v in x.items() if "time" not in k and not k.endswith("_s")}
    if isinstance(x, list):
        return [_without_times(v) for v in x]
    return x


def demo_fingerprint(seed: int, keep: Path | None) -> dict[str, dict[str, str]]:
    from art.jobs import demo_job

    out = keep or Path(tempfile.mkdtemp(prefix="art-fingerprint-")) / "demo"
    summary = demo_job(out, seed=seed, show=False)
    res: dict[str, dict[str, str]] = {}
    for step in ("reference", "adaptive"):
        for name, p in summary[step]["plans"].items():
            for table in ("goals", "fluence_goals"):
                if table in p:
                    res[f"{name} {table}"] = _goal_values(p[table])
            res[f"{name} delivery"] = {"table": json.dumps(p.get("delivery"), sort_keys=True)}
    res["reference files"] = _rt_fingerprint(out / "reference")
    res["adapted files"] = _rt_fingerprint(out / "adapted")
    res["recommendation"] = {"plan": summary["adaptive"]["recommendation"]["plan"]}
    res["adaptive records"] = {k: json.dumps(_without_times(summary["adaptive"][k]), sort_keys=True)
                               for k in ("registration", "contours", "independent_check")}
    return res


def compare(a: dict, b: dict) -> list[str]:
    """Differences between fingerprints ``a`` (before) and ``b`` (after), over the sections ``b`` has."""
    diffs = []
    for section in sorted(b):
        sa, sb = a.get(section, {}), b.get(section, {})
        for k in sorted(set(sa) | set(sb)):
            if sa.get(k) != sb.get(k):
                diffs.append(f"{section} / {k}: {sa.get(k)!r} != {sb.get(k)!r}")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="write the fingerprint (JSON) here")
    ap.add_argument("--compare", type=Path, help="a fingerprint to compare with")
    ap.add_argument("--seed", type=int, default=0, help="demo seed")
    ap.add_argument("--skip-demo", action="store_true", help="only the make_plan digests")
    ap.add_argument("--keep", type=Path, help="keep the demo output in this (new) folder")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t = time.perf_counter()
    fp = plan_fingerprint()
    if not args.skip_demo:
        fp.update(demo_fingerprint(args.seed, args.keep))
    args.out.write_text(json.dumps(fp, indent=1, sort_keys=True))
    print(f"fingerprint of {sum(len(v) for v in fp.values())} values written to {args.out} ({time.perf_counter() - t:.0f} s)")
    if args.compare:
        diffs = compare(json.loads(args.compare.read_text()), fp)
        for d in diffs:
            print("DIFFERS:", d)
        print("identical" if not diffs else f"{len(diffs)} differences")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
