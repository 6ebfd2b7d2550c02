"""``art batch``: many daily re-plans from a manifest, on the job engine.

A manifest is a TOML file::

    [defaults]               # optional
    final_grid_mm = 2.5      # export grid of every row that does not give its own
    retries = 2              # Dask retries of a crashed job (the command line's --retries wins)

    [[job]]
    name = "patient7-day1"   # optional (default: the row's `out`)
    reference = "ref7"       # reference folder: planning CT, RTSTRUCT, RTPLAN, protocol.toml
    cbct = "patient7/CBCT_01"
    out = "results/p7-day1"  # must not exist yet
    registration = "patient7/REG.dcm"   # optional: REG linking a CBCT in its own frame
    final_grid_mm = 2.0      # optional

Paths are relative to the manifest's folder. :func:`read_manifest` checks every row
before anything runs and names the manifest, the row and the key of each problem.
:func:`run_batch` submits every row to a :class:`~art.node.engine.JobEngine` and
collects one result row per job; a failed job never stops the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from art.errors import InputError
from art.node.engine import JobEngine, JobSpec

_REQUIRED = ("reference", "cbct", "out")
_JOB_KEYS = frozenset(_REQUIRED + ("name", "registration", "final_grid_mm"))
_DEFAULT_KEYS = frozenset({"final_grid_mm", "retries"})
#: Export grid spacings accepted (mm), as ``art replan --final-grid-mm``.
GRID_RANGE_MM = (0.5, 5.0)


@dataclass(frozen=True)
class BatchJob:
    """One row of a manifest: its name, its 1-based ``[[job]]`` number and the re-plan."""

    name: str
    row: int
    spec: JobSpec


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: its file, its jobs in order and ``[defaults] retries`` (None if not given)."""

    path: Path
    jobs: tuple[BatchJob, ...]
    retries: int | None = None


def _load_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("manifest not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest: {exc}", path=path) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", path=path) from None


def _grid(value: Any, where: str, problems: list[str]) -> float | None:
    lo, hi = GRID_RANGE_MM
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        problems.append(f"{where}: 'final_grid_mm' must be a number of mm from {lo} to {hi}, got {value!r}")
        return None
    return float(value)


def _defaults(doc: dict, problems: list[str]) -> tuple[float | None, int | None]:
    """``[defaults]``: (final_grid_mm, retries), problems appended."""
    d = doc.get("defaults", {})
    if not isinstance(d, dict):
        problems.append("'defaults' must be a table ([defaults])")
        return None, None
    for key in sorted(set(d) - _DEFAULT_KEYS):
        problems.append(f"[defaults]: unknown key {key!r} (known: {', '.join(sorted(_DEFAULT_KEYS))})")
    grid = _grid(d["final_grid_mm"], "[defaults]", problems) if "final_grid_mm" in d else None
    retries = d.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        problems.append(f"[defaults]: 'retries' must be an integer ≥ 0, got {retries!r}")
        retries = None
    return grid, retries


def _row_label(i: int, row: dict) -> str:
    name = row.get("name")
    return f"[[job]] {i}" + (f" ({name!r})" if isinstance(name, str) and name else "")


def _path(row: dict, key: str, base: Path, where: str, problems: list[str]) -> Path | None:
    value = row.get(key)
    if value is None:
        if key in _REQUIRED:
            problems.append(f"{where}: missing key {key!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: {key!r} must be a non-empty path string, got {value!r}")
        return None
    return (base / Path(value).expanduser()).absolute()


def _check_paths(paths: dict[str, Path | None], where: str, problems: list[str]) -> None:
    """The row's inputs exist and its ``out`` does not."""
    for key in ("reference", "cbct"):
        if paths[key] is not None and not paths[key].is_dir():
            problems.append(f"{where}: {key!r} folder not found: {paths[key]}")
    if paths["registration"] is not None and not paths["registration"].is_file():
        problems.append(f"{where}: 'registration' file not found: {paths['registration']}")
    if paths["out"] is not None and paths["out"].exists():
        problems.append(f"{where}: 'out' already exists: {paths['out']} (choose a new folder; nothing is overwritten)")


def _read_row(i: int, row: Any, base: Path, grid_default: float | None, problems: list[str]) -> BatchJob | None:
    """One ``[[job]]`` row checked; None (problems appended) when it is not valid."""
    if not isinstance(row, dict):
        problems.append(f"[[job]] {i}: must be a table")
        return None
    where, n0 = _row_label(i, row), len(problems)
    for key in sorted(set(row) - _JOB_KEYS):
        problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_JOB_KEYS))})")
    name = row.get("name", row.get("out"))
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: 'name' must be a non-empty string, got {name!r}")
    paths = {key: _path(row, key, base, where, problems) for key in ("reference", "cbct", "out", "registration")}
    _check_paths(paths, where, problems)
    grid = _grid(row["final_grid_mm"], where, problems) if "final_grid_mm" in row else grid_default
    if len(problems) > n0:
        return None
    spec = JobSpec(reference=paths["reference"], cbct=paths["cbct"], out=paths["out"], registration=paths["registration"], final_grid_mm=grid)
    return BatchJob(name=name.strip(), row=i, spec=spec)


