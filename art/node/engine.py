"""The job engine: daily re-plans as tasks on ``dask.distributed``.

:class:`JobEngine` runs jobs on an embedded :class:`distributed.LocalCluster` (worker
processes on this machine, sized by :func:`machine_size`) or on an existing cluster
(``scheduler="tcp://HOST:8786"``). One re-plan is one task, :func:`run_replan`, which
runs :func:`art.jobs.replan_job` in the worker and returns a small result record.

Failures
--------
* An :class:`art.errors.ArtError` (bad input: a missing file, a CBCT of another frame of
  reference ...) becomes a ``"failed"`` record; it is not retried (it would fail again).
* Any other exception propagates: Dask retries the task (``retries``).
* A worker process that dies (killed, out of memory) is restarted by its nanny and the
  scheduler reschedules its task on a live worker; after ``retries`` such deaths the task
  fails with ``KilledWorker`` (the scheduler's ``allowed-failures``, set from ``retries``
  on the embedded cluster; an existing cluster keeps its own configuration).
* Results are written atomically (:func:`art.outputs.atomic_output_dir`): a worker killed
  mid-job leaves no ``out`` folder, only its hidden temporary sibling
  ``.<out name>.tmp-*``; the retry removes such stale folders (under a per-output lock on
  its machine, so never one a live job on that machine is writing) before it writes the
  result afresh. (Workers on several hosts sharing a file system: a worker the scheduler
  presumes dead while it is still writing could lose its temporary folder to the retry;
  its own move then fails and the retry's result stands.)

Threads
-------
Each worker of the embedded cluster runs one re-plan at a time (Dask resource
``replan=1``) with ``threads_per_worker`` threads for BLAS/OpenMP (``OMP_NUM_THREADS``
and friends, set before the worker process starts), PyTorch (``torch.set_num_threads``)
and SimpleITK (``ProcessObject.SetGlobalDefaultNumberOfThreads``). Workers of an
existing cluster take ``ART_JOB_THREADS`` from their environment if set, else their
CPUs divided by their task slots; start them with ``--resources replan=1`` to run one
re-plan at a time per worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from art.errors import ArtError, InputError, NetworkError

#: The Dask resource a re-plan task holds: one per worker of the embedded cluster.
REPLAN_RESOURCE = "replan"

#: Environment variables that size the thread pools of BLAS, OpenMP, numexpr and ITK.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "ART_JOB_THREADS",
)  # fmt: skip


def _cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def machine_size(*, memory_per_job_gb: float = 3.0) -> tuple[int, int]:
    """Workers and threads per worker for re-plans on this machine.

    ``workers = max(1, min(cpus, floor(available memory / memory_per_job_gb)))`` and
    ``threads = max(1, cpus // workers)``, where ``cpus`` is the number of CPUs this
    process may use (``os.sched_getaffinity``, else ``os.cpu_count``) and the available
    memory is :func:`psutil.virtual_memory`'s ``available`` (free + reclaimable, bytes).
    A container's CPU quota (cgroup) is not read: pass ``workers=`` to
    :class:`JobEngine` there.

    Parameters
    ----------
    memory_per_job_gb : float, keyword-only
        Peak memory of one re-plan, GiB (default 3).

    Returns
    -------
    (int, int)
        ``(workers, threads_per_worker)``, each ≥ 1.
    """
    import psutil

    if not isinstance(memory_per_job_gb, (int, float)) or not memory_per_job_gb > 0:
        raise InputError(f"memory_per_job_gb must be a positive number of GiB, got {memory_per_job_gb!r}")
    cpus = _cpu_count()
    by_memory = int(psutil.virtual_memory().available // (float(memory_per_job_gb) * 1024**3))
    workers = max(1, min(cpus, by_memory))
    return workers, max(1, cpus // workers)


@dataclass(frozen=True)
class JobSpec:
    """A picklable description of one daily re-plan (``art replan``'s inputs).

    Paths are made absolute on creation (the job runs in another process).

    Attributes
    ----------
    reference : Path
        Reference folder (planning CT, RTSTRUCT, RTPLAN, protocol.toml).
    cbct : Path
        Today's CBCT series folder.
    out : Path
        Result folder (written atomically).
    registration : Path or None
        REG linking a CBCT in its own frame of reference to the planning CT.
    final_grid_mm : float or None
        Export grid spacing, mm (None: art's default, 2.5).
    """

    reference: Path
    cbct: Path
    out: Path
    registration: Path | None = None
    final_grid_mm: float | None = None

    def __post_init__(self) -> None:
        for name in ("reference", "cbct", "out", "registration"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser().absolute())


def limit_threads(n: int) -> None:
    """Size the thread pools of this process for one job: PyTorch, SimpleITK, and (for libraries loaded later) the environment."""
    n = max(1, int(n))
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    import SimpleITK as sitk
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)


def _worker_slots() -> int | None:
    """Task slots (threads) of the Dask worker running this code; None outside a worker."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):  # not in a worker
        return None


def _job_threads() -> int:
    """Threads one job may use in this worker: ``ART_JOB_THREADS``, else CPUs / the worker's task slots."""
    value = os.environ.get("ART_JOB_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, _cpu_count() // (_worker_slots() or 1))


def _lock_path(out: Path) -> Path:
    digest = hashlib.sha256(str(out).encode("utf-8")).hexdigest()[:32]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"art-output-locks-{uid}" / f"{digest}.lock"


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[bool]:
    """Hold this machine's exclusive lock on a result folder while a job writes it.

    The lock (``flock`` on a file in the temporary folder, never in ``out``'s folder) is
    released by the kernel when the holder dies, so a retry after a killed worker gets it.

    Yields
    ------
    bool
        True if locked; False where no lock can be taken (no ``flock``, or the lock
        folder is not writable): the job then runs unlocked.

    Raises
    ------
    InputError
        Another live job on this machine holds it (the same result folder is being written now).
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows)
        yield False
        return
    path = _lock_path(Path(out).absolute())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fh = open(path, "a+b")
    except OSError:
        yield False
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError("another job is writing this result folder now", path=out) from None
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove the temporary folders a killed writer of ``out`` left (``.<name>.tmp-*``); only under :func:`output_lock`.

    Returns
    -------
    list of Path
        The folders removed.
    """
    out = Path(out)
    stale = sorted(p for p in out.parent.glob(f".{out.name}.tmp-*") if p.is_dir()) if out.parent.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def run_replan(job: JobSpec) -> dict:
    """The re-plan task: :func:`art.jobs.replan_job` (``show=False``) on one :class:`JobSpec`.

    In a Dask worker, first sizes the job's thread pools (:func:`limit_threads`). The
    result folder is written under :func:`output_lock`, after removing the temporary
    folders a killed earlier attempt left (:func:`remove_stale_temporaries`).

    Returns
    -------
    dict
        ``{"status": "done", "out", "priority1_met", "recommendation" ("adapted" or
        "scheduled"), "exit_code" (0, or 3 when a priority-1 goal is not met), "wall_s"}``,
        or for an :class:`~art.errors.ArtError` ``{"status": "failed", "out", "error",
        "exit_code": 1, "wall_s"}``. Other exceptions propagate (Dask retries them).
    """
    t0 = time.perf_counter()
    if _worker_slots() is not None:  # in a Dask worker (called in-process, e.g. serially, the process keeps its own sizes)
        limit_threads(_job_threads())
    try:
        with output_lock(job.out) as locked:
            if locked:  # no live writer of job.out on this machine: its temporaries are a killed attempt's
                remove_stale_temporaries(job.out)
            from art.jobs import replan_job

            summary = replan_job(job.reference, job.cbct, job.out, show=False, final_grid_mm=job.final_grid_mm, registration=job.registration)
    except ArtError as exc:
        return {"status": "failed", "out": str(job.out), "error": str(exc), "exit_code": 1, "wall_s": round(time.perf_counter() - t0, 2)}
    return {**done_record(summary, job.out), "wall_s": round(time.perf_counter() - t0, 2)}


def done_record(summary: dict, out: str | Path) -> dict:
    """The record of a finished re-plan from its ``summary.json`` content: ``status`` "done", ``out``,
    ``priority1_met``, ``recommendation`` ("adapted"/"scheduled") and ``exit_code`` (0, or 3 when a priority-1 goal is not met)."""
    met = bool(summary.get("priority1_met"))
    return {"status": "done", "out": str(out), "priority1_met": met, "recommendation": (summary.get("recommendation") or {}).get("plan"),
            "exit_code": 0 if met else 3}  # fmt: skip


def _thread_env(threads: int) -> dict[str, str]:
    return {var: str(threads) for var in THREAD_VARIABLES}


def _start_local(workers: int, threads: int, retries: int) -> tuple[Any, Any]:
    """An embedded LocalCluster (processes, loopback, no dashboard) and its client."""
    import dask
    from distributed import Client, LocalCluster

    env = _thread_env(threads)
    saved = {k: os.environ.get(k) for k in env}
    # the nanny sets its pre-spawn variables in this process before spawning a worker, and the
    # process's own values win over the config: set ours here, restore them afterwards
    os.environ.update(env)
    pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **env}
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn}):
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=threads, processes=True, host="127.0.0.1", dashboard_address=None,
                env=env, resources={REPLAN_RESOURCE: 1}, silence_logs=logging.ERROR,
                # no dashboard; the scheduler's small HTTP server (health checks) on a free loopback port
                scheduler_kwargs={"allowed_failures": retries, "dashboard": False, "dashboard_address": "127.0.0.1:0"},
            )  # fmt: skip
            try:
                client = Client(cluster)
            except BaseException:
                cluster.close()
                raise
    finally:
        _restore_env(saved)
    return cluster, client


