"""Benchmark: daily re-plans one after another vs on a Dask LocalCluster (issue 18, ``art batch``).

Builds ``--n`` daily re-plans (default 6) of ``--patients`` digital patients (default 2;
the re-plans are spread over them, one reference per patient planned by
:func:`art.jobs.plan_job`, or with ``--quick`` a reference plan of open fields written
without optimisation), then runs them

* serially: :func:`art.node.engine.run_replan` in this process, one after another (each
  using every CPU, as ``art replan`` does), and
* on an embedded LocalCluster of ``--workers`` (2) workers × ``--threads-per-worker`` (1)
  thread, through :func:`art.node.batch.run_batch` (what ``art batch`` runs),

and prints the wall time, the throughput (re-plans per hour) and the peak RSS (resident
memory of this process serially, of each worker process on the cluster; sampled every
0.5 s with psutil, child processes such as Chromium not included). Writes
``benchmarks/results/bench_batch.json``.

``--size demo`` (default): the phantom's default planning CT spacing (3, 2, 2) mm and its
protocol; ``--size coarse``: (5, 4, 4) mm, a 5 mm dose grid and a 4 mm export grid.

Then, unless ``--skip-latency``, the DICOM node's latency: ``art serve``'s node (a LocalCluster
of one worker with every core) with a real Orthanc as the destination; dcmtk's storescu sends
the first patient's next CBCT, and the time runs from the last instance stored to the RTPLAN
stored in Orthanc (split into the quiet period, queueing, the re-plan and the send, from the
job's history). Needs Orthanc and dcmtk (as the tests do).

Run: ``.venv/bin/python benchmarks/bench_batch.py [--n 6] [--size demo|coarse] [--quick] [--skip-serial] [--skip-latency] [--keep DIR]``.
A full run takes many minutes; a smoke test: ``--n 2 --size coarse --quick``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class RssSampler:
    """Peak resident memory (MiB) of a changing set of processes, sampled in a thread."""

    def __init__(self, pids, *, interval_s: float = 0.5, refresh_s: float = 5.0):
        self._pids, self.interval_s, self.refresh_s = pids, interval_s, refresh_s
        self.peak_mb: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        pids, last = [], -math.inf
        while not self._stop.is_set():
            if time.monotonic() - last > self.refresh_s:
                try:
                    pids, last = list(self._pids()), time.monotonic()
                except Exception:  # a worker restarting: keep the last list
                    pass
            for pid in pids:
                try:
                    mb = psutil.Process(pid).memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peak_mb[pid] = max(self.peak_mb.get(pid, 0.0), mb)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def build_jobs(root: Path, *, n: int, patients: int, size: str, quick: bool) -> tuple[list, dict, list]:
    """``n`` BatchJobs spread over the patients; the build times (s); the patients (:func:`make_case` records)."""
    from art.node.batch import BatchJob
    from art.node.engine import JobSpec
    from tests.node.replan_case import COARSE_SPACING, make_case

    coarse = size == "coarse"
    per_patient = math.ceil(n / patients)
    cases, t = [], time.perf_counter()
    for p in range(patients):
        case = make_case(root / f"patient{p}", seed=p, fractions=per_patient, spacing=COARSE_SPACING if coarse else (3.0, 2.0, 2.0),
                         optimise=not quick, coarse_dose_grid=coarse)  # fmt: skip
        cases.append(case)
        print(f"patient {p}: reference {'without optimisation' if quick else 'planned by plan_job'} ({time.perf_counter() - t:.0f} s)", flush=True)
    jobs = []
    for k in range(n):
        case, day = cases[k % patients], k // patients
        name = f"p{k % patients}-day{day + 1}"
        spec = JobSpec(reference=case["reference"], cbct=case["cbcts"][day], out=root / "OUT" / name, final_grid_mm=4.0 if coarse else None)
        jobs.append(BatchJob(name=name, row=k + 1, spec=spec))
    return jobs, {"build_s": round(time.perf_counter() - t, 1)}, cases


def _with_out(jobs: list, folder: Path) -> list:
    from dataclasses import replace

    return [replace(j, spec=replace(j.spec, out=folder / j.name)) for j in jobs]


def run_serial(jobs: list, folder: Path) -> dict:
    from art.node.engine import run_replan

    rows, t = [], time.perf_counter()
    with RssSampler(lambda: [os.getpid()]) as rss:
        for job in _with_out(jobs, folder):
            rec = run_replan(job.spec)
            rows.append({"name": job.name, **rec})
            print(f"  serial {job.name}: {rec['status']} in {rec['wall_s']:.0f} s", flush=True)
    wall = time.perf_counter() - t
    return {"wall_s": round(wall, 1), "replans_per_hour": round(len(jobs) / wall * 3600, 1),
            "peak_rss_mb": round(max(rss.peak_mb.values(), default=0.0), 1), "rows": rows}  # fmt: skip


def _print_row(r: dict) -> None:
    print(f"  cluster {r['name']}: {r['status']} in {r['wall_s'] or 0:.0f} s", flush=True)


def run_cluster(jobs: list, folder: Path, *, workers: int, threads: int) -> dict:
    from art.node.batch import run_batch
    from art.node.engine import JobEngine

    with JobEngine(workers=workers, threads_per_worker=threads, retries=0) as engine:
        t = time.perf_counter()
        with RssSampler(lambda: engine.worker_pids().values()) as rss:
            rows = run_batch(_with_out(jobs, folder), engine, progress=_print_row)
        wall = time.perf_counter() - t
    return {"workers": workers, "threads_per_worker": threads, "wall_s": round(wall, 1), "replans_per_hour": round(len(jobs) / wall * 3600, 1),
            "peak_rss_mb_per_worker": {str(pid): round(mb, 1) for pid, mb in rss.peak_mb.items()}, "rows": rows}  # fmt: skip


def node_latency(case: dict, cbct: Path, folder: Path, *, quiet_period_s: float) -> dict:
    """Last CBCT instance received → RTPLAN stored in Orthanc, through the node (s), with the job's stages."""
    from art.node.config import load_config
    from art.node.registry import register_reference
    from art.node.store import NodeStore
    from tests.node.node_support import running_node, series_uid, wait_for, write_config
    from tests.node.orthanc import OrthancServer
    from tests.node.scp_support import storescu

    folder.mkdir(parents=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with OrthancServer(folder / "orthanc") as pacs:
        cfg = write_config(folder, orthanc=pacs, quiet_period_s=quiet_period_s, incomplete_timeout_s=max(60.0, quiet_period_s),
                           workers=1, threads=cpus)  # fmt: skip
        register_reference(NodeStore(load_config(cfg).database), case["reference"])
        with running_node(cfg) as node:
            t0 = time.time()
            r = storescu(node.scp.port, cbct)
            if r.returncode != 0:
                raise RuntimeError(f"storescu failed: {r.stderr[-500:]}")
            t_last = time.time()  # storescu returns after the last instance's success (the SCP answers once it is on disk)
            uid = series_uid(cbct)
            wait_for(lambda: pacs.find(modality="RTPLAN"), timeout_s=1800, what="the RTPLAN in Orthanc", interval_s=0.1)
            t_plan = time.time()
            (job,) = [j for j in node.store.jobs() if j["series_uid"] == uid]
            wait_for(lambda: node.store.job(job["id"])["state"] in ("sent", "failed"), timeout_s=120, what="the job ends")
            hist = node.store.history(job["id"])
    at = {}
    for t, state, _ in hist:
        at.setdefault(state, t)
    return {
        "sent_s": round(t_last - t0, 2), "latency_s": round(t_plan - t_last, 1), "quiet_period_s": quiet_period_s,
        "stages_s": {"to_job": round(at["received"] - t_last, 1), "checked_and_queued": round(at["queued"] - at["received"], 1),
                     "replan_and_copy": round(at["done"] - at["queued"], 1), "send": round(at.get("sent", t_plan) - at["done"], 1)},
        "threads": cpus, "state": node.store.job(job["id"])["state"],
    }  # fmt: skip


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="number of re-plans (default 6)")
    ap.add_argument("--patients", type=int, default=2, help="digital patients the re-plans are spread over (default 2)")
    ap.add_argument("--size", choices=("demo", "coarse"), default="demo")
    ap.add_argument("--quick", action="store_true", help="references without optimisation (open fields) instead of plan_job")
    ap.add_argument("--skip-serial", action="store_true", help="run only the cluster part")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads-per-worker", type=int, default=1)
    ap.add_argument("--skip-latency", action="store_true", help="do not measure the DICOM node's latency")
    ap.add_argument("--quiet-period-s", type=float, default=5.0, help="the node's quiet period in the latency run (default 5 s)")
    ap.add_argument("--keep", type=Path, help="keep the patients and results here")
    args = ap.parse_args()
    if args.n < 1 or not 1 <= args.patients <= args.n:
        ap.error("need --n >= 1 and 1 <= --patients <= --n")
    return args


