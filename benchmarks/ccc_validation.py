"""Dose-engine validation on slab phantoms (issue 19, item 4): art's pencil beam and collapsed cone
against the machine data and against an independent collapsed-cone engine (WiscPlan).

Phantoms (``ccc_common``): a 30 cm water cube; water 3 cm – lung (ρ 0.25) 6 cm – water; water
3 cm – bone (ρ 1.6) 2 cm – water; built as art CT volumes whose HU give those densities through
art's default HU table (``art/dose/data/hu_to_density.json``). Fields: 3×3 and 10×10 cm², 6 MV,
SSD 100 cm, gantry 0, 100 MU, the generic 6X machine. Engines:

* ``pb``: ``art.dose.dose`` (pencil beam) on the central plane (z = 0), 0.5 mm apart laterally
  (a point-wise engine: the same values as on the full grid);
* ``ccc``: ``art.dose.ccc.dose`` (collapsed cone) on the phantom's grid, when importable;
* ``wiscplan``: the independent engine's dose read from ``benchmarks/ccc_reference.py``'s npz files
  (same grid), scaled per field size so that its dose in the water phantom at 10 cm depth equals
  the machine data's (``dose_per_mu · MU · S_cp · PDD(10 cm) / 100``); without the npz files the
  comparisons with it are left out.

Measures (``ccc_common``): central-axis differences in % of the local dose from d_max to 25 cm;
per phantom slab, each engine's mean dose in the slab relative to its own dose in water at the same
depths (the heterogeneity correction) and, in lung, each collapsed cone's dose relative to the pencil
beam's (the lung dose drop the pencil beam misses); lateral profiles at 6 cm depth (the middle of
the lung): 80–20 % penumbra and 50 % width; in water, each engine against the machine file's PDD
table (% difference beyond d_max, normalised at d_max), its absolute dose at d_max, and the 10×10
penumbra at the file's depths.

Prints tables, writes ``benchmarks/results/ccc_validation.json`` and the figures of
docs/dose_engines.md (``docs/img/dose_engines/*.png``); ``--markdown FILE`` writes the tables
(docs/dose_engines_tables.md).

Usage::

    .venv/bin/python benchmarks/ccc_reference.py                 # once: the WiscPlan reference (~5 min)
    .venv/bin/python benchmarks/ccc_validation.py --markdown docs/dose_engines_tables.md
    .venv/bin/python benchmarks/ccc_validation.py --quick        # 5 mm grid, figures and JSON under benchmarks/results/
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ccc_common import (  # noqa: E402
    CASES,
    CAX_RANGE_MM,
    FIELDS_MM,
    NORM_DEPTH_MM,
    PROFILE_DEPTH_MM,
    SLAB_SCORE_MM,
    PhantomGrid,
    cax_difference,
    depth_density,
    dose_at,
    field_width_50,
    lung_drop,
    penumbra_80_20,
    phantom_grid,
)
from ccc_reference import OUT_DIR as REF_DIR  # noqa: E402
from ccc_reference import npz_path  # noqa: E402
from ccc_report import LABELS, markdown_tables, plot_all, print_tables  # noqa: E402

MU = 100.0
FINE_MM = 0.5
"""Lateral sampling of the pencil beam's central plane."""
ENGINES = ("pb", "ccc", "wiscplan")
PAIRS = (("pb", "wiscplan"), ("ccc", "wiscplan"), ("ccc", "pb"))


def hu_for_density(rho, table) -> np.ndarray:
    """CT numbers that the HU table maps to the relative densities ``rho`` (its inverse; the
    table's densities must increase strictly)."""
    if np.any(np.diff(table.density) <= 0):
        raise ValueError(f"HU table {table.source}: densities do not increase strictly, it cannot be inverted")
    r = np.asarray(rho, dtype=np.float64)
    if np.any(r < table.density[0]) or np.any(r > table.density[-1]):
        raise ValueError(f"densities {np.unique(r)} outside the HU table's range {table.density[0]}–{table.density[-1]}")
    return np.interp(r, table.density, table.hu)


def art_grid(grid: PhantomGrid):
    from art.geometry import Grid

    s = grid.spacing_mm
    return Grid(grid.shape, (s, s, s), grid.origin)


def art_phantom(case: str, grid: PhantomGrid, table=None):
    """The phantom as an art CT (HU, float32 Volume) on ``grid`` under ``table`` (default: art's)."""
    from art.dose.machine import load_hu_table
    from art.geometry import Volume

    table = table if table is not None else load_hu_table()
    _, y, _ = grid.axes()
    col = hu_for_density(depth_density(case, y), table).astype(np.float32)
    return Volume(np.broadcast_to(col[None, :, None], grid.shape).copy(), art_grid(grid))


