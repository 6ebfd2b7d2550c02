"""``art plan``: the reference plan from a planning CT, RTSTRUCT and protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.exceptions import Exit

from art_cli.options import EXIT_GOAL_NOT_MET, CheckEngine, FinalEngine, FinalGrid, Json, Out, engines

NAME = "plan"


def command(
    ct: Annotated[Path, typer.Option(help="Planning CT series folder.")],
    structures: Annotated[Path, typer.Option(help="RTSTRUCT file.")],
    protocol: Annotated[Path, typer.Option(help="Protocol TOML file (prescription, beams, clinical goals).")],
    out: Out,
    machine: Annotated[
        Optional[Path], typer.Option(help="Machine (beam model) file, JSON or TOML (default: the generic 6 MV linac).")
    ] = None,
    optimizer: Annotated[
        str,
        typer.Option(
            help="'lbfgs' (fast, smooth penalties, default: 8-15 s on the demo patient) or 'cvxpy' (convex surrogates: a slow "
            "reference, not for daily re-planning: 553 s of optimisation on the demo patient on 16 cores, over 9 minutes on 2)."
        ),
    ] = "lbfgs",
    solver: Annotated[str, typer.Option(help="cvxpy solver with --optimizer cvxpy: CLARABEL (default), OSQP or SCS.")] = "CLARABEL",
    final_grid_mm: FinalGrid = None,
    final_engine: FinalEngine = "pb",
    check_engine: CheckEngine = None,
    json: Json = False,
) -> None:
    """Make the reference plan: RTPLAN, RTDOSE, RTSTRUCT, report.html, summary.json.

    The report and summary.json carry an independent dose check of the plan, by default by the
    other dose algorithm than the final dose's (--check-engine).

    Exit code 3 when a priority-1 goal is not met by the delivered (sequenced) plan.
    """
    from art.jobs import plan_job
    from art.summary import dumps

    if optimizer not in ("lbfgs", "cvxpy"):
        raise typer.BadParameter(f"unknown optimizer {optimizer!r}; choose lbfgs or cvxpy", param_hint="--optimizer")
    if solver.upper() not in ("CLARABEL", "OSQP", "SCS"):
        raise typer.BadParameter(f"unknown solver {solver!r}; choose CLARABEL, OSQP or SCS", param_hint="--solver")
    final_engine, check_engine = engines(final_engine, check_engine)
    options = {"method": optimizer, "solver": solver.upper()} if optimizer == "cvxpy" else {"method": optimizer}
    summary = plan_job(ct, structures, protocol, out, show=True, machine_path=machine, optimizer_options=options, final_grid_mm=final_grid_mm,
                       final_engine=final_engine, check_engine=check_engine)  # fmt: skip
    if json:
        typer.echo(dumps(summary))
    typer.echo(f"reference plan written to {out}", err=True)
    if not summary["priority1_met"]:
        failed = [f"{g['structure']} {g['metric']}" for g in summary["plans"]["reference"]["goals"] if g["priority"] == 1 and not g["met"]]
        typer.echo(f"art: priority-1 goal(s) not met: {', '.join(failed)}", err=True)
        raise Exit(EXIT_GOAL_NOT_MET)
