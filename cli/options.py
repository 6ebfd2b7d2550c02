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
FinalEngine = Annotated[
    str,
    typer.Option(
        "--final-engine", metavar="{pb,ccc}",
        help="Dose engine of the final dose (the RTDOSE written and evaluated): pb (pencil beam, default) or ccc "
        "(collapsed-cone convolution/superposition).",
    ),
]  # fmt: skip
CheckEngine = Annotated[
    Optional[str],
    typer.Option(
        "--check-engine", metavar="{pb,ccc}",
        help="Dose engine of the independent check in the report and summary.json (default: the other algorithm than "
        "--final-engine, a second-algorithm check: ccc checks pb, pb checks ccc).",
    ),
]  # fmt: skip


def engines(final_engine: str, check_engine: Optional[str], *, final_option: str = "--final-engine") -> tuple[str, Optional[str]]:
    """``--final-engine`` (or ``final_option``) and ``--check-engine`` checked against the dose engines (usage error, exit 2,
    naming the option)."""
    from art.dose.engines import engine_name
    from art.errors import InputError

    out = []
    for value, option in ((final_engine, final_option), (check_engine, "--check-engine")):
        try:
            out.append(None if value is None else engine_name(value, parameter=option))
        except InputError as exc:  # the registry's message, the option named by typer instead of in the text
            raise typer.BadParameter(str(exc).removeprefix(f"{option}: "), param_hint=option) from None
    return out[0], out[1]


def not_built(command: str, issue: str) -> None:
    """Refuse a specified command whose implementation has not landed yet (exit code 2)."""
    typer.echo(f"art: '{command}' is not built yet ({issue}).", err=True)
    raise Exit(EXIT_USAGE)
