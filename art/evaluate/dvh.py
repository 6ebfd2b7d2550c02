"""Cumulative dose-volume histograms and the dose samples of a structure.

How a structure meets the dose
------------------------------
* Same grid: the dose of each voxel inside the mask, each with the voxel volume.
* Dose on another (usually coarser) grid: by default the dose is **interpolated
  linearly at the centres of the structure's voxels** (the structure's own grid
  keeps its resolution, the dose is smooth); centres up to half a dose voxel
  beyond the outermost dose voxel centres take the value of the nearest edge
  voxel, and a structure reaching further out of the dose grid is an error.
* Alternatively, pass ``weights``: the fractional occupancy of each dose voxel by
  the structure (:func:`occupancy`); each dose voxel then counts with
  ``occupancy × voxel volume``. This suits structures that are small compared
  with the dose voxels.
* ``mode="polygons"``: the structure measured by its RTSTRUCT polygons
  (:mod:`art.evaluate.polygons`: in-plane sub-cell sampling, slab rule with
  half-slice end caps between contour planes) with the dose interpolated
  trilinearly at the sample points, as planning systems and DVH tools compute
  it from the files; for structures read from an RTSTRUCT (``contours`` set)
  only. ``occupancy(..., mode="polygons")`` gives the same geometry as
  fractions of the dose voxels.

Metrics (D95%, V20Gy, ...) are computed on the exact samples, never on the
binned curve (:mod:`art.evaluate.metrics` gives the definitions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from art.backend import to_numpy
from art.errors import GeometryError, InputError
from art.geometry import Grid, Volume, resample_mask
from art.evaluate.metrics import evaluate_metric, mean_dose, near_max_dose, near_min_dose, prepare_samples
from art.evaluate.polygons import polygon_occupancy, polygon_samples
from art.protocol import Metric
from art.structures import Structure

__all__ = ["DVH", "dvh", "structure_samples", "occupancy", "MODES"]

_MAX_BINS = 1_000_000
_CHUNK = 1 << 21
#: How a structure meets the dose: its voxel mask (default) or its RTSTRUCT polygons.
MODES = ("mask", "polygons")


def occupancy(
    structure: Structure | Volume,
    dose_grid: Grid,
    *,
    supersample: int | Sequence[int] | None = None,
    mode: str = "mask",
    step_mm: float = 0.25,
) -> Volume:
    """Fraction of each dose-grid voxel that lies inside a structure.

    With ``mode="polygons"`` the fraction comes from the structure's RTSTRUCT
    polygons (:func:`art.evaluate.polygons.polygon_occupancy`, sub-cells of at
    most ``step_mm``); ``supersample`` is then not used. Otherwise (``"mask"``):
    each dose voxel is split into ``sx × sy × sz`` sub-voxels; a sub-voxel is
    inside when its centre falls in a structure voxel (nearest neighbour); the
    occupancy is the mean over the sub-voxels. Only the dose voxels around the
    structure's bounding box are computed.

    Parameters
    ----------
    structure : Structure or Volume of bool
        The mask on its own (usually finer) grid.
    dose_grid : Grid
        The dose grid.
    supersample : int or (sz, sy, sx) ints, optional, keyword-only
        Sub-voxels per dose voxel along z, y, x. Default: the ratio of the dose
        spacing to the finest structure spacing, rounded up (1 on the same grid,
        which gives back the mask exactly).
    mode : {"mask", "polygons"}, keyword-only
        From the voxel mask (default) or from the polygons (``structure`` must
        then be a Structure with ``contours``).
    step_mm : float, keyword-only
        In-plane sub-cell size for ``mode="polygons"``, mm.

    Returns
    -------
    Volume
        float32 in [0, 1] on ``dose_grid``.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "polygons":
        if not isinstance(structure, Structure):
            raise InputError(f"mode 'polygons' needs a Structure with contours, got {type(structure).__name__}")
        return polygon_occupancy(structure, dose_grid, step_mm=step_mm)
    mask_vol = structure.volume if isinstance(structure, Structure) else structure
    if not isinstance(mask_vol, Volume):
        raise InputError(f"structure must be a Structure or a Volume, got {type(structure).__name__}")
    if not isinstance(dose_grid, Grid):
        raise InputError(f"dose_grid must be a Grid, got {type(dose_grid).__name__}")
    return _mask_occupancy(mask_vol, dose_grid, supersample)


