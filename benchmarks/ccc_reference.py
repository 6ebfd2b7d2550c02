"""Independent collapsed-cone reference: the WiscPlan CCC engine on the slab phantoms (slow benchmark).

The reference for ``benchmarks/ccc_validation.py`` is a collapsed-cone engine that shares no code
with art: the WiscPlan CCC C++ engine (University of Wisconsin; Murray/Hoban Siddon ray trace,
Papanikolaou–Mackie inverse square) as shipped, prebuilt for x86-64 Linux with its 6 MV kernel
tables, in the ``opentps-core`` 2.0.0 wheel (Apache-2.0, OpenTPS consortium). This script

1. finds the engine in ``--cache`` (default ``benchmarks/results/opentps/``, gitignored), or
   unpacks it there from the wheel, downloading the wheel with
   ``pip download --no-deps opentps-core==2.0.0`` when it is missing (opentps itself is never
   imported: its package has heavy dependencies);
2. writes the engine's input files itself (the formats of opentps' ``cccDoseCalculator.py`` and
   ``CCCdoseEngineIO.py``, checked against the engine's C++ sources in the wheel): the kernel
   file list, the geometry header (grid size, first voxel centre relative to the isocentre and
   voxel size, cm) and density (float32, x fastest), and one beam spec whose aperture is the whole
   open field (SAD, aperture centre and size at the isocentre plane, cm; source position and the
   beam's-eye-view unit vectors);
3. runs it (one process per case, ``--jobs`` at a time) and reads its sparse output (int32 beam
   count; per beam: number, M, N, Q, count, int32 indices i + M (j + N k), float32 values).

The engine's grid is the phantom's LPS grid shifted so that the isocentre is at its origin
(x = L, y = P, z = S, cm); a gantry-0 beam comes from the source at y = −SAD along +y. Its dose is
in arbitrary units (TERMA of unit energy fluence per area at the SAD; the engine applies the
inverse square after the convolution); ``ccc_validation.py`` scales it per field size to the
machine data in the water phantom at 10 cm depth. The engine drops doses below 0.5 % of the
maximum and computes inside a cylinder around the beam (field diagonal projected to the far
corner + 2 cm). It models no source size, head scatter or MLC/jaw transmission.

Output: ``benchmarks/results/ccc_reference/wiscplan_<case>_<field>mm_<spacing>mm.npz`` (dose
(z, y, x) float32, grid shape/spacing/origin (x, y, z) LPS mm, density along depth, provenance)
and ``benchmarks/results/ccc_reference.json`` (timings). Existing npz files are kept unless ``--force``.

Usage::

    .venv/bin/python benchmarks/ccc_reference.py                 # 3 phantoms x 2 fields, 2.5 mm
    .venv/bin/python benchmarks/ccc_reference.py --quick         # 5 mm grid (minutes)
    .venv/bin/python benchmarks/ccc_reference.py --cases lung --fields 30 --spacing 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ccc_common import CASES, FIELDS_MM, SAD_MM, density_array, phantom_grid  # noqa: E402

WHEEL = "opentps_core-2.0.0-py3-none-any.whl"
WHEEL_SHA256 = "37d400264a3fe1c529f555aa669ae3178a088d56ab1be5a24b2af444fb073a61"
"""PyPI's opentps-core 2.0.0 wheel, as downloaded when this script was written."""
PHOTONS = "opentps/core/processing/doseCalculation/photons"
DEFAULT_CACHE = REPO / "benchmarks" / "results" / "opentps"
OUT_DIR = REPO / "benchmarks" / "results" / "ccc_reference"
KERNEL_SETS = {"6MV": "Kernels_6MV", "differentFluence": "Kernels_differentFluence"}


