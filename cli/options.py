"""Option types and small helpers shared by the ``art`` subcommands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.exceptions import Exit

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_GOAL_NOT_MET = 0, 1, 2, 3

Out = Annotated[Path, typer.Option("--out", "-o", help="Result folder (written atomically; replaced only on success).")]
Json = Annotated[bool, typer.Option("--json", help="Print summary.json on stdout.")]
FinalGrid = Annotated[
    Optional[float],
    typer.Option(
        "--final-grid-mm", min=0.5, max=5.0,
        help="Spacing (mm, isotropic) of the export grid: the final dose is computed, written as RTDOSE and evaluated on it (default 2.5).",
    ),
]  # fmt: skip


def not_built(command: str, issue: str) -> None:
    """Refuse a specified command whose implementation has not landed yet (exit code 2)."""
    typer.echo(f"art: '{command}' is not built yet ({issue}).", err=True)
    raise Exit(EXIT_USAGE)
