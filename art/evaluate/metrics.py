"""Dose-volume metrics computed on exact voxel doses (not on a binned DVH).

A structure is described by samples: the dose ``d_i`` (Gy) of each voxel it
touches and the volume ``w_i`` (cc) of the structure inside that voxel
(voxel volume × fractional occupancy). All metrics here are functions of these
samples.

Definitions
-----------
Sort the samples from hottest to coldest (``d_1 >= d_2 >= ...``) and let
``C_i = w_1 + ... + w_i`` be the cumulative volume. Each sample stands for the
volume between ``C_i - w_i`` and ``C_i``; we place its dose at the middle,
``m_i = C_i - w_i / 2``.

``D(v)``, the dose to the hottest ``v`` cc
    Linear interpolation of the points ``(m_i, d_i)`` at ``v``, held constant
    beyond the ends: ``D(v) = d_1`` (maximum voxel dose) for ``v <= m_1`` and
    ``D(v) = d_n`` (minimum) for ``v >= m_n``. For a dose that varies linearly
    across equal voxels this is the exact continuous value (e.g. ``D50%`` is the
    middle dose); for a uniform dose it is that dose. ``D0%`` is the maximum
    voxel dose and ``D100%`` the minimum.
``D<x>%``
    ``D(x / 100 * V)`` with ``V`` the total volume.
``D<x>cc``
    ``D(x)``; undefined (an :class:`~art.errors.InputError`) when ``x`` exceeds
    the structure's volume.
``Dmax``
    ``D(0.03 cc)``; for a structure smaller than 0.03 cc, the maximum voxel dose.
``Dmin``
    The same from the cold end: the dose to the coldest 0.03 cc, which equals
    ``D(V - 0.03 cc)``; for a structure smaller than 0.03 cc, the minimum voxel
    dose.
``Dmean``
    ``sum(w_i d_i) / sum(w_i)``.
``V<x>Gy``
    The volume of the samples with ``d_i >= x`` (no interpolation), in percent
    of ``V`` or in cc. So ``V`` and ``D`` agree to within one voxel's volume.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from art.backend import to_numpy
from art.errors import InputError
from art.protocol import NEAR_POINT_CC, Metric, format_number, parse_metric

__all__ = [
    "prepare_samples",
    "dose_to_volume",
    "dose_to_percent",
    "volume_at_dose",
    "mean_dose",
    "near_max_dose",
    "near_min_dose",
    "evaluate_metric",
]

_REL_TOL = 1e-9


def prepare_samples(doses: Any, volumes_cc: Any, *, name: str = "structure") -> tuple[np.ndarray, np.ndarray]:
    """Validate samples and sort them hottest first.

    Parameters
    ----------
    doses : array_like, shape (n,)
        Dose of each sample, Gy (any backend; copied to NumPy float64).
    volumes_cc : array_like, shape (n,) or scalar
        Volume of each sample, cc (a scalar means equal voxels); zero-volume
        samples are dropped.
    name : str, keyword-only
        Structure name for messages.

    Returns
    -------
    doses, volumes : ndarrays of float64, shape (m,)
        Sorted by decreasing dose (stable), only positive volumes.

    Raises
    ------
    InputError
        When the structure is empty (no positive volume), or inputs are not
        finite, negative volumes or mismatched shapes.
    """
    d = np.asarray(to_numpy(doses), dtype=np.float64).reshape(-1)
    w = np.asarray(to_numpy(volumes_cc), dtype=np.float64)
    w = np.broadcast_to(w, d.shape).reshape(-1) if w.ndim == 0 else w.reshape(-1)
    if w.shape != d.shape:
        raise InputError(f"structure {name!r}: {d.size} doses but {w.size} volumes")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise InputError(f"structure {name!r}: voxel volumes must be finite and non-negative")
    keep = w > 0
    d, w = d[keep], w[keep]
    if d.size == 0:
        raise InputError(f"structure {name!r} is empty: no dose-volume metric can be computed")
    if not np.all(np.isfinite(d)):
        raise InputError(f"structure {name!r}: the dose is not finite in {int(np.count_nonzero(~np.isfinite(d)))} voxel(s)")
    order = np.argsort(-d, kind="stable")
    return d[order], w[order]


def _interp_hot(d: np.ndarray, w: np.ndarray, v: float) -> float:
    # work in units of the largest sample volume: equal voxels give exact integer sums
    scale = float(w.max())
    u = w / scale
    mid = np.cumsum(u) - 0.5 * u
    return float(np.interp(v / scale, mid, d))


def dose_to_volume(doses: np.ndarray, volumes_cc: np.ndarray, volume_cc: float, *, name: str = "structure") -> float:
    """``D(v)``: the minimum dose to the hottest ``volume_cc`` (see module notes), Gy.

    Parameters
    ----------
    doses, volumes_cc : ndarray, shape (n,)
        Samples from :func:`prepare_samples` (hottest first).
    volume_cc : float
        ``v`` in cc, ``0 <= v <= total volume``.

    Raises
    ------
    InputError
        When ``volume_cc`` exceeds the structure's volume.
    """
    total = float(volumes_cc.sum())
    if volume_cc < 0:
        raise InputError(f"structure {name!r}: volume must be non-negative, got {volume_cc}")
    if volume_cc > total * (1 + _REL_TOL):
        raise InputError(
            f"structure {name!r} ({format_number(round(total, 4))} cc) is smaller than the "
            f"{format_number(volume_cc)} cc the metric asks for"
        )
    return _interp_hot(doses, volumes_cc, volume_cc)


def dose_to_percent(doses: np.ndarray, volumes_cc: np.ndarray, percent: float) -> float:
    """``D<x>%``: the minimum dose to the hottest ``percent`` of the volume, Gy (0 <= percent <= 100)."""
    if not 0 <= percent <= 100:
        raise InputError(f"percent must lie in 0–100, got {percent}")
    scale = float(volumes_cc.max())
    total_units = float((volumes_cc / scale).sum())
    return _interp_hot(doses, volumes_cc, percent / 100.0 * total_units * scale)


def volume_at_dose(doses: np.ndarray, volumes_cc: np.ndarray, dose_gy: float, *, unit: str = "%") -> float:
    """``V<x>Gy``: volume of the samples receiving at least ``dose_gy``, in % (default) or cc."""
    if unit not in ("%", "cc"):
        raise InputError(f"unit must be '%' or 'cc', got {unit!r}")
    v = float(volumes_cc[doses >= dose_gy].sum())
    if unit == "cc":
        return v
    return 100.0 * v / float(volumes_cc.sum())


def mean_dose(doses: np.ndarray, volumes_cc: np.ndarray) -> float:
    """Volume-weighted mean dose, Gy."""
    return float(np.dot(doses, volumes_cc) / volumes_cc.sum())


def near_max_dose(doses: np.ndarray, volumes_cc: np.ndarray) -> float:
    """``Dmax`` = ``D0.03cc``; the maximum voxel dose for a structure under 0.03 cc. Gy."""
    if float(volumes_cc.sum()) < NEAR_POINT_CC:
        return float(doses[0])
    return _interp_hot(doses, volumes_cc, NEAR_POINT_CC)


def near_min_dose(doses: np.ndarray, volumes_cc: np.ndarray) -> float:
    """``Dmin``: the dose to the coldest 0.03 cc; the minimum voxel dose under 0.03 cc. Gy."""
    if float(volumes_cc.sum()) < NEAR_POINT_CC:
        return float(doses[-1])
    return _interp_hot(doses[::-1], volumes_cc[::-1], NEAR_POINT_CC)


def evaluate_metric(metric: Metric | str, doses: np.ndarray, volumes_cc: np.ndarray, *, name: str = "structure") -> float:
    """The value of ``metric`` for samples sorted hottest first.

    Parameters
    ----------
    metric : Metric or str
        E.g. ``"D95%"``.
    doses, volumes_cc : ndarray, shape (n,)
        From :func:`prepare_samples`.
    name : str, keyword-only
        Structure name for messages.

    Returns
    -------
    float
        In ``metric.output_unit`` (Gy, % or cc).
    """
    m = parse_metric(metric) if isinstance(metric, str) else metric
    if m.kind == "mean":
        return mean_dose(doses, volumes_cc)
    if m.kind == "max":
        return near_max_dose(doses, volumes_cc)
    if m.kind == "min":
        return near_min_dose(doses, volumes_cc)
    assert m.parameter is not None
    if m.kind == "D" and m.unit == "%":
        return dose_to_percent(doses, volumes_cc, m.parameter)
    if m.kind == "D" and m.unit == "cc":
        return dose_to_volume(doses, volumes_cc, m.parameter, name=name)
    if m.kind == "V":
        return volume_at_dose(doses, volumes_cc, m.parameter, unit=m.output_unit)
    raise InputError(f"unsupported metric {m!r}")
