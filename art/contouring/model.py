"""Loading contouring models: the shipped weights or a user's TorchScript model with its JSON card.

A model is a TorchScript file (``*.pt``) and a JSON card next to it with the
same stem (``model.pt`` + ``model.json``). The card holds at least::

    {
      "classes": ["background", "BODY", "Bladder", ...],   # output channels, background first
      "spacing_mm": [4.0, 4.0, 4.0],                        # network voxel size (dz, dy, dx)
      "normalisation": {"type": "body_mean", "scale_hu": 200.0, "clip": [-6.0, 6.0],
                        "body_threshold_hu": -500.0, "window_hu": [-200.0, 200.0]}
    }

and optionally ``"patch"`` (sliding-window size in voxels, z, y, x; default
the whole volume) and ``"divisor"`` (the network needs sizes divisible by it,
default 8). The TorchScript module maps (N, 1, Z, Y, X) float32 to
(N, len(classes), Z, Y, X) logits.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import InputError

__all__ = ["ContourModel", "load_model", "shipped_model_path", "read_card", "normalise", "NORMALISATIONS"]

NORMALISATIONS = ("body_mean", "fixed")
_SHIPPED = "contour_unet.pt"


def shipped_model_path() -> Path:
    """Path of the shipped TorchScript weights (``art/contouring/data/contour_unet.pt``)."""
    return Path(str(resources.files("art.contouring").joinpath("data", _SHIPPED)))


def card_path(model_path: str | Path) -> Path:
    """The JSON card of a model file: same folder and stem, suffix ``.json``."""
    return Path(model_path).with_suffix(".json")


@dataclass
class ContourModel:
    """A loaded segmentation model.

    Attributes
    ----------
    module : torch.jit.ScriptModule
        Maps (N, 1, Z, Y, X) float32 to (N, C, Z, Y, X) logits; in eval mode.
    card : dict
        The validated model card.
    path : Path
        The TorchScript file it was loaded from.
    """

    module: Any
    card: dict
    path: Path
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.card["spacing_mm"])  # type: ignore[return-value]


def _bad(path: Path, why: str) -> InputError:
    return InputError(f"contour model card: {why}", path=path)


def read_card(path: str | Path) -> dict:
    """Read and validate a model card.

    Parameters
    ----------
    path : str or Path
        The JSON card.

    Returns
    -------
    dict
        The card with defaults filled in (``patch`` None, ``divisor`` 8).

    Raises
    ------
    InputError
        Missing or unreadable file, invalid JSON, or a missing/invalid field;
        the message names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("contour model card not found (a model needs a JSON card next to it, same name, .json)", path=path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"not valid JSON ({exc})") from exc
    if not isinstance(card, dict):
        raise _bad(path, "must be a JSON object")
    classes = card.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c.strip() for c in classes):
        raise _bad(path, "'classes' must be a list of at least two non-empty names, background first")
    if len({c.lower() for c in classes}) != len(classes):
        raise _bad(path, "'classes' has duplicate names")
    sp = card.get("spacing_mm")
    if isinstance(sp, (int, float)) and not isinstance(sp, bool):
        sp = [sp, sp, sp]
    if not isinstance(sp, list) or len(sp) != 3 or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and 0.2 <= s <= 20 for s in sp):
        raise _bad(path, "'spacing_mm' must be three numbers (dz, dy, dx) between 0.2 and 20 mm")
    card["spacing_mm"] = [float(s) for s in sp]
    norm = card.get("normalisation")
    if not isinstance(norm, dict) or norm.get("type") not in NORMALISATIONS:
        raise _bad(path, f"'normalisation' must be an object with 'type' one of {list(NORMALISATIONS)}")
    norm = {"scale_hu": 200.0, "clip": [-6.0, 6.0], "body_threshold_hu": -500.0, "window_hu": [-200.0, 200.0], "offset_hu": 0.0, **norm}
    try:
        scale = float(norm["scale_hu"])
        lo, hi = (float(v) for v in norm["clip"])
        float(norm["body_threshold_hu"])
        float(norm["offset_hu"])
        wl, wh = (float(v) for v in norm["window_hu"])
    except (TypeError, ValueError) as exc:
        raise _bad(path, "'normalisation' fields scale_hu, clip [lo, hi], body_threshold_hu, window_hu [lo, hi], offset_hu must be numbers") from exc
    if not (scale > 0 and lo < hi and wl < wh):
        raise _bad(path, "'normalisation' needs scale_hu > 0, clip lo < hi and window_hu lo < hi")
    card["normalisation"] = norm
    patch = card.get("patch")
    if patch is not None:
        if not isinstance(patch, list) or len(patch) != 3 or not all(isinstance(p, int) and p > 0 for p in patch):
            raise _bad(path, "'patch' must be three positive integers (z, y, x) or absent")
    card["patch"] = patch
    div = card.get("divisor", 8)
    if not isinstance(div, int) or div < 1:
        raise _bad(path, "'divisor' must be a positive integer")
    card["divisor"] = div
    if patch is not None and any(p % div for p in patch):
        raise _bad(path, "'patch' sizes must be divisible by 'divisor'")
    return card


