"""Geometry helpers for the optimiser: beamlet neighbours, distance to the targets, weight transfer.

These read an :class:`art.dose.influence.InfluenceMatrix` (its ``beam_index``,
``bev_x_mm``, ``bev_y_mm``, ``bixel_mm``, ``dose_grid`` and ``voxel_indices``)
and produce the arrays :func:`art.optimize.fmo.optimize_fluence` takes:
``beamlet_neighbours`` (fluence smoothness), ``distance_to_target_mm``
(normal-tissue fall-off, voxel down-sampling) and a ``warm_start`` for a
matrix whose beamlet set differs from the reference plan's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from art.errors import InputError

__all__ = ["neighbours_from_influence", "distance_rows", "transfer_weights"]


def _bixel_index(im: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = float(im.bixel_mm)
    if not b > 0:
        raise InputError(f"influence matrix: bixel_mm must be positive, got {b!r}")
    ix = np.round(np.asarray(im.bev_x_mm, dtype=np.float64) / b - 0.5).astype(np.int64)
    iy = np.round(np.asarray(im.bev_y_mm, dtype=np.float64) / b - 0.5).astype(np.int64)
    return np.asarray(im.beam_index, dtype=np.int64), ix, iy


def _keys(beam: np.ndarray, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    # one int64 per bixel: beam (16 bits), x and y offsets (24 bits each, shifted positive)
    off = 1 << 23
    return (beam << 48) | ((ix + off) << 24) | (iy + off)


def neighbours_from_influence(im: Any) -> np.ndarray:
    """Pairs of beamlets adjacent in the same beam (same BEV row or column).

    Parameters
    ----------
    im : InfluenceMatrix
        Needs ``beam_index``, ``bev_x_mm``, ``bev_y_mm`` (bixel centres at the
        isocentre plane, mm) and ``bixel_mm``.

    Returns
    -------
    ndarray of int64, shape (n_pairs, 2)
        Column indices ``(j, k)`` with ``k`` the right (+x) or upper (+y)
        neighbour of ``j``; each pair once.
    """
    beam, ix, iy = _bixel_index(im)
    keys = _keys(beam, ix, iy)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    pairs = []
    for dx, dy in ((1, 0), (0, 1)):
        want = _keys(beam, ix + dx, iy + dy)
        pos = np.clip(np.searchsorted(sk, want), 0, sk.size - 1)
        hit = sk[pos] == want
        pairs.append(np.stack([np.flatnonzero(hit), order[pos[hit]]], axis=1))
    return np.concatenate(pairs).astype(np.int64).reshape(-1, 2)


def distance_rows(im: Any, structures: Any, targets: str | Sequence[str]) -> np.ndarray:
    """Distance of each matrix row's voxel to the nearest target voxel.

    Parameters
    ----------
    im : InfluenceMatrix
        Needs ``dose_grid`` and ``voxel_indices``.
    structures : StructureSet
        Holds the target(s); masks on any grid (resampled to the dose grid).
    targets : str or sequence of str
        Target structure name(s); the distance is to their union.

    Returns
    -------
    ndarray of float32, shape (n_rows,)
        Euclidean distance in mm (0 inside a target), Grid spacing honoured.
    """
    from scipy import ndimage

    from art.geometry import resample_mask

    names = [targets] if isinstance(targets, str) else list(targets)
    if not names:
        raise InputError("targets: at least one target structure is needed")
    grid = im.dose_grid
    union = np.zeros(grid.shape, bool)
    for name in names:
        try:
            s = structures[name]
        except (KeyError, Exception) as exc:  # StructureSet raises its own error type
            raise InputError(f"targets: no structure {name!r} in the structure set") from exc
        m = s.mask if s.grid.same_as(grid) else resample_mask(s.volume, grid).array
        union |= np.asarray(m, bool)
    if not union.any():
        raise InputError(f"targets {', '.join(names)} are empty on the dose grid")
    dist = ndimage.distance_transform_edt(~union, sampling=grid.spacing)
    return dist.ravel()[np.asarray(im.voxel_indices, dtype=np.int64)].astype(np.float32)


def transfer_weights(reference: Any, weights: np.ndarray, target: Any) -> np.ndarray:
    """Map beamlet weights from one influence matrix's beamlets to another's.

    A daily matrix computed for the same beams selects its beamlets from the
    target of the day, so its columns may differ from the reference plan's.
    Beamlets are matched by (beam, bixel row, bixel column); beamlets of
    ``target`` without a match start at the mean weight of their beam's matched
    beamlets (0 when none matches), so that a changed target outline is
    covered from the start.

    Parameters
    ----------
    reference, target : InfluenceMatrix
        The matrices the weights come from and go to (same ``bixel_mm``).
    weights : ndarray, shape (reference n_beamlets,)
        Weights for ``reference``.

    Returns
    -------
    ndarray of float64, shape (target n_beamlets,)
        Usable as ``warm_start`` of :func:`~art.optimize.fmo.optimize_fluence`.
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    rb, rx, ry = _bixel_index(reference)
    tb, tx, ty = _bixel_index(target)
    if w.size != rb.size:
        raise InputError(f"weights has {w.size} values, the reference matrix {rb.size} beamlets")
    if not np.isclose(float(reference.bixel_mm), float(target.bixel_mm)):
        raise InputError(f"bixel sizes differ ({reference.bixel_mm} mm vs {target.bixel_mm} mm)")
    rk = _keys(rb, rx, ry)
    order = np.argsort(rk, kind="stable")
    sk = rk[order]
    tk = _keys(tb, tx, ty)
    pos = np.clip(np.searchsorted(sk, tk), 0, max(sk.size - 1, 0))
    hit = sk[pos] == tk if sk.size else np.zeros(tk.size, bool)
    out = np.zeros(tk.size)
    out[hit] = w[order[pos[hit]]]
    for b in np.unique(tb[~hit]):
        sel = (tb == b) & hit
        fill = float(out[sel].mean()) if sel.any() else 0.0
        out[(tb == b) & ~hit] = fill
    return np.maximum(out, 0.0)
