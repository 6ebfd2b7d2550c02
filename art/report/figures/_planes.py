"""Image panels of the report figures: three planes through a point, and what is drawn on them.

How the planes are oriented and sampled is described in :mod:`art.report.figures`.
Each panel is a grey image (:func:`_background`), a colour wash drawn by the
figure itself, then outlines, the point and orientation labels
(:func:`_foreground`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from art.errors import InputError
from art.geometry import Grid, Volume, resample
from art.report.figures._base import _rgb
from art.structures import StructureSet

_DEFAULT_WINDOW = (-400.0, 400.0)


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




def _worst_point(vol: Volume, image_grid: Grid) -> np.ndarray:
    """Default plane position: the voxel of ``vol`` with the largest value.

    Parameters
    ----------
    vol : Volume
        E.g. a gamma map or an absolute dose difference (Gy), any grid.
    image_grid : Grid
        The image the planes are drawn on.

    Returns
    -------
    (3,) ndarray
        LPS position (mm) of the largest finite value of ``vol`` (the centre
        of ``vol``'s grid when none is finite), or the centre of the image
        when that point lies outside it.
    """
    point_lps = _argmax_point(vol)
    if not bool(image_grid.contains(point_lps)):
        point_lps = _default_point(image_grid)
    return point_lps


@dataclass(frozen=True)
class _Scene:
    """What every image panel shows under and over its colour wash.

    Attributes
    ----------
    image : Volume
        Background image (HU), shown in grey through ``window``.
    window : (low, high)
        Grey-scale window, image units (HU).
    structures : StructureSet or None
        Outlines in the structures' colours (None: no outlines).
    structure_names : sequence of str or None
        Only outline these structures (None: every structure).
    point : (3,) ndarray
        The LPS point (mm) the planes pass through (snapped to a voxel
        centre), marked with a cross.
    """

    image: Volume
    window: tuple[float, float]
    structures: StructureSet | None
    structure_names: Sequence[str] | None
    point: np.ndarray


def _background(ax: Any, scene: _Scene, plane: _Plane) -> tuple[float, float, float, float]:
    """Draw the grey image of ``scene`` on one panel.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The panel.
    scene : _Scene
        Image and window (outside the image: the window's low end).
    plane : _Plane
        The panel's plane.

    Returns
    -------
    (left, right, bottom, top)
        The panel's ``imshow`` extent, mm, for the colour wash drawn over it.
    """
    grey = _grey(_sample(scene.image, plane, fill_value=scene.window[0]), scene.window)
    ext = plane.extent()
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1, extent=ext, origin=plane.origin, interpolation="nearest")
    return ext


def _foreground(ax: Any, scene: _Scene, plane: _Plane) -> list[tuple[str, Any]]:
    """Draw the outlines, the point and the orientation labels over one panel's wash.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The panel.
    scene : _Scene
        Structures (and which of them), and the point.
    plane : _Plane
        The panel's plane.

    Returns
    -------
    list of (name, colour)
        The outlines drawn, for :func:`_structure_legend`.
    """
    drawn = _draw_contours(ax, plane, scene.structures, names=scene.structure_names)
    _draw_point(ax, plane, scene.point)
    _decorate(ax, plane)
    return drawn


def _colorbar(fig: Any, mappable: Any, axes: list[Any], label: str) -> Any:
    """A colour bar of ``mappable`` beside the image panels ``axes``, labelled ``label``; returns it."""
    cb = fig.colorbar(mappable, ax=axes, shrink=0.8, pad=0.01)
    cb.set_label(label)
    return cb
