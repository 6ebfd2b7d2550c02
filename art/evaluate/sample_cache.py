"""A bounded in-memory cache of polygon dose samples, keyed by content.

Sampling a structure's polygons in a dose (:func:`art.evaluate.polygons.polygon_samples`) is the
costly part of every goal evaluation and DVH: a plan's goals sample the PTV once per PTV goal, and
its report samples every structure again for the DVH plot. The samples depend only on the dose
(values and grid), the polygons and the sampling parameters, so they are kept here under a digest of
exactly those (BLAKE2b, 128 bits, of the dose array's bytes and grid and of every contour point):
the same dose and polygons give back the same samples, and a dose or polygon changed by one bit is a
different key (never a stale value). The structure's name is not part of the key (it only names the
structure in errors, and errors are never cached).

The cache holds at most :data:`MAX_BYTES` of samples (least recently used entries are dropped) and
returns copies, so a caller changing its arrays cannot change what the next caller gets.
:func:`clear` empties it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

#: The most bytes of samples kept (a structure's samples are at most ~1e6 pooled bins × 16 bytes).
MAX_BYTES = 256 * 2**20

_lock = threading.Lock()
_entries: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_size = [0]


def _update_grid(h: Any, grid: Any) -> None:
    for part in (grid.shape, grid.spacing, grid.origin, grid.direction):
        h.update(np.asarray(part, dtype=np.float64).tobytes())


def sample_key(arr: np.ndarray, grid: Any, contours: tuple[np.ndarray, ...], params: tuple) -> bytes:
    """The key of the samples of ``contours`` (LPS mm) in the dose ``arr`` (z, y, x, Gy) on ``grid`` with ``params``."""
    h = hashlib.blake2b(digest_size=16)
    a = np.ascontiguousarray(arr)
    h.update(str((a.dtype.str, a.shape, params)).encode())
    _update_grid(h, grid)
    h.update(memoryview(a).cast("B"))
    for p in contours:
        c = np.ascontiguousarray(p, dtype=np.float64)
        h.update(np.int64(c.shape[0]).tobytes())
        h.update(c.tobytes())
    return h.digest()


def get(key: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Copies of the cached ``(doses, volumes)`` for ``key``, or None."""
    with _lock:
        hit = _entries.get(key)
        if hit is None:
            return None
        _entries.move_to_end(key)
    return hit[0].copy(), hit[1].copy()


def put(key: bytes, doses: np.ndarray, volumes: np.ndarray) -> None:
    """Keep copies of ``(doses, volumes)`` under ``key``, dropping the least recently used beyond :data:`MAX_BYTES`."""
    d, v = np.array(doses, copy=True), np.array(volumes, copy=True)
    n = d.nbytes + v.nbytes
    if n > MAX_BYTES:
        return
    with _lock:
        old = _entries.pop(key, None)
        if old is not None:
            _size[0] -= old[0].nbytes + old[1].nbytes
        _entries[key] = (d, v)
        _size[0] += n
        while _size[0] > MAX_BYTES:
            _, (od, ov) = _entries.popitem(last=False)
            _size[0] -= od.nbytes + ov.nbytes


def clear() -> None:
    """Empty the cache."""
    with _lock:
        _entries.clear()
        _size[0] = 0


def info() -> dict:
    """``{"entries": n, "bytes": b}``: what the cache holds now."""
    with _lock:
        return {"entries": len(_entries), "bytes": int(_size[0])}
