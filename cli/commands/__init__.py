"""One module per ``art`` subcommand (argument parsing only; the work is done in :mod:`art`).

Each module defines ``command`` (the typer function) and ``NAME``; :mod:`art_cli.app`
registers them. Shared option types live in :mod:`art_cli.options`.
"""
