"""``art serve``: the DICOM node's loop — receive, check, queue, re-plan on Dask, send.

One :class:`Node` holds the Storage SCP (its threads hand each stored instance to the
series tracker), the SQLite store, the Dask job engine and a small pool of sender
threads. :meth:`Node.step` does one round of work and is what the loop repeats:

1. series the tracker reports complete (or failed: incomplete) become jobs — unless the
   same series was already received (a re-send) — and are checked: a registered patient,
   CT images, the reference's frame of reference or a REG the sender also sent linking it;
2. checked jobs are submitted to Dask (each run writes its own folder, atomically);
3. finished runs are recorded (exit code, recommendation), copied to the output folder
   and sent by C-STORE to every destination, retried with back-off;
4. a job is ``sent`` when every destination stored it, ``failed`` with the reason otherwise.

A restart resumes: jobs received, queued or running are checked or run again (a run that
finished before the node stopped is taken as it is), and done jobs are sent again.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from art.node.config import NodeConfig
from art.node.store import NodeStore

__all__ = ["Node", "serve"]

log = logging.getLogger("art.node")


class Node:
    """The DICOM node (see the module docstring). Use as a context manager or call start/stop."""

    def __init__(self, config: NodeConfig, *, engine: Any = None):
        self.config = config
        self.store = NodeStore(config.database)
        self._engine = engine
        self._own_engine = engine is None
        self._futures: dict[int, Any] = {}
        self._sending: dict[int, Any] = {}
        self._waiting: dict[int, float] = {}  # received jobs waiting for a REG that links their frame: job id → deadline
        self.stopping = threading.Event()  # set by stop(): sends waiting for a retry give up and resume at the next start
        self._senders = ThreadPoolExecutor(max_workers=2, thread_name_prefix="art-send")
        self.scp = None
        self.tracker = None

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> "Node":
        """Open the engine, resume unfinished jobs, then start accepting associations."""
        from art.node.engine import JobEngine
        from art.node.receive import SeriesTracker
        from art.node.scp import StorageSCP

        cfg = self.config
        for d in (cfg.incoming_dir, cfg.jobs_dir, cfg.output_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self._engine is None:
            self._engine = JobEngine(scheduler=cfg.scheduler, workers=cfg.workers, threads_per_worker=cfg.threads_per_worker, retries=cfg.retries)
        self.tracker = SeriesTracker(cfg.incoming_dir, quiet_period_s=cfg.quiet_period_s, incomplete_timeout_s=cfg.incomplete_timeout_s)
        self.tracker.rebuild()
        self.resume()
        self.scp = StorageSCP(
            incoming_dir=cfg.incoming_dir, on_instance=self.tracker.add, ae_title=cfg.ae_title, host=cfg.host, port=cfg.port,
            allowed_calling_aes=cfg.allowed_calling_aes, allowed_hosts=cfg.allowed_hosts,
            ssl_context=None if cfg.tls is None else cfg.tls.server_context(),
        )  # fmt: skip
        self.scp.start()
        log.info("listening as %s on %s:%s", cfg.ae_title, cfg.host, self.scp.port)
        return self

    def stop(self) -> None:
        """Stop accepting, wait for sends in flight, close the engine (running jobs resume at the next start)."""
        self.stopping.set()
        if self.scp is not None:
            self.scp.stop()
        self._senders.shutdown(wait=True)
        if self._own_engine and self._engine is not None:
            self._engine.close()

    def __enter__(self) -> "Node":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def resume(self) -> None:
        """After a restart: check received jobs again, run queued/running ones, send done ones."""
        for job in self.store.jobs(["received", "queued", "running", "done"]):
            if job["state"] == "received":
                self._check_job(job["id"], last_try=True)
            elif job["state"] == "done":
                self._send(job["id"])
            else:
                self._submit(job["id"])

    # -- one round ------------------------------------------------------------------------
    def step(self, now: float | None = None) -> None:
        """One round: new series → jobs, finished runs → results, finished sends → states."""
        from art.node.steps import finished_run, new_series

        now = time.time() if now is None else now
        for event in self.tracker.poll(now):
            job_id = new_series(self, event)
            if job_id is not None and self.store.job(job_id)["state"] == "received":
                self._check_job(job_id, now)
        for job_id, deadline in list(self._waiting.items()):
            self._check_job(job_id, now, last_try=now >= deadline)
        self._mark_running()
        for job_id, fut in list(self._futures.items()):
            if fut.done():
                del self._futures[job_id]
                if finished_run(self, job_id, fut):
                    self._send(job_id)
        for job_id, fut in list(self._sending.items()):
            if fut.done():
                del self._sending[job_id]

    @property
    def idle(self) -> bool:
        """No run, send or arriving series in progress, nothing queued."""
        return not self._futures and not self._sending and not self._waiting and not self.tracker.tracked()

    def _check_job(self, job_id: int, now: float | None = None, *, last_try: bool = False) -> None:
        """Check a received job; one whose frame no REG links yet waits a quiet period for the REG (sent after the images)."""
        from art.node.steps import check_job

        verdict = check_job(self, job_id, wait_for_reg=not last_try)
        if verdict is None:  # waiting: the deadline is set once, from the first check
            start = time.time() if now is None else now
            self._waiting.setdefault(job_id, start + max(self.config.quiet_period_s, 2.0))
            return
        self._waiting.pop(job_id, None)
        if verdict is True:
            self._submit(job_id)

    def _submit(self, job_id: int) -> None:
        from art.node.steps import submit_job

        fut = submit_job(self, job_id)
        if fut == "done":  # an earlier run had finished it (a restart): send it
            self._send(job_id)
        elif fut is not None:
            self._futures[job_id] = fut

    def _mark_running(self) -> None:
        if not self._futures:
            return
        processing = self._engine.processing_keys()
        for job_id, fut in self._futures.items():
            if fut.key in processing and self.store.job(job_id)["state"] == "queued":
                self.store.set_state(job_id, "running")

    def _send(self, job_id: int) -> None:
        from art.node.steps import send_job

        if not self.config.destinations:
            return
        self._sending[job_id] = self._senders.submit(send_job, self, job_id)


def serve(config: NodeConfig, *, once: bool = False, poll_s: float = 0.5, stop: threading.Event | None = None) -> None:
    """Run the node until SIGINT/SIGTERM (or ``stop`` is set; with ``once``, until idle after the first job).

    Parameters
    ----------
    config : NodeConfig
        The node's configuration (:func:`art.node.config.load_config`).
    once : bool, keyword-only
        Return when every job is finished and sent and no series is arriving (after at least one job).
    poll_s : float, keyword-only
        Seconds between rounds.
    stop : threading.Event, optional
        Set it to stop the loop (tests; a service manager sends SIGTERM instead).
    """
    import signal

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    with Node(config) as node:
        seen_job = False
        while not stop.is_set():
            node.step()
            if once:  # the database is asked only until the first job is seen
                seen_job = seen_job or bool(node.store.jobs())
                if seen_job and node.idle:
                    break
            stop.wait(poll_s)


def copy_to_output(result: Path, output_dir: Path, name: str) -> Path:
    """Copy a finished result folder to ``output_dir/name`` atomically (a temporary sibling, then a rename)."""
    target = output_dir / name
    tmp = output_dir / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(result, tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def utc_stamp(t: float | None = None) -> str:
    """``YYYYMMDD-HHMMSS`` in UTC (names of output folders)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if t is None else t))
