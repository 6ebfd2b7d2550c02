"""Dose figures on three planes: the dose colour-wash and the difference of two doses."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from art.errors import InputError
from art.geometry import Volume, resample
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


def dose_wash_figure(
    image: Volume,
    dose: Volume,
    structures: StructureSet | None,
    point_lps: Sequence[float],
    *,
    dose_max: float | None = None,
    threshold_fraction: float = 0.1,
    window: tuple[float, float] = _DEFAULT_WINDOW,
    alpha: float = 0.5,
    structure_names: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (15.0, 5.6),
    dpi: int = 100,
    as_figure: bool = False,
) -> Any:
    """Dose colour-wash with structure outlines on axial, coronal and sagittal planes.

    Parameters
    ----------
    image : Volume
        CT (HU), shown in grey through ``window``.
    dose : Volume
        Dose in Gy, on any grid; resampled linearly onto the image planes
        (zero outside the dose grid).
    structures : StructureSet or None
        Outlines in the structures' colours (``None``: no outlines).
    point_lps : (x, y, z) mm
        The planes pass through this point (snapped to the nearest image voxel
        centre), e.g. the isocentre; must lie in the image.
    dose_max : float, optional, keyword-only
        Top of the colour scale, Gy (default: the dose maximum).
    threshold_fraction : float, keyword-only
        Doses below this fraction of ``dose_max`` are not coloured.
    window : (low, high), keyword-only
        Grey-scale window of the image, HU.
    alpha : float, keyword-only
        Opacity of the colour wash.
    structure_names : sequence of str, optional, keyword-only
        Only outline these structures.
    title : str, optional, keyword-only
    figsize, dpi, as_figure : keyword-only
        See :func:`dvh_figure`. With ``as_figure``, each panel's first image
        is the grey image and the second the dose wash (a masked array in Gy).

    Returns
    -------
    bytes or matplotlib.figure.Figure
    """
    image = _check_volume(image, "image")
    dose = _check_volume(dose, "dose")
    structures = _structures_arg(structures)
    win = _check_window(window)
    dmax = _wash_top(dose, dose_max, threshold_fraction)
    planes, p = _planes(image.grid, point_lps)
    scene = _Scene(image, win, structures, structure_names, p)

    fig = _new_figure(figsize)
    axes = _three_axes(fig)
    drawn: list[tuple[str, Any]] = []
    mappable = None
    for ax, pl in zip(axes, planes):
        ext = _background(ax, scene, pl)
        wash = np.ma.masked_less(_sample(dose, pl), threshold_fraction * dmax)
        mappable = ax.imshow(wash, cmap="jet", vmin=0, vmax=dmax, alpha=alpha, extent=ext, origin=pl.origin, interpolation="nearest")
        drawn += _foreground(ax, scene, pl)
    _colorbar(fig, mappable, axes, "dose (Gy)")
    _structure_legend(fig, drawn)
    if title:
        fig.suptitle(title)
    return _finish(fig, as_figure, dpi)


def _wash_top(dose: Volume, dose_max: float | None, threshold_fraction: float) -> float:
    """Top of the dose colour scale, after checking the wash's parameters.

    Parameters
    ----------
    dose : Volume
        Dose, Gy.
    dose_max : float or None
        Requested top of the scale, Gy (None: the dose maximum).
    threshold_fraction : float
        Must lie in [0, 1).

    Returns
    -------
    float
        The top of the scale, Gy, at least 1e-6.
    """
    if not 0 <= threshold_fraction < 1:
        raise InputError(f"threshold_fraction must lie in [0, 1), got {threshold_fraction!r}")
    dmax = float(np.nanmax(dose.array)) if dose_max is None else float(dose_max)
    if not math.isfinite(dmax) or dmax < 0:
        raise InputError(f"dose_max must be a non-negative number, got {dose_max!r}")
    dmax = max(dmax, 1e-6)
    return dmax


def difference_figure(
    image: Volume,
    dose_a: Volume,
    dose_b: Volume,
    structures: StructureSet | None = None,
    point_lps: Sequence[float] | None = None,
    *,
    limit_gy: float | None = None,
    labels: tuple[str, str] = ("A", "B"),
    window: tuple[float, float] = _DEFAULT_WINDOW,
    structure_names: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (15.0, 5.6),
    dpi: int = 100,
    as_figure: bool = False,
) -> Any:
    """Dose difference ``dose_b - dose_a`` on three planes, diverging colour map.

    Parameters
    ----------
    image : Volume
        Background image (HU).
    dose_a, dose_b : Volume
        Doses in Gy, each on any grid (resampled onto the image planes).
    structures : StructureSet, optional
        Outlines.
    point_lps : (x, y, z) mm, optional
        Plane position (default: where ``|dose_b - dose_a|`` is largest on the
        grid of ``dose_b``).
    limit_gy : float, optional, keyword-only
        Colour scale ``[-limit_gy, +limit_gy]`` (default: the largest absolute
        difference on the planes). Red: ``dose_b`` higher; blue: lower.
    labels : (str, str), keyword-only
        Names of ``dose_a`` and ``dose_b`` for the title and colour bar.
    window, structure_names, title, figsize, dpi, as_figure : keyword-only
        See :func:`dose_wash_figure`.

    Returns
    -------
    bytes or matplotlib.figure.Figure
    """
    image = _check_volume(image, "image")
    dose_a = _check_volume(dose_a, "dose_a")
    dose_b = _check_volume(dose_b, "dose_b")
    structures = _structures_arg(structures)
    win = _check_window(window)
    if point_lps is None:
        a_on_b = resample(dose_a, dose_b.grid, order=1, dtype=np.float32).array
        diff = Volume(np.abs(np.asarray(dose_b.array, dtype=np.float32) - a_on_b), dose_b.grid)
        point_lps = _worst_point(diff, image.grid)
    planes, p = _planes(image.grid, point_lps)
    diffs = [_sample(dose_b, pl) - _sample(dose_a, pl) for pl in planes]
    largest = max(float(np.max(np.abs(d))) for d in diffs)
    lim = _difference_limit(limit_gy, largest)
    scene = _Scene(image, win, structures, structure_names, p)
    fig = _new_figure(figsize)
    axes = _three_axes(fig)
    drawn: list[tuple[str, Any]] = []
    mappable = None
    for ax, pl, d2 in zip(axes, planes, diffs):
        ext = _background(ax, scene, pl)
        wash = np.ma.masked_where(np.abs(d2) < 0.02 * lim, d2)
        mappable = ax.imshow(wash, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.75, extent=ext, origin=pl.origin, interpolation="nearest")
        drawn += _foreground(ax, scene, pl)
    _colorbar(fig, mappable, axes, f"{labels[1]} − {labels[0]} (Gy)")
    _structure_legend(fig, drawn)
    fig.suptitle(title or f"dose difference: {labels[1]} − {labels[0]} (largest |difference| on these planes {largest:.3g} Gy)")
    return _finish(fig, as_figure, dpi)


def _difference_limit(limit_gy: float | None, largest: float) -> float:
    """Half-width of the difference colour scale.

    Parameters
    ----------
    limit_gy : float or None
        Requested limit, Gy; must be positive (None: ``largest``).
    largest : float
        Largest absolute difference on the planes, Gy.

    Returns
    -------
    float
        The limit, Gy, at least 1e-3.
    """
    if limit_gy is None:
        lim = largest
    else:
        lim = float(limit_gy)
        if not (math.isfinite(lim) and lim > 0):
            raise InputError(f"limit_gy must be a positive number, got {limit_gy!r}")
    lim = max(lim, 1e-3)
    return lim
