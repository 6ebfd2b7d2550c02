"""Shared preparation for dose calculations: dose grid, density, voxel set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from art.dose.machine import HUTable, Machine, hu_to_density
from art.errors import InputError
from art.geometry import Grid, Volume, resample_mask
from art.structures import StructureSet


@dataclass
class DoseSetup:
    dose_grid: Grid
    density: Volume  # relative electron density on the CT grid
    voxel_indices: np.ndarray  # flat (C-order) indices into dose_grid, ascending, int64
    points: np.ndarray  # (n, 3) LPS of those voxels


def body_structure(structures: StructureSet | None, body: str | None):
    if structures is None:
        return None
    if body is not None:
        return structures[body]
    ext = structures.external()
    if ext is None:
        ext = structures.find("BODY") or structures.find("EXTERNAL")
    return ext


def prepare(ct: Volume, structures: StructureSet | None, *, dose_grid_mm: float | None, voxels: str, body: str | None, hu_table: HUTable | None,
            dose_grid: Grid | None = None) -> DoseSetup:  # fmt: skip
    """Dose grid (``dose_grid`` if given, else the CT grid at ``dose_grid_mm``), density and the voxels to compute."""
    if not isinstance(ct, Volume):
        raise InputError(f"ct must be a Volume (HU), got {type(ct).__name__}")
    if voxels not in ("body", "all"):
        raise InputError(f"voxels must be 'body' or 'all', got {voxels!r}")
    if dose_grid is not None:
        if not isinstance(dose_grid, Grid):
            raise InputError(f"dose_grid must be an art.geometry.Grid, got {type(dose_grid).__name__}")
        grid = dose_grid
    elif dose_grid_mm is None:
        grid = ct.grid
    else:
        g = float(dose_grid_mm)
        if not np.isfinite(g) or g <= 0:
            raise InputError(f"dose_grid_mm must be a positive number, got {dose_grid_mm!r}")
        grid = ct.grid.with_spacing((g, g, g))
    density = Volume(hu_to_density(ct.array, hu_table), ct.grid)
    if voxels == "body":
        ext = body_structure(structures, body)
        if ext is None:
            raise InputError("voxels='body' needs a BODY/EXTERNAL structure (or pass voxels='all')")
        if not ext.grid.same_as(ct.grid):
            m = resample_mask(ext.volume, ct.grid, mode="nearest").array
            ext_vol = Volume(m, ct.grid)
        else:
            ext_vol = ext.volume
        mask = resample_mask(ext_vol, grid, mode="fraction").array >= 0.25
    else:
        mask = np.ones(grid.shape, dtype=bool)
    idx = np.flatnonzero(mask.reshape(-1)).astype(np.int64)
    if idx.size == 0:
        raise InputError("the voxel set for the dose calculation is empty (is the BODY structure empty?)")
    kji = np.stack(np.unravel_index(idx, grid.shape), axis=1).astype(np.float64)
    pts = grid.index_to_lps(kji)
    return DoseSetup(dose_grid=grid, density=density, voxel_indices=idx, points=pts)


def plan_position(plan, patient_position: str | None) -> str:
    """The plan's patient position after checking the inputs every dose engine takes: ``plan`` an
    :class:`art.plan.Plan`, ``patient_position`` (if given) the plan's. InputError otherwise."""
    from art.plan import Plan

    if not isinstance(plan, Plan):
        raise InputError(f"plan must be an art.plan.Plan, got {type(plan).__name__}")
    if patient_position is not None and patient_position != plan.patient_position:
        raise InputError(f"patient_position {patient_position!r} differs from the plan's ({plan.patient_position})")
    return plan.patient_position


def equivalent_square(x_mm: float, y_mm: float) -> float:
    """Equivalent square side 2XY/(X+Y) of a rectangular field, mm."""
    if x_mm <= 0 or y_mm <= 0:
        return 0.0
    return 2.0 * x_mm * y_mm / (x_mm + y_mm)


def head_scatter_for_jaws(machine: Machine, jaws: tuple[float, float, float, float]) -> float:
    x1, x2, y1, y2 = jaws
    return float(machine.head_scatter(equivalent_square(x2 - x1, y2 - y1)))