def _check_unique(jobs: list[BatchJob], problems: list[str]) -> None:
    seen_out: dict[Path, int] = {}
    seen_name: dict[str, int] = {}
    for job in jobs:
        where = f"[[job]] {job.row} ({job.name!r})"
        if job.spec.out in seen_out:
            problems.append(f"{where}: 'out' {job.spec.out} is also the out of [[job]] {seen_out[job.spec.out]}")
        if job.name in seen_name:
            problems.append(f"{where}: 'name' is also the name of [[job]] {seen_name[job.name]}")
        seen_out.setdefault(job.spec.out, job.row)
        seen_name.setdefault(job.name, job.row)


def read_manifest(path: str | Path) -> Manifest:
    """Read and check a batch manifest (TOML) before anything runs.

    Parameters
    ----------
    path : str or Path
        The manifest; relative paths in it are taken from its folder.

    Returns
    -------
    Manifest

    Raises
    ------
    InputError
        Naming the manifest and, for each problem, the row (``[[job]] N ('name')``) and
        the key: a missing or unknown key, a bad value, a reference/CBCT folder or REG
        file not found, an ``out`` that already exists or is shared by two rows, a
        duplicate name, no rows at all.
    """
    path = Path(path).expanduser().absolute()
    doc = _load_toml(path)
    problems: list[str] = []
    for key in sorted(set(doc) - {"defaults", "job"}):
        problems.append(f"unknown top-level key {key!r} (known: [defaults], [[job]])")
    grid_default, retries = _defaults(doc, problems)
    rows = doc.get("job", [])
    if not isinstance(rows, list) or not rows:
        problems.append("no [[job]] rows" if not rows else "'job' must be an array of tables ([[job]])")
        rows = []
    jobs = [job for i, row in enumerate(rows, start=1) if (job := _read_row(i, row, path.parent, grid_default, problems)) is not None]
    _check_unique(jobs, problems)
    if problems:
        raise InputError("; ".join(problems), path=path)
    return Manifest(path=path, jobs=tuple(jobs), retries=retries)


def job_key(job: BatchJob) -> str:
    """The Dask key of a batch job: its name and a digest of its ``out`` (the same job is never run twice at once)."""
    return f"art-batch-{job.name}-{hashlib.sha256(str(job.spec.out).encode('utf-8')).hexdigest()[:12]}"


def _result_row(job: BatchJob, future: Any) -> dict:
    """A job's row from its finished future: the task's record, or the exception that ended it (after retries)."""
    row = {"name": job.name, "out": str(job.spec.out), "status": "failed", "exit_code": 1, "priority1_met": None,
           "recommendation": None, "error": None, "wall_s": None}  # fmt: skip
    try:
        record = future.result()
    except (Exception, asyncio.CancelledError) as exc:  # a crash, retried and still failing, or KilledWorker
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    row.update({k: record.get(k) for k in ("status", "exit_code", "priority1_met", "recommendation", "error", "wall_s")})
    return row


def run_batch(jobs: Sequence[BatchJob], engine: JobEngine, *, progress: Callable[[dict], None] | None = None,
              fn: Callable[[JobSpec], dict] | None = None) -> list[dict]:  # fmt: skip
    """Run every job on ``engine``; one failed job never stops the others.

    Parameters
    ----------
    jobs : sequence of BatchJob
        From :func:`read_manifest`.
    engine : JobEngine
    progress : callable, optional, keyword-only
        Called with each job's row as the job finishes (in completion order).
    fn : callable, optional, keyword-only
        The task run per job (default :func:`art.node.engine.run_replan`).

    Returns
    -------
    list of dict
        One row per job, in the order of ``jobs``: ``name``, ``out``, ``status``
        ("done" or "failed"), ``exit_code`` (0, 3: a priority-1 goal not met, 1: failed),
        ``priority1_met``, ``recommendation`` ("adapted"/"scheduled"), ``error``
        (None when done) and ``wall_s`` (the job's seconds in its worker; None if it crashed).
    """
    from distributed import as_completed

    futures = {engine.submit(job_key(job), job.spec, fn=fn): job for job in jobs}
    rows: dict[str, dict] = {}
    for future in as_completed(list(futures)):
        job = futures[future]
        rows[future.key] = _result_row(job, future)
        if progress is not None:
            progress(rows[future.key])
    return [rows[f.key] for f in futures]
