"""``art plan``: the reference plan from a planning CT, RTSTRUCT and protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from art_cli.options import Json, Out, not_built

NAME = "plan"


def command(
    ct: Annotated[Path, typer.Option(help="Planning CT series folder.")],
    structures: Annotated[Path, typer.Option(help="RTSTRUCT file.")],
    protocol: Annotated[Path, typer.Option(help="Protocol TOML file (prescription, beams, clinical goals).")],
    out: Out,
    json: Json = False,
) -> None:
    """Make the reference plan: RTPLAN, RTDOSE, RTSTRUCT, report.html, summary.json."""
    not_built("plan", "plan optimisation, issue 4")