def _mask_occupancy(mask_vol: Volume, dose_grid: Grid, supersample: int | Sequence[int] | None) -> Volume:
    """The ``"mask"`` mode of :func:`occupancy`: sub-voxel centres of the dose voxels looked up
    in the mask (nearest neighbour); float32 in [0, 1] on ``dose_grid`` (z, y, x)."""
    mask = np.asarray(to_numpy(mask_vol.array)).astype(bool)
    out = np.zeros(dose_grid.shape, dtype=np.float32)
    if not mask.any():
        return Volume(out, dose_grid)
    if supersample is None:
        finest = min(mask_vol.grid.spacing)
        s = tuple(max(1, int(math.ceil(sp / finest - 1e-6))) for sp in dose_grid.spacing)
    elif isinstance(supersample, (int, np.integer)):
        s = (int(supersample),) * 3
    else:
        s = tuple(int(v) for v in supersample)
    if len(s) != 3 or any(v < 1 for v in s):
        raise InputError(f"supersample must be a positive integer or three of them, got {supersample!r}")

    # bounding box of the structure in dose-grid indices
    nz = np.nonzero(mask)
    lo = np.array([a.min() for a in nz], dtype=np.float64) - 0.5
    hi = np.array([a.max() for a in nz], dtype=np.float64) + 0.5
    corners = np.array([[z, y, x] for z in (lo[0], hi[0]) for y in (lo[1], hi[1]) for x in (lo[2], hi[2])])
    idx = dose_grid.lps_to_index(mask_vol.grid.index_to_lps(corners))
    start = np.maximum(np.floor(idx.min(axis=0) - 0.5).astype(int), 0)
    stop = np.minimum(np.ceil(idx.max(axis=0) + 0.5).astype(int) + 1, np.asarray(dose_grid.shape))
    if np.any(stop <= start):
        return Volume(out, dose_grid)
    crop_shape = tuple(int(b - a) for a, b in zip(start, stop))
    # sub-voxel centres: offsets (m + 0.5) / s - 0.5 voxel from the dose voxel centre
    shift_zyx = np.array([-(si - 1) / (2.0 * si) for si in s])
    fine_origin = dose_grid.index_to_lps(start + shift_zyx)
    fine = Grid(
        shape=tuple(n * si for n, si in zip(crop_shape, s)),
        spacing=tuple(sp / si for sp, si in zip(dose_grid.spacing, s)),
        origin=tuple(fine_origin),
        direction=dose_grid.direction,
    )
    fm = resample_mask(Volume(mask, mask_vol.grid), fine, mode="nearest").array
    frac = fm.reshape(crop_shape[0], s[0], crop_shape[1], s[1], crop_shape[2], s[2]).mean(axis=(1, 3, 5), dtype=np.float64)
    out[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]] = frac.astype(np.float32)
    return Volume(out, dose_grid)


def _mask_and_grid(structure: Any, name: str | None) -> tuple[np.ndarray, Grid | None, str]:
    if isinstance(structure, Structure):
        return structure.mask, structure.grid, name or structure.name
    if isinstance(structure, Volume):
        return np.asarray(to_numpy(structure.array)).astype(bool), structure.grid, name or "structure"
    if structure is None:
        raise InputError("structure is required (a Structure, a boolean Volume or a boolean array)")
    arr = np.asarray(to_numpy(structure))
    if arr.dtype != bool:
        raise InputError(f"a structure given as an array must be boolean, got {arr.dtype}")
    return arr, None, name or "structure"


