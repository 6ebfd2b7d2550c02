"""Train the contouring network on digital patients (the recipe behind the shipped weights).

Recipe (defaults): daily CBCTs of digital patients ``seeds`` (fractions 1 and
2 simulated directly at the network voxel size, fraction 3 of every other
patient simulated at the planning CT voxel size and resampled, as in use),
every phantom variation and CBCT artefact on with per-case strengths; 4 mm
isotropic grid; random patches (a third near the prostate, a third on the
bladder's boundary, a third anywhere); intensity
augmentation (HU offset, scale, smooth shading, noise); loss = cross-entropy +
soft Dice; Adam with cosine learning-rate decay; validation Dice on held-out
patients after every epoch; the final network exported to TorchScript with its
JSON card.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from art.errors import InputError

from .labels import CLASSES

__all__ = ["train", "export_model", "DEFAULT_NORMALISATION", "DEFAULT_VAL_SEEDS", "CHANNELS"]

DEFAULT_NORMALISATION = {"type": "body_mean", "scale_hu": 200.0, "clip": [-6.0, 6.0], "body_threshold_hu": -500.0, "window_hu": [-200.0, 200.0]}
#: Held-out validation patients (never used for training).
DEFAULT_VAL_SEEDS = (9000, 9001, 9002, 9003, 9004, 9005)
CHANNELS = (16, 32, 64, 96)
CARD_FORMAT = "art-contour-model/1"


def _augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Intensity augmentation in HU: offset, scale about air, smooth multiplicative shading, noise."""
    from scipy import ndimage

    out = (img + 1000.0) * rng.uniform(0.92, 1.08) - 1000.0 + rng.uniform(-60.0, 60.0)
    coarse = rng.normal(0.0, 1.0, (3, 3, 3)).astype(np.float32)
    field = ndimage.zoom(coarse, [s / 3.0 for s in img.shape], order=1)[: img.shape[0], : img.shape[1], : img.shape[2]]
    field = np.pad(field, [(0, s - f) for s, f in zip(img.shape, field.shape)], mode="edge")
    out = out + rng.uniform(0.0, 50.0) * field * (img + 1000.0) / 1000.0
    out = out + rng.normal(0.0, rng.uniform(0.0, 25.0), img.shape).astype(np.float32)
    return out.astype(np.float32)


def _crop(img, lab, patch, rng, pad_value):
    from scipy import ndimage

    pads = [(0, max(0, p - n)) for p, n in zip(patch, img.shape)]
    if any(p[1] for p in pads):
        img = np.pad(img, pads, constant_values=pad_value)
        lab = np.pad(lab, pads, constant_values=0)
    r = rng.random()
    if r < 1.0 / 3.0 and (lab == 4).any():
        # near the prostate
        c = np.argwhere(lab == 4).mean(axis=0) + rng.normal(0.0, 6.0, 3)
        start = [int(round(ci - p / 2)) for ci, p in zip(c, patch)]
    elif r < 2.0 / 3.0 and (lab == 2).any():
        # on the bladder's boundary (the dome meets bowel of the same density: the hardest edge)
        bl = lab == 2
        edge = np.argwhere(bl & ~ndimage.binary_erosion(bl))
        c = edge[int(rng.integers(0, len(edge)))]
        start = [int(round(ci - p / 2)) for ci, p in zip(c, patch)]
    else:
        start = [int(rng.integers(0, n - p + 1)) for n, p in zip(img.shape, patch)]
    start = [min(max(0, s), n - p) for s, n, p in zip(start, img.shape, patch)]
    sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
    return img[sl], lab[sl]


def _dice_per_class(pred: np.ndarray, lab: np.ndarray, n: int) -> list[float]:
    out = []
    for c in range(1, n):
        a, b = pred == c, lab == c
        s = a.sum() + b.sum()
        out.append(1.0 if s == 0 else float(2.0 * (a & b).sum() / s))
    return out


