"""Contour propagation: planning structures carried onto the CBCT through a registration.

Masks are *pulled back*: a target voxel ``y`` is inside when the planning mask,
interpolated linearly at the planning point the registration maps ``y`` to, is
at least 0.5. So the masks are resampled once, without holes or overlaps of a
push-forward.
"""

from __future__ import annotations

import numpy as np

from art.errors import InputError
from art.geometry import Grid
from art.registration.deformable import DeformableResult
from art.registration.fields import grid_points, jacobian_determinant
from art.registration.rigid import RigidResult
from art.structures import Structure, StructureSet

__all__ = ["propagate_structures", "propagate_rigid", "volume_changes"]


def _pull(structures: StructureSet, planning_points: np.ndarray, target_grid: Grid) -> StructureSet:
    """Each structure's mask interpolated (linear) at the planning points, ``>= 0.5``, on ``target_grid``.

    The points' planning-grid indices are computed once per grid, and a mask is interpolated only
    at the points within one voxel of its bounding box (elsewhere all eight neighbours are
    outside it: 0): the same masks as :func:`~art.registration.fields.sample_image` at every point."""
    from art.registration.fields import _map_coordinates

    out = StructureSet(target_grid)
    pts = np.asarray(planning_points, dtype=np.float64).reshape(-1, 3)
    coords: list[tuple[Grid, np.ndarray]] = []
    for s in structures:
        c = next((c for g, c in coords if g.same_as(s.grid, tol_mm=0.0)), None)
        if c is None:
            c = s.grid.lps_to_index(pts).T  # (3, n): (k, j, i)
            coords.append((s.grid, c))
        inside = np.zeros(pts.shape[0], dtype=bool)
        m = np.asarray(s.mask, dtype=bool)
        if m.any():
            nz = np.nonzero(m)
            lo = np.array([ix.min() for ix in nz], dtype=np.float64) - 1.0
            hi = np.array([ix.max() for ix in nz], dtype=np.float64) + 1.0
            near = np.flatnonzero(np.all((c >= lo[:, None]) & (c <= hi[:, None]), axis=0))
            frac = _map_coordinates(m.astype(np.float32), c[:, near], order=1, mode="constant", cval=0.0, prefilter=False)
            inside[near] = frac.astype(np.float32, copy=False) >= 0.5
        out.add(Structure(s.name, inside.reshape(target_grid.shape), target_grid, roi_type=s.roi_type, color=s.color))
    return out


def _check(structures, target_grid):
    if not isinstance(structures, StructureSet):
        raise InputError(f"structures must be a StructureSet, got {type(structures).__name__}")
    if not isinstance(target_grid, Grid):
        raise InputError(f"target_grid must be a Grid, got {type(target_grid).__name__}")


def propagate_structures(structures: StructureSet, result: DeformableResult, *, target_grid: Grid | None = None) -> StructureSet:
    """Warp planning structures onto today's anatomy through a deformable registration.

    Parameters
    ----------
    structures : StructureSet
        The planning structures (on the planning CT grid).
    result : DeformableResult
        From :func:`~art.registration.register_deformable`.
    target_grid : Grid, optional, keyword-only
        Where to put the daily masks; the CBCT grid when omitted. Points of
        ``target_grid`` outside the CBCT grid follow the rigid map.

    Returns
    -------
    StructureSet
        Same names, types and colours, on ``target_grid``.
    """
    if not isinstance(result, DeformableResult):
        raise InputError(f"result must be a DeformableResult, got {type(result).__name__}")
    target_grid = result.cbct_grid if target_grid is None else target_grid
    _check(structures, target_grid)
    pts = grid_points(target_grid)
    if target_grid.same_as(result.cbct_grid):
        planning = pts + result.cbct_to_ct
    else:
        planning = result.cbct_to_ct_points(pts)
    return _pull(structures, planning, target_grid)


def propagate_rigid(structures: StructureSet, rigid: RigidResult, *, target_grid: Grid) -> StructureSet:
    """Carry planning structures onto the CBCT through the rigid registration only (for comparison).

    Parameters
    ----------
    structures : StructureSet
        Planning structures.
    rigid : RigidResult
        CBCT → CT rigid registration.
    target_grid : Grid, keyword-only
        The CBCT grid (or any grid in the CBCT frame).
    """
    if not isinstance(rigid, RigidResult):
        raise InputError(f"rigid must be a RigidResult, got {type(rigid).__name__}")
    _check(structures, target_grid)
    return _pull(structures, rigid.cbct_to_ct_points(grid_points(target_grid)), target_grid)


def volume_changes(planning: StructureSet, propagated: StructureSet, *, result: DeformableResult | None = None) -> dict:
    """Volume of each structure before and after propagation.

    Parameters
    ----------
    planning, propagated : StructureSet
        The planning set and its propagated copy (same names).
    result : DeformableResult, optional, keyword-only
        When given, also ``expected_cc``: the integral of the Jacobian
        determinant of ``ct_to_cbct`` over the planning mask, i.e. the volume
        the field itself says the structure has today (a volume-preservation
        check of the mask resampling).

    Returns
    -------
    dict name -> {"planning_cc", "propagated_cc", "ratio", ["expected_cc"]}
    """
    jac = None
    if result is not None:
        jac = jacobian_determinant(result.ct_to_cbct, result.ct_grid.spacing)
    out = {}
    for s in planning:
        p = propagated.find(s.name)
        if p is None:
            continue
        row = {"planning_cc": s.volume_cc, "propagated_cc": p.volume_cc, "ratio": (p.volume_cc / s.volume_cc) if s.volume_cc > 0 else float("nan")}
        if jac is not None and s.grid.same_as(result.ct_grid):
            row["expected_cc"] = float(jac[s.mask].sum()) * s.grid.voxel_volume_cc
        out[s.name] = row
    return out