def _sample_at(dose: Volume, mask: np.ndarray, grid: Grid, name: str) -> np.ndarray:
    """Linear interpolation of ``dose`` at the centres of the voxels of ``mask`` (on ``grid``)."""
    from scipy import ndimage

    flat = np.flatnonzero(mask)
    shape = np.asarray(dose.grid.shape, dtype=np.float64)
    arr = np.asarray(to_numpy(dose.array), dtype=np.float32)
    out = np.empty(flat.size, dtype=np.float32)
    n_out = 0
    for a in range(0, flat.size, _CHUNK):  # bounded memory for large structures (e.g. BODY)
        idx = np.stack(np.unravel_index(flat[a : a + _CHUNK], mask.shape), axis=1).astype(np.float64)
        pts = dose.grid.lps_to_index(grid.index_to_lps(idx))
        outside = np.any((pts < -0.5 - 1e-6) | (pts > shape - 0.5 + 1e-6), axis=1)
        n_out += int(outside.sum())
        if n_out:
            continue
        pts = np.clip(pts, 0.0, shape - 1.0)
        out[a : a + len(pts)] = ndimage.map_coordinates(arr, pts.T, order=1, mode="nearest", prefilter=False)
    if n_out:
        raise GeometryError(
            f"structure {name!r} extends outside the dose grid ({n_out} of {flat.size} voxels): "
            "compute the dose on a grid that covers it"
        )
    return out


def structure_samples(
    dose: Volume | np.ndarray,
    structure: Structure | Volume | np.ndarray | None,
    *,
    weights: Volume | np.ndarray | None = None,
    voxel_volume_cc: float | None = None,
    name: str | None = None,
    mode: str = "mask",
) -> tuple[np.ndarray, np.ndarray, str]:
    """The dose samples of a structure: dose per voxel and the structure's volume in it.

    Parameters
    ----------
    dose : Volume or ndarray, shape (z, y, x)
        Dose in Gy.
    structure : Structure, Volume of bool or bool ndarray
        The structure; ignored (except for its name) when ``weights`` is given.
        If it lies on another grid than ``dose``, the dose is interpolated
        linearly at the structure's voxel centres.
    weights : Volume or ndarray, optional, keyword-only
        Fractional occupancy in [0, 1] of each dose voxel (see :func:`occupancy`).
    voxel_volume_cc : float, optional, keyword-only
        Voxel volume in cc; required when neither ``dose`` nor ``structure``
        carries a grid.
    name : str, optional, keyword-only
        Name for messages (default: the structure's name).
    mode : {"mask", "polygons"}, keyword-only
        ``"polygons"``: the structure measured by its RTSTRUCT polygons, the
        dose interpolated at the sample points
        (:func:`art.evaluate.polygons.polygon_samples`); ``dose`` must be a
        Volume, ``structure`` a Structure with ``contours`` and ``weights``
        not given.

    Returns
    -------
    doses : ndarray of float64, shape (n,)
        Gy, hottest first.
    volumes : ndarray of float64, shape (n,)
        cc per sample.
    name : str

    Raises
    ------
    InputError
        For an empty structure (naming it), mismatched shapes or grids.
    GeometryError
        When the structure reaches outside the dose grid.
    """
    dose_grid = dose.grid if isinstance(dose, Volume) else None
    dose_arr = np.asarray(to_numpy(dose.array if isinstance(dose, Volume) else dose))
    if dose_arr.ndim != 3:
        raise InputError(f"dose must be a 3-D (z, y, x) array, got shape {dose_arr.shape}")
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "polygons":
        if weights is not None or dose_grid is None or not isinstance(structure, Structure):
            raise InputError("mode 'polygons' needs the dose as a Volume, a Structure with contours and no weights")
        d, v = polygon_samples(dose, structure)  # type: ignore[arg-type]
        return d, v, name or structure.name
    if weights is not None:
        return _weighted_samples(dose_arr, dose_grid, structure, weights, voxel_volume_cc=voxel_volume_cc, name=name)
    return _mask_samples(dose, dose_arr, dose_grid, structure, voxel_volume_cc=voxel_volume_cc, name=name)


