"""Cheap task functions for the engine tests (module level: the Dask workers import them).

Each takes a :class:`art.node.engine.JobSpec` (or plain arguments) and leaves marker files
so that a test can count how many times a task started and finished.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from art.errors import InputError


def square(x: int) -> int:
    return x * x


def worker_environment(names: list[str]) -> dict:
    """The worker's values of some environment variables and its torch/ITK thread counts (after :func:`limit_threads`)."""
    from art.node.engine import _job_threads, limit_threads

    at_start = {}  # the environment the process was started with (what BLAS/OpenMP read when loaded)
    if Path("/proc/self/environ").exists():
        pairs = (item.split(b"=", 1) for item in Path("/proc/self/environ").read_bytes().split(b"\0") if b"=" in item)
        at_start = {k.decode(): v.decode() for k, v in pairs if k.decode() in names}
    limit_threads(_job_threads())
    import SimpleITK as sitk
    import torch

    return {"env": {n: os.environ.get(n) for n in names}, "at_start": at_start, "torch": torch.get_num_threads(),
            "itk": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(), "pid": os.getpid()}  # fmt: skip


def flaky(folder: str, value: int) -> int:
    """Raise a non-art error on the first call (leaving a marker), return ``value`` on the next."""
    marker = Path(folder, "failed-once")
    if not marker.exists():
        marker.touch()
        raise RuntimeError("simulated transient failure")
    return value


def marked_sleep(folder: str, seconds: float, value: int) -> dict:
    """Write ``start-<pid>-<id>``, sleep, write ``done-<pid>-<id>``; return ``value`` with the pid."""
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    Path(folder, f"start-{tag}").touch()
    time.sleep(seconds)
    Path(folder, f"done-{tag}").touch()
    return {"value": value, "pid": os.getpid()}


def fake_replan(job) -> dict:
    """A stand-in for :func:`art.node.engine.run_replan`: ``"bad"`` in the CBCT's name fails like an input error,
    ``"crash"`` raises a non-art exception, else ``out`` is written with one file."""
    if "crash" in job.cbct.name:
        raise RuntimeError("simulated crash")
    if "bad" in job.cbct.name:
        err = InputError("the CBCT is broken", path=job.cbct)
        return {"status": "failed", "out": str(job.out), "error": str(err), "exit_code": 1, "wall_s": 0.0}
    job.out.mkdir(parents=True)
    (job.out / "summary.json").write_text("{}", encoding="utf-8")
    met = "unmet" not in job.cbct.name
    return {"status": "done", "out": str(job.out), "priority1_met": met, "recommendation": "adapted",
            "exit_code": 0 if met else 3, "wall_s": 0.01}  # fmt: skip
