"""``art train-contours``: train the CBCT segmentation network on digital patients."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from art_cli.options import Out

NAME = "train-contours"


def command(
    out: Out,
    cases: Annotated[int, typer.Option("--cases", min=1, max=2000, help="Number of training patients (seeds 100, 101, ...; 2-3 daily CBCTs each).")] = 60,
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=1000, help="Passes over the training CBCTs.")] = 8,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the weights, patches and augmentation.")] = 0,
    lr: Annotated[float, typer.Option("--lr", min=1e-6, max=1.0, help="Adam learning rate (cosine decay to 2 % of it).")] = 2e-3,
    init: Annotated[Path | None, typer.Option("--init", help="Fine-tune: start from this TorchScript model (its .json card beside it) instead of random weights.")] = None,
) -> None:
    """Train the organ segmentation network on digital patients: contour_unet.pt (TorchScript) and contour_unet.json (model card)."""
    from art.contouring.training import train
    from art.outputs import atomic_output_dir

    cmd = f"art train-contours --out {shlex.quote(str(out))} --cases {cases} --epochs {epochs} --seed {seed}"
    if lr != 2e-3:
        cmd += f" --lr {lr:g}"
    if init is not None:
        cmd += f" --init {shlex.quote(str(init))}"
    with atomic_output_dir(out) as tmp:
        card = train(tmp, seeds=range(100, 100 + cases), epochs=epochs, seed=seed, lr=lr, init=init, progress=sys.stderr.isatty(), command=cmd)
    dice = " ".join(f"{k} {v:.3f}" for k, v in card["validation_dice"].items())
    typer.echo(f"contour model written to {out} (validation Dice: {dice})", err=True)
