"""Trend figure: values per fraction (or per any ordered step) with horizontal reference lines.

Used by the course report (:mod:`art.course.report`) for the longitudinal view: a goal's
value per fraction against the goal, organ volumes per fraction, target centroid shifts.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from art.errors import InputError
from art.report.figures._base import _finish, _new_figure

#: (line style, colour) of the reference lines, in the order given (cycled).
_LINE_STYLES = (("--", "#a4161a"), (":", "#444444"), ("-.", "#0b5cad"), ((0, (5, 2, 1, 2)), "#c77c02"))
_SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def _plain(text: Any) -> str:
    """Text as matplotlib shows it literally (a ``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def _values(values: Any, n: int, where: str) -> np.ndarray:
    """A 1-D float array of length ``n``; None becomes NaN (a gap in the line)."""
    try:
        arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where} must be a sequence of numbers (None for a missing value), got {values!r}") from exc
    if arr.shape != (n,):
        raise InputError(f"{where} has {arr.size} values but x has {n}")
    if np.any(np.isinf(arr)):
        raise InputError(f"{where} must be finite (None or NaN for a missing value)")
    return arr


def _check_args(x: Any, series: Any, lines: Any, flagged: Any) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float], dict[str, np.ndarray]]:
    """Validated copies of the arguments of :func:`trend_figure`."""
    try:
        xs = np.asarray([float(v) for v in x], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"x must be a sequence of numbers (e.g. fraction numbers), got {x!r}") from exc
    if xs.size == 0 or not np.all(np.isfinite(xs)):
        raise InputError("x must be a non-empty sequence of finite numbers")
    if not isinstance(series, Mapping) or not series:
        raise InputError("series must be a non-empty mapping label -> values (one per x)")
    ys = {str(k): _values(v, xs.size, f"series[{k!r}]") for k, v in series.items()}
    refs: dict[str, float] = {}
    for k, v in (lines or {}).items():
        if not (isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))):
            raise InputError(f"lines[{k!r}] must be a finite number, got {v!r}")
        refs[str(k)] = float(v)
    flags: dict[str, np.ndarray] = {}
    for k, v in (flagged or {}).items():
        if str(k) not in ys:
            raise InputError(f"flagged[{k!r}] names no series; series: {', '.join(ys)}")
        f = np.asarray([bool(b) for b in v], dtype=bool)
        if f.shape != (xs.size,):
            raise InputError(f"flagged[{k!r}] has {f.size} values but x has {xs.size}")
        flags[str(k)] = f
    return xs, ys, refs, flags


def trend_figure(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    ylabel: str,
    xlabel: str = "fraction",
    lines: Mapping[str, float] | None = None,
    flagged: Mapping[str, Sequence[bool]] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 3.4),
    dpi: int = 100,
    as_figure: bool = False,
) -> Any:
    """Line plot of one or more series over ordered steps (e.g. fractions), with reference lines.

    Parameters
    ----------
    x : sequence of float
        The steps (e.g. fraction numbers 1, 2, 3); whole numbers are used as ticks.
    series : mapping label -> sequence of float or None
        One value per ``x`` in the series' unit (``ylabel``); None or NaN leaves a
        gap. Drawn as lines with markers, in the order given.
    ylabel : str, keyword-only
        The y axis label with its unit, e.g. ``"volume (cc)"``.
    xlabel : str, keyword-only
    lines : mapping label -> float, optional, keyword-only
        Horizontal reference lines (e.g. ``{"goal ≥ 57 Gy": 57.0}``), in the
        unit of ``ylabel``; the first is dashed dark red, the next dotted grey,
        dash-dot blue, then orange.
    flagged : mapping series label -> sequence of bool, optional, keyword-only
        Points to highlight (a red ring), e.g. fractions whose value misses the goal.
    title : str, optional, keyword-only
    figsize, dpi, as_figure : keyword-only
        See :func:`art.report.figures.dvh_figure`. With ``as_figure`` each series
        is one Line2D labelled as given, then one Line2D per reference line.

    Returns
    -------
    bytes or matplotlib.figure.Figure
        PNG bytes (``figsize × dpi`` pixels) unless ``as_figure``.
    """
    xs, ys, refs, flags = _check_args(x, series, lines, flagged)
    fig = _new_figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, y) in enumerate(ys.items()):
        color = _SERIES_COLORS[i % len(_SERIES_COLORS)]
        ax.plot(xs, y, marker="o", ms=5, lw=1.5, color=color, label=_plain(label))
        f = flags.get(label)
        if f is not None and f.any():
            ax.plot(xs[f], y[f], linestyle="none", marker="o", ms=11, mfc="none", mec="#d00000", mew=1.8)
    for i, (label, v) in enumerate(refs.items()):
        ls, color = _LINE_STYLES[i % len(_LINE_STYLES)]
        ax.axhline(v, linestyle=ls, color=color, lw=1.4, label=_plain(label))
    if np.allclose(xs, np.round(xs)) and xs.size <= 40:
        ax.set_xticks(np.unique(np.round(xs)))
    lo, hi = float(xs.min()), float(xs.max())
    pad = 0.5 if hi == lo else 0.05 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(_plain(ylabel))
    ax.grid(True, alpha=0.3)
    if len(ys) > 1 or refs:
        ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(_plain(title), fontsize=11)
    return _finish(fig, as_figure, dpi)
