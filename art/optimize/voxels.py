"""Which rows of a dose-influence matrix belong to which structure, and voxel down-sampling.

The optimiser works on rows of the influence matrix (one row per dose-grid
voxel kept by the dose engine). A :class:`StructureVoxels` names the rows of
one structure, optionally with the fraction of each voxel inside it, and its
voxel volume, so that volume metrics (``%`` and ``cc``) can be evaluated.

Down-sampling (:func:`sample_voxels`) keeps the optimisation problem small:
every target voxel is kept, every voxel within ``keep_near_target_mm`` of a
target is kept (that is where OAR max doses and the dose fall-off happen),
every voxel of the structures named in ``keep_structures`` (the structures
clinical goals are set on, when they are small enough) is kept, and of the
remaining voxels a seeded random subset of about ``max_voxels`` is kept;
each kept voxel carries the volume of the voxels it stands for (weight = 1 /
sampling probability), so means, CVaR and volume fractions stay unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from art.errors import InputError
from art.structures import TARGET_TYPES

__all__ = ["StructureVoxels", "build_structure_voxels", "sample_voxels", "VoxelSample"]


@dataclass(frozen=True)
class StructureVoxels:
    """Rows of an influence matrix inside one structure.

    Parameters
    ----------
    rows : array of int, shape (k,)
        Row indices (0 <= row < n_voxels), unique.
    weights : array of float, shape (k,), optional
        Fraction of each voxel inside the structure, in (0, 1]; None = all 1.
    roi_type : str
        RT ROI interpreted type (``"PTV"``, ``"ORGAN"``, ``"EXTERNAL"``, ...).
    voxel_volume_cc : float or None
        Volume of one dose-grid voxel, cc; needed for ``cc`` metrics.
    """

    rows: np.ndarray
    weights: np.ndarray | None = None
    roi_type: str = "ORGAN"
    voxel_volume_cc: float | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        r = np.asarray(self.rows)
        if r.ndim != 1 or (r.size and not np.issubdtype(r.dtype, np.integer)):
            raise InputError(f"structure {self.name!r}: rows must be a 1-D integer array")
        r = r.astype(np.int64, copy=False)
        if r.size and r.min() < 0:
            raise InputError(f"structure {self.name!r}: rows must not be negative")
        if np.unique(r).size != r.size:
            raise InputError(f"structure {self.name!r}: rows must be unique")
        object.__setattr__(self, "rows", r)
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != r.shape:
                raise InputError(f"structure {self.name!r}: weights shape {w.shape} does not match rows {r.shape}")
            if not np.all(np.isfinite(w)) or np.any(w <= 0):
                raise InputError(f"structure {self.name!r}: weights must be positive and finite")
            object.__setattr__(self, "weights", w)
        if self.voxel_volume_cc is not None and not (np.isfinite(self.voxel_volume_cc) and self.voxel_volume_cc > 0):
            raise InputError(f"structure {self.name!r}: voxel_volume_cc must be positive")
        object.__setattr__(self, "roi_type", (self.roi_type or "").upper())

    @property
    def is_target(self) -> bool:
        return self.roi_type in TARGET_TYPES

    def weight_array(self) -> np.ndarray:
        """Voxel weights (volume in voxel units), float64, shape (k,)."""
        return np.ones(self.rows.size) if self.weights is None else self.weights

    @property
    def volume_cc(self) -> float | None:
        """Structure volume in cc (None without a voxel volume)."""
        if self.voxel_volume_cc is None:
            return None
        return float(self.weight_array().sum() * self.voxel_volume_cc)


def build_structure_voxels(influence: Any, structure_set: Any, *, names: list[str] | None = None, fractional: bool = False) -> dict[str, StructureVoxels]:
    """Rows of an influence matrix in each structure of a structure set.

    Parameters
    ----------
    influence : InfluenceMatrix
        Needs ``.dose_grid`` (Grid) and ``.voxel_indices`` (flat indices into
        the dose grid of each matrix row).
    structure_set : StructureSet
        Masks on any grid; they are resampled onto the dose grid when needed.
    names : list of str, optional, keyword-only
        Structures to include (default all non-empty ones).
    fractional : bool, keyword-only
        Use the fractional occupancy of each dose voxel as its weight
        (default: a voxel is in when its centre is, weights None).

    Returns
    -------
    dict of str to StructureVoxels
        Only structures with at least one row (a structure outside the rows of
        the matrix is left out; the caller checks the goals' structures).
    """
    from art.geometry import resample_mask

    grid = influence.dose_grid
    vi = np.asarray(influence.voxel_indices, dtype=np.int64)
    wanted = names if names is not None else structure_set.names
    out: dict[str, StructureVoxels] = {}
    for name in wanted:
        s = structure_set[name]
        if s.grid.same_as(grid):
            occ = s.mask.astype(np.float32)
        else:
            occ = resample_mask(s.volume, grid, mode="fraction" if fractional else "linear").array.astype(np.float32)
        vals = occ.ravel()[vi]
        sel = np.flatnonzero(vals > (1e-3 if fractional else 0.5))
        if sel.size == 0:
            continue
        out[s.name] = StructureVoxels(
            rows=sel,
            weights=vals[sel].astype(np.float64) if fractional else None,
            roi_type=s.roi_type,
            voxel_volume_cc=grid.voxel_volume_cc,
            name=s.name,
        )
    return out


@dataclass(frozen=True)
class VoxelSample:
    """The result of :func:`sample_voxels`.

    Attributes
    ----------
    rows : ndarray of int64, shape (m,)
        Kept rows of the full matrix, ascending.
    scale : ndarray of float64, shape (m,)
        Volume each kept row stands for (1 for kept-all voxels, 1/p otherwise).
    structures : dict of str to StructureVoxels
        The structures re-indexed to the kept rows (0..m-1), weights multiplied by ``scale``.
    """

    rows: np.ndarray
    scale: np.ndarray
    structures: dict[str, StructureVoxels]


def sample_voxels(
    structures: Mapping[str, StructureVoxels],
    n_rows: int,
    *,
    max_voxels: int | None = 20000,
    distance_to_target_mm: np.ndarray | None = None,
    keep_near_target_mm: float = 10.0,
    extra_rows: np.ndarray | None = None,
    keep_structures: Sequence[str] = (),
    seed: int = 0,
) -> VoxelSample:
    """Down-sample matrix rows, keeping all target voxels and those near the targets.

    Parameters
    ----------
    structures : mapping of str to StructureVoxels
    n_rows : int
        Number of rows of the full matrix.
    max_voxels : int or None, keyword-only
        Approximate number of rows to keep in all; None keeps every row that
        belongs to a structure or to ``extra_rows``. Kept-all rows (targets,
        near-target rows) are never dropped even when they exceed this number.
    distance_to_target_mm : array, shape (n_rows,), optional, keyword-only
        Distance of each row to the nearest target voxel; rows closer than
        ``keep_near_target_mm`` are kept.
    keep_near_target_mm : float, keyword-only
    extra_rows : array of int, optional, keyword-only
        Further candidate rows (e.g. normal tissue) sampled like OAR rows.
    keep_structures : sequence of str, keyword-only
        Names (keys of ``structures``) whose rows are all kept. A DVH point of
        a small organ (e.g. D10% of a 500-voxel core) computed on a random
        subsample can be off by several Gy; the optimiser passes the
        structures that goals are set on.
    seed : int, keyword-only
        Seed of the random subsample (the sample is reproducible).

    Returns
    -------
    VoxelSample
    """
    candidates, must = _candidate_rows(structures, n_rows, extra_rows, keep_structures, distance_to_target_mm, keep_near_target_mm)
    candidates, prob = _subsample(candidates, must, n_rows, max_voxels, seed)
    rows = np.flatnonzero(candidates)
    scale = 1.0 / prob[rows]
    out = _reindexed(structures, rows, scale, n_rows)
    return VoxelSample(rows=rows, scale=scale, structures=out)


def _candidate_rows(
    structures: Mapping[str, StructureVoxels],
    n_rows: int,
    extra_rows: np.ndarray | None,
    keep_structures: Sequence[str],
    distance_to_target_mm: np.ndarray | None,
    keep_near_target_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows that may be kept and rows that must be (see :func:`sample_voxels` for the arguments).

    Returns
    -------
    candidates : ndarray of bool, shape (n_rows,)
        Rows of a structure or of ``extra_rows``.
    must : ndarray of bool, shape (n_rows,)
        Target rows, rows of ``keep_structures`` and candidates within
        ``keep_near_target_mm`` of a target.
    """
    candidates = np.zeros(n_rows, bool)
    must = np.zeros(n_rows, bool)
    for sv in structures.values():
        if sv.rows.size and sv.rows.max() >= n_rows:
            raise InputError(f"structure {sv.name!r}: row {int(sv.rows.max())} outside the matrix ({n_rows} rows)")
        candidates[sv.rows] = True
        if sv.is_target:
            must[sv.rows] = True
    if extra_rows is not None:
        candidates[np.asarray(extra_rows, dtype=np.int64)] = True
    for name in keep_structures:
        if name not in structures:
            raise InputError(f"keep_structures: no structure {name!r}")
        must[structures[name].rows] = True
    if distance_to_target_mm is not None:
        dist = np.asarray(distance_to_target_mm, dtype=np.float64)
        if dist.shape != (n_rows,):
            raise InputError(f"distance_to_target_mm must have shape ({n_rows},), got {dist.shape}")
        must |= candidates & (dist <= keep_near_target_mm)
    return candidates, must


def _subsample(candidates: np.ndarray, must: np.ndarray, n_rows: int, max_voxels: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep every ``must`` row and a seeded random share of the other candidates (bool arrays, shape (n_rows,)).

    Returns
    -------
    kept : ndarray of bool, shape (n_rows,)
        ``candidates`` itself when nothing is dropped.
    prob : ndarray of float64, shape (n_rows,)
        Probability with which each row was kept (1 for kept-all rows).
    """
    prob = np.ones(n_rows)
    optional = candidates & ~must
    n_must, n_opt = int(must.sum()), int(optional.sum())
    if max_voxels is not None and n_opt > 0:
        budget = max(max_voxels - n_must, min(n_opt, 2000))
        p = min(1.0, budget / n_opt)
        if p < 1.0:
            rng = np.random.default_rng(seed)
            drop = rng.random(n_rows) >= p
            optional_kept = optional & ~drop
            prob[optional] = p
            candidates = must | optional_kept
    return candidates, prob


def _reindexed(structures: Mapping[str, StructureVoxels], rows: np.ndarray, scale: np.ndarray, n_rows: int) -> dict[str, StructureVoxels]:
    """The structures on the kept ``rows`` (m,), re-indexed 0..m-1, weights multiplied by ``scale`` (m,) (None when all 1)."""
    index = -np.ones(n_rows, np.int64)
    index[rows] = np.arange(rows.size)
    out: dict[str, StructureVoxels] = {}
    for name, sv in structures.items():
        new = index[sv.rows]
        keep = new >= 0
        w = sv.weight_array()[keep] * scale[new[keep]]
        out[name] = StructureVoxels(
            rows=new[keep],
            weights=None if np.all(w == 1.0) else w,
            roi_type=sv.roi_type,
            voxel_volume_cc=sv.voxel_volume_cc,
            name=sv.name or name,
        )
    return out