def open_field_plan(machine, side_mm: float, *, mu: float = MU):
    """One gantry-0 beam, jaws side × side at the isocentre (0, 0, 0), MLC retracted, ``mu`` MU, 1 fraction."""
    from art.plan import Beam, Plan, Segment

    n = machine.mlc.n_pairs
    lp = np.zeros((2, n))
    lp[0], lp[1] = machine.mlc.position_limits_mm
    h = side_mm / 2
    beam = Beam("A", 0.0, isocenter_lps=(0.0, 0.0, 0.0), energy=machine.energy, segments=[Segment(lp, (-h, h, -h, h), mu)], sad_mm=machine.sad_mm)
    return Plan([beam], 1, machine.name, label=f"open {side_mm:g} mm")


def central_plane(grid: PhantomGrid, fine_mm: float = FINE_MM):
    """The plane z = 0 of the phantom grid, ``fine_mm`` apart along x (the grid's x = 0 included)."""
    from art.geometry import Grid

    nx = int(round(2 * abs(grid.origin[0]) / fine_mm)) + 1
    return Grid((1, grid.shape[1], nx), (grid.spacing_mm, grid.spacing_mm, fine_mm), (grid.origin[0], grid.origin[1], 0.0))


def ccc_engine():
    """``art.dose.ccc.dose`` or None when it is not there (before issue 19's engine lands)."""
    try:
        from art.dose.ccc import dose
    except ImportError:
        return None
    return dose