def npz_path(case: str, field_mm: float, spacing_mm: float, out_dir: Path = OUT_DIR) -> Path:
    """Where the reference dose of one case lies (also read by ccc_validation.py)."""
    return out_dir / f"wiscplan_{case}_{field_mm:g}mm_{spacing_mm:g}mm.npz"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_engine(cache: Path) -> tuple[Path, dict]:
    """The unpacked ``photons`` folder of the wheel in ``cache`` (unpacked, or downloaded, when missing)."""
    photons = cache / PHOTONS
    binary = photons / "CCC_DoseEngine" / "CCC_DoseEngine"
    wheel = cache / WHEEL
    if not binary.is_file():
        if not wheel.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            print(f"downloading opentps-core 2.0.0 (the WiscPlan engine) into {cache} ...", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "opentps-core==2.0.0", "-d", str(cache)],
                           check=True, timeout=600)  # fmt: skip
        if (got := _sha256(wheel)) != WHEEL_SHA256:
            raise SystemExit(f"{wheel}: SHA-256 {got} is not the opentps-core 2.0.0 wheel's ({WHEEL_SHA256}); remove it and run again")
        with zipfile.ZipFile(wheel) as z:
            members = [m for m in z.namelist() if m.startswith(PHOTONS + "/")]
            z.extractall(cache, members)
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"the prebuilt WiscPlan engine runs on x86-64 Linux only (this is {platform.system()} {platform.machine()})")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    info = {"package": "opentps-core 2.0.0 (Apache-2.0)", "engine_sha256": _sha256(binary)}
    if wheel.is_file():
        info["wheel_sha256"] = _sha256(wheel)
    return photons, info


def write_inputs(work: Path, photons: Path, kernels: str, density: np.ndarray, grid, field_mm: float) -> list[str]:
    """The engine's four input files in ``work``; returns its command line."""
    work.mkdir(parents=True, exist_ok=True)
    kdir = photons / KERNEL_SETS[kernels]
    lines = []
    for f in sorted(kdir.iterdir()):  # the marker of each file is kernel_<stem> (kernel_header.txt: its stem)
        stem = f.stem
        lines += [stem if f.suffix == ".txt" else f"kernel_{stem}", str(f)]
    (work / "kernels.txt").write_text("\n".join(lines) + "\n")
    nz, ny, nx = grid.shape
    s_cm = grid.spacing_mm / 10.0
    start = np.asarray(grid.origin) / 10.0  # isocentre at (0, 0, 0) LPS = the engine's origin
    (work / "header.txt").write_text(f"Xcount Ycount Zcount\n{nx} {ny} {nz}\nXstart Ystart Zstart\n{start[0]:.6f} {start[1]:.6f} {start[2]:.6f}\n"
                                     f"dx dy dz\n{s_cm:.6f} {s_cm:.6f} {s_cm:.6f}\n")  # fmt: skip
    np.ascontiguousarray(density, dtype=np.float32).tofile(work / "density.bin")  # (z, y, x) C order: x fastest
    (work / "geometry.txt").write_text(f"geometry_header\n{work / 'header.txt'}\ngeometry_density\n{work / 'density.bin'}\n")
    sad, f_cm = SAD_MM / 10.0, field_mm / 10.0
    # gantry 0 (HFS): source anterior at y = -SAD, beam along +y; ip x jp = kp
    spec = ("beamnum:\n1\n\nnum\n0\nSAD xp yp del_xp del_yp\n"
            f"{sad:f} 0.000000 0.000000 {f_cm:f} {f_cm:f}\ny_vec\n0.000000 {-sad:f} 0.000000\n"
            "ip\n1.000000 0.000000 0.000000\njp\n0.000000 0.000000 -1.000000\nkp\n0.000000 1.000000 0.000000\n\n")  # fmt: skip
    (work / "beam.txt").write_text(spec)
    for name in ("kernels.txt", "geometry.txt", "beam.txt"):
        if any(c.isspace() for c in str(work / name)):
            raise SystemExit(f"the engine reads file names with fscanf %s: no spaces allowed in {work}")
    return [str(photons / "CCC_DoseEngine" / "CCC_DoseEngine"), str(work / "kernels.txt"), str(work / "geometry.txt"), str(work / "beam.txt"), str(work / "dose.bin")]