def train(
    out_dir,
    *,
    seeds=range(100, 160),
    epochs: int = 8,
    patch=(32, 64, 80),
    spacing_mm=(4.0, 4.0, 4.0),
    seed: int = 0,
    progress: bool = True,
    val_seeds=DEFAULT_VAL_SEEDS,
    batch_size: int = 2,
    lr: float = 2e-3,
    threads: int | None = 2,
    cache_dir=None,
    command: str | None = None,
    name: str = "contour_unet",
    init=None,
) -> dict:
    """Train the contouring network and write ``<name>.pt`` (TorchScript) and ``<name>.json`` (card) to ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created; existing files of the same name replaced).
    seeds : iterable of int, keyword-only
        Training patient seeds (must not meet ``val_seeds``).
    epochs : int, keyword-only
        Passes over the training cases (one random patch per case per pass).
    patch : (z, y, x) ints, keyword-only
        Patch size in voxels (divisible by 8); also the inference window.
    spacing_mm : (dz, dy, dx), keyword-only
        Network voxel size, mm.
    seed : int, keyword-only
        Seed of the weights, patch sampling and augmentation (deterministic on CPU).
    progress : bool, keyword-only
        Show a rich progress bar (to stderr).
    val_seeds : iterable of int, keyword-only
        Held-out validation patients (fraction 1, simulated at the planning
        CT voxel size).
    batch_size, lr, threads : keyword-only
        Mini-batch size, Adam learning rate, torch CPU threads (None: leave).
    cache_dir : path or None, keyword-only
        Case cache (:func:`art.contouring.dataset.default_cache_dir`).
    command : str or None, keyword-only
        The command line recorded in the card.
    init : path or None, keyword-only
        Start from the weights of this TorchScript model (same architecture
        and classes; its card beside it, recorded in the new card) instead of
        random weights: a fine-tuning run.

    Returns
    -------
    dict
        The model card (also written as JSON).
    """
    import torch

    seeds, val_seeds, patch, spacing_mm = _check_arguments(seeds, val_seeds, epochs, patch, spacing_mm)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    norm = dict(DEFAULT_NORMALISATION)
    prog = _progress_bar(progress)
    cases, val = _load_cases(prog, seeds, val_seeds, spacing_mm, cache_dir)
    net, init_record = _network(init, device)
    run = _RunSettings(epochs=epochs, batch_size=batch_size, lr=lr, device=device, patch=patch, norm=norm, progress=progress, t_start=t_start, checkpoint=out_dir / f"{name}.checkpoint.pth")
    history = _train_epochs(net, cases, val, rng, prog, run)
    run.checkpoint.unlink(missing_ok=True)
    card = _card(seeds, val_seeds, cases, epochs, batch_size, lr, seed, device, command, patch, spacing_mm, norm, history, t_start)
    if init_record is not None:
        card["training"]["initialised_from"] = init_record
    card = export_model(net.cpu().eval(), out_dir, name=name, card=card)
    return card


def _check_arguments(seeds, val_seeds, epochs, patch, spacing_mm) -> tuple[list[int], list[int], list[int], list[float]]:
    """Validate :func:`train`'s arguments (InputError); returns seeds, validation seeds, patch (voxels) and spacing (mm) as lists."""
    seeds = [int(s) for s in seeds]
    val_seeds = [int(s) for s in val_seeds]
    if not seeds:
        raise InputError("seeds must hold at least one training patient")
    if set(seeds) & set(val_seeds):
        raise InputError(f"training seeds overlap the validation seeds: {sorted(set(seeds) & set(val_seeds))}")
    if not isinstance(epochs, int) or epochs < 1:
        raise InputError(f"epochs must be a positive integer, got {epochs!r}")
    patch = [int(p) for p in patch]
    if len(patch) != 3 or any(p < 8 or p % 8 for p in patch):
        raise InputError(f"patch must be three sizes divisible by 8, got {patch}")
    spacing_mm = [float(s) for s in spacing_mm]
    return seeds, val_seeds, patch, spacing_mm


