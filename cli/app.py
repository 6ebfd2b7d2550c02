"""The ``art`` command: argument parsing and exit codes only; the work is done in :mod:`art`.

Exit codes (README.md, docs/workflow.md): 0 done; 1 failed (one-line message on stderr, nothing
left in ``--out``); 2 usage error (also: command not built yet); 3 done but a
priority-1 goal is not met.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from typer.exceptions import Abort, Exit, TyperException

from art_cli.options import EXIT_FAILED, EXIT_GOAL_NOT_MET, EXIT_OK, EXIT_USAGE, Out, not_built  # noqa: F401

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
    verbose_phi: Annotated[
        bool,
        typer.Option("--verbose-phi", help="Show the patient's name and ID on the terminal and in the QA report (off by default)."),
    ] = False,
) -> None:
    """art: adaptive radiotherapy planning engine."""
    from art.privacy import set_verbose_phi

    set_verbose_phi(verbose_phi)


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


from art_cli.commands import batch as _batch  # noqa: E402
from art_cli.commands import check as _check  # noqa: E402
from art_cli.commands import demo as _demo  # noqa: E402
from art_cli.commands import dose as _dose  # noqa: E402
from art_cli.commands import export as _export  # noqa: E402
from art_cli.commands import plan as _plan  # noqa: E402
from art_cli.commands import replan as _replan  # noqa: E402
from art_cli.commands import train_contours as _train_contours  # noqa: E402

for _mod in (_demo, _plan, _dose, _check, _replan, _batch, _export, _train_contours):
    app.command(_mod.NAME)(_mod.command)

from art_cli.commands import course as _course  # noqa: E402

app.command(_course.NAME, cls=_course.CourseCommand)(_course.command)

from art_cli.commands import node as _node  # noqa: E402

for _fn in (_node.register, _node.jobs, _node.serve):
    app.command(_fn.__name__)(_fn)


def run(argv: list[str]) -> int:
    """Run the command line; return the exit code (never raises for user errors)."""
    from art.errors import ArtError

    try:
        rv = app(args=list(argv), prog_name="art", standalone_mode=False)
        if isinstance(rv, int):  # with standalone_mode=False an Exit comes back as its code
            if rv == 130:  # typer turns KeyboardInterrupt (SIGINT, SIGTERM) into exit code 130
                typer.echo("art: interrupted; nothing was written", err=True)
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
