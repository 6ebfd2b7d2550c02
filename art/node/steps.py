"""The node's steps for one job: new series → checked job → Dask run → result → sends.

Each function takes the :class:`art.node.serve.Node` and records what it did in the
node's store; none raises for a problem of the job itself (the job is ``failed`` with
the reason instead), so one bad series never stops the node. No message names the
patient.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["new_series", "check_job", "submit_job", "finished_run", "send_job"]

log = logging.getLogger("art.node")

UNKNOWN_PATIENT = "unknown patient: no reference is registered for this patient (art register --reference DIR)"


def _job_dir(node: Any, job_id: int) -> Path:
    return node.config.jobs_dir / f"job{job_id:05d}"


def new_series(node: Any, event: Any) -> int | None:
    """A series the tracker reports: a new job (``received``), a failed one (incomplete), or nothing (a re-send, a REG).

    The series' files move from ``incoming/`` into the job's folder. REG series stay in
    ``incoming/``: they are the links :func:`check_job` looks for.
    """
    if event.complete and event.modality == "REG":
        return None
    store = node.store
    if not event.complete:
        job_id, _ = store.add_job(series_uid=event.series_instance_uid, content_hash=event.content_hash, state="failed",
                                  detail=event.reason, n_instances=event.n_instances)  # fmt: skip
        _take_files(node, event, job_id)
        log.warning("job %d failed: %s", job_id, event.reason)
        return None
    job_id, created = store.add_job(series_uid=event.series_instance_uid, content_hash=event.content_hash, n_instances=event.n_instances)
    if not created:
        shutil.rmtree(event.folder, ignore_errors=True)
        node.tracker.forget(event.series_instance_uid)
        log.info("series re-sent: job %d already has it; nothing new started", job_id)
        return None
    _take_files(node, event, job_id)
    log.info("job %d: series of %d instances received", job_id, event.n_instances)
    return job_id


def _take_files(node: Any, event: Any, job_id: int) -> None:
    """Move the series folder into the job's folder and let the tracker forget it."""
    target = _job_dir(node, job_id) / "input"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(event.folder, target)
    node.tracker.forget(event.series_instance_uid)
    node.store.update_job(job_id, input_dir=target)


def _series_event(folder: Path) -> Any:
    """A :class:`art.node.receive.SeriesEvent` for a job's input folder (read from the files' headers)."""
    import pydicom

    from art.node.receive import SeriesEvent

    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        from art.errors import InputError

        raise InputError("the job's input folder holds no files", path=folder)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return SeriesEvent(
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")), folder=folder, modality=str(ds.get("Modality", "")),
        patient_id=str(ds.get("PatientID", "")), frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")) or None,
        study_instance_uid=str(ds.get("StudyInstanceUID", "")), n_instances=len(files), complete=True, reason="", content_hash="",
    )  # fmt: skip


def check_job(node: Any, job_id: int, *, wait_for_reg: bool = False) -> bool | None:
    """Match a received job to its registered reference and check its files; ``queued`` (True) or ``failed`` (False).

    The series must be CT images of a registered patient, in the reference's frame of
    reference or linked to it by a REG the sender also sent (copied into the job's folder).
    With ``wait_for_reg``, a series in another frame with no linking REG yet stays
    ``received`` (None): the REG may follow the images.
    """
    from art.errors import ArtError
    from art.node.receive import UnlinkedFrameError, check_series

    store, job = node.store, node.store.job(job_id)
    try:
        event = _series_event(Path(job["input_dir"]))
        refs = store.references(event.patient_id)
        if not refs:
            store.set_state(job_id, "failed", UNKNOWN_PATIENT)
            return False
        order = sorted(refs, key=lambda uid: uid != event.frame_of_reference_uid)  # the same frame first
        problem = None
        for frame in order:
            try:
                reg = check_series(event, reference_frame_uid=frame, incoming_dir=node.config.incoming_dir)
            except ArtError as exc:
                problem = exc
                continue
            registration = None
            if reg is not None:
                registration = _job_dir(node, job_id) / "REG.dcm"
                shutil.copy2(reg, registration)
            store.set_state(job_id, "queued", "", reference_dir=refs[frame], registration=registration)
            return True
        if wait_for_reg and event.frame_of_reference_uid not in refs and isinstance(problem, UnlinkedFrameError):
            return None
        store.set_state(job_id, "failed", f"received series refused: {getattr(problem, 'problem', problem)}")
    except (ArtError, OSError) as exc:
        store.set_state(job_id, "failed", f"received series refused: {exc}")
    return False


