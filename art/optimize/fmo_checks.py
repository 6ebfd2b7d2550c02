"""Checks of :func:`art.optimize.fmo.optimize_fluence`'s arguments, and structure look-up by name.

Each check raises :class:`~art.errors.InputError` with the message the
optimiser has always given; :func:`art.optimize.fmo._optimize_fluence_once`
calls them in a fixed order (method and solver, counts, matrix and structures,
objective weights, neighbours, distances, warm start), so that an input with
several problems reports the same one first. :func:`_find` and
:func:`_find_key` look a structure up by name (exactly, then
case-insensitively), as the protocol names them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import sparse

from art.errors import InputError
from art.optimize.fmo_types import OptimizationResult
from art.optimize.voxels import StructureVoxels
from art.protocol import Goal, Prescription

__all__ = ["SOLVERS", "METHODS", "validate_solver"]

SOLVERS = ("CLARABEL", "OSQP", "SCS")
METHODS = ("lbfgs", "cvxpy")


def validate_solver(solver: str) -> str:
    """Normalise and check a solver name.

    Parameters
    ----------
    solver : str
        One of :data:`SOLVERS` (case-insensitive).

    Returns
    -------
    str
        The upper-case name.

    Raises
    ------
    InputError
        For an unknown name or a solver that is not installed.
    """
    if not isinstance(solver, str) or solver.strip().upper() not in SOLVERS:
        raise InputError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    name = solver.strip().upper()
    import cvxpy as cp

    if name not in cp.installed_solvers():
        raise InputError(f"solver {name} is not installed (installed: {', '.join(cp.installed_solvers())})")
    return name


def _validate_method(method: str) -> str:
    if not isinstance(method, str) or method.strip().lower() not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return method.strip().lower()


def _check_method_and_solver(method: str, solver: str) -> tuple[str, str]:
    """The optimisation method and the solver name it reports.

    Parameters
    ----------
    method : str
        ``"lbfgs"`` or ``"cvxpy"`` (case-insensitive).
    solver : str
        One of :data:`SOLVERS`; checked (and for ``"cvxpy"`` required to be
        installed) even when the method ignores it.

    Returns
    -------
    method : str
        Lower-case method name.
    solver : str
        The upper-case cvxpy solver, or ``"L-BFGS-B"`` for ``method="lbfgs"``.
    """
    method = _validate_method(method)
    if method == "cvxpy":
        solver = validate_solver(solver)
    else:
        if not isinstance(solver, str) or solver.strip().upper() not in SOLVERS:
            raise InputError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        solver = "L-BFGS-B"
    return method, solver


def _check_counts(fractions: Any, max_iterations: Any) -> None:
    """Check that ``fractions`` and ``max_iterations`` (unless None) are positive integers (not bool)."""
    if isinstance(fractions, bool) or not isinstance(fractions, (int, np.integer)) or fractions < 1:
        raise InputError(f"fractions must be a positive integer, got {fractions!r}")
    if max_iterations is not None and (isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1):
        raise InputError(f"max_iterations must be a positive integer, got {max_iterations!r}")


def _check_inputs(matrix: Any, structures: Mapping[str, StructureVoxels], goals: Sequence[Goal], prescription: Prescription) -> tuple[sparse.csr_matrix, dict[str, StructureVoxels]]:
    """Check the influence matrix, the goals and the structures the protocol names.

    Parameters
    ----------
    matrix : scipy.sparse matrix, shape (n_voxels, n_beamlets)
        Finite, non-negative dose per unit weight, Gy.
    structures : mapping of str to StructureVoxels
        Rows of ``matrix`` in each structure.
    goals : sequence of Goal
        At least one.
    prescription : Prescription

    Returns
    -------
    a : csr_matrix, shape (n_voxels, n_beamlets)
        The matrix as CSR (same dtype).
    svs : dict of str to StructureVoxels
        The structures, in the order given.
    """
    if not sparse.issparse(matrix) or matrix.ndim != 2:
        raise InputError(f"matrix must be a 2-D scipy sparse matrix, got {type(matrix).__name__}")
    a = sparse.csr_matrix(matrix)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"matrix is empty (shape {a.shape})")
    if a.nnz and (not np.all(np.isfinite(a.data)) or a.data.min() < 0):
        raise InputError("matrix must hold finite, non-negative dose per unit weight")
    if not goals:
        raise InputError("goals: at least one goal is needed")
    lookup = {k.lower(): k for k in structures}
    svs: dict[str, StructureVoxels] = {}
    for k, sv in structures.items():
        if not isinstance(sv, StructureVoxels):
            raise InputError(f"structures[{k!r}] must be a StructureVoxels, got {type(sv).__name__}")
        if sv.rows.size and sv.rows.max() >= a.shape[0]:
            raise InputError(f"structure {k!r}: row {int(sv.rows.max())} outside the matrix ({a.shape[0]} rows)")
        svs[k] = sv
    for name in [prescription.target, *(g.structure for g in goals)]:
        key = name if name in svs else lookup.get(name.lower())
        if key is None:
            raise InputError(f"structure {name!r} (named by the protocol) has no voxels in the dose matrix; available: {', '.join(svs) or 'none'}")
        if svs[key].rows.size == 0:
            raise InputError(f"structure {name!r} is empty in the dose matrix")
    return a, svs


def _check_weights(**weights: float) -> None:
    """Check that each named objective weight (smoothness, oar_sparing, ..., in the order given) is finite and >= 0."""
    for pname, pval in weights.items():
        if not (np.isfinite(pval) and pval >= 0):
            raise InputError(f"{pname} must be a non-negative number, got {pval!r}")


def _neighbour_pairs(beamlet_neighbours: np.ndarray | None, smoothness: float, n_b: int) -> np.ndarray | None:
    """Pairs of adjacent beamlets for the smoothness term.

    Parameters
    ----------
    beamlet_neighbours : int array, shape (n_pairs, 2), or None
    smoothness : float
        Weight of the smoothness term; 0 disables it.
    n_b : int
        Number of beamlets (matrix columns).

    Returns
    -------
    ndarray of int64, shape (n_pairs, 2), or None
        None when there are no pairs or the term is off.
    """
    pairs = None
    if beamlet_neighbours is not None and smoothness > 0:
        pairs = np.asarray(beamlet_neighbours, dtype=np.int64).reshape(-1, 2)
        if pairs.size and (pairs.min() < 0 or pairs.max() >= n_b):
            raise InputError(f"beamlet_neighbours must index beamlets 0..{n_b - 1}")
        if pairs.size == 0:
            pairs = None
    return pairs


def _distances(distance_to_target_mm: np.ndarray | None, n_vox: int) -> np.ndarray | None:
    """Distance of each matrix row to the nearest target, mm, as float64 of shape (n_vox,) (None stays None)."""
    dist = None
    if distance_to_target_mm is not None:
        dist = np.asarray(distance_to_target_mm, dtype=np.float64).reshape(-1)
        if dist.shape != (n_vox,):
            raise InputError(f"distance_to_target_mm must have one value per matrix row ({n_vox}), got {dist.shape}")
    return dist


def _warm_weights(warm_start: OptimizationResult | np.ndarray | None, n_b: int) -> np.ndarray | None:
    """The warm start's beamlet weights, float64 of shape (n_b,), clipped at 0.

    A result gives its ``raw_weights`` (its ``weights`` when it has none);
    None stays None.
    """
    w0 = None
    if warm_start is not None:
        if isinstance(warm_start, OptimizationResult):
            w0 = warm_start.raw_weights if warm_start.raw_weights is not None else warm_start.weights
        else:
            w0 = warm_start
        w0 = np.asarray(w0, dtype=np.float64)
        if w0.shape != (n_b,):
            raise InputError(f"warm_start has {w0.size} weights, the matrix {n_b} beamlets")
        w0 = np.maximum(w0, 0.0)
    return w0


def _find(svs: Mapping[str, StructureVoxels], name: str) -> StructureVoxels:
    if name in svs:
        return svs[name]
    for k, v in svs.items():
        if k.lower() == name.lower():
            return v
    raise KeyError(name)  # pragma: no cover - checked before


def _find_key(svs: Mapping[str, StructureVoxels], name: str) -> str:
    if name in svs:
        return name
    for k in svs:
        if k.lower() == name.lower():
            return k
    raise KeyError(name)  # pragma: no cover
