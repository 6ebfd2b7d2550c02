"""Dose-volume histogram figure: cumulative DVH curves of one or more plans overlaid."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from art.errors import InputError
from art.report.figures._base import _finish, _new_figure, _rgb
from art.structures import StructureSet

#: Line style per plan label in DVH overlays (other labels cycle through ``_EXTRA_STYLES``).
DEFAULT_STYLES: dict[str, str] = {"scheduled": "--", "adapted": "-", "reference": "-"}
_EXTRA_STYLES = ("-", "--", ":", "-.")
#: Colours of structures without one (matplotlib's default cycle).
_DEFAULT_CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _curve_arrays(curve: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(curve, "dose_gy") and hasattr(curve, "volume_pct"):  # art.evaluate.DVH
        d, v = curve.dose_gy, curve.volume_pct
    elif isinstance(curve, Mapping) and "dose_gy" in curve and "volume_pct" in curve:  # DVH.to_dict()
        d, v = curve["dose_gy"], curve["volume_pct"]
    else:
        try:
            d, v = curve
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where} must be a pair (dose_gy, volume_percent), got {type(curve).__name__}") from exc
    d = np.asarray(d, dtype=np.float64).reshape(-1)
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if d.shape != v.shape or d.size == 0:
        raise InputError(f"{where}: dose and volume must be non-empty and of equal length, got {d.size} and {v.size}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(v))):
        raise InputError(f"{where}: dose and volume must be finite")
    return d, v


def dvh_figure(
    curves: Mapping[str, Mapping[str, Any]],
    *,
    colors: Mapping[str, Sequence[int]] | StructureSet | None = None,
    styles: Mapping[str, str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (9.0, 5.5),
    dpi: int = 100,
    as_figure: bool = False,
) -> Any:
    """Cumulative DVH overlay of one or more plans.

    Parameters
    ----------
    curves : mapping label -> mapping structure -> curve
        For each plan label (e.g. ``"scheduled"``, ``"adapted"``), the curve of
        each structure: a pair ``(dose_gy, volume_percent)`` of 1-D arrays of
        equal length (Gy, percent of the structure's volume), an
        :class:`art.evaluate.DVH` or the dict of ``DVH.to_dict()``.
    colors : mapping structure -> (r, g, b) 0-255, or StructureSet, optional, keyword-only
        One colour per structure (a StructureSet gives its structures'
        colours); structures without one get matplotlib's default cycle.
    styles : mapping label -> matplotlib line style, optional, keyword-only
        Defaults to :data:`DEFAULT_STYLES` (scheduled dashed, adapted and
        reference solid); other labels cycle through solid, dashed, dotted,
        dash-dot.
    title : str, optional, keyword-only
    figsize : (width, height) inches, keyword-only
    dpi : int, keyword-only
    as_figure : bool, keyword-only
        Return the Figure instead of PNG bytes. Each curve is one Line2D whose
        label is ``"<plan label>: <structure>"``.

    Returns
    -------
    bytes or matplotlib.figure.Figure
    """
    if not isinstance(curves, Mapping) or not curves:
        raise InputError("curves must be a non-empty mapping: plan label -> {structure: (dose_gy, volume_percent)}")
    color_map = _color_map(colors)
    style_map = dict(DEFAULT_STYLES)
    style_map.update(styles or {})

    fig = _new_figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    struct_colors, label_styles = _plot_curves(ax, curves, color_map, style_map)
    _label_axes(ax, title)
    _legends(ax, struct_colors, label_styles)
    return _finish(fig, as_figure, dpi)


def _color_map(colors: Mapping[str, Sequence[int]] | StructureSet | None) -> dict[str, Any]:
    """Matplotlib colours of the structures given a colour.

    Parameters
    ----------
    colors : mapping structure -> (r, g, b) 0-255, or StructureSet, or None
        See :func:`dvh_figure`.

    Returns
    -------
    dict structure name -> colour
        RGB in 0-1 (or a colour name as given); empty for ``None``.
    """
    color_map: dict[str, Any] = {}
    if isinstance(colors, StructureSet):
        color_map = {s.name: _rgb(s.color) for s in colors}
    elif colors is not None:
        color_map = {str(k): _rgb(c) for k, c in colors.items()}
    return color_map


def _plot_curves(
    ax: Any, curves: Mapping[str, Mapping[str, Any]], color_map: Mapping[str, Any], style_map: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Plot every curve, plan by plan, in the order given.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    curves : mapping label -> mapping structure -> curve
        See :func:`dvh_figure` (dose in Gy, volume in percent).
    color_map : mapping structure -> colour
        Structures not in it take the next colour of ``_DEFAULT_CYCLE``.
    style_map : mapping label -> line style
        Labels not in it take the next style of ``_EXTRA_STYLES``.

    Returns
    -------
    struct_colors : dict structure -> colour
        The colour of each structure plotted, in order of first appearance.
    label_styles : dict label -> line style
        The line style of each plan label, in order.
    """
    struct_colors: dict[str, Any] = {}
    label_styles: dict[str, str] = {}
    extra = 0
    for label, per_structure in curves.items():
        if not isinstance(per_structure, Mapping):
            raise InputError(f"curves[{label!r}] must be a mapping structure -> (dose_gy, volume_percent)")
        if label in style_map:
            ls = style_map[label]
        else:
            ls = _EXTRA_STYLES[extra % len(_EXTRA_STYLES)]
            extra += 1
        label_styles[str(label)] = ls
        for name, curve in per_structure.items():
            d, v = _curve_arrays(curve, f"curves[{label!r}][{name!r}]")
            if name not in struct_colors:
                struct_colors[name] = color_map.get(name, _DEFAULT_CYCLE[len(struct_colors) % len(_DEFAULT_CYCLE)])
            ax.plot(d, v, linestyle=ls, color=struct_colors[name], lw=1.6, label=f"{label}: {name}")
    return struct_colors, label_styles


def _label_axes(ax: Any, title: str | None) -> None:
    """Axis labels (dose in Gy, volume in percent), limits, grid and title of the DVH axes."""
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume (%)")
    ax.set_ylim(0, 102)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)


def _legends(ax: Any, struct_colors: Mapping[str, Any], label_styles: Mapping[str, str]) -> None:
    """The structure legend (colours, upper right) and, unless one plan is drawn solid, the plan legend (line styles, lower left)."""
    from matplotlib.lines import Line2D

    s_handles = [Line2D([], [], color=c, lw=2) for c in struct_colors.values()]
    leg1 = ax.legend(s_handles, list(struct_colors), loc="upper right", fontsize=8, title="structure", title_fontsize=8)
    ax.add_artist(leg1)
    if len(label_styles) > 1 or any(ls != "-" for ls in label_styles.values()):
        p_handles = [Line2D([], [], color="black", lw=1.6, linestyle=ls) for ls in label_styles.values()]
        ax.legend(p_handles, list(label_styles), loc="lower left", fontsize=8, title="plan", title_fontsize=8)
