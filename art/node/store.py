"""The node's state in one SQLite file: the patient registry, the jobs and their sends.

* **Patients** map a patient and a frame of reference to a reference folder (planning CT,
  RTSTRUCT, RTPLAN, protocol.toml). The patient ID is stored only as its SHA-256 digest
  (salted with a fixed prefix): the registry finds a patient's reference from a received
  series' PatientID, but the database never holds the ID in clear.
* **Jobs** follow ``received → queued → running → done → sent`` (or ``failed``, with the
  reason); every change is kept in ``history`` with its time. A series is identified by
  its SeriesInstanceUID and a content hash: the same series re-sent does not make a second
  job (unless the first failed).
* **Sends**: one row per job and destination, with attempts and the last problem.

Connections are opened per call (SQLite in WAL mode, a busy timeout), so the SCP's
threads, the scheduler loop and ``art jobs`` in another process can use the file at once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from art.errors import InputError
from art.privacy import patient_key

__all__ = ["NodeStore", "JOB_STATES", "patient_key"]

#: Job states, in order of progress (``failed`` can follow any of them).
JOB_STATES = ("received", "queued", "running", "done", "sent", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    patient_key TEXT NOT NULL, frame_of_reference_uid TEXT NOT NULL, reference_dir TEXT NOT NULL,
    protocol TEXT, registered_at REAL NOT NULL, PRIMARY KEY (patient_key, frame_of_reference_uid));
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL DEFAULT 'replan', series_uid TEXT NOT NULL,
    content_hash TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', input_dir TEXT,
    reference_dir TEXT, registration TEXT, out_dir TEXT, n_instances INTEGER, last_instance_at REAL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, runs INTEGER NOT NULL DEFAULT 0, exit_code INTEGER,
    priority1_met INTEGER, recommendation TEXT);
CREATE INDEX IF NOT EXISTS jobs_series ON jobs (series_uid, content_hash);
CREATE TABLE IF NOT EXISTS history (job_id INTEGER NOT NULL, at REAL NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS sends (
    job_id INTEGER NOT NULL, destination TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL, PRIMARY KEY (job_id, destination));
"""

_JOB_FIELDS = {"detail", "input_dir", "reference_dir", "registration", "out_dir", "n_instances", "last_instance_at", "exit_code",
               "priority1_met", "recommendation", "runs"}  # fmt: skip


