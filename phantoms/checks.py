"""Argument checks of the phantom generators and JSON-friendly parameter values.

Every check raises :class:`art.errors.InputError` with the argument's name.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from art.errors import InputError


def _jsonify(obj: Any) -> Any:
    """A copy of ``obj`` with numpy arrays, scalars and tuples turned into plain lists, floats, ints and bools."""
    if isinstance(obj, dict):
        return {str(k): _jsonify(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonify(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonify(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def _check_seed(seed: Any, name: str) -> int:
    """``seed`` as an int; it must be a non-negative integer (bool refused)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise InputError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def _triple(value: Any, name: str, *, positive: bool = False) -> tuple[float, float, float]:
    """``value`` as three finite floats (all > 0 when ``positive``)."""
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be three numbers, got {value!r}") from exc
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise InputError(f"{name} must be three finite numbers, got {value!r}")
    if positive and not all(v > 0 for v in out):
        raise InputError(f"{name} must be positive, got {value!r}")
    return out  # type: ignore[return-value]


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    """``value`` as a finite float in ``[lo, hi]``."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{name} must be between {lo} and {hi}, got {value!r}")
    return v
