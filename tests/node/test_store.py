"""The node's SQLite store: registry without patient IDs in clear, job states and history, dedupe, sends."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from art.node.store import NodeStore, patient_key


def test_registry_keeps_no_patient_id_in_clear(tmp_path):
    store = NodeStore(tmp_path / "db.sqlite")
    store.register_patient("PID-123456", "1.2.3.4", tmp_path / "ref", protocol="Prostate")
    assert store.references("PID-123456") == {"1.2.3.4": (tmp_path / "ref").absolute()}
    assert store.references("PID-999") == {}
    assert store.references(" PID-123456 ") == {"1.2.3.4": (tmp_path / "ref").absolute()}  # DICOM pads with spaces
    assert b"PID-123456" not in (tmp_path / "db.sqlite").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("db.sqlite-*"))
    assert store.patients()[0]["patient"] == patient_key("PID-123456")[:12]
    store.register_patient("PID-123456", "1.2.3.4", tmp_path / "ref2")  # re-registering replaces
    assert store.references("PID-123456") == {"1.2.3.4": (tmp_path / "ref2").absolute()}


def test_job_states_history_and_dedupe(tmp_path):
    store = NodeStore(tmp_path / "db.sqlite")
    a, created = store.add_job(series_uid="1.2.3", content_hash="h1", n_instances=60)
    assert created
    assert store.add_job(series_uid="1.2.3", content_hash="h1") == (a, False)  # the same series re-sent
    b, created = store.add_job(series_uid="1.2.3", content_hash="h2")  # more or other instances: a new job
    assert created and b != a
    store.set_state(a, "queued", reference_dir=tmp_path)
    store.set_state(a, "running")
    store.set_state(a, "done", "adapted plan recommended", exit_code=0, priority1_met=True)
    job = store.job(a)
    assert (job["state"], job["exit_code"], job["priority1_met"], job["reference_dir"]) == ("done", 0, True, str(tmp_path))
    assert [h[1] for h in store.history(a)] == ["received", "queued", "running", "done"]
    store.set_state(b, "failed", "unknown patient")
    c, created = store.add_job(series_uid="1.2.3", content_hash="h2")  # a failed job does not block the series' re-send
    assert created and c not in (a, b)
    assert [j["id"] for j in store.jobs(["done", "failed"])] == [a, b]
    with pytest.raises(ValueError, match="job state must be one of"):
        store.set_state(a, "finished")
    with pytest.raises(ValueError, match="unknown job field"):
        store.set_state(a, "done", patient_name="x")


def test_sends_are_recorded_per_destination(tmp_path):
    store = NodeStore(tmp_path / "db.sqlite")
    job, _ = store.add_job(series_uid="1", content_hash="h")
    store.record_send(job, "tms", "pending", attempts=1, detail="connection refused")
    store.record_send(job, "tms", "sent", attempts=2)
    store.record_send(job, "pacs", "failed", attempts=5, detail="association rejected")
    assert store.job(job)["sends"] == {"pacs": {"state": "failed", "attempts": 5, "detail": "association rejected"},
                                       "tms": {"state": "sent", "attempts": 2, "detail": ""}}  # fmt: skip


def test_concurrent_writers(tmp_path):
    """The SCP's threads and the loop write at once: no lost job, no 'database is locked'."""
    store = NodeStore(tmp_path / "db.sqlite")
    errors = []

    def worker(k):
        try:
            for i in range(20):
                job, _ = store.add_job(series_uid=f"{k}.{i}", content_hash="h")
                store.set_state(job, "queued")
        except sqlite3.Error as exc:  # pragma: no cover - the failure this test looks for
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    other = NodeStore(tmp_path / "db.sqlite")  # a second process's view (art jobs)
    assert len(other.jobs(["queued"])) == 80