def submit_job(node: Any, job_id: int) -> Any:
    """Run a queued job on Dask: a future, or ``"done"`` when an earlier run had already finished it (a restart)."""
    from art.node.engine import JobSpec, done_record

    store, job = node.store, node.store.job(job_id)
    for summary in sorted(_job_dir(node, job_id).glob("run-*/result/summary.json")):
        _record_done(node, job_id, summary.parent, done_record(json.loads(summary.read_text(encoding="utf-8")), summary.parent))
        return "done"
    runs = int(job["runs"] or 0) + 1
    out = _job_dir(node, job_id) / f"run-{runs}" / "result"
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = JobSpec(reference=Path(job["reference_dir"]), cbct=Path(job["input_dir"]), out=out,
                   registration=None if job["registration"] is None else Path(job["registration"]), final_grid_mm=node.config.final_grid_mm)  # fmt: skip
    store.set_state(job_id, "queued", f"run {runs} submitted", runs=runs)
    return node._engine.submit(f"art-node-job{job_id}-run{runs}", spec)


def finished_run(node: Any, job_id: int, future: Any) -> bool:
    """Record a finished Dask run: ``done`` (True: send it) or ``failed`` with the reason (False)."""
    try:
        result = future.result()
    except Exception as exc:  # a worker lost more often than the retries allow, or a bug: the job fails, the node goes on
        node.store.set_state(job_id, "failed", f"re-plan failed: {type(exc).__name__}: {exc}")
        log.warning("job %d failed: %s", job_id, type(exc).__name__)
        return False
    if result.get("status") != "done":
        node.store.set_state(job_id, "failed", f"re-plan failed: {result.get('error', 'no reason given')}", exit_code=result.get("exit_code", 1))
        return False
    _record_done(node, job_id, Path(result["out"]), result)
    return True


def _record_done(node: Any, job_id: int, out: Path, result: dict) -> None:
    from art.node.serve import copy_to_output, utc_stamp

    copy = copy_to_output(out, node.config.output_dir, f"{utc_stamp()}_job{job_id:05d}")
    met = bool(result.get("priority1_met"))
    detail = f"{result.get('recommendation')} plan recommended{'' if met else '; a priority-1 goal is not met'}; results in {copy}"
    node.store.set_state(job_id, "done", detail, out_dir=out, exit_code=result.get("exit_code", 0 if met else 3), priority1_met=met,
                         recommendation=result.get("recommendation"))  # fmt: skip
    log.info("job %d done (exit code %s)", job_id, result.get("exit_code"))


class _Stopping(Exception):
    """The node stops while a send waits to retry: the job stays ``done`` and is sent at the next start."""


def _sleep_unless_stopping(node: Any) -> Any:
    def sleep(seconds: float) -> None:
        if node.stopping.wait(seconds):
            raise _Stopping

    return sleep


def send_job(node: Any, job_id: int) -> None:
    """Send a done job's results to every destination not yet stored (retried with back-off); ``sent`` or ``failed``.

    A node stopping while a send waits for its next try leaves the job ``done`` (sent again at the next start).
    """
    from art.errors import ArtError
    from art.node.send import send_with_retry

    store, job = node.store, node.store.job(job_id)
    folder = Path(job["out_dir"])
    problems = []
    for dest in node.config.destinations:
        if job["sends"].get(dest.name, {}).get("state") == "sent":
            continue

        def attempt(n: int, exc: Exception | None, name: str = dest.name) -> None:
            store.record_send(job_id, name, "sent" if exc is None else "pending", attempts=n, detail="" if exc is None else str(exc))

        try:
            report = send_with_retry(folder, dest, attempts=dest.attempts, backoff_s=dest.backoff_s, on_attempt=attempt,
                                     sleep=_sleep_unless_stopping(node))  # fmt: skip
        except _Stopping:
            log.info("job %d: the node stops; the send to %s resumes at the next start", job_id, dest.name)
            return
        except ArtError as exc:
            attempts = store.job(job_id)["sends"].get(dest.name, {}).get("attempts", 0)
            store.record_send(job_id, dest.name, "failed", attempts=attempts, detail=str(exc))
            problems.append(f"{dest.name}: {exc}")
            continue
        log.info("job %d: %d file(s) stored at %s", job_id, len(report.results), dest.name)
    done = store.job(job_id)["detail"]
    if problems:
        store.set_state(job_id, "failed", f"re-plan done but not sent: {'; '.join(problems)} ({done})")
    else:
        store.set_state(job_id, "sent", f"stored at {', '.join(d.name for d in node.config.destinations)} ({done})")
