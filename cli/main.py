"""Entry point of the ``art`` command."""

import sys


def main(argv: list[str] | None = None) -> int:
    from art_cli.app import run

    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
