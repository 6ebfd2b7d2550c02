"""The collapsed cone's depth doses in water against each shipped machine's PDD table (issue 19, item 4).

For every shipped machine with a ``ccc`` section (generic 6X, 10X, 6FFF) and the square fields
3×3, 5×5, 10×10 and 20×20 cm² (jaws, MLC retracted, gantry 0, SSD 100 cm, isocentre on the
surface), computes the dose with ``art.dose.ccc.dose`` on a water CT (2.5 mm voxels, 10 mm of air
in front, the voxel faces on the surface, voxel centres on the central axis) — the set-up of
``tests/dose/test_ccc_water.py`` — and compares the central-axis PDD, normalised at the machine's
calibration depth (d_max), with the file's table at the table's depths from d_max to 300 mm:
max |Δ|, rms and the differences at 200, 250 and 300 mm (% of the table's value).

Run: ``.venv/bin/python benchmarks/ccc_water_pdds.py [--fields 30 50 100 200] [--machines 6X 10X 6FFF]``
(about 1–2 min per machine on 2 cores); prints a table and writes
``benchmarks/results/ccc_water_pdds.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPACING_MM = 2.5
MAX_DEPTH_MM = 300.0
AIR_MM = 10.0
#: water beyond the deepest depth scored (the tables are measured in a large tank: full backscatter)
BACKSCATTER_MM = 100.0


def water_ct(h: float, half: float, depth: float, *, air: float = AIR_MM):
    """Water (HU 0) for 0 < y < depth under ``air`` mm of air; voxel faces on y = 0, voxel centres on x = z = 0."""
    from art.geometry import Grid, Volume

    n = 2 * int(round(half / h)) + 1
    ny = int(round((depth + air) / h))
    g = Grid((n, ny, n), (h, h, h), (-(n // 2) * h, -air + h / 2, -(n // 2) * h))
    _, y, _ = g.axis_positions()
    hu = np.zeros(g.shape, np.float32)
    hu[:, y < 0, :] = -1000.0
    return Volume(hu, g)


def open_plan(machine, side: float, *, mu: float = 100.0):
    """One beam, gantry 0, isocentre on the surface, one open square segment (MLC retracted)."""
    from art.plan import Beam, Plan, Segment

    lp = np.zeros((2, machine.mlc.n_pairs))
    lp[0], lp[1] = machine.mlc.position_limits_mm
    seg = Segment(lp, (-side / 2, side / 2, -side / 2, side / 2), mu)
    beam = Beam("A", 0.0, isocenter_lps=(0.0, 0.0, 0.0), energy=machine.energy, sad_mm=machine.sad_mm, segments=[seg])
    return Plan([beam], fractions=1, machine_name=machine.name)


def field_pdd(machine, side: float, *, spacing: float = SPACING_MM) -> dict:
    """The engine's PDD of a square field against the machine's table (see the module docstring)."""
    from art.dose import ccc

    ct = water_ct(spacing, 0.6 * side + 40.0, MAX_DEPTH_MM + BACKSCATTER_MM)
    t0 = time.perf_counter()
    dose = ccc.dose(ct, open_plan(machine, side), machine, dose_grid_mm=None, backend="numpy")
    seconds = time.perf_counter() - t0
    g = dose.grid
    _, y, _ = g.axis_positions()
    cax = dose.array[g.shape[0] // 2, :, g.shape[2] // 2].astype(np.float64)
    dmax = machine.calib_depth_mm
    depths = machine.pdd_depth_mm[(machine.pdd_depth_mm >= dmax) & (machine.pdd_depth_mm <= MAX_DEPTH_MM)]
    pdd = 100.0 * np.interp(depths, y, cax) / np.interp(dmax, y, cax)
    table = machine.pdd(depths, side)
    diff = 100.0 * (pdd / table - 1.0)
    at = {f"at_{int(d)}mm": round(float(diff[depths == d][0]), 2) for d in (200.0, 250.0, 300.0) if np.any(depths == d)}
    return {"depths_mm": depths.tolist(), "pdd": np.round(pdd, 3).tolist(), "table": np.round(table, 3).tolist(),
            "diff_percent": np.round(diff, 2).tolist(), "max_abs_percent": round(float(np.abs(diff).max()), 2),
            "rms_percent": round(float(np.sqrt(np.mean(diff**2))), 2), **at, "seconds": round(seconds, 1)}  # fmt: skip


def main(argv=None) -> int:
    from art.dose.library import load_library

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=float, nargs="+", default=[30.0, 50.0, 100.0, 200.0])
    ap.add_argument("--machines", nargs="+", default=None, help="energies (default: every machine with a ccc section)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ccc_water_pdds.json"))
    args = ap.parse_args(argv)
    machines = [m for m in load_library().machines if m.ccc is not None and (args.machines is None or m.energy in args.machines)]
    res: dict = {"spacing_mm": SPACING_MM, "machines": {}}
    print(f"{'machine':8s} {'field':>6s} {'max|d|%':>8s} {'rms%':>6s} {'@200':>6s} {'@250':>6s} {'@300':>6s} {'s':>5s}")
    for m in machines:
        rows = res["machines"].setdefault(m.energy, {})
        for f in args.fields:
            r = field_pdd(m, f)
            rows[f"{f:g}"] = r
            print(f"{m.energy:8s} {f:6g} {r['max_abs_percent']:8.2f} {r['rms_percent']:6.2f} {r.get('at_200mm', np.nan):+6.2f} "
                  f"{r.get('at_250mm', np.nan):+6.2f} {r.get('at_300mm', np.nan):+6.2f} {r['seconds']:5.1f}", flush=True)  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
