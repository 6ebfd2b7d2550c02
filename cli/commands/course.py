"""``art course``: the dose accumulated over the treated fractions, on the planning CT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand
from typer.exceptions import Exit

from art_cli.options import EXIT_GOAL_NOT_MET, Json, Out

NAME = "course"

#: Options that take several values in a row (``--fractions DAY1 DAY2 …``).
_MULTI = ("--fractions", "--delivered")


class CourseCommand(TyperCommand):
    """``--fractions A B C`` read as ``--fractions A --fractions B --fractions C`` (order kept), likewise ``--delivered``."""

    def parse_args(self, ctx, args):  # noqa: D401 - click's hook
        out, current, first = [], None, False
        for a in args:
            if a.startswith("-"):
                name = a.split("=", 1)[0]
                current = name if name in _MULTI else None
                first = "=" not in a  # "--fractions=A B": A is the first value already
                out.append(a)
            elif current is not None and not first:
                out += [current, a]
            else:
                out.append(a)
                first = False
        return super().parse_args(ctx, out)


def command(
    reference: Annotated[Path, typer.Option(help="Reference folder the fractions were re-planned from: planning CT, RTSTRUCT, RTPLAN, protocol.toml.")],
    fractions: Annotated[list[Path], typer.Option("--fractions", help="Finished `art replan` folders of the treated fractions, in treatment order: --fractions DAY1 DAY2 …")],
    out: Out,
    method: Annotated[str, typer.Option(help="Dose accumulation: 'pull' (the dose at each tissue's daily position) or 'energy' (energy per mass).")] = "pull",
    projection: Annotated[str, typer.Option(help="The remaining fractions projected like the 'mean' fraction so far or like the 'last'.")] = "mean",
    delivered: Annotated[
        Optional[list[str]],
        typer.Option("--delivered", help="The plan delivered on a fraction when not the re-plan's recommendation: N=adapted or N=scheduled (N: 1-based position), several allowed."),
    ] = None,
    grid_mm: Annotated[float, typer.Option("--grid-mm", min=0.5, max=5.0, help="Spacing (mm) of the planning CT's grid the dose is accumulated on.")] = 2.5,
    json: Json = False,
) -> None:
    """The course so far: each fraction's delivered dose mapped onto the planning CT through its deformation and summed.

    Writes RTDOSE.dcm (the accumulated dose, MULTI_PLAN), summary.json (goals per fraction,
    cumulative and projected to the full course) and report.html. Exit code 3 when the projection
    misses a priority-1 goal; 1 on bad input (nothing written).
    """
    from art.course.job import course_job
    from art.summary import dumps

    if method not in ("pull", "energy"):
        raise typer.BadParameter("choose 'pull' or 'energy'", param_hint="--method")
    if projection not in ("mean", "last"):
        raise typer.BadParameter("choose 'mean' or 'last'", param_hint="--projection")
    summary = course_job(reference, list(fractions), out, method=method, projection=projection, delivered=delivered, grid_mm=grid_mm, show=True)
    if json:
        typer.echo(dumps(summary))
    typer.echo(_table(summary), err=True)
    proj = summary["projection"]
    unc = summary["uncertainty"]["integral_dose_difference_percent"]
    typer.echo(f"{summary['fractions_delivered']} of {summary['fractions_planned']} fractions accumulated by {summary['method']}"
               f" (integral dose vs {summary['other_method']}: {'n/a' if unc is None else f'{unc:+.2f} %'}); results in {out}", err=True)  # fmt: skip
    if not proj["priority1_met"]:
        typer.echo("projection misses priority-1 goal(s): " + "; ".join(proj["missed_priority1"]), err=True)
        raise Exit(EXIT_GOAL_NOT_MET)


def _table(summary: dict) -> str:
    """Cumulative vs planned and projected, goal by goal (for the terminal)."""
    lines = [f"{'P':>2} {'structure':<14} {'metric':<8} {'goal now':<14} {'cumulative':>11} {'planned':>9} {'projected':>16}"]
    for c, p in zip(summary["cumulative"]["goals"], summary["projection"]["goals"]):
        planned = "" if c.get("planned") is None else f"{c['planned']:.2f}"
        proj = f"{p['value']:.2f} {p['unit']} {'ok' if p['met'] else 'FAIL'}"
        lines.append(f"{c['priority']:>2} {c['structure']:<14} {c['metric']:<8} {c['scaled_goal']:<14} {c['value']:>8.2f} {c['unit']:<2}"
                     f" {planned:>9} {proj:>16}")  # fmt: skip
    return "\n".join(lines)
