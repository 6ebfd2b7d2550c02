"""``art demo``: demo patient → reference plan → daily CBCT → adapted plan."""

from __future__ import annotations

from pathlib import Path

from art_cli.options import Json, Out, not_built

NAME = "demo"


def command(out: Out = Path("art-demo"), json: Json = False) -> None:
    """Make the demo patient, plan it, and adapt the plan to one daily CBCT."""
    not_built("demo", "the daily adaptive workflow, issue 8")
