"""Figures of the QA report: plain functions returning PNG bytes.

Every function draws with matplotlib's object API on the Agg canvas (no
``pyplot``, no global backend state; matplotlib is imported inside the
functions so ``import art.report`` stays light). Each returns the PNG bytes of
the figure, or the :class:`matplotlib.figure.Figure` itself with
``as_figure=True`` (for tests and for callers who want another format).

The PNG has exactly ``figsize × dpi`` pixels (no tight bounding box) and no
software metadata.

Planes
------
The image views (dose wash, difference, gamma, checkerboard) show three planes
through a point: axial (viewed from the feet: patient right on the left,
anterior at the top), coronal (viewed from the front: patient right on the
left, superior at the top) and sagittal (viewed from the patient's left:
anterior on the left, superior at the top). Each plane is sampled on an
axis-aligned LPS grid through the point (snapped to the nearest image voxel
centre), so oblique and feet-first images display in the same orientation.
Axes are in LPS mm with equal aspect, so anisotropic voxels show at their true
size. Every volume (dose, gamma, structures) is resampled onto the image's
planes with :func:`art.geometry.resample`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from art.errors import InputError
from art.geometry import Grid, Volume, resample
from art.structures import StructureSet

__all__ = [
    "dvh_figure",
    "dose_wash_figure",
    "difference_figure",
    "gamma_figure",
    "checkerboard_figure",
    "mu_bar_figure",
    "figure_to_png",
    "DEFAULT_STYLES",
]

#: Line style per plan label in DVH overlays (other labels cycle through ``_EXTRA_STYLES``).
DEFAULT_STYLES: dict[str, str] = {"scheduled": "--", "adapted": "-", "reference": "-"}
_EXTRA_STYLES = ("-", "--", ":", "-.")
_DEFAULT_WINDOW = (-400.0, 400.0)


# --------------------------------------------------------------------------- helpers
def _new_figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def figure_to_png(fig: Any, *, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib Figure (``figsize × dpi`` pixels, no metadata).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    dpi : int, keyword-only
        Pixels per inch.

    Returns
    -------
    bytes
        The PNG file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _finish(fig: Any, as_figure: bool, dpi: int) -> Any:
    if as_figure:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
        return fig
    return figure_to_png(fig, dpi=dpi)


def _check_volume(v: Any, name: str) -> Volume:
    if not isinstance(v, Volume):
        raise InputError(f"{name} must be a Volume (array and grid), got {type(v).__name__}")
    return v


def _rgb(color: Sequence[int] | str) -> Any:
    if isinstance(color, str):
        return color
    c = tuple(color)
    if len(c) != 3:
        raise InputError(f"a colour must be three integers 0-255, got {color!r}")
    return tuple(min(max(float(v), 0.0), 255.0) / 255.0 for v in c)


@dataclass(frozen=True)
class _Plane:
    """One display plane: an axis-aligned LPS grid with a single voxel across."""

    name: str
    grid: Grid
    # (rows axis, columns axis) as LPS component indices (0 x, 1 y, 2 z)
    rows: int
    cols: int
    labels: tuple[str, str, str, str]  # left, right, top, bottom

    def take(self, arr3: np.ndarray) -> np.ndarray:
        """The 2-D (rows, cols) array of a (z, y, x) array sampled on this plane's grid."""
        if self.name == "axial":
            return arr3[0]
        if self.name == "coronal":
            return arr3[:, 0, :]
        return arr3[:, :, 0]

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS positions (mm) of the column and row pixel centres."""
        z, y, x = self.grid.axis_positions()
        axes = {0: x, 1: y, 2: z}
        return axes[self.cols], axes[self.rows]

    def extent(self) -> tuple[float, float, float, float]:
        """``imshow`` extent (left, right, bottom, top) in mm; with ``origin='upper'``
        for axial (anterior at the top) and ``'lower'`` otherwise (superior at the top)."""
        cx, ry = self.coords()
        sp = {0: self.grid.spacing[2], 1: self.grid.spacing[1], 2: self.grid.spacing[0]}
        hc, hr = sp[self.cols] / 2, sp[self.rows] / 2
        left, right = cx[0] - hc, cx[-1] + hc
        if self.name == "axial":  # first row (smallest y = anterior) at the top
            return (left, right, ry[-1] + hr, ry[0] - hr)
        return (left, right, ry[0] - hr, ry[-1] + hr)

    @property
    def origin(self) -> str:
        return "upper" if self.name == "axial" else "lower"


def _planes(image_grid: Grid, point_lps: Any, *, name: str = "point_lps") -> tuple[list[_Plane], np.ndarray]:
    """The axial, coronal and sagittal planes through ``point_lps`` covering ``image_grid``."""
    try:
        p = np.asarray(point_lps, dtype=np.float64).reshape(3)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be three numbers (x, y, z) in mm, got {point_lps!r}") from exc
    if not np.all(np.isfinite(p)):
        raise InputError(f"{name} must be finite, got {tuple(p)}")
    if not bool(image_grid.contains(p)):
        raise InputError(f"{name} {tuple(round(float(v), 1) for v in p)} mm lies outside the image")
    idx = np.clip(np.round(image_grid.lps_to_index(p)), 0, np.asarray(image_grid.shape) - 1)
    p = image_grid.index_to_lps(idx)  # snapped to a voxel centre
    corners = image_grid.corners_lps()
    lo, hi = corners.min(axis=0), corners.max(axis=0)  # x, y, z
    # spacing along each LPS axis: that of the grid axis closest to it
    dm = np.abs(image_grid.direction_matrix)  # rows LPS, columns i, j, k
    sp_ijk = np.asarray(image_grid.spacing_xyz)
    sp_lps = np.array([sp_ijk[int(np.argmax(dm[r]))] for r in range(3)])  # dx, dy, dz
    n = np.maximum(np.round((hi - lo) / sp_lps).astype(int) + 1, 1)  # nx, ny, nz

    def grid(axis_fixed: int) -> Grid:
        shape_xyz = n.copy()
        origin = lo.copy()
        shape_xyz[axis_fixed] = 1
        origin[axis_fixed] = p[axis_fixed]
        return Grid(shape=(int(shape_xyz[2]), int(shape_xyz[1]), int(shape_xyz[0])), spacing=tuple(sp_lps[::-1]), origin=tuple(origin))

    planes = [
        _Plane("axial", grid(2), rows=1, cols=0, labels=("R", "L", "A", "P")),
        _Plane("coronal", grid(1), rows=2, cols=0, labels=("R", "L", "S", "I")),
        _Plane("sagittal", grid(0), rows=2, cols=1, labels=("A", "P", "S", "I")),
    ]
    return planes, p


def _crop_to(volume: Volume, target: Grid) -> Volume | None:
    """The part of ``volume`` that interpolation onto ``target`` can reach (None: no overlap).

    Keeps plane sampling cheap for large volumes (no whole-volume copies).
    """
    corners = volume.grid.lps_to_index(target.corners_lps())
    lo = np.floor(corners.min(axis=0)).astype(int) - 1
    hi = np.ceil(corners.max(axis=0)).astype(int) + 2
    shape = np.asarray(volume.grid.shape)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
    if np.any(hi <= lo):
        return None
    if np.all(lo == 0) and np.all(hi == shape):
        return volume
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return Volume(np.asarray(volume.array)[sl], volume.grid.crop(sl))


def _sample(volume: Volume, plane: _Plane, *, order: int = 1, fill_value: float = 0.0) -> np.ndarray:
    part = _crop_to(volume, plane.grid)
    if part is None:
        return plane.take(np.full(plane.grid.shape, fill_value, dtype=np.float32))
    arr = np.asarray(part.array)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    out = resample(Volume(arr, part.grid), plane.grid, order=order, fill_value=fill_value, dtype=np.float32)
    return plane.take(out.array)


def _grey(img2: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = float(window[0]), float(window[1])
    return np.clip((img2 - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _check_window(window: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise InputError(f"window must be two numbers (low, high) in image units, got {window!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise InputError(f"window must be finite with high > low, got {window!r}")
    return lo, hi


def _decorate(ax: Any, plane: _Plane) -> None:
    left, right, top, bottom = plane.labels
    kw = dict(transform=ax.transAxes, color="yellow", fontsize=10, fontweight="bold")
    ax.text(0.02, 0.5, left, ha="left", va="center", **kw)
    ax.text(0.98, 0.5, right, ha="right", va="center", **kw)
    ax.text(0.5, 0.98, top, ha="center", va="top", **kw)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **kw)
    ax.set_title(plane.name, fontsize=10)
    ax.set_xlabel({0: "x (mm)", 1: "y (mm)"}[plane.cols], fontsize=8)
    ax.set_ylabel({1: "y (mm)", 2: "z (mm)"}[plane.rows], fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_aspect("equal")


def _draw_point(ax: Any, plane: _Plane, p: np.ndarray) -> None:
    ax.plot([p[plane.cols]], [p[plane.rows]], marker="+", color="white", markersize=10, mew=1.2)


def _draw_contours(ax: Any, plane: _Plane, structures: StructureSet | None, *, names: Sequence[str] | None) -> list[tuple[str, Any]]:
    """Draw structure outlines on a plane; returns (name, colour) of those drawn."""
    if structures is None:
        return []
    drawn = []
    cx, ry = plane.coords()
    for s in structures:
        if names is not None and s.name not in names:
            continue
        if s.is_empty:
            continue
        frac = np.clip(_sample(Volume(s.mask, s.grid), plane), 0.0, 1.0)
        if frac.shape[0] < 2 or frac.shape[1] < 2 or frac.max() < 0.5 or frac.min() >= 0.5:
            continue
        color = _rgb(s.color)
        lw = 0.8 if s.roi_type == "EXTERNAL" else 1.3
        ax.contour(cx, ry, frac, levels=[0.5], colors=[color], linewidths=lw)
        drawn.append((s.name, color))
    return drawn


def _structure_legend(fig: Any, drawn: list[tuple[str, Any]]) -> None:
    if not drawn:
        return
    from matplotlib.lines import Line2D

    seen: dict[str, Any] = {}
    for name, c in drawn:
        seen.setdefault(name, c)
    handles = [Line2D([], [], color=c, lw=2) for c in seen.values()]
    fig.legend(handles, list(seen), loc="outside lower center", ncol=min(len(seen), 8), fontsize=8, frameon=False)


def _structures_arg(structures: Any) -> StructureSet | None:
    if structures is None or isinstance(structures, StructureSet):
        return structures
    raise InputError(f"structures must be a StructureSet or None, got {type(structures).__name__}")


# --------------------------------------------------------------------------- DVH
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
    color_map: dict[str, Any] = {}
    if isinstance(colors, StructureSet):
        color_map = {s.name: _rgb(s.color) for s in colors}
    elif colors is not None:
        color_map = {str(k): _rgb(c) for k, c in colors.items()}
    style_map = dict(DEFAULT_STYLES)
    style_map.update(styles or {})

    from matplotlib.lines import Line2D

    fig = _new_figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    default_cycle = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
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
                struct_colors[name] = color_map.get(name, default_cycle[len(struct_colors) % len(default_cycle)])
            ax.plot(d, v, linestyle=ls, color=struct_colors[name], lw=1.6, label=f"{label}: {name}")
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume (%)")
    ax.set_ylim(0, 102)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    s_handles = [Line2D([], [], color=c, lw=2) for c in struct_colors.values()]
    leg1 = ax.legend(s_handles, list(struct_colors), loc="upper right", fontsize=8, title="structure", title_fontsize=8)
    ax.add_artist(leg1)
    if len(label_styles) > 1 or any(ls != "-" for ls in label_styles.values()):
        p_handles = [Line2D([], [], color="black", lw=1.6, linestyle=ls) for ls in label_styles.values()]
        ax.legend(p_handles, list(label_styles), loc="lower left", fontsize=8, title="plan", title_fontsize=8)
    return _finish(fig, as_figure, dpi)


# --------------------------------------------------------------------------- image views
def _three_axes(fig: Any, extra: int = 0) -> list[Any]:
    return [fig.add_subplot(1, 3 + extra, i + 1) for i in range(3 + extra)]


def _default_point(grid: Grid) -> np.ndarray:
    return grid.index_to_lps((np.asarray(grid.shape, dtype=np.float64) - 1) / 2)


def _argmax_point(vol: Volume) -> np.ndarray:
    arr = np.asarray(vol.array, dtype=np.float64)
    if not np.any(np.isfinite(arr)):
        return _default_point(vol.grid)
    idx = np.unravel_index(int(np.nanargmax(arr)), arr.shape)
    return vol.grid.index_to_lps(np.asarray(idx, dtype=np.float64))


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
    if not 0 <= threshold_fraction < 1:
        raise InputError(f"threshold_fraction must lie in [0, 1), got {threshold_fraction!r}")
    dmax = float(np.nanmax(dose.array)) if dose_max is None else float(dose_max)
    if not math.isfinite(dmax) or dmax < 0:
        raise InputError(f"dose_max must be a non-negative number, got {dose_max!r}")
    dmax = max(dmax, 1e-6)
    planes, p = _planes(image.grid, point_lps)

    fig = _new_figure(figsize)
    axes = _three_axes(fig)
    drawn: list[tuple[str, Any]] = []
    mappable = None
    for ax, pl in zip(axes, planes):
        grey = _grey(_sample(image, pl, fill_value=win[0]), win)
        d2 = _sample(dose, pl)
        ext = pl.extent()
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, extent=ext, origin=pl.origin, interpolation="nearest")
        wash = np.ma.masked_less(d2, threshold_fraction * dmax)
        mappable = ax.imshow(wash, cmap="jet", vmin=0, vmax=dmax, alpha=alpha, extent=ext, origin=pl.origin, interpolation="nearest")
        drawn += _draw_contours(ax, pl, structures, names=structure_names)
        _draw_point(ax, pl, p)
        _decorate(ax, pl)
    cb = fig.colorbar(mappable, ax=axes, shrink=0.8, pad=0.01)
    cb.set_label("dose (Gy)")
    _structure_legend(fig, drawn)
    if title:
        fig.suptitle(title)
    return _finish(fig, as_figure, dpi)


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
        point_lps = _argmax_point(diff)
        if not bool(image.grid.contains(point_lps)):
            point_lps = _default_point(image.grid)
    planes, p = _planes(image.grid, point_lps)
    diffs = [_sample(dose_b, pl) - _sample(dose_a, pl) for pl in planes]
    largest = max(float(np.max(np.abs(d))) for d in diffs)
    if limit_gy is None:
        lim = largest
    else:
        lim = float(limit_gy)
        if not (math.isfinite(lim) and lim > 0):
            raise InputError(f"limit_gy must be a positive number, got {limit_gy!r}")
    lim = max(lim, 1e-3)
    fig = _new_figure(figsize)
    axes = _three_axes(fig)
    drawn: list[tuple[str, Any]] = []
    mappable = None
    for ax, pl, d2 in zip(axes, planes, diffs):
        grey = _grey(_sample(image, pl, fill_value=win[0]), win)
        ext = pl.extent()
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, extent=ext, origin=pl.origin, interpolation="nearest")
        wash = np.ma.masked_where(np.abs(d2) < 0.02 * lim, d2)
        mappable = ax.imshow(wash, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.75, extent=ext, origin=pl.origin, interpolation="nearest")
        drawn += _draw_contours(ax, pl, structures, names=structure_names)
        _draw_point(ax, pl, p)
        _decorate(ax, pl)
    cb = fig.colorbar(mappable, ax=axes, shrink=0.8, pad=0.01)
    cb.set_label(f"{labels[1]} − {labels[0]} (Gy)")
    _structure_legend(fig, drawn)
    fig.suptitle(title or f"dose difference: {labels[1]} − {labels[0]} (largest |difference| on these planes {largest:.3g} Gy)")
    return _finish(fig, as_figure, dpi)


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
        point_lps = _argmax_point(gamma)
        if not bool(image.grid.contains(point_lps)):
            point_lps = _default_point(image.grid)
    planes, p = _planes(image.grid, point_lps)
    fig = _new_figure(figsize)
    axes = _three_axes(fig, extra=1)
    drawn: list[tuple[str, Any]] = []
    mappable = None
    gvol = Volume(g.astype(np.float32), gamma.grid)
    for ax, pl in zip(axes[:3], planes):
        grey = _grey(_sample(image, pl, fill_value=win[0]), win)
        ext = pl.extent()
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, extent=ext, origin=pl.origin, interpolation="nearest")
        g2 = _sample(gvol, pl, order=0, fill_value=np.nan)
        mappable = ax.imshow(np.ma.masked_invalid(g2), cmap="RdYlGn_r", vmin=0, vmax=gamma_max, alpha=0.8, extent=ext, origin=pl.origin, interpolation="nearest")
        drawn += _draw_contours(ax, pl, structures, names=structure_names)
        _draw_point(ax, pl, p)
        _decorate(ax, pl)
    cb = fig.colorbar(mappable, ax=axes[:3], shrink=0.8, pad=0.01)
    cb.set_label("gamma")
    cb.ax.axhline(1.0, color="black", lw=1)
    hax = axes[3]
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
    _structure_legend(fig, drawn)
    fig.suptitle(title or ("gamma" + (f" ({criteria})" if criteria else "")))
    return _finish(fig, as_figure, dpi)


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


# --------------------------------------------------------------------------- MU
def mu_bar_figure(
    mu_per_beam: Mapping[str, Any],
    *,
    title: str | None = None,
    figsize: tuple[float, float] = (9.0, 4.0),
    dpi: int = 100,
    as_figure: bool = False,
) -> Any:
    """Bar chart of monitor units per beam.

    Parameters
    ----------
    mu_per_beam : mapping beam -> MU, or mapping plan label -> (mapping beam -> MU)
        MU per fraction. With several plans the bars are grouped by beam.
    title, figsize, dpi, as_figure : keyword-only
        See :func:`dvh_figure`. With ``as_figure`` each plan's bars are one
        BarContainer of the axes, in order.

    Returns
    -------
    bytes or matplotlib.figure.Figure
    """
    if not isinstance(mu_per_beam, Mapping) or not mu_per_beam:
        raise InputError("mu_per_beam must be a non-empty mapping beam -> MU (or plan label -> {beam: MU})")
    first = next(iter(mu_per_beam.values()))
    per_plan = mu_per_beam if isinstance(first, Mapping) else {"": mu_per_beam}
    beams: list[str] = []
    clean: dict[str, dict[str, float]] = {}
    for label, m in per_plan.items():
        if not isinstance(m, Mapping):
            raise InputError(f"mu_per_beam[{label!r}] must be a mapping beam -> MU")
        clean[str(label)] = {}
        for b, mu in m.items():
            if not (isinstance(mu, (int, float, np.integer, np.floating)) and math.isfinite(float(mu)) and float(mu) >= 0):
                raise InputError(f"MU of beam {b!r} must be a non-negative number, got {mu!r}")
            clean[str(label)][str(b)] = float(mu)
            if str(b) not in beams:
                beams.append(str(b))
    fig = _new_figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    n = len(clean)
    width = 0.8 / n
    x = np.arange(len(beams))
    for i, (label, m) in enumerate(clean.items()):
        vals = [m.get(b, 0.0) for b in beams]
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width=width, label=label or None)
    ax.set_xticks(x, beams, rotation=45 if len(beams) > 8 else 0, fontsize=8)
    ax.set_ylabel("MU per fraction")
    ax.grid(True, axis="y", alpha=0.3)
    if n > 1:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _finish(fig, as_figure, dpi)