def normalise(image_hu: np.ndarray, norm: dict) -> np.ndarray:
    """Normalise a CBCT (HU) for the network, robust to a global HU offset.

    ``body_mean``: ``m`` is the mean, inside the body (voxels above
    ``body_threshold_hu``), of the HU clipped to ``window_hu``; the output is
    ``clip((HU - m) / scale_hu, *clip)``. ``fixed``: ``m = offset_hu``.

    Parameters
    ----------
    image_hu : ndarray, float, (z, y, x)
    norm : dict
        The card's ``normalisation``.

    Returns
    -------
    ndarray, float32, same shape
    """
    img = np.asarray(image_hu, dtype=np.float32)
    if norm["type"] == "body_mean":
        body = img > float(norm["body_threshold_hu"])
        wl, wh = (float(v) for v in norm["window_hu"])
        m = float(np.clip(img[body], wl, wh).mean()) if body.any() else 0.0
    else:
        m = float(norm.get("offset_hu", 0.0))
    lo, hi = (float(v) for v in norm["clip"])
    return np.clip((img - m) / float(norm["scale_hu"]), lo, hi).astype(np.float32)


def load_model(path: str | Path | None = None, *, device: str | None = None, optimise: bool = True) -> ContourModel:
    """Load a contouring model.

    Parameters
    ----------
    path : str, Path or None
        TorchScript file (``*.pt``) with its card ``<stem>.json`` next to it;
        None loads the shipped model.
    device : str or None, keyword-only
        ``"cpu"``, ``"cuda"``; None uses CUDA when available.
    optimise : bool, keyword-only
        On the CPU, freeze the module and optimise it for inference (:func:`_for_inference`; its
        ``state_dict`` is then empty). False keeps the module as loaded (fine-tuning reads its weights).

    Returns
    -------
    ContourModel

    Raises
    ------
    InputError
        Missing file, bad card, or a weights file that TorchScript cannot load
        (corrupted, not TorchScript); the message names the file.
    """
    import torch

    p = shipped_model_path() if path is None else Path(path)
    if not p.is_file():
        raise InputError("contour model file not found", path=p)
    card = read_card(card_path(p))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; it is still the plug-in format
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location=device)
    except Exception as exc:  # torch raises RuntimeError / ValueError / zipfile errors
        raise InputError(f"contour model cannot be loaded as TorchScript (corrupted or not a TorchScript file): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", path=p) from exc
    module.eval()
    # one tiny forward pass checks the output channels against the card
    div = 2 * card["divisor"]
    try:
        with torch.no_grad():
            out = module(torch.zeros((1, 1, div, div, div), dtype=torch.float32, device=device))
    except Exception as exc:
        raise InputError(f"contour model fails on a (1, 1, {div}, {div}, {div}) input: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", path=p) from exc
    if not hasattr(out, "shape") or out.dim() != 5 or out.shape[1] != len(card["classes"]):
        shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise InputError(f"contour model outputs {shape}; its card lists {len(card['classes'])} classes", path=p)
    return ContourModel(module=_for_inference(module, device) if optimise else module, card=card, path=p, device=device)


def _for_inference(module, device: str):
    """The checked module frozen and optimised for inference on the CPU (``torch.jit.freeze`` +
    ``torch.jit.optimize_for_inference``: weights folded in, convolutions on oneDNN's pre-packed
    kernels): the same network, ~1.8× faster on the demo CBCT; probabilities differ from the plain
    module's by ~1e-5 (summation order). The optimised module must give the loaded one's logits
    (within 1e-3) on a small random input, else — and for a module that cannot be frozen — the
    module is used as loaded."""
    import torch

    if device != "cpu":
        return module
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast = torch.jit.optimize_for_inference(torch.jit.freeze(module))
            x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 16, 16, 16)).astype(np.float32))
            with torch.no_grad():
                same = bool(torch.allclose(fast(x), module(x), rtol=0.0, atol=1e-3))
        return fast if same else module
    except Exception:  # noqa: BLE001 - an optimisation only: the loaded module is already checked and works
        return module