def _restore_env(saved: dict[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _connect(address: str, timeout_s: float) -> Any:
    """A client of an existing scheduler; NetworkError naming the address when it cannot be reached."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except ValueError as exc:
        raise InputError(f"scheduler address {address!r} is not valid (use tcp://HOST:8786): {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise NetworkError(f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s: {exc}") from exc


def _check_count(name: str, value: Any, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


class JobEngine:
    """Run jobs on Dask: an embedded LocalCluster, or an existing cluster's scheduler.

    Use it as a context manager (``with JobEngine() as engine: ...``) or call :meth:`close`.

    Parameters
    ----------
    scheduler : str, optional, keyword-only
        Address of an existing scheduler (``"tcp://HOST:8786"``). None (default): start an
        embedded LocalCluster of worker processes on 127.0.0.1 (no dashboard).
    workers, threads_per_worker : int, optional, keyword-only
        Size of the embedded cluster (default :func:`machine_size`); each worker runs one
        re-plan at a time using ``threads_per_worker`` threads. Only without ``scheduler``.
    retries : int, keyword-only
        Times a task is retried after an exception or its worker's death (default 2).
    connect_timeout_s : float, keyword-only
        How long to try to reach ``scheduler``, seconds (default 5).
    memory_per_job_gb : float, keyword-only
        Peak memory of one re-plan for :func:`machine_size`, GiB (default 3).

    Raises
    ------
    InputError
        A bad size, ``retries`` or scheduler address.
    NetworkError
        ``scheduler`` cannot be reached within ``connect_timeout_s``.
    """

    def __init__(self, *, scheduler: str | None = None, workers: int | None = None, threads_per_worker: int | None = None,
                 retries: int = 2, connect_timeout_s: float = 5.0, memory_per_job_gb: float = 3.0) -> None:  # fmt: skip
        _check_count("workers", workers, 1)
        _check_count("threads_per_worker", threads_per_worker, 1)
        _check_count("retries", retries, 0)
        self.retries = retries
        self.scheduler = scheduler or None
        self._cluster = None
        self._saved_env: dict[str, str | None] = {}
        if self.scheduler is not None:
            if workers is not None or threads_per_worker is not None:
                raise InputError("workers and threads_per_worker size the embedded cluster: not with an existing scheduler")
            self._client = _connect(self.scheduler, connect_timeout_s)
            info = self._client.scheduler_info(n_workers=-1).get("workers", {})
            self.workers = len(info)
            self.threads_per_worker = max((w.get("nthreads", 1) for w in info.values()), default=0)
            has_resource = bool(info) and all(REPLAN_RESOURCE in (w.get("resources") or {}) for w in info.values())
            self._job_resources = {REPLAN_RESOURCE: 1} if has_resource else None
        else:
            auto_w, auto_t = machine_size(memory_per_job_gb=memory_per_job_gb)
            self.workers = workers or auto_w
            self.threads_per_worker = threads_per_worker or (auto_t if workers is None else max(1, _cpu_count() // self.workers))
            self._saved_env = {k: os.environ.get(k) for k in THREAD_VARIABLES}
            self._cluster, self._client = _start_local(self.workers, self.threads_per_worker, retries)
            self._job_resources = {REPLAN_RESOURCE: 1}

    @property
    def client(self) -> Any:
        """The :class:`distributed.Client` (e.g. ``engine.client.run(os.getpid)``)."""
        return self._client

    def submit_call(self, key: str, fn: Callable, *args: Any, resources: dict | None = None) -> Any:
        """Submit ``fn(*args)`` as task ``key`` with the engine's retries (``pure=False``).

        A key already submitted by this client returns its existing future (no duplicate).
        ``fn`` must be importable by the workers (a module-level function).
        """
        if not isinstance(key, str) or not key:
            raise InputError(f"a job key must be a non-empty string, got {key!r}")
        return self._client.submit(fn, *args, key=key, retries=self.retries, pure=False, resources=resources)

    def submit(self, key: str, job: JobSpec, *, fn: Callable[[JobSpec], dict] | None = None) -> Any:
        """Submit one re-plan (:func:`run_replan`, or ``fn``) as task ``key``; returns its :class:`distributed.Future`."""
        if not isinstance(job, JobSpec):
            raise InputError(f"job must be a JobSpec, got {type(job).__name__}")
        return self.submit_call(key, fn or run_replan, job, resources=self._job_resources)

    def processing_keys(self) -> set[str]:
        """Keys of the tasks a worker is running now (a job is ``running`` rather than ``queued``)."""
        return {str(k) for keys in self._client.processing().values() for k in keys}

    def worker_pids(self) -> dict[str, int]:
        """Process id of each worker, by worker address."""
        return self._client.run(os.getpid)

    def close(self) -> None:
        """Close the client and the embedded cluster (an existing cluster keeps running)."""
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()
            _restore_env(self._saved_env)  # a restarted worker's nanny sets its variables here again

    def __enter__(self) -> "JobEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