class NodeStore:
    """The node's SQLite database (created on first use).

    Parameters
    ----------
    path : str or Path
        The database file (``<state_dir>/art-node.sqlite``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).absolute()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InputError(f"cannot open the node database: {exc}", path=self.path) from None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0)
        db.row_factory = sqlite3.Row
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # -- patient registry -------------------------------------------------------------
    def register_patient(self, patient_id: str, frame_of_reference_uid: str, reference_dir: str | Path, *, protocol: str = "") -> None:
        """Map a patient (by ID, stored hashed) and a frame of reference to a reference folder (replaces an earlier entry)."""
        if not str(patient_id).strip() or not str(frame_of_reference_uid).strip():
            raise InputError("a patient needs a PatientID and a frame of reference UID to be registered", path=reference_dir)
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO patients VALUES (?, ?, ?, ?, ?)",
                       (patient_key(patient_id), frame_of_reference_uid, str(Path(reference_dir).absolute()), protocol, time.time()))  # fmt: skip

    def references(self, patient_id: str) -> dict[str, Path]:
        """A patient's registered references: frame of reference UID → reference folder."""
        with self._connect() as db:
            rows = db.execute("SELECT frame_of_reference_uid, reference_dir FROM patients WHERE patient_key = ?", (patient_key(patient_id),))
            return {r[0]: Path(r[1]) for r in rows}

    def patients(self) -> list[dict]:
        """Every registry row (the patient appears as its key's first 12 characters, never the ID)."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM patients ORDER BY registered_at").fetchall()
        return [{"patient": r["patient_key"][:12], "frame_of_reference_uid": r["frame_of_reference_uid"], "reference": r["reference_dir"],
                 "protocol": r["protocol"], "registered_at": r["registered_at"]} for r in rows]  # fmt: skip

    # -- jobs -------------------------------------------------------------------------
    def add_job(self, *, series_uid: str, content_hash: str, state: str = "received", detail: str = "", **fields: Any) -> tuple[int, bool]:
        """A job for a received series, unless one exists for the same series and content that has not failed.

        Returns
        -------
        (int, bool)
            The job's id and whether it was created (False: the existing job, a re-sent series).
        """
        self._check_state(state)
        self._check_fields(fields)
        with self._lock, self._connect() as db:
            row = db.execute("SELECT id FROM jobs WHERE series_uid = ? AND content_hash = ? AND state != 'failed' ORDER BY id LIMIT 1",
                             (series_uid, content_hash)).fetchone()  # fmt: skip
            if row is not None:
                return int(row[0]), False
            now = time.time()
            names = ["series_uid", "content_hash", "state", "detail", "created_at", "updated_at", *fields]
            values = [series_uid, content_hash, state, detail, now, now, *(_sql(v) for v in fields.values())]
            cur = db.execute(f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", values)
            job_id = int(cur.lastrowid)
            db.execute("INSERT INTO history VALUES (?, ?, ?, ?)", (job_id, now, state, detail))
            return job_id, True

    def set_state(self, job_id: int, state: str, detail: str = "", **fields: Any) -> None:
        """Move a job to ``state`` (recorded in its history) and update other columns."""
        self._check_state(state)
        self._check_fields(fields)
        now = time.time()
        sets = ", ".join(["state = ?", "detail = ?", "updated_at = ?", *(f"{k} = ?" for k in fields)])
        with self._lock, self._connect() as db:
            cur = db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [state, detail, now, *(_sql(v) for v in fields.values()), job_id])
            if cur.rowcount != 1:
                raise InputError(f"no job {job_id} in the node database", path=self.path)
            db.execute("INSERT INTO history VALUES (?, ?, ?, ?)", (job_id, now, state, detail))

    def update_job(self, job_id: int, **fields: Any) -> None:
        """Update a job's columns without changing its state (no history entry)."""
        self._check_fields(fields)
        sets = ", ".join(["updated_at = ?", *(f"{k} = ?" for k in fields)])
        with self._lock, self._connect() as db:
            cur = db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [time.time(), *(_sql(v) for v in fields.values()), job_id])
            if cur.rowcount != 1:
                raise InputError(f"no job {job_id} in the node database", path=self.path)

    def job(self, job_id: int) -> dict:
        """One job as a dict (columns of ``jobs``, plus ``sends``)."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise InputError(f"no job {job_id} in the node database", path=self.path)
            return self._with_sends(db, dict(row))

    def jobs(self, states: Iterable[str] | None = None) -> list[dict]:
        """Every job (optionally only those in ``states``), oldest first."""
        with self._connect() as db:
            if states is None:
                rows = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
            else:
                states = list(states)
                for s in states:
                    self._check_state(s)
                rows = db.execute(f"SELECT * FROM jobs WHERE state IN ({', '.join('?' * len(states))}) ORDER BY id", states).fetchall()
            return [self._with_sends(db, dict(r)) for r in rows]

    def history(self, job_id: int) -> list[tuple[float, str, str]]:
        """A job's state changes: ``(time, state, detail)``, oldest first."""
        with self._connect() as db:
            return [tuple(r) for r in db.execute("SELECT at, state, detail FROM history WHERE job_id = ? ORDER BY rowid", (job_id,))]

    # -- sends ------------------------------------------------------------------------
    def record_send(self, job_id: int, destination: str, state: str, *, attempts: int, detail: str = "") -> None:
        """The outcome so far of sending a job's results to one destination (``pending``, ``sent`` or ``failed``)."""
        if state not in ("pending", "sent", "failed"):
            raise ValueError(f"send state must be pending, sent or failed, got {state!r}")
        with self._lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO sends VALUES (?, ?, ?, ?, ?, ?)", (job_id, destination, state, attempts, detail, time.time()))

    @staticmethod
    def _with_sends(db: sqlite3.Connection, job: dict) -> dict:
        rows = db.execute("SELECT destination, state, attempts, detail FROM sends WHERE job_id = ? ORDER BY destination", (job["id"],))
        job["sends"] = {r[0]: {"state": r[1], "attempts": r[2], "detail": r[3]} for r in rows}
        if job.get("priority1_met") is not None:
            job["priority1_met"] = bool(job["priority1_met"])
        return job

    def _check_state(self, state: str) -> None:
        if state not in JOB_STATES:
            raise ValueError(f"job state must be one of {', '.join(JOB_STATES)}, got {state!r}")

    def _check_fields(self, fields: dict) -> None:
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"unknown job field(s): {', '.join(sorted(unknown))}")


def _sql(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool):
        return int(value)
    return value
