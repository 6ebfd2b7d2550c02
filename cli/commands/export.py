"""``art export``: send a result folder to a DICOM peer by C-STORE."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from art_cli.options import not_built

NAME = "export"


def command(
    folder: Annotated[Path, typer.Argument(help="Result folder to send.")],
    host: Annotated[str, typer.Option(help="DICOM peer host.")],
    port: Annotated[int, typer.Option(help="DICOM peer port.")],
    ae_title: Annotated[str, typer.Option("--ae-title", help="Called AE title of the peer.")],
) -> None:
    """Send a result folder to a DICOM peer by C-STORE."""
    not_built("export", "DICOM networking, issue 5")
