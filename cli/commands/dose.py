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
    machine: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--machine",
            metavar="<path>",
            help="Machine file (art-machine/1) or MLC model (art-mlc/1) added to the shipped library (6X, 10X, 6FFF; "
            "Millennium-120- and Agility-like MLCs), replacing its entries of the same energy / leaf boundaries. Repeatable.",
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine", metavar="{pb,ccc}",
            help="Dose engine: pb (pencil beam, default) or ccc (collapsed-cone convolution/superposition, a second algorithm).",
        ),
    ] = "pb",
    json: Json = False,
) -> None:
    """Recompute the dose of a given RT Plan on a CT (independent check): RTDOSE.dcm, summary.json.

    Each beam is computed with the library's machine of its energy (and fluence mode), preferring the plan's
    TreatmentMachineName, and the MLC model of its leaf boundaries (docs/machine_data.md)."""
    from art.recalculate import recalculate
    from art_cli.options import engines

    engine, _ = engines(engine, None, final_option="--engine")
    summary = recalculate(ct, plan, out, structures_path=structures, machine_path=machine or None, dose_grid_mm=grid_mm, engine=engine,
                          show_progress=True)  # fmt: skip
    if json:
        typer.echo(_json.dumps(summary, indent=2))
    typer.echo(
        f"dose ({summary['engine']['name']}) written to {out} (max {summary['dose']['max_gy']:.2f} Gy, {len(summary['plan']['beams'])} beams)", err=True
    )
