"""``art replan``: the daily adaptive re-plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from art_cli.options import Json, Out, not_built

NAME = "replan"


def command(
    reference: Annotated[Path, typer.Option(help="Reference folder: planning CT, RTSTRUCT, RTPLAN and protocol.toml.")],
    cbct: Annotated[Path, typer.Option(help="Daily CBCT series folder.")],
    out: Out,
    json: Json = False,
) -> None:
    """The daily adaptive re-plan: scheduled vs adapted plan, export files and QA report."""
    not_built("replan", "the daily adaptive workflow, issue 8")