def _progress_bar(progress: bool):
    """A rich progress bar (to stderr; disabled when ``progress`` is False)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), disable=not progress, transient=False)


def _load_cases(prog, seeds: list[int], val_seeds: list[int], spacing_mm, cache_dir) -> tuple[list, list]:
    """The training and validation cases, each ``(image, labels)`` ((z, y, x) HU float32, uint8) on the network grid.

    Training: fractions 1 and 2 of every seed at the network voxel size
    ``spacing_mm``, then fraction 3 of every other seed simulated at the
    planning voxel size and resampled; validation: fraction 1 of each
    validation seed, resampled. Through the case cache ``cache_dir``.
    """
    from .dataset import load_case

    jobs = [(s, f, False) for s in seeds for f in (1, 2)] + [(s, 3, True) for s in seeds[::2]]
    cases = []
    with prog:
        task = prog.add_task("cases", total=len(jobs) + len(val_seeds), info="")
        for s, f, nat in jobs:
            cases.append(load_case(s, f, spacing_mm=spacing_mm, native=nat, cache_dir=cache_dir))
            prog.advance(task)
        val = []
        for s in val_seeds:
            val.append(load_case(s, 1, spacing_mm=spacing_mm, native=True, cache_dir=cache_dir))
            prog.advance(task)
    return cases, val


def _network(init, device: str):
    """A new :class:`UNet3D` (weights from torch's seeded generator, or from the model ``init``) on ``device``; returns it and the card's record of ``init`` (None)."""
    from .network import UNet3D

    net = UNet3D(1, len(CLASSES), CHANNELS)
    init_record = None
    if init is not None:
        init_record = _load_init(net, init)
    net = net.to(device)
    return net, init_record


@dataclass(frozen=True)
class _RunSettings:
    """The settings of a training run.

    Attributes
    ----------
    epochs, batch_size : int
    lr : float
        Adam's initial learning rate (cosine decay to 2 % over the run).
    device : str
        ``"cuda"`` or ``"cpu"``.
    patch : list of int
        Patch size (z, y, x), voxels.
    norm : dict
        The intensity normalisation (:data:`DEFAULT_NORMALISATION`).
    progress : bool
        Rich progress bar; else lines on stderr.
    t_start : float
        ``time.time()`` at the start (for the elapsed times).
    checkpoint : Path
        Where the weights are saved after every epoch.
    """

    epochs: int
    batch_size: int
    lr: float
    device: str
    patch: list
    norm: dict
    progress: bool
    t_start: float
    checkpoint: Path


class _TrainingModel:  # the minimal ContourModel interface predict_probabilities needs
    def __init__(self, module, device, patch, norm):
        self.module, self.device = module, device
        self.card = {"classes": list(CLASSES), "divisor": 8, "patch": patch, "normalisation": norm}


def _train_epochs(net, cases: list, val: list, rng: np.random.Generator, prog, run: _RunSettings) -> list[dict]:
    """Train ``net`` in place: ``run.epochs`` passes over ``cases`` in random order, validation Dice after each.

    Adam with cosine learning-rate decay; loss = cross-entropy + soft Dice
    (:func:`_train_step`). The weights are saved to ``run.checkpoint`` after
    every epoch.

    Returns
    -------
    list of dict
        Per epoch: ``epoch``, mean ``loss``, ``val_dice`` (class -> Dice), ``elapsed_s``.
    """
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=run.lr)
    steps_per_epoch = max(1, len(cases) // run.batch_size)
    total = steps_per_epoch * run.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
    ce = torch.nn.CrossEntropyLoss()
    history = []
    with prog:
        task = prog.add_task("training", total=total, info="")
        for ep in range(run.epochs):
            net.train()
            order = rng.permutation(len(cases))
            losses = []
            for b in range(steps_per_epoch):
                batch = [cases[i] for i in order[b * run.batch_size : (b + 1) * run.batch_size]]
                losses.append(_train_step(net, opt, sched, ce, batch, rng, run))
                prog.update(task, advance=1, info=f"epoch {ep + 1}/{run.epochs} loss {np.mean(losses[-20:]):.3f}")
                if not run.progress and (b + 1) % 25 == 0:
                    print(f"epoch {ep + 1} step {b + 1}/{steps_per_epoch} loss {np.mean(losses[-25:]):.3f} ({time.time() - run.t_start:.0f} s)", file=sys.stderr, flush=True)
            net.eval()
            vd = _validation_dice(net, val, run)
            history.append({"epoch": ep + 1, "loss": round(float(np.mean(losses)), 4), "val_dice": vd, "elapsed_s": round(time.time() - run.t_start, 1)})
            line = f"epoch {ep + 1}: loss {np.mean(losses):.3f} val Dice " + " ".join(f"{k} {v:.3f}" for k, v in vd.items())
            prog.console.print(line) if run.progress else print(line, file=sys.stderr, flush=True)
            torch.save(net.state_dict(), run.checkpoint)
    return history


def _train_step(net, opt, sched, ce, batch: list, rng: np.random.Generator, run: _RunSettings) -> float:
    """One optimiser step on a mini-batch; returns the loss.

    Each case ``(image, labels)`` of ``batch`` is augmented (:func:`_augment`),
    normalised and cropped to a random patch (:func:`_crop`), drawing from
    ``rng`` in that order, case by case. Loss: cross-entropy plus the mean
    soft Dice loss of classes 1.. (smoothed by 1).
    """
    import torch

    from .model import normalise

    n_cls = len(CLASSES)
    pad_value = run.norm["clip"][0]
    xs, ys = [], []
    for img, lab in batch:
        img = _augment(img, rng)
        img = normalise(img, run.norm)
        ci, cl = _crop(img, lab, run.patch, rng, pad_value)
        xs.append(ci)
        ys.append(cl)
    x = torch.from_numpy(np.stack(xs)[:, None]).to(run.device)
    y = torch.from_numpy(np.stack(ys).astype(np.int64)).to(run.device)
    logits = net(x)
    prob = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(y, n_cls).permute(0, 4, 1, 2, 3).float()
    inter = (prob * onehot).sum(dim=(0, 2, 3, 4))
    denom = prob.sum(dim=(0, 2, 3, 4)) + onehot.sum(dim=(0, 2, 3, 4))
    dice = (2 * inter + 1.0) / (denom + 1.0)
    loss = ce(logits, y) + (1.0 - dice[1:]).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())


def _validation_dice(net, val: list, run: _RunSettings) -> dict:
    """Mean Dice per class (name -> Dice, 4 decimals) of ``net`` (eval mode) over the validation cases, one pass each."""
    from .inference import predict_probabilities
    from .model import normalise

    n_cls = len(CLASSES)
    dices = []
    for img, lab in val:
        pr = predict_probabilities(_TrainingModel(net, run.device, run.patch, run.norm), normalise(img, run.norm))
        dices.append(_dice_per_class(np.argmax(pr, axis=0), lab, n_cls))
    return dict(zip(CLASSES[1:], np.mean(dices, axis=0).round(4).tolist()))


def _load_init(net, path) -> dict:
    """Load a TorchScript model's weights into ``net``; returns what the card records about it."""
    import warnings

    from art.provenance import sha256_file

    from .model import load_model

    m = load_model(path, optimise=False)  # validates the card (classes, spacing, ...)
    if list(m.classes) != list(CLASSES):
        raise InputError(f"--init model {path}: classes {m.classes} differ from {list(CLASSES)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        state = {k: v.detach().cpu() for k, v in m.module.state_dict().items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"--init model {path}: weights do not fit the UNet3D {list(CHANNELS)} architecture ({str(exc).splitlines()[0]})") from exc
    prev = m.card.get("training", {})
    return {"weights_sha256": sha256_file(m.path), "command": prev.get("command"), "epochs": prev.get("epochs_completed", prev.get("epochs")), "seed": prev.get("seed"), "initialised_from": prev.get("initialised_from")}


def _card(seeds, val_seeds, cases, epochs, batch_size, lr, seed, device, command, patch, spacing_mm, norm, history, t_start) -> dict:
    import torch

    return {
        "format": CARD_FORMAT,
        "classes": list(CLASSES),
        "spacing_mm": list(spacing_mm),
        "normalisation": dict(norm),
        "patch": list(patch),
        "divisor": 8,
        "architecture": {"name": "UNet3D", "channels": list(CHANNELS), "norm": "instance"},
        "training": {
            "train_seeds": list(seeds),
            "fractions": "1 and 2 at the network voxel size; 3 for every other seed at the planning CT voxel size (3, 2, 2) mm, resampled",
            "n_cases": cases if isinstance(cases, int) else len(cases),
            "val_seeds": list(val_seeds),
            "epochs": epochs,
            "epochs_completed": len(history),
            "batch_size": batch_size,
            "lr": lr,
            "loss": "cross-entropy + soft Dice (classes 1..)",
            "augmentation": "HU offset +-60, scale 0.92-1.08 about air, smooth shading <= 50 HU, noise <= 25 HU; random patches: a third centred near the prostate, a third on the bladder's boundary, a third anywhere",
            "seed": seed,
            "device": device,
            "torch": torch.__version__,
            "command": command,
            "seconds": round(time.time() - t_start, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        "validation_dice": history[-1]["val_dice"] if history else {},
        "validation_note": "Dice on the network grid, held-out seeds, fraction 1, one pass (no test-time augmentation, no post-processing)",
        "history": history,
    }


def export_model(net, out_dir, *, name: str = "contour_unet", card: dict) -> dict:
    """Write a trained :class:`UNet3D` as TorchScript ``<name>.pt`` plus its card ``<name>.json``.

    Parameters
    ----------
    net : UNet3D
        The trained network (moved to the CPU, eval mode).
    out_dir : path
        Output folder.
    name : str, keyword-only
        File stem.
    card : dict
        The model card (classes, spacing_mm, normalisation, patch, ...);
        ``weights_sha256`` and the parameter count are added.

    Returns
    -------
    dict
        The card as written.
    """
    import warnings

    import torch

    from art.provenance import sha256_file

    out_dir = Path(out_dir)
    net = net.cpu().eval()
    with warnings.catch_warnings():  # TorchScript is deprecated in torch >= 2.10 but is the model format here
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(net)
        pt = out_dir / f"{name}.pt"
        tmp = out_dir / f"{name}.pt.tmp"
        scripted.save(str(tmp))
    tmp.replace(pt)
    card = dict(card)
    card.setdefault("architecture", {})["parameters"] = int(sum(p.numel() for p in net.parameters()))
    card["weights_sha256"] = sha256_file(pt)
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card
