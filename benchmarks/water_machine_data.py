"""Both dose engines in water against each shipped machine's beam data (issue 19, item 4).

For every shipped machine (generic 6X, 10X, 6FFF), each engine (``pb``: the pencil beam,
``art.dose.calc.beam_dose_at``; ``ccc``: the collapsed cone, ``art.dose.ccc.dose``) and square
fields (default 3×3, 5×5, 10×10, 20×20 and 40×40 cm²; jaws, MLC retracted, gantry 0, SSD 100 cm,
isocentre on the surface) on a water CT (10 mm of air in front, the voxel faces on the surface,
voxel centres on the central axis, 100 mm of water behind the deepest depth scored):

* **depth dose** on the central axis, normalised at the machine's calibration depth (d_max),
  against the file's PDD table at the table's depths from d_max to 300 mm:
  - the local differences (% of the table's value): max |Δ|, rms, and at 200, 250 and 300 mm;
  - the **gamma index 1 %/1 mm** (Low et al. 1998; dose difference in % of the d_max dose, i.e.
    global, distance along the axis; the table's depths are the reference points, the engine's
    curve — linear between its samples — the evaluated one): its maximum and the fraction ≤ 1;
* **absolute dose** at d_max for 100 MU against the table's ``dose_per_mu_gy`` × S_cp(field);
* **profiles** of the penumbra field (10×10 cm²) at the ``profile`` depths (crossline, through the
  axis, divided by the machine's off-axis fluence ratio as in the files and the fits): 80–20 %
  penumbra against the table, and the 50 % point against the field's geometric edge projected to
  that depth (``side/2 · (SSD + d) / SSD``).

The pencil beam is point-wise (central axis every 0.5 mm, profiles every 0.25 mm, on a 2.5 mm CT);
the collapsed cone runs on the CT's grid (2.5 mm for the depth doses, 1.25 mm for the profiles).

Run: ``.venv/bin/python benchmarks/water_machine_data.py [--engines pb ccc] [--machines 6X 10X 6FFF]
[--fields 30 50 100 200 400] [--no-profiles] [--markdown FILE]`` (the pencil beam: about a minute for
everything; the collapsed cone: about 2–3 min per machine on 2 cores); prints tables and writes
``benchmarks/results/water_machine_data.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPACING_MM = 2.5
PROFILE_SPACING_MM = 1.25
MAX_DEPTH_MM = 300.0
AIR_MM = 10.0
#: water beyond the deepest depth scored (the tables are measured in a large tank: full backscatter)
BACKSCATTER_MM = 100.0
FIELDS_MM = (30.0, 50.0, 100.0, 200.0, 400.0)
#: the gamma criteria of the issue: 1 % of the d_max dose, 1 mm
GAMMA_PERCENT, GAMMA_MM = 1.0, 1.0


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


def gamma_1d(ref_x, ref_d, ev_x, ev_d, *, dose_percent: float = GAMMA_PERCENT, distance_mm: float = GAMMA_MM) -> np.ndarray:
    """Gamma index of each reference point (``ref_x`` mm, ``ref_d`` % of the normalisation dose) against
    an evaluated curve (``ev_x``, ``ev_d``, the same units), linear between its samples (searched on
    a 0.01 mm grid within 3 × ``distance_mm`` and at the curve's samples)."""
    ev_x, ev_d = np.asarray(ev_x, np.float64), np.asarray(ev_d, np.float64)
    out = []
    for x, d in zip(np.asarray(ref_x, np.float64), np.asarray(ref_d, np.float64)):
        xs = np.arange(x - 3 * distance_mm, x + 3 * distance_mm + 1e-9, 0.01)
        xs = xs[(xs >= ev_x[0]) & (xs <= ev_x[-1])]
        ds = np.interp(xs, ev_x, ev_d)
        out.append(float(np.sqrt(np.min(((ds - d) / dose_percent) ** 2 + ((xs - x) / distance_mm) ** 2))) if xs.size else np.inf)
    return np.asarray(out)


def central_axis_dose(machine, engine: str, side: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(depths mm, dose Gy for 100 MU, seconds) on the central axis of a square field of side ``side``."""
    ct = water_ct(SPACING_MM, 0.6 * side + 40.0, MAX_DEPTH_MM + BACKSCATTER_MM)
    plan = open_plan(machine, side)
    t0 = time.perf_counter()
    if engine == "ccc":
        from art.dose import ccc

        dose = ccc.dose(ct, plan, machine, dose_grid_mm=None, backend="numpy")
        g = dose.grid
        _, y, _ = g.axis_positions()
        cax = dose.array[g.shape[0] // 2, :, g.shape[2] // 2].astype(np.float64)
        keep = y > 0
        return y[keep], cax[keep], time.perf_counter() - t0
    from art.dose.calc import beam_dose_at
    from art.dose.machine import hu_to_density
    from art.geometry import Volume

    rho = Volume(hu_to_density(ct.array), ct.grid)
    y = np.arange(0.5, MAX_DEPTH_MM + 20.0, 0.5)
    d = beam_dose_at(rho, plan.beams[0], machine, np.column_stack([np.zeros_like(y), y, np.zeros_like(y)]))
    return y, d.astype(np.float64), time.perf_counter() - t0


def pdd_metrics(machine, side: float, depths, dose) -> dict:
    """The depth-dose measures of the module docstring for one field (``dose``: Gy for 100 MU)."""
    dmax = machine.calib_depth_mm
    at = machine.pdd_depth_mm[(machine.pdd_depth_mm >= dmax) & (machine.pdd_depth_mm <= MAX_DEPTH_MM)]
    norm = float(np.interp(dmax, depths, dose))
    curve = 100.0 * dose / norm
    table = machine.pdd(at, side)
    local = 100.0 * (np.interp(at, depths, curve) / table - 1.0)
    gam = gamma_1d(at, table, depths, curve)
    expected = 100.0 * machine.dose_per_mu_gy * float(machine.output_factor(side))
    at_depth = {f"at_{int(d)}mm": round(float(local[at == d][0]), 2) for d in (200.0, 250.0, 300.0) if np.any(at == d)}
    return {"depths_mm": at.tolist(), "pdd": np.round(np.interp(at, depths, curve), 3).tolist(), "table": np.round(table, 3).tolist(),
            "local_diff_percent": np.round(local, 2).tolist(), "max_abs_percent": round(float(np.abs(local).max()), 2),
            "rms_percent": round(float(np.sqrt(np.mean(local**2))), 2), **at_depth,
            "gamma_max": round(float(gam.max()), 2), "gamma_pass_percent": round(100.0 * float(np.mean(gam <= 1.0)), 1),
            "gamma_worst_depth_mm": float(at[np.argmax(gam)]),
            "dmax_dose_vs_table_percent": round(100.0 * (norm / expected - 1.0), 2)}  # fmt: skip


def edge_measures(x, row, machine, depth: float) -> tuple[float, float]:
    """(80–20 % penumbra, 50 % point) in mm of a crossline profile through the axis (mean of both edges),
    after division by the off-axis fluence ratio; levels relative to the value on the axis (the
    crossings of :mod:`ccc_common`: a monotone cubic through the samples)."""
    from ccc_common import field_width_50, penumbra_80_20

    r = row / machine.off_axis_ratio(np.abs(x) * machine.sad_mm / (machine.pdd_ssd_mm + depth))
    return penumbra_80_20(x, r), 0.5 * field_width_50(x, r)


def profile_metrics(machine, engine: str) -> dict:
    """Penumbra and 50 % point of the penumbra field at the ``profile`` depths against the table."""
    side = float(machine.penumbra_field_mm)
    depths = machine.penumbra_depth_mm
    t0 = time.perf_counter()
    rows = []
    if engine == "ccc":
        from art.dose import ccc

        ct = water_ct(PROFILE_SPACING_MM, 0.5 * side * 1.4 + 30.0, float(depths.max()) + 40.0)
        dose = ccc.dose(ct, open_plan(machine, side), machine, dose_grid_mm=None, backend="numpy")
        g = dose.grid
        _, y, x = g.axis_positions()
        for d in depths:
            j = int(np.clip(np.searchsorted(y, d) - 1, 0, y.size - 2))
            t = (d - y[j]) / (y[j + 1] - y[j])
            rows.append((x, ((1 - t) * dose.array[g.shape[0] // 2, j, :] + t * dose.array[g.shape[0] // 2, j + 1, :]).astype(np.float64)))
    else:
        from art.dose.calc import beam_dose_at
        from art.dose.machine import hu_to_density
        from art.geometry import Volume

        ct = water_ct(SPACING_MM, 0.5 * side * 1.4 + 30.0, float(depths.max()) + 40.0)
        rho = Volume(hu_to_density(ct.array), ct.grid)
        x = np.arange(-0.5 * side * 1.4 - 20.0, 0.5 * side * 1.4 + 20.0 + 1e-9, 0.25)
        pts = np.column_stack([np.tile(x, depths.size), np.repeat(depths, x.size), np.zeros(x.size * depths.size)])
        dose = beam_dose_at(rho, open_plan(machine, side).beams[0], machine, pts).astype(np.float64).reshape(depths.size, x.size)
        rows = [(x, row) for row in dose]
    out = []
    for d, (x, row) in zip(depths, rows):
        pen, half = edge_measures(x, row, machine, float(d))
        edge = 0.5 * side * (machine.pdd_ssd_mm + d) / machine.pdd_ssd_mm
        out.append({"depth_mm": float(d), "penumbra_mm": round(pen, 2), "table_penumbra_mm": float(machine.penumbra(d)),
                    "penumbra_diff_mm": round(pen - float(machine.penumbra(d)), 2), "half_width_50_mm": round(half, 2),
                    "geometric_edge_mm": round(edge, 2), "edge_diff_mm": round(half - edge, 2)})  # fmt: skip
    return {"field_mm": side, "depths": out, "seconds": round(time.perf_counter() - t0, 1)}


def markdown(res: dict) -> str:
    """The tables of docs/dose_engines_water.md from a result dict."""
    lines = ["Depth doses from d_max to 300 mm against the PDD table: local max |Δ| / rms (%), and the gamma index",
             "1 %/1 mm (global): its maximum and the share of the table's depths with γ ≤ 1.", "",
             "| machine | engine | " + " | ".join(f"{float(f) / 10:g}×{float(f) / 10:g}" for f in res["fields_mm"]) + " |",
             "| --- | --- | " + " | ".join("---" for _ in res["fields_mm"]) + " |"]  # fmt: skip
    for energy, engines in res["machines"].items():
        for engine, r in engines.items():
            cells = []
            for f in res["fields_mm"]:
                p = r["pdd"].get(f"{float(f):g}")
                cells.append("—" if p is None else f"{p['max_abs_percent']:.1f} / {p['rms_percent']:.1f}; γ {p['gamma_max']:.2f} ({p['gamma_pass_percent']:.0f} %)")
            lines.append(f"| {energy} | {engine} | " + " | ".join(cells) + " |")
    lines += ["", "Profiles of the 10×10 cm² field: 80–20 % penumbra and 50 % point minus the table's penumbra and the",
              "geometric edge (mm), at the table's depths.", "", "| machine | engine | depths (mm) | penumbra Δ (mm) | 50 % point Δ (mm) |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for energy, engines in res["machines"].items():
        for engine, r in engines.items():
            if "profiles" in r:
                ds = r["profiles"]["depths"]
                at = ", ".join(f"{d['depth_mm']:g}" for d in ds)
                pen = ", ".join(f"{d['penumbra_diff_mm']:+.2f}" for d in ds)
                edge = ", ".join(f"{d['edge_diff_mm']:+.2f}" for d in ds)
                lines.append(f"| {energy} | {engine} | {at} | {pen} | {edge} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from art.dose.library import load_library

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=["pb", "ccc"], choices=["pb", "ccc"])
    ap.add_argument("--fields", type=float, nargs="+", default=list(FIELDS_MM))
    ap.add_argument("--machines", nargs="+", default=None, help="energies (default: every shipped machine)")
    ap.add_argument("--no-profiles", action="store_true", help="depth doses only")
    ap.add_argument("--markdown", default=None, help="also write the tables (markdown) to this file")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "water_machine_data.json"))
    args = ap.parse_args(argv)
    machines = [m for m in load_library().machines if args.machines is None or m.energy in args.machines]
    res: dict = {"spacing_mm": SPACING_MM, "gamma": f"{GAMMA_PERCENT:g} %/{GAMMA_MM:g} mm, global (d_max)",
                 "fields_mm": [float(f) for f in args.fields], "machines": {}}  # fmt: skip
    print(f"{'machine':7s} {'engine':6s} {'field':>5s} {'max|d|%':>8s} {'rms%':>5s} {'@300':>6s} {'gamma':>6s} {'pass%':>6s} {'dmax%':>6s} {'s':>5s}")
    for m in machines:
        for engine in args.engines:
            if engine == "ccc" and m.ccc is None:
                continue
            r = res["machines"].setdefault(m.energy, {}).setdefault(engine, {"pdd": {}})
            for f in args.fields:
                y, d, seconds = central_axis_dose(m, engine, f)
                p = {**pdd_metrics(m, f, y, d), "seconds": round(seconds, 1)}
                r["pdd"][f"{f:g}"] = p
                print(f"{m.energy:7s} {engine:6s} {f:5g} {p['max_abs_percent']:8.2f} {p['rms_percent']:5.2f} {p.get('at_300mm', np.nan):+6.2f} "
                      f"{p['gamma_max']:6.2f} {p['gamma_pass_percent']:6.1f} {p['dmax_dose_vs_table_percent']:+6.2f} {seconds:5.1f}", flush=True)  # fmt: skip
            if not args.no_profiles:
                r["profiles"] = prof = profile_metrics(m, engine)
                for q in prof["depths"]:
                    print(f"{m.energy:7s} {engine:6s} profile {prof['field_mm']:g} mm at {q['depth_mm']:5g} mm: penumbra {q['penumbra_mm']:.2f} "
                          f"(table {q['table_penumbra_mm']:.2f}), 50 % at {q['half_width_50_mm']:.2f} (edge {q['geometric_edge_mm']:.2f})", flush=True)  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")
    if args.markdown:
        Path(args.markdown).write_text(markdown(res))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
