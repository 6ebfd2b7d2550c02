"""Coverage-guided fuzzing of the readers (atheris / libFuzzer), a benchmark-style run (issue 9).

Targets
-------
series     ``art.io.read_image_series`` on a folder of one valid CT slice plus one fuzzed file
rtstruct   ``art.io.read_rtstruct`` of a fuzzed RTSTRUCT against a small CT grid
protocol   ``art.optimize.parse_protocol`` of fuzzed TOML text
rtplan     ``art.io.rtplan.read_rtplan`` of a fuzzed RT Plan (when the module exists)
rtdose     ``art.io.rtdose.read_rtdose`` of a fuzzed RT Dose (when the module exists)

A reader may refuse an input only with an :class:`art.errors.ArtError` (a clear
message); any other exception is a finding: the input is saved under
``benchmarks/results/fuzz-crashes/`` and the run stops.

Run: ``.venv/bin/python benchmarks/fuzz_readers.py [--runs 100000] [target ...]``
(needs ``pip install atheris``; each target runs in its own process). Prints the
inputs executed per target and writes ``benchmarks/results/fuzz.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ["series", "rtstruct", "protocol", "rtplan", "rtdose"]


def _seed_files(target: str, seed_dir: Path, work: Path) -> None:
    """Write valid seed inputs for a target (from a tiny digital patient)."""
    import numpy as np

    from art.geometry import Grid, Volume
    from art.io import PatientInfo, write_image_series, write_rtstruct
    from art.structures import Structure, StructureSet

    grid = Grid((4, 16, 16), (3.0, 2.0, 2.0), (-15.0, -15.0, -4.5))
    z, y, x = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    body = (x - 7.5) ** 2 + (y - 7.5) ** 2 < 49
    ct = Volume(np.where(body, 40.0, -1000.0).astype(np.float32), grid)
    series = write_image_series(ct, work / "CT", patient=PatientInfo(name="Fuzz^Seed", id="FUZZ"))
    seed_dir.mkdir(parents=True, exist_ok=True)
    if target == "series":
        (seed_dir / "slice.dcm").write_bytes(series.files[1].read_bytes())
    elif target == "rtstruct":
        ss = StructureSet(grid, [Structure("BODY", body, grid, "EXTERNAL"), Structure("PTV", body & (x > 6), grid, "PTV")])
        write_rtstruct(ss, series, seed_dir / "rs.dcm")
    elif target == "protocol":
        from art_phantoms import default_protocol_text

        (seed_dir / "protocol.toml").write_text(default_protocol_text())
    elif target == "rtplan":
        import pydicom.data

        (seed_dir / "rp.dcm").write_bytes(Path(pydicom.data.get_testdata_file("rtplan.dcm")).read_bytes())
    elif target == "rtdose":
        import pydicom.data

        (seed_dir / "rd.dcm").write_bytes(Path(pydicom.data.get_testdata_file("rtdose.dcm")).read_bytes())


def _child(target: str, runs: int, seed_dir: Path, work: Path, crash_dir: Path) -> None:
    """Run one target under atheris (in this process)."""
    import atheris

    with atheris.instrument_imports():
        import art.io  # noqa: F401
        import art.protocol  # noqa: F401
    from art.errors import ArtError
    from art.io import read_image_series, read_rtstruct

    fuzz_file = work / "fuzz" / "input.dcm"
    fuzz_file.parent.mkdir(parents=True, exist_ok=True)
    ct_dir = work / "CT"
    series = read_image_series(ct_dir) if target in ("series", "rtstruct") else None
    if target == "series":
        folder = work / "series"
        folder.mkdir(exist_ok=True)
        (folder / "a.dcm").write_bytes(series.files[0].read_bytes())
        fuzz_file = folder / "b.dcm"

    def call(data: bytes) -> None:
        if target == "protocol":
            from art.protocol import parse_protocol

            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                return
            parse_protocol(text, source="fuzz.toml")
            return
        fuzz_file.write_bytes(data)
        if target == "series":
            read_image_series(fuzz_file.parent)
        elif target == "rtstruct":
            read_rtstruct(fuzz_file, series)
        elif target == "rtplan":
            from art.io.rtplan import read_rtplan

            read_rtplan(fuzz_file)
        elif target == "rtdose":
            from art.io.rtdose import read_rtdose

            read_rtdose(fuzz_file)

    def one_input(data: bytes) -> None:
        try:
            call(data)
        except ArtError:
            pass
        except Exception:
            import traceback

            crash_dir.mkdir(parents=True, exist_ok=True)
            stem = crash_dir / f"{target}-{int(time.time() * 1000)}"
            stem.with_suffix(".bin").write_bytes(data)
            stem.with_suffix(".txt").write_text(traceback.format_exc())
            if target == "series":  # the companion slice, to reproduce
                stem.with_suffix(".a.dcm").write_bytes((fuzz_file.parent / "a.dcm").read_bytes())
            raise

    crash_dir.mkdir(parents=True, exist_ok=True)
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=200000", "-print_final_stats=1", f"-artifact_prefix={crash_dir}/", str(seed_dir)], one_input)
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", default=TARGETS)
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    crash_dir = RESULTS / "fuzz-crashes"
    if args.child:
        work = Path(os.environ["ART_FUZZ_WORK"])
        _child(args.child, args.runs, work / "seeds", work, crash_dir)
        return 0
    results = {}
    for target in args.targets:
        if target in ("rtplan", "rtdose"):
            import importlib.util

            if importlib.util.find_spec(f"art.io.{target}") is None:
                print(f"{target}: skipped (art.io.{target} not present)")
                results[target] = {"skipped": True}
                continue
        with tempfile.TemporaryDirectory(prefix=f"art-fuzz-{target}-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
            work = Path(tmp)
            _seed_files(target, work / "seeds", work)
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--child", target, "--runs", str(args.runs)],
                env={**os.environ, "ART_FUZZ_WORK": str(work)},
                capture_output=True,
                text=True,
            )
            dt = time.perf_counter() - t
        log = proc.stdout + proc.stderr
        m = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
        executed = int(m.group(1)) if m else None
        ok = proc.returncode == 0
        results[target] = {"executed": executed, "seconds": round(dt, 1), "exit_code": proc.returncode, "unhandled_exception": not ok}
        print(f"{target}: {executed} inputs in {dt:.0f} s, " + ("no unhandled exception" if ok else "UNHANDLED EXCEPTION (see below)"))
        if not ok:
            print("\n".join(log.splitlines()[-40:]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fuzz.json").write_text(json.dumps({"runs_requested": args.runs, "targets": results}, indent=2))
    print(f"wrote {RESULTS / 'fuzz.json'}")
    return 0 if all(not r.get("unhandled_exception") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