def main() -> None:
    args = _args()
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    root = args.keep or Path(tempfile.mkdtemp(prefix="art-bench-batch-"))
    root.mkdir(parents=True, exist_ok=True)
    jobs, build, cases = build_jobs(root, n=args.n, patients=args.patients, size=args.size, quick=args.quick)
    res = {"benchmark": "batch", "n": args.n, "patients": args.patients, "size": args.size, "quick": args.quick,
           "machine": platform.platform(), "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "load_average_start": os.getloadavg()[0], **build}  # fmt: skip
    if not args.skip_serial:
        print(f"serial: {args.n} re-plans one after another", flush=True)
        res["serial"] = run_serial(jobs, root / "serial")
    print(f"cluster: {args.n} re-plans on {args.workers} workers × {args.threads_per_worker} thread(s)", flush=True)
    res["cluster"] = run_cluster(jobs, root / "cluster", workers=args.workers, threads=args.threads_per_worker)
    if "serial" in res:
        res["speedup"] = round(res["serial"]["wall_s"] / res["cluster"]["wall_s"], 2)
    if not args.skip_latency:
        print("node latency: storescu → art serve's node → Orthanc", flush=True)
        res["node_latency"] = node_latency(cases[0], cases[0]["cbcts"][-1], root / "latency", quiet_period_s=args.quiet_period_s)
    print(f"\n{'':<10} {'wall s':>8} {'re-plans/h':>11}  peak RSS MB")
    if "serial" in res:
        s = res["serial"]
        print(f"{'serial':<10} {s['wall_s']:>8.0f} {s['replans_per_hour']:>11.1f}  {s['peak_rss_mb']:.0f} (this process)")
    c = res["cluster"]
    print(f"{'cluster':<10} {c['wall_s']:>8.0f} {c['replans_per_hour']:>11.1f}  "
          f"{', '.join(f'{v:.0f}' for v in c['peak_rss_mb_per_worker'].values())} (per worker)")  # fmt: skip
    if "speedup" in res:
        print(f"speed-up cluster vs serial: {res['speedup']:.2f}×")
    if "node_latency" in res:
        lat = res["node_latency"]
        print(f"node latency, last CBCT instance stored → RTPLAN in Orthanc: {lat['latency_s']:.1f} s ({lat['stages_s']}; job {lat['state']})")
    failed = [r["name"] for part in ("serial", "cluster") if part in res for r in res[part]["rows"] if r["status"] != "done"]
    if failed:
        print(f"FAILED re-plans: {failed}")
    out = REPO / "benchmarks" / "results" / "bench_batch.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"written {out}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
