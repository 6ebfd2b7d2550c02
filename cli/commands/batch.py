"""``art batch``: many daily re-plans from a manifest, on Dask."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.exceptions import Exit

from art_cli.options import EXIT_FAILED, EXIT_GOAL_NOT_MET, EXIT_OK

NAME = "batch"


def command(
    manifest: Annotated[
        Path, typer.Argument(metavar="MANIFEST.toml", help="Manifest (TOML): [defaults] and one [[job]] row per re-plan (reference, cbct, out).")
    ],
    scheduler: Annotated[
        Optional[str], typer.Option("--scheduler", help="An existing Dask scheduler, tcp://HOST:8786 (default: an embedded cluster on this machine).")
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option("--workers", min=1, help="Worker processes of the embedded cluster (default: sized to CPUs and memory).")
    ] = None,
    threads_per_worker: Annotated[
        Optional[int], typer.Option("--threads-per-worker", min=1, help="Threads of each worker's re-plan (default: CPUs / workers).")
    ] = None,
    retries: Annotated[
        Optional[int], typer.Option("--retries", min=0, help="Retries of a crashed job or one whose worker died (default: the manifest's, else 2).")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the result rows (one per job) as JSON on stdout.")] = False,
) -> None:
    """Run every re-plan of a manifest on Dask, with a progress bar and a summary table.

    Every row is checked before anything runs. One failed job never stops the others; each
    job's results are only in its own `out`. Exit code 0: every job done and every
    priority-1 goal met; 3: every job done, some priority-1 goal not met; 1: a job failed.
    """
    from art.node.batch import read_manifest
    from art.node.engine import JobEngine

    m = read_manifest(manifest)
    n_retries = retries if retries is not None else (m.retries if m.retries is not None else 2)
    console = _console()
    with JobEngine(scheduler=scheduler, workers=workers, threads_per_worker=threads_per_worker, retries=n_retries) as engine:
        where = scheduler or f"an embedded cluster of {engine.workers} worker(s) × {engine.threads_per_worker} thread(s)"
        console.print(f"{len(m.jobs)} re-plan(s) from {m.path.name} on {where}")
        rows = _run_with_progress(m.jobs, engine, console)
    code = exit_code(rows)
    if json:
        from art.summary import dumps

        typer.echo(dumps({"manifest": str(m.path), "exit_code": code, "jobs": rows}))
    console.print(summary_table(rows))
    done = sum(r["status"] == "done" for r in rows)
    console.print(f"{done} of {len(rows)} re-plan(s) done, {len(rows) - done} failed")
    if code != EXIT_OK:
        raise Exit(code)


def _console():
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False)


def _run_with_progress(jobs, engine, console) -> list[dict]:
    """run_batch with a rich progress bar on stderr and one line per finished job."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from art.node.batch import run_batch

    columns = (TextColumn("[bold]re-plans"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("re-plans", total=len(jobs))

        def progress(row: dict) -> None:
            bar.advance(task)
            mark = "[green]✓[/green]" if row["exit_code"] == 0 else "[yellow]![/yellow]" if row["status"] == "done" else "[red]✗[/red]"
            bar.console.print(f"  {mark} {escape(row['name'])}: {escape(_status_text(row))}")

        return run_batch(jobs, engine, progress=progress)


def _status_text(row: dict) -> str:
    if row["status"] != "done":
        return f"failed: {row['error']}"
    met = "priority-1 goals met" if row["priority1_met"] else "a priority-1 goal NOT met"
    return f"done, {met}, recommended: {row['recommendation']} plan"


def exit_code(rows: list[dict]) -> int:
    """0: every job done and met; 3: every job done, some priority-1 goal not met; 1: any job failed."""
    if any(r["status"] != "done" for r in rows):
        return EXIT_FAILED
    return EXIT_GOAL_NOT_MET if any(not r["priority1_met"] for r in rows) else EXIT_OK


def summary_table(rows: list[dict]):
    """A rich table: one line per job (name, status, exit code, priority-1 met, recommended plan, seconds), failures' errors below."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(title="art batch", title_justify="left")
    for col in ("job", "status", "exit", "P1 met", "recommended", "wall s"):
        table.add_column(col, justify="right" if col in ("exit", "wall s") else "left")
    for r in rows:
        met = "" if r["priority1_met"] is None else ("yes" if r["priority1_met"] else "NO")
        wall = "" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        table.add_row(escape(r["name"]), r["status"], str(r["exit_code"]), met, r["recommendation"] or "", wall)
    errors = [Text(f"{r['name']}: {r['error']}") for r in rows if r["status"] != "done"]
    return Group(table, *errors)
