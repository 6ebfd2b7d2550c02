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

from typing import Any

import numpy as np

from art.content_cache import ContentCache, Digest

#: The most bytes of samples kept (a structure's samples are at most ~1e6 pooled bins × 16 bytes).
MAX_BYTES = 256 * 2**20

_cache = ContentCache(MAX_BYTES)


def sample_key(arr: np.ndarray, grid: Any, contours: tuple[np.ndarray, ...], params: tuple) -> bytes:
    """The key of the samples of ``contours`` (LPS mm) in the dose ``arr`` (z, y, x, Gy) on ``grid`` with ``params``."""
    h = Digest(repr(params), grid, np.asarray(arr))
    for c in contours:
        h.add(np.asarray(c, dtype=np.float64))
    return h.digest()


def get(key: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Copies of the cached ``(doses, volumes)`` for ``key``, or None."""
    hit = _cache.get(key)
    return None if hit is None else (hit[0].copy(), hit[1].copy())


def put(key: bytes, doses: np.ndarray, volumes: np.ndarray) -> None:
    """Keep copies of ``(doses, volumes)`` under ``key``, dropping the least recently used beyond :data:`MAX_BYTES`."""
    _cache.max_bytes = MAX_BYTES
    _cache.put(key, doses, volumes)


def clear() -> None:
    """Empty the cache."""
    _cache.clear()


def info() -> dict:
    """``{"entries": n, "bytes": b}``: what the cache holds now."""
    return _cache.info()
