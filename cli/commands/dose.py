"""``art dose``: recompute the dose of a given RT Plan on a CT (independent check)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from art_cli.options import Json, Out, not_built

NAME = "dose"


def command(
    ct: Annotated[Path, typer.Option(help="CT series folder.")],
    plan: Annotated[Path, typer.Option("--plan", help="RT Plan file.")],
    out: Out,
    structures: Annotated[Optional[Path], typer.Option(help="RTSTRUCT file (optional).")] = None,
    json: Json = False,
) -> None:
    """Recompute the dose of a given RT Plan on a CT (independent check): RTDOSE.dcm, summary.json."""
    not_built("dose", "DICOM-RT plan import and export, issue 5")
