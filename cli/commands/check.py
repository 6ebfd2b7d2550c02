"""``art check``: re-evaluate an RT Dose on an RTSTRUCT's polygons (+ a protocol's goals); writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.exceptions import Exit

from art_cli.options import EXIT_GOAL_NOT_MET

NAME = "check"


def command(
    dose: Annotated[Path, typer.Option("--dose", help="RT Dose file (art's or another system's), Gy.")],
    structures: Annotated[Path, typer.Option("--structures", help="RTSTRUCT file in the RT Dose's frame of reference.")],
    protocol: Annotated[Optional[Path], typer.Option(help="Protocol TOML: evaluate its clinical goals.")] = None,
    structure: Annotated[
        Optional[list[str]], typer.Option("--structure", help="Without --protocol: only this structure (repeat for more).")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout instead of the table.")] = False,
) -> None:
    """Re-evaluate any RT Dose + RTSTRUCT with art's DVH from the polygons: goal table or per-structure metrics.

    Exit code 3 when a priority-1 goal of the protocol is not met; 1 when a structure
    cannot be evaluated (outside the dose grid, bad contours, other frame of reference).
    """
    from art.check import check, format_check
    from art.summary import dumps

    if structure and protocol is not None:
        raise typer.BadParameter("--structure is for the per-structure table; with --protocol the goals name the structures", param_hint="--structure")
    result = check(dose, structures, protocol_path=protocol, structure_names=structure or None)
    typer.echo(dumps(result) if json else format_check(result))
    if protocol is not None and not result["priority1_met"]:
        failed = [f"{g['structure']} {g['label']}" for g in result["goals"] if g["priority"] == 1 and not g["met"]]
        typer.echo(f"art: priority-1 goal(s) not met: {', '.join(failed)}", err=True)
        raise Exit(EXIT_GOAL_NOT_MET)
