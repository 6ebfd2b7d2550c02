"""``art dose``: recompute the dose of a given RT Plan on a CT (independent check)."""

from __future__ import annotations

import json as _json
from pathlib import Path
from typing import Annotated, Optional

import typer

from art_cli.options import Json, Out

NAME = "dose"


def command(
    ct: Annotated[Path, typer.Option(help="CT series folder.")],
    plan: Annotated[Path, typer.Option("--plan", help="RT Plan file.")],
    out: Out,
    structures: Annotated[Optional[Path], typer.Option(help="RTSTRUCT file (optional): DVH metrics per structure.")] = None,
    grid_mm: Annotated[float, typer.Option("--grid-mm", min=0.5, max=10.0, help="Dose grid spacing in mm.")] = 3.0,
    json: Json = False,
) -> None:
    """Recompute the dose of a given RT Plan on a CT (independent check): RTDOSE.dcm, summary.json."""
    from art.recalculate import recalculate

    summary = recalculate(ct, plan, out, structures_path=structures, dose_grid_mm=grid_mm, show_progress=True)
    if json:
        typer.echo(_json.dumps(summary, indent=2))
    typer.echo(
        f"dose written to {out} (max {summary['dose']['max_gy']:.2f} Gy, {len(summary['plan']['beams'])} beams)", err=True
    )
