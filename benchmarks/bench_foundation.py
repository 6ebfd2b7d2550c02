"""Benchmark: digital patient generation and DICOM series / RTSTRUCT I/O (issue 2).

Times, on the demo prostate patient (seed 0 unless ``--seeds``):

* ``make_pelvis`` (planning CT + structures) and ``make_fraction`` (daily CBCT + truth);
* writing the planning CT as a DICOM series and reading it back;
* writing the RTSTRUCT and reading it back (rasterising every ROI).

Prints the figures and writes ``benchmarks/results/foundation.json``.

Run: ``.venv/bin/python benchmarks/bench_foundation.py [--seeds 0 1 2]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()

    from art.io import read_image_series, read_rtstruct, write_image_series, write_rtstruct
    from art.io.dicom_common import PatientInfo
    from art_phantoms import make_fraction, make_pelvis

    rows = []
    for seed in args.seeds:
        case, t_pelvis = _timed(make_pelvis, seed=seed)
        _, t_fraction = _timed(make_fraction, case, fraction=1)
        patient = PatientInfo(name="Bench^Phantom", id=f"BENCH{seed}")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            series, t_ct_write = _timed(write_image_series, case.ct, tmp / "CT", patient=patient)
            back, t_ct_read = _timed(read_image_series, tmp / "CT")
            assert np.allclose(back.volume.array, case.ct.array, atol=1.0), "CT round trip changed HU"
            _, t_rs_write = _timed(write_rtstruct, case.structures, series, tmp / "RS.dcm")
            ss, t_rs_read = _timed(read_rtstruct, tmp / "RS.dcm", back)
            n_files = sum(1 for _ in (tmp / "CT").iterdir())
        row = {
            "seed": seed,
            "ct_shape_zyx": list(case.ct.grid.shape),
            "ct_spacing_mm": list(case.ct.grid.spacing),
            "ct_slices": n_files,
            "rois": len(ss),
            "make_pelvis_s": round(t_pelvis, 3),
            "make_fraction_s": round(t_fraction, 3),
            "ct_write_s": round(t_ct_write, 3),
            "ct_read_s": round(t_ct_read, 3),
            "rtstruct_write_s": round(t_rs_write, 3),
            "rtstruct_read_s": round(t_rs_read, 3),
        }
        rows.append(row)
        print(
            f"seed {seed}: CT {tuple(case.ct.grid.shape)} | make_pelvis {t_pelvis:.2f} s | make_fraction "
            f"{t_fraction:.2f} s | CT write {t_ct_write:.2f} s, read {t_ct_read:.2f} s ({n_files} slices) | "
            f"RTSTRUCT ({len(ss)} ROIs) write {t_rs_write:.2f} s, read {t_rs_read:.2f} s"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    keys = [k for k in rows[0] if k.endswith("_s")]
    median = {k: float(np.median([r[k] for r in rows])) for k in keys}
    print("median: " + ", ".join(f"{k} {v:.2f}" for k, v in median.items()) + f" | peak RSS {peak_mb:.0f} MB")
    out = Path(__file__).resolve().parent / "results" / "foundation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"benchmark": "foundation", "machine": platform.platform(), "runs": rows, "median": median, "peak_rss_mb": round(peak_mb, 1)},
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