def _weighted_samples(dose_arr: np.ndarray, dose_grid: Grid | None, structure: Any, weights: Volume | np.ndarray, *,
                      voxel_volume_cc: float | None, name: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Samples of the dose voxels with a fractional occupancy ``weights`` > 0 (same (z, y, x)
    shape as ``dose_arr``, Gy), each counting ``occupancy × voxel volume`` cc.

    Returns ``(doses, volumes, name)`` as :func:`structure_samples`.
    """
    label = name or (structure.name if isinstance(structure, Structure) else "structure")
    if isinstance(weights, Volume):
        if dose_grid is not None and not weights.grid.same_as(dose_grid):
            raise GeometryError(f"structure {label!r}: weights and dose lie on different grids")
        dose_grid = dose_grid or weights.grid
        w = np.asarray(to_numpy(weights.array), dtype=np.float64)
    else:
        w = np.asarray(to_numpy(weights), dtype=np.float64)
    if w.shape != dose_arr.shape:
        raise InputError(f"structure {label!r}: weights shape {w.shape} differs from dose shape {dose_arr.shape}")
    if np.any(w < 0) or np.any(w > 1 + 1e-6) or not np.all(np.isfinite(w)):
        raise InputError(f"structure {label!r}: weights (fractional occupancy) must lie in [0, 1]")
    vv = dose_grid.voxel_volume_cc if dose_grid is not None else voxel_volume_cc
    if vv is None:
        raise InputError("voxel_volume_cc is required when dose and weights are plain arrays")
    sel = w > 0
    d, v = prepare_samples(dose_arr[sel], w[sel] * vv, name=label)
    return d, v, label


def _mask_samples(dose: Volume | np.ndarray, dose_arr: np.ndarray, dose_grid: Grid | None, structure: Any, *,
                  voxel_volume_cc: float | None, name: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Samples of a structure mask: the dose of each voxel inside it (same grid), or the dose
    interpolated at its voxel centres (another grid), each with the structure's voxel volume (cc).

    Returns ``(doses, volumes, name)`` as :func:`structure_samples`.
    """
    mask, sgrid, label = _mask_and_grid(structure, name)
    if not mask.any():
        raise InputError(f"structure {label!r} is empty: no dose-volume metric can be computed")
    if sgrid is not None and dose_grid is not None and not sgrid.same_as(dose_grid):
        samples = _sample_at(dose, mask, sgrid, label)  # type: ignore[arg-type]
        vv = sgrid.voxel_volume_cc
    else:
        if mask.shape != dose_arr.shape:
            raise InputError(f"structure {label!r}: mask shape {mask.shape} differs from dose shape {dose_arr.shape}")
        samples = dose_arr[mask]
        grid = dose_grid or sgrid
        vv = grid.voxel_volume_cc if grid is not None else voxel_volume_cc
        if vv is None:
            raise InputError("voxel_volume_cc is required when dose and structure are plain arrays")
    d, v = prepare_samples(samples, vv, name=label)
    return d, v, label


@dataclass
class DVH:
    """A cumulative dose-volume histogram with the exact samples behind it.

    Attributes
    ----------
    name : str
        Structure name.
    dose_gy : ndarray, shape (k,)
        Dose levels from 0 up, Gy (ascending, evenly spaced).
    volume_cc : ndarray, shape (k,)
        Volume receiving at least ``dose_gy[i]``, cc (non-increasing).
    total_volume_cc : float
        Volume of the structure, cc.
    """

    name: str
    dose_gy: np.ndarray
    volume_cc: np.ndarray
    total_volume_cc: float
    samples_dose_gy: np.ndarray = field(repr=False)
    samples_volume_cc: np.ndarray = field(repr=False)

    @property
    def volume_pct(self) -> np.ndarray:
        """Volume receiving at least ``dose_gy[i]``, percent of the structure."""
        return 100.0 * self.volume_cc / self.total_volume_cc

    @property
    def mean_gy(self) -> float:
        return mean_dose(self.samples_dose_gy, self.samples_volume_cc)

    @property
    def max_gy(self) -> float:
        """``Dmax`` = ``D0.03cc`` (maximum voxel dose under 0.03 cc)."""
        return near_max_dose(self.samples_dose_gy, self.samples_volume_cc)

    @property
    def min_gy(self) -> float:
        """``Dmin``: dose to the coldest 0.03 cc."""
        return near_min_dose(self.samples_dose_gy, self.samples_volume_cc)

    def metric(self, metric: Metric | str) -> float:
        """Evaluate a metric (``"D95%"``, ``"V20Gy"``, ...) on the exact samples; unit ``metric.output_unit``."""
        return evaluate_metric(metric, self.samples_dose_gy, self.samples_volume_cc, name=self.name)

    def to_dict(self, *, max_points: int = 500) -> dict:
        """JSON-friendly curve (``dose_gy``, ``volume_pct``), thinned to at most ``max_points`` points."""
        n = len(self.dose_gy)
        step = max(1, int(math.ceil(n / max_points)))
        sel = np.arange(0, n, step)
        if sel[-1] != n - 1:
            sel = np.append(sel, n - 1)
        return {
            "name": self.name,
            "total_volume_cc": float(self.total_volume_cc),
            "dose_gy": [float(x) for x in self.dose_gy[sel]],
            "volume_pct": [float(x) for x in self.volume_pct[sel]],
        }


def dvh(
    dose: Volume | np.ndarray,
    structure: Structure | Volume | np.ndarray | None,
    *,
    weights: Volume | np.ndarray | None = None,
    voxel_volume_cc: float | None = None,
    bin_width_gy: float = 0.01,
    max_dose_gy: float | None = None,
    name: str | None = None,
    mode: str = "mask",
) -> DVH:
    """Cumulative DVH of a structure.

    Parameters
    ----------
    dose : Volume or ndarray, shape (z, y, x)
        Dose, Gy.
    structure : Structure, Volume of bool or bool ndarray
        See :func:`structure_samples` (grids may differ: the dose is then
        interpolated linearly at the structure's voxel centres).
    weights : Volume or ndarray, optional, keyword-only
        Fractional occupancy of each dose voxel (:func:`occupancy`).
    voxel_volume_cc : float, optional, keyword-only
        Needed only for plain arrays.
    bin_width_gy : float, keyword-only
        Spacing of the dose levels, Gy.
    max_dose_gy : float, optional, keyword-only
        Last dose level (default: just above the maximum dose).
    name : str, optional, keyword-only
    mode : {"mask", "polygons"}, keyword-only
        See :func:`structure_samples`; ``"polygons"`` measures the structure by
        its RTSTRUCT polygons.

    Returns
    -------
    DVH
        ``volume_cc[i]`` is the exact volume with dose >= ``dose_gy[i]``.
    """
    if not (isinstance(bin_width_gy, (int, float)) and bin_width_gy > 0 and math.isfinite(bin_width_gy)):
        raise InputError(f"bin_width_gy must be a positive number, got {bin_width_gy!r}")
    d, v, label = structure_samples(dose, structure, weights=weights, voxel_volume_cc=voxel_volume_cc, name=name, mode=mode)
    top = float(d[0]) if max_dose_gy is None else float(max_dose_gy)
    nb = int(math.floor(max(top, 0.0) / bin_width_gy)) + 2
    if nb > _MAX_BINS:
        raise InputError(f"{nb} DVH bins requested (max {_MAX_BINS}): raise bin_width_gy")
    levels = np.arange(nb, dtype=np.float64) * bin_width_gy
    # volume with dose >= level: d is sorted descending, so count those >= level
    asc = d[::-1]
    suffix = np.concatenate([np.cumsum(v)[::-1], [0.0]])  # suffix[i] = volume of asc[i:]
    first = np.searchsorted(asc, levels, side="left")
    vol = suffix[first]
    return DVH(label, levels, vol, float(v.sum()), d, v)
