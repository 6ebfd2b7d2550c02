"""Registration QA figure: checkerboard and colour overlay of two images on three planes."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from art.errors import InputError
from art.geometry import Volume
from art.report.figures._base import _check_volume, _check_window, _finish, _new_figure, _structures_arg
from art.report.figures._planes import (
    _DEFAULT_WINDOW,
    _decorate,
    _default_point,
    _draw_contours,
    _grey,
    _planes,
    _sample,
    _structure_legend,
)
from art.structures import StructureSet


def checkerboard_figure(
    fixed: Volume,
    moving_resampled: Volume,
    point_lps: Sequence[float] | None = None,
    *,
    square_mm: float = 20.0,
    window: tuple[float, float] = _DEFAULT_WINDOW,
    window_moving: tuple[float, float] | None = None,
    structures: StructureSet | None = None,
    labels: tuple[str, str] = ("fixed", "moving"),
    title: str | None = None,
    figsize: tuple[float, float] = (15.0, 10.0),
    dpi: int = 100,
    as_figure: bool = False,
) -> Any:
    """Registration QA: checkerboard (top row) and colour overlay (bottom row) of two images.

    Parameters
    ----------
    fixed : Volume
        The reference image of the registration (e.g. the daily CBCT), HU.
    moving_resampled : Volume
        The moving image after registration (e.g. the deformed planning CT),
        normally on the grid of ``fixed``; any grid is resampled.
    point_lps : (x, y, z) mm, optional
        Plane position (default: the centre of ``fixed``).
    square_mm : float, keyword-only
        Side of the checkerboard squares, mm.
    window : (low, high), keyword-only
        Grey window of ``fixed``; ``window_moving`` (default: the same) of the
        moving image.
    structures : StructureSet, optional, keyword-only
        Outlines drawn on the checkerboard.
    labels : (str, str), keyword-only
        Names of the two images. In the overlay ``fixed`` is magenta and the
        moving image green: aligned edges are grey, misaligned ones coloured.
    title, figsize, dpi, as_figure : keyword-only
        See :func:`dvh_figure`.

    Returns
    -------
    bytes or matplotlib.figure.Figure
    """
    fixed = _check_volume(fixed, "fixed")
    moving_resampled = _check_volume(moving_resampled, "moving_resampled")
    structures = _structures_arg(structures)
    win_f = _check_window(window)
    win_m = _check_window(window_moving if window_moving is not None else window)
    if not (math.isfinite(square_mm) and square_mm > 0):
        raise InputError(f"square_mm must be a positive number, got {square_mm!r}")
    if point_lps is None:
        point_lps = _default_point(fixed.grid)
    planes, p = _planes(fixed.grid, point_lps)
    fig = _new_figure(figsize)
    axes = [fig.add_subplot(2, 3, i + 1) for i in range(6)]
    drawn: list[tuple[str, Any]] = []
    for col, pl in enumerate(planes):
        a = _grey(_sample(fixed, pl, fill_value=win_f[0]), win_f)
        b = _grey(_sample(moving_resampled, pl, fill_value=win_m[0]), win_m)
        cx, ry = pl.coords()
        board = ((np.floor((ry[:, None] - ry[0]) / square_mm) + np.floor((cx[None, :] - cx[0]) / square_mm)) % 2).astype(bool)
        checker = np.where(board, b, a)
        ext = pl.extent()
        ax = axes[col]
        ax.imshow(checker, cmap="gray", vmin=0, vmax=1, extent=ext, origin=pl.origin, interpolation="nearest")
        drawn += _draw_contours(ax, pl, structures, names=None)
        _decorate(ax, pl)
        ax.set_title(f"{pl.name}: checkerboard", fontsize=10)
        rgb = np.stack([a, b, a], axis=-1)  # fixed magenta, moving green
        ax2 = axes[3 + col]
        ax2.imshow(rgb, extent=ext, origin=pl.origin, interpolation="nearest")
        _decorate(ax2, pl)
        ax2.set_title(f"{pl.name}: {labels[0]} magenta, {labels[1]} green", fontsize=10)
    _structure_legend(fig, drawn)
    fig.suptitle(title or f"registration: {labels[0]} vs {labels[1]}")
    return _finish(fig, as_figure, dpi)
