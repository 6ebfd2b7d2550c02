"""``art demo``: demo patient → reference plan → daily CBCT → adapted plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import Exit

from art_cli.options import EXIT_GOAL_NOT_MET, CheckEngine, FinalEngine, FinalGrid, Json, Out, engines

NAME = "demo"


def command(
    out: Out = Path("art-demo"),
    seed: Annotated[int, typer.Option(min=0, help="Seed of the demo patient.")] = 0,
    final_grid_mm: FinalGrid = None,
    final_engine: FinalEngine = "pb",
    check_engine: CheckEngine = None,
    json: Json = False,
) -> None:
    """Make the demo patient, plan it, and adapt the plan to one daily CBCT (full bladder, rectal gas, prostate shift)."""
    from art.jobs import demo_job, goal_comparison_table
    from art.summary import dumps

    final_engine, check_engine = engines(final_engine, check_engine)
    summary = demo_job(out, seed=seed, show=True, final_grid_mm=final_grid_mm, final_engine=final_engine, check_engine=check_engine)
    if json:
        typer.echo(dumps(summary))
    typer.echo("", err=True)
    typer.echo(goal_comparison_table(summary), err=True)
    rec = summary["adaptive"]["recommendation"]
    typer.echo(f"\nrecommended today: the {rec['plan']} plan ({rec['reason']})", err=True)
    typer.echo(f"total time {summary['total_time_s']:.0f} s", err=True)
    written = summary.get("written", {})
    typer.echo(
        f"outputs in {out}/: patient/ (digital patient), reference/ ({', '.join(written.get('reference', []))}), "
        f"adapted/ ({', '.join(written.get('adapted', []))})",
        err=True,
    )
    if not summary["adaptive"]["priority1_met"]:
        raise Exit(EXIT_GOAL_NOT_MET)
