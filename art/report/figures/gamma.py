"""Gamma figure: the gamma index on three planes and its histogram with the pass rate."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from art.errors import InputError
from art.geometry import Volume
from art.report.figures._base import _check_volume, _check_window, _finish, _new_figure, _structures_arg
from art.report.figures._planes import (
    _DEFAULT_WINDOW,
    _background,
    _colorbar,
    _foreground,
    _planes,
    _sample,
    _Scene,
    _structure_legend,
    _three_axes,
    _worst_point,
)
from art.structures import StructureSet


def gamma_figure(
    image: Volume,
    gamma: Volume,
    structures: StructureSet | None = None,
    point_lps: Sequence[float] | None = None,
    *,
    gamma_max: float = 2.0,
    criteria: str | None = None,
    window: tuple[float, float] = _DEFAULT_WINDOW,
    structure_names: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (18.0, 5.6),
    dpi: int = 100,
    as_figure: bool = False,
) -> Any:
    """Gamma index map on three planes and its histogram with the pass rate.

    Parameters
    ----------
    image : Volume
        Background image (HU).
    gamma : Volume
        Gamma index per voxel (dimensionless) on any grid; NaN where not
        evaluated (e.g. below the dose threshold). Sampled by nearest
        neighbour so the values shown are computed ones.
    structures : StructureSet, optional
    point_lps : (x, y, z) mm, optional
        Plane position (default: the voxel with the largest gamma).
    gamma_max : float, keyword-only
        Top of the colour scale; gamma = 1 (pass limit) is the middle of the
        default scale.
    criteria : str, optional, keyword-only
        Shown in the title, e.g. ``"3 %/2 mm, 10 % threshold"``.
    window, structure_names, title, figsize, dpi, as_figure : keyword-only
        See :func:`dose_wash_figure`.

    Returns
    -------
    bytes or matplotlib.figure.Figure
        The pass rate (percent of evaluated voxels with gamma <= 1) is written
        on the histogram panel.
    """
    image = _check_volume(image, "image")
    gamma = _check_volume(gamma, "gamma")
    structures = _structures_arg(structures)
    win = _check_window(window)
    if not (math.isfinite(gamma_max) and gamma_max > 1):
        raise InputError(f"gamma_max must be a number above 1, got {gamma_max!r}")
    g = np.asarray(gamma.array, dtype=np.float64)
    finite = g[np.isfinite(g)]
    if point_lps is None:
        point_lps = _worst_point(gamma, image.grid)
    planes, p = _planes(image.grid, point_lps)
    scene = _Scene(image, win, structures, structure_names, p)
    fig = _new_figure(figsize)
    axes = _three_axes(fig, extra=1)
    drawn: list[tuple[str, Any]] = []
    mappable = None
    gvol = Volume(g.astype(np.float32), gamma.grid)
    for ax, pl in zip(axes[:3], planes):
        ext = _background(ax, scene, pl)
        g2 = _sample(gvol, pl, order=0, fill_value=np.nan)
        mappable = ax.imshow(np.ma.masked_invalid(g2), cmap="RdYlGn_r", vmin=0, vmax=gamma_max, alpha=0.8, extent=ext, origin=pl.origin, interpolation="nearest")
        drawn += _foreground(ax, scene, pl)
    cb = _colorbar(fig, mappable, axes[:3], "gamma")
    cb.ax.axhline(1.0, color="black", lw=1)
    _histogram(axes[3], finite, gamma_max)
    _structure_legend(fig, drawn)
    fig.suptitle(title or ("gamma" + (f" ({criteria})" if criteria else "")))
    return _finish(fig, as_figure, dpi)


def _histogram(hax: Any, finite: np.ndarray, gamma_max: float) -> None:
    """The histogram panel: evaluated gamma values, the gamma = 1 line and the pass rate.

    Parameters
    ----------
    hax : matplotlib.axes.Axes
        The fourth panel.
    finite : (n,) ndarray
        The evaluated (finite) gamma values, dimensionless; may be empty.
    gamma_max : float
        Top of the histogram range; larger values count in the last bin.
    """
    if finite.size:
        rate = 100.0 * float(np.mean(finite <= 1.0))
        hax.hist(np.clip(finite, 0, gamma_max), bins=40, range=(0, gamma_max), color="#4a7ab5")
        hax.axvline(1.0, color="red", lw=1)
        hax.set_title(f"pass rate {rate:.1f} % (γ ≤ 1), n = {finite.size}", fontsize=10)
    else:
        hax.set_title("no evaluated voxels", fontsize=10)
    hax.set_xlabel("gamma", fontsize=8)
    hax.set_ylabel("voxels", fontsize=8)
    hax.tick_params(labelsize=7)
