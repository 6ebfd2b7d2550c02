"""The ``art`` command: argument parsing and exit codes only; the work is done in :mod:`art`.

Exit codes (DESIGN.md): 0 done; 1 failed (one-line message on stderr, nothing
left in ``--out``); 2 usage error (also: command not built yet); 3 done but a
priority-1 goal is not met.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.exceptions import Abort, Exit, TyperException

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_GOAL_NOT_MET = 0, 1, 2, 3

app = typer.Typer(
    name="art",
    help=(
        "art: adaptive radiotherapy planning engine.\n\n"
        "Plans a patient from a planning CT, structures and a protocol of clinical goals, "
        "then re-plans each treatment day on the daily cone-beam CT. "
        "Dose in Gy, lengths in mm, DICOM patient coordinates (LPS)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _not_built(command: str, issue: str) -> None:
    """Refuse a specified command whose implementation has not landed yet (exit code 2)."""
    typer.echo(f"art: '{command}' is not built yet ({issue}).", err=True)
    raise Exit(EXIT_USAGE)


def _version_callback(value: bool) -> None:
    if value:
        from art import __version__

        typer.echo(f"art {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """art: adaptive radiotherapy planning engine."""


Out = Annotated[Path, typer.Option("--out", "-o", help="Result folder (written atomically; replaced only on success).")]


@app.command()
def phantom(
    out: Out,
    site: Annotated[str, typer.Option(help="Anatomical site of the digital patient.")] = "prostate",
    fractions: Annotated[int, typer.Option(min=0, max=40, help="Number of daily CBCTs to simulate.")] = 1,
    seed: Annotated[int, typer.Option(min=0, help="Random seed: the same seed gives the same patient.")] = 0,
    spacing: Annotated[
        Optional[str], typer.Option(help="Voxel size 'dz,dy,dx' in mm of the planning CT (default 3,2,2).")
    ] = None,
) -> None:
    """Make a digital patient: planning CT, RTSTRUCT, protocol.toml, daily CBCTs and their ground truth (truth/)."""
    if site != "prostate":
        raise typer.BadParameter(f"unknown site {site!r}; available: prostate", param_hint="--site")
    kwargs = {}
    if spacing is not None:
        try:
            values = tuple(float(v) for v in spacing.split(","))
        except ValueError:
            values = ()
        if len(values) != 3 or min(values) <= 0:
            raise typer.BadParameter("give three positive numbers 'dz,dy,dx' in mm", param_hint="--spacing")
        kwargs["spacing"] = values
    from art_phantoms.write import write_phantom

    summary = write_phantom(out, seed=seed, fractions=fractions, **kwargs)
    typer.echo(f"digital patient written to {out} ({summary['n_files']} files)", err=True)


@app.command()
def demo(out: Out = Path("art-demo")) -> None:
    """Make the demo patient, plan it, and adapt the plan to one daily CBCT."""
    _not_built("demo", "the daily adaptive workflow, issue 8")


@app.command()
def plan(
    ct: Annotated[Path, typer.Option(help="Planning CT series folder.")],
    structures: Annotated[Path, typer.Option(help="RTSTRUCT file.")],
    protocol: Annotated[Path, typer.Option(help="Protocol TOML file (prescription, beams, clinical goals).")],
    out: Out,
) -> None:
    """Make the reference plan: RTPLAN, RTDOSE, RTSTRUCT, report.html, summary.json."""
    _not_built("plan", "plan optimisation, issue 4")


@app.command()
def dose(
    ct: Annotated[Path, typer.Option(help="CT series folder.")],
    plan: Annotated[Path, typer.Option("--plan", help="RT Plan file.")],
    out: Out,
    structures: Annotated[Optional[Path], typer.Option(help="RTSTRUCT file (optional).")] = None,
) -> None:
    """Recompute the dose of a given RT Plan on a CT (independent check)."""
    _not_built("dose", "DICOM-RT plan import and export, issue 5")


@app.command()
def replan(
    reference: Annotated[Path, typer.Option(help="Reference folder: planning CT, RTSTRUCT, RTPLAN and protocol.toml.")],
    cbct: Annotated[Path, typer.Option(help="Daily CBCT series folder.")],
    out: Out,
) -> None:
    """The daily adaptive re-plan: scheduled vs adapted plan, export files and QA report."""
    _not_built("replan", "the daily adaptive workflow, issue 8")


@app.command()
def export(
    folder: Annotated[Path, typer.Argument(help="Result folder to send.")],
    host: Annotated[str, typer.Option(help="DICOM peer host.")],
    port: Annotated[int, typer.Option(help="DICOM peer port.")],
    ae_title: Annotated[str, typer.Option("--ae-title", help="Called AE title of the peer.")],
) -> None:
    """Send a result folder to a DICOM peer by C-STORE."""
    _not_built("export", "DICOM networking, issue 5")


def run(argv: list[str]) -> int:
    """Run the command line; return the exit code (never raises for user errors)."""
    from art.errors import ArtError

    try:
        rv = app(args=list(argv), prog_name="art", standalone_mode=False)
        if isinstance(rv, int):  # with standalone_mode=False an Exit comes back as its code
            return rv
    except Exit as exc:
        return int(exc.exit_code or 0)
    except Abort:
        typer.echo("art: interrupted; nothing was written", err=True)
        return 130
    except TyperException as exc:  # usage errors: bad or missing options, unknown command
        show = getattr(exc, "show", None)
        if callable(show):
            show(file=sys.stderr)
        else:
            typer.echo(f"art: {exc.format_message()}", err=True)
        return int(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)
    except ArtError as exc:
        typer.echo(f"art: error: {exc}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        typer.echo("art: interrupted; nothing was written", err=True)
        return 130
    except MemoryError:
        typer.echo("art: error: out of memory", err=True)
        return EXIT_FAILED
    except OSError as exc:  # disk full, permission denied ...
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        typer.echo(f"art: error: {where}{exc.strerror or exc}", err=True)
        return EXIT_FAILED
    return EXIT_OK
