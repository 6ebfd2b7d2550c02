"""Benchmark: automatic CBCT contouring with the shipped network on held-out digital patients.

Held-out patients (seeds 9100, 9101, ...; never used in training or validation),
fraction 1, CBCT at the planning CT voxel size (3, 2, 2) mm with every artefact
on. Per structure: Dice and HD95 (mm) against the true daily masks, and the
confidence; per case: inference time (with test-time augmentation) and peak
resident-memory increase. The same Dice/HD95 for the planning contours
propagated by registration (:func:`art.registration.register_rigid`, then
:func:`~art.registration.register_deformable` without guide structures, then
:func:`~art.registration.propagate_structures`).
Writes ``benchmarks/results/contouring.json``.

Run: ``.venv/bin/python benchmarks/bench_contouring.py [--cases 6] [--model PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

ORGANS = ("BODY", "Bladder", "Rectum", "Prostate", "FemoralHead_L", "FemoralHead_R")
TARGETS = {"Bladder": 0.93, "Rectum": 0.85, "Prostate": 0.85, "FemoralHead_L": 0.93, "FemoralHead_R": 0.93}


class _PeakRss:
    """Peak resident memory (bytes) of this process while the block runs (10 ms polling)."""

    def __enter__(self):
        import psutil

        self._p = psutil.Process()
        self.base = self._p.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._p.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._p.memory_info().rss)


def _propagate(case, day):
    """Registration-propagated planning contours on the CBCT grid (rigid then deformable), or None and why not."""
    try:
        from art.registration import propagate_structures, register_deformable, register_rigid
    except ImportError:
        return None, "art.registration.propagate_structures not available"
    try:
        rigid = register_rigid(case.ct, day.cbct)
        res = register_deformable(case.ct, day.cbct, rigid=rigid)
        return propagate_structures(case.structures, res, target_grid=day.cbct.grid), None
    except Exception as exc:  # report, do not fail the contouring benchmark
        return None, f"registration failed: {type(exc).__name__}: {exc}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--first-seed", type=int, default=9100)
    ap.add_argument("--model", default=None, help="TorchScript model with its JSON card (default: shipped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-registration", action="store_true", help="skip the registration-propagated comparison")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "contouring.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from art.contouring import dice, hd95, load_model, segment
    from art_phantoms import make_fraction, make_pelvis

    model = load_model(args.model)
    rows = []
    reg_note = None
    for k in range(args.cases):
        seed = args.first_seed + k
        case = make_pelvis(seed=seed)
        day = make_fraction(case, fraction=1)
        with _PeakRss() as mem:
            t0 = time.perf_counter()
            res = segment(day.cbct, model=model)
            dt = time.perf_counter() - t0
        row = {"seed": seed, "cbct_shape": list(day.cbct.grid.shape), "cbct_spacing_mm": list(day.cbct.grid.spacing), "seconds": round(dt, 2), "peak_rss_increase_mb": round((mem.peak - mem.base) / 2**20, 1), "flagged": res.flagged, "structures": {}}
        sp = day.cbct.grid.spacing
        for n in ORGANS:
            a, b = res.structures[n].mask, day.truth.structures[n].mask
            row["structures"][n] = {"dice": round(dice(a, b), 4), "hd95_mm": round(hd95(a, b, sp), 2), "confidence": round(res.confidence[n], 4)}
        prop, reg_note = (None, "skipped (--no-registration)") if args.no_registration else _propagate(case, day)
        if prop is not None:
            row["propagated"] = {n: {"dice": round(dice(prop[n].mask, day.truth.structures[n].mask), 4), "hd95_mm": round(hd95(prop[n].mask, day.truth.structures[n].mask, sp), 2)} for n in ORGANS if n in prop}
        rows.append(row)
        print(f"seed {seed}: {dt:.1f} s, +{row['peak_rss_increase_mb']:.0f} MB; " + " ".join(f"{n} {v['dice']:.3f}/{v['hd95_mm']:.1f}mm" for n, v in row["structures"].items()) + (f"; flagged {res.flagged}" if res.flagged else ""), flush=True)

    summary = {}
    for n in ORGANS:
        d = [r["structures"][n]["dice"] for r in rows]
        h = [r["structures"][n]["hd95_mm"] for r in rows]
        summary[n] = {"dice_mean": round(float(np.mean(d)), 4), "dice_min": round(float(np.min(d)), 4), "hd95_mm_mean": round(float(np.mean(h)), 2), "hd95_mm_max": round(float(np.max(h)), 2), "target_dice": TARGETS.get(n), "meets_target": None if n not in TARGETS else bool(np.mean(d) >= TARGETS[n])}
        if all("propagated" in r and n in r["propagated"] for r in rows):
            summary[n]["propagated_dice_mean"] = round(float(np.mean([r["propagated"][n]["dice"] for r in rows])), 4)
            summary[n]["propagated_hd95_mm_mean"] = round(float(np.mean([r["propagated"][n]["hd95_mm"] for r in rows])), 2)
    result = {
        "benchmark": "contouring",
        "model": str(model.path),
        "model_card_training": model.card.get("training", {}),
        "held_out_seeds": [r["seed"] for r in rows],
        "summary": summary,
        "inference_seconds_mean": round(float(np.mean([r["seconds"] for r in rows])), 2),
        "inference_seconds_max": round(float(np.max([r["seconds"] for r in rows])), 2),
        "peak_rss_increase_mb_max": round(float(np.max([r["peak_rss_increase_mb"] for r in rows])), 1),
        "registration_comparison": reg_note or "included (propagated_* fields)",
        "cases": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads, "device": "cpu", "note": "2 cores shared with other jobs: timings inflated"},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print("mean Dice / HD95: " + " ".join(f"{n} {v['dice_mean']:.3f}/{v['hd95_mm_mean']:.1f}mm" for n, v in summary.items()))
    print(f"inference {result['inference_seconds_mean']:.1f} s mean, {result['inference_seconds_max']:.1f} s max; peak memory +{result['peak_rss_increase_mb_max']:.0f} MB; registration: {result['registration_comparison']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
