"""``art replan``: the daily adaptive re-plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.exceptions import Exit

from art_cli.options import EXIT_GOAL_NOT_MET, CheckEngine, FinalEngine, FinalGrid, Json, Out, engines

NAME = "replan"


def command(
    reference: Annotated[Path, typer.Option(help="Reference folder: planning CT, RTSTRUCT, RTPLAN and protocol.toml.")],
    cbct: Annotated[Path, typer.Option(help="Daily CBCT series folder.")],
    out: Out,
    contour_model: Annotated[
        Optional[Path], typer.Option("--contour-model", help="A TorchScript segmentation model with its JSON card (default: the shipped model).")
    ] = None,
    final_grid_mm: FinalGrid = None,
    final_engine: FinalEngine = "pb",
    check_engine: CheckEngine = None,
    registration: Annotated[
        Optional[Path],
        typer.Option(
            "--registration",
            help="Spatial Registration (REG) file linking a CBCT in its own frame of reference to the planning CT "
            "(default: the one REG file in the CBCT folder; not needed when the CBCT shares the CT's frame).",
        ),
    ] = None,
    json: Json = False,
) -> None:
    """The daily adaptive re-plan: scheduled vs adapted plan, export files and QA report.

    A CBCT in its own frame of reference needs the imaging system's REG linking it to the
    planning CT; its matrix starts the rigid registration. The scheduled and adapted doses are
    computed by --final-engine; the adapted plan's independent check, by default, by the other
    dose algorithm (--check-engine). Exit code 3 when the adapted plan still fails a priority-1 goal.
    """
    from art.jobs import goal_comparison_table, replan_job
    from art.summary import dumps

    final_engine, check_engine = engines(final_engine, check_engine)
    summary = replan_job(reference, cbct, out, show=True, contour_model=contour_model, final_grid_mm=final_grid_mm, registration=registration,
                         final_engine=final_engine, check_engine=check_engine)  # fmt: skip
    if json:
        typer.echo(dumps(summary))
    typer.echo(goal_comparison_table(summary), err=True)
    rec = summary["recommendation"]
    typer.echo(f"recommended: {rec['plan']} plan ({rec['reason']}); results in {out}", err=True)
    if not summary["priority1_met"]:
        raise Exit(EXIT_GOAL_NOT_MET)