def art_planes(case: str, field_mm: float, grid: PhantomGrid, machine, engines) -> dict:
    """Per art engine: ``{"x": (nx,), "dose": (ny, nx) Gy, "seconds": s}`` on the plane z = 0."""
    from art.dose import dose as pb_dose

    ct = art_phantom(case, grid)
    plan = open_field_plan(machine, field_mm)
    out = {}
    if "pb" in engines:
        t = time.perf_counter()
        plane = central_plane(grid)
        v = pb_dose(ct, plan, machine, dose_grid=plane, per_fraction=True)
        out["pb"] = {"x": plane.origin[0] + FINE_MM * np.arange(plane.shape[2]), "dose": np.asarray(v.array[0], np.float64),
                     "seconds": time.perf_counter() - t}  # fmt: skip
    ccc = ccc_engine() if "ccc" in engines else None
    if ccc is not None:
        t = time.perf_counter()
        v = ccc(ct, plan, machine, dose_grid=ct.grid, per_fraction=True)
        out["ccc"] = {"x": grid.axes()[2], "dose": np.asarray(v.array[grid.shape[0] // 2], np.float64), "seconds": time.perf_counter() - t}
    return out


def reference_plane(case: str, field_mm: float, grid: PhantomGrid, ref_dir: Path = REF_DIR) -> dict | None:
    """The WiscPlan dose (engine units) on the plane z = 0, or None without a matching npz."""
    p = npz_path(case, field_mm, grid.spacing_mm, ref_dir)
    if not p.is_file():
        return None
    z = np.load(p)
    if tuple(z["shape"]) != grid.shape or not np.allclose(z["origin_xyz_mm"], grid.origin):
        print(f"  {p.name}: its grid is not this phantom grid; ignored (re-run ccc_reference.py --force)")
        return None
    return {"x": grid.axes()[2], "dose": np.asarray(z["dose"][grid.shape[0] // 2], np.float64), "kernels": str(z["kernels"]),
            "provenance": json.loads(str(z["provenance"]))}  # fmt: skip


def machine_dose(machine, field_mm: float, depth_mm, *, mu: float = MU) -> np.ndarray:
    """Machine-data dose (Gy) on the axis of a square field at SSD 100: dose/MU · MU · S_cp · PDD / 100."""
    return machine.dose_per_mu_gy * mu * float(machine.output_factor(field_mm)) * machine.pdd(depth_mm, field_mm) / 100.0


def cax(entry: dict) -> np.ndarray:
    return entry["dose"][:, int(np.argmin(np.abs(entry["x"])))]


def profile_at(entry: dict, y: np.ndarray, depth: float) -> np.ndarray:
    """Lateral profile at ``depth`` (linear between the two rows around it)."""
    i = int(np.clip(np.searchsorted(y, depth) - 1, 0, y.size - 2))
    w = (depth - y[i]) / (y[i + 1] - y[i])
    return (1.0 - w) * entry["dose"][i] + w * entry["dose"][i + 1]


def compute_all(grid: PhantomGrid, machine, cases, fields, engines, ref_dir: Path) -> tuple[dict, dict]:
    """Every (case, field): each engine's plane (WiscPlan scaled to the machine data); and the timings."""
    planes, timings, scale = {}, {}, {}
    _, y, _ = grid.axes()
    for field in fields:
        for case in ["water"] + [c for c in cases if c != "water"]:
            t = time.perf_counter()
            got = art_planes(case, field, grid, machine, engines)
            if "wiscplan" in engines and (ref := reference_plane(case, field, grid, ref_dir)) is not None:
                if case == "water":
                    scale[field] = float(machine_dose(machine, field, NORM_DEPTH_MM)) / dose_at(y, cax(ref), NORM_DEPTH_MM)
                if field in scale:
                    ref["dose"] = ref["dose"] * scale[field]
                    ref["scale_gy_per_unit"] = scale[field]
                    got["wiscplan"] = ref
            planes[(case, field)] = got
            timings[f"{case}_{field:g}mm"] = {k: round(v["seconds"], 2) for k, v in got.items() if "seconds" in v}
            print(f"  {case:6s} {field:5.0f} mm: {', '.join(got) or 'no engine'} ({time.perf_counter() - t:.1f} s)", flush=True)
    return planes, timings


def pair_differences(got: dict, y: np.ndarray) -> dict:
    """CAX differences (local %, d_max – 25 cm) for each pair of engines present."""
    return {f"{a}_vs_{b}": cax_difference(y, cax(got[a]), cax(got[b]), depth_range=CAX_RANGE_MM) for a, b in PAIRS if a in got and b in got}


def case_summary(case: str, field: float, planes: dict, y: np.ndarray) -> dict:
    """The figures of one heterogeneous case (the water phantom of the same field as reference)."""
    got, water = planes[(case, field)], planes[("water", field)]
    row = {"case": case, "field_mm": field, "cax_difference_pct": pair_differences(got, y)}
    lo, hi = SLAB_SCORE_MM[case]
    row["slab_score_depths_mm"] = [lo, hi]
    row["slab_dose_vs_water_pct"] = {e: lung_drop(y, cax(got[e]), cax(water[e]), depth_range=(lo, hi)) for e in got if e in water}
    row["slab_dose_vs_pb_pct"] = {e: lung_drop(y, cax(got[e]), cax(got["pb"]), depth_range=(lo, hi)) for e in got if e != "pb" and "pb" in got}
    # the same depths in the water phantom: what of the difference is not the slab's (e.g. a PDD mismatch)
    row["water_dose_vs_pb_pct"] = {e: lung_drop(y, cax(water[e]), cax(water["pb"]), depth_range=(lo, hi)) for e in water if e != "pb" and "pb" in water}
    row["penumbra_80_20_mm"] = {e: penumbra_80_20(got[e]["x"], profile_at(got[e], y, PROFILE_DEPTH_MM)) for e in got}
    row["width_50_mm"] = {e: field_width_50(got[e]["x"], profile_at(got[e], y, PROFILE_DEPTH_MM)) for e in got}
    return row


def water_summary(field: float, planes: dict, y: np.ndarray, machine) -> dict:
    """Each engine in the water phantom against the machine file: PDD (normalised at d_max) beyond
    d_max, absolute dose at d_max (art's engines), d_max, and the reference field's penumbra."""
    got = planes[("water", field)]
    d_cal = machine.calib_depth_mm
    depths = machine.pdd_depth_mm[(machine.pdd_depth_mm >= CAX_RANGE_MM[0]) & (machine.pdd_depth_mm <= CAX_RANGE_MM[1])]
    table = machine.pdd(depths, field)
    out = {"field_mm": field, "pdd_depths_mm": depths.tolist(), "engines": {}}
    for e, entry in got.items():
        c = cax(entry)
        pdd = 100.0 * np.interp(depths, y, c) / dose_at(y, c, d_cal)
        r = {"pdd_difference_pct": cax_difference(depths, pdd, table, depth_range=CAX_RANGE_MM), "dmax_mm": float(y[int(np.argmax(c))])}
        if e != "wiscplan":
            r["absolute_at_dmax_pct"] = 100.0 * (dose_at(y, c, d_cal) / float(machine_dose(machine, field, d_cal)) - 1.0)
        if abs(field - machine.penumbra_field_mm) < 1e-6:
            r["penumbra_80_20_mm"] = {f"{d:g}": penumbra_80_20(entry["x"], profile_at(entry, y, float(d))) for d in machine.penumbra_depth_mm}
        out["engines"][e] = r
    if abs(field - machine.penumbra_field_mm) < 1e-6:
        out["machine_penumbra_80_20_mm"] = {f"{d:g}": float(p) for d, p in zip(machine.penumbra_depth_mm, machine.penumbra_mm)}
    return out


def git_commit() -> dict:
    def run(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": run("rev-parse", "HEAD") or None, "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 mm grid; JSON and figures under benchmarks/results/")
    ap.add_argument("--spacing", type=float, default=2.5, help="phantom grid spacing, mm (2, 2.5 or 5)")
    ap.add_argument("--cases", nargs="+", choices=[c for c in CASES if c != "water"], default=[c for c in CASES if c != "water"],
                    help="heterogeneous phantoms (the water phantom is always computed)")  # fmt: skip
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    ap.add_argument("--ref-dir", type=Path, default=REF_DIR, help="where ccc_reference.py wrote its npz files")
    ap.add_argument("--json", type=Path, default=None, help="default benchmarks/results/ccc_validation[_quick].json")
    ap.add_argument("--img-dir", type=Path, default=None, help="figures; default docs/img/dose_engines (--quick: benchmarks/results/ccc_validation_img)")
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables (markdown) to this file")
    args = ap.parse_args(argv)
    from art.dose import load_machine

    spacing = 5.0 if args.quick else args.spacing
    results = REPO / "benchmarks" / "results"
    json_out = args.json or results / ("ccc_validation_quick.json" if args.quick else "ccc_validation.json")
    img_dir = args.img_dir or (results / "ccc_validation_img" if args.quick else REPO / "docs" / "img" / "dose_engines")
    grid, machine = phantom_grid(spacing), load_machine()
    engines = [e for e in args.engines if e != "ccc" or ccc_engine() is not None]
    if "ccc" in args.engines and "ccc" not in engines:
        print("art.dose.ccc is not importable here: the art collapsed-cone rows stay empty (re-run once it lands)")
    t0 = time.perf_counter()
    planes, timings = compute_all(grid, machine, args.cases, FIELDS_MM, engines, args.ref_dir)
    _, y, _ = grid.axes()
    res = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "git": git_commit(), "spacing_mm": spacing,
        "machine": {"name": machine.name, "source": Path(machine.source).name, "digest": machine.digest}, "mu": MU,
        "engines": {e: LABELS[e] for e in ENGINES if any(e in g for g in planes.values())},
        "engines_missing": [e for e in ENGINES if not any(e in g for g in planes.values())],
        "hu": {c: {f"{lo:g}-{hi:g} mm": float(hu_for_density(rho, _hu_table())) for lo, hi, rho, _ in slabs} for c, slabs in CASES.items() if slabs},
        "wiscplan": next((g["wiscplan"]["provenance"] | {"kernels": g["wiscplan"]["kernels"]} for g in planes.values() if "wiscplan" in g), None),
        "wiscplan_scale_gy_per_unit": {f"{f:g}": planes[("water", f)]["wiscplan"]["scale_gy_per_unit"] for f in FIELDS_MM if "wiscplan" in planes[("water", f)]},
        "water": [water_summary(f, planes, y, machine) for f in FIELDS_MM],
        "cases": [case_summary(c, f, planes, y) for c in args.cases for f in FIELDS_MM],
        "lung_drop_vs_pb_pct": {},
        "timings_s": timings, "total_s": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "cpu_count": os.cpu_count(), "python": platform.python_version(),
    }  # fmt: skip
    for c in res["cases"]:  # the question: the lung dose drop of small fields that the pencil beam misses
        if c["case"] == "lung":
            for e, v in c["slab_dose_vs_pb_pct"].items():
                res["lung_drop_vs_pb_pct"].setdefault(e, {})[f"{c['field_mm']:g}"] = v
    print_tables(res)
    figures = plot_all(planes, y, machine, img_dir, args.cases)
    res["figures"] = [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in figures]
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(res, indent=2))
    print(f"wrote {json_out} and {len(figures)} figure(s) in {img_dir}")
    if args.markdown:
        args.markdown.write_text(markdown_tables(res))
        print(f"wrote {args.markdown}")
    return 0


def _hu_table():
    from art.dose.machine import load_hu_table

    return load_hu_table()


if __name__ == "__main__":
    raise SystemExit(main())
