"""``art train-contours``: train the CBCT segmentation network on digital patients."""

from __future__ import annotations

from art_cli.options import Out, not_built

NAME = "train-contours"


def command(out: Out) -> None:
    """Train the organ-at-risk segmentation network on generated digital patients."""
    not_built("train-contours", "AI re-contouring, issue 7")