def read_dose(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """The engine's sparse output of one beam as a dense (z, y, x) float32 array."""
    raw = path.read_bytes()
    head = np.frombuffer(raw, np.int32, count=6)
    if head[0] != 1:
        raise RuntimeError(f"{path}: {head[0]} beams, expected 1")
    _, m, n, q, nind = (int(v) for v in head[1:6])
    if (q, n, m) != tuple(shape):
        raise RuntimeError(f"{path}: grid {(q, n, m)} is not the phantom's {shape}")
    if nind == 0:
        raise RuntimeError(f"{path}: the engine returned no dose (it failed; see its output)")
    ind = np.frombuffer(raw, np.int32, count=nind, offset=24)
    val = np.frombuffer(raw, np.float32, count=nind, offset=24 + 4 * nind)
    dose = np.zeros(m * n * q, np.float32)
    dose[ind] = val
    return dose.reshape(shape)


def run_case(case: str, field_mm: float, spacing_mm: float, *, photons: Path, info: dict, kernels: str, cache: Path, out_dir: Path) -> dict:
    """Compute one case with the engine and write its npz."""
    grid = phantom_grid(spacing_mm)
    density = density_array(case, grid)
    work = cache / "work" / f"{case}_{field_mm:g}mm_{spacing_mm:g}mm"
    if work.exists():
        shutil.rmtree(work)
    cmd = write_inputs(work, photons, kernels, density, grid, field_mm)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=6 * 3600, check=False)
    wall = time.perf_counter() - t0
    (work / "engine.log").write_text(proc.stdout + proc.stderr)
    if "Successfully calculated beamlet" not in proc.stdout:  # the engine exits 1 on success, 0 on failure
        raise RuntimeError(f"{case} {field_mm:g} mm: the engine failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    dose = read_dose(work / "dose.bin", grid.shape)
    _, y, _ = grid.axes()
    out = npz_path(case, field_mm, spacing_mm, out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, dose=dose, shape=np.array(grid.shape), spacing_mm=grid.spacing_mm, origin_xyz_mm=np.array(grid.origin),
                        depth_mm=y, density_along_depth=density[grid.shape[0] // 2, :, grid.shape[2] // 2], case=case, field_mm=field_mm,
                        kernels=kernels, sad_mm=SAD_MM, units="arbitrary (engine units)", provenance=json.dumps(info))  # fmt: skip
    (work / "density.bin").unlink(missing_ok=True)  # keep the inputs and log, drop the big files
    (work / "dose.bin").unlink(missing_ok=True)
    print(f"  {case:6s} {field_mm:5.0f} mm  {spacing_mm:g} mm grid  {wall:8.1f} s  -> {out.relative_to(REPO) if out.is_relative_to(REPO) else out}", flush=True)
    return {"case": case, "field_mm": field_mm, "spacing_mm": spacing_mm, "wall_s": round(wall, 1), "npz": str(out), "max_dose_au": float(dose.max()), "kernels": kernels}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--fields", nargs="+", type=float, default=list(FIELDS_MM), help="square field sides at the isocentre, mm")
    ap.add_argument("--spacing", type=float, default=2.5, help="grid spacing, mm (2, 2.5 or 5)")
    ap.add_argument("--quick", action="store_true", help="5 mm grid")
    ap.add_argument("--kernels", choices=list(KERNEL_SETS), default="6MV", help="the wheel's kernel set (spectrum): Kernels_6MV or Kernels_differentFluence")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the wheel is (or is downloaded) and unpacked; engine work folders")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    ap.add_argument("--jobs", type=int, default=1, help="cases run at once (the engine is single-threaded)")
    ap.add_argument("--force", action="store_true", help="recompute cases whose npz exists")
    args = ap.parse_args(argv)
    spacing = 5.0 if args.quick else args.spacing
    photons, info = find_engine(args.cache.resolve())
    info["kernels"] = KERNEL_SETS[args.kernels]
    todo = [(c, f) for c in args.cases for f in args.fields if args.force or not npz_path(c, f, spacing, args.out_dir).is_file()]
    print(f"WiscPlan CCC ({info['package']}, {info['kernels']}): {len(todo)} case(s) to compute on a {spacing:g} mm grid", flush=True)

    def one(cf):
        return run_case(cf[0], cf[1], spacing, photons=photons, info=info, kernels=args.kernels, cache=args.cache.resolve(), out_dir=args.out_dir)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(one, todo))
    summary = args.out_dir.parent / "ccc_reference.json"
    old = json.loads(summary.read_text()) if summary.is_file() else {}
    runs = {f"{r['case']}_{r['field_mm']:g}mm_{r['spacing_mm']:g}mm": r for r in old.get("runs", [])}
    runs.update({f"{r['case']}_{r['field_mm']:g}mm_{r['spacing_mm']:g}mm": r for r in rows})
    summary.write_text(json.dumps({"engine": info, "cpu_count": os.cpu_count(), "runs": sorted(runs.values(), key=lambda r: (r["spacing_mm"], r["case"], r["field_mm"]))}, indent=2))
    print(f"wrote {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
