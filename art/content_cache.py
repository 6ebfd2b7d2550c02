"""A bounded, thread-safe in-memory cache of NumPy arrays keyed by a digest of their inputs' content.

Used where a costly result depends only on arrays that a later stage passes again unchanged
(:mod:`art.evaluate.sample_cache`: polygon dose samples; :data:`art.dose.engine.DEPTHS`: radiological
depths of a beam). A key is a digest (:class:`Digest`, BLAKE2b, 128 bits) of exactly the inputs
the result depends on, so an input changed by one bit is a different key, never a stale value.
Entries are dropped least recently used beyond the cache's byte budget; values are stored as
read-only copies and returned as such (a caller cannot change what the next caller gets).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np


class Digest:
    """A BLAKE2b digest (16 bytes) built from arrays, grids and small Python values."""

    def __init__(self, *parts: Any):
        self._h = hashlib.blake2b(digest_size=16)
        for p in parts:
            self.add(p)

    def add(self, part: Any) -> "Digest":
        """Add an array (its dtype, shape and bytes), a grid (shape, spacing, origin, direction) or a value (its repr)."""
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            self._h.update(repr((a.dtype.str, a.shape)).encode())
            self._h.update(memoryview(a).cast("B") if a.size else b"")
        elif all(hasattr(part, k) for k in ("shape", "spacing", "origin", "direction")):
            for k in ("shape", "spacing", "origin", "direction"):
                self._h.update(np.asarray(getattr(part, k), dtype=np.float64).tobytes())
        else:
            self._h.update(repr(part).encode())
        return self

    def digest(self) -> bytes:
        return self._h.digest()


class ContentCache:
    """At most ``max_bytes`` of array tuples under content keys, least recently used dropped first.

    Parameters
    ----------
    max_bytes : int
        The budget; a value larger than it is not kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[np.ndarray, ...]] = OrderedDict()
        self._size = 0

    def get(self, key: bytes) -> tuple[np.ndarray, ...] | None:
        """The arrays kept under ``key`` (read-only), or None."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def put(self, key: bytes, *arrays: np.ndarray) -> None:
        """Keep read-only copies of ``arrays`` under ``key``."""
        kept = []
        for a in arrays:
            c = np.array(a, copy=True)
            c.setflags(write=False)
            kept.append(c)
        n = sum(a.nbytes for a in kept)
        if n > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= sum(a.nbytes for a in old)
            self._entries[key] = tuple(kept)
            self._size += n
            while self._size > self.max_bytes:
                _, gone = self._entries.popitem(last=False)
                self._size -= sum(a.nbytes for a in gone)

    def clear(self) -> None:
        """Empty the cache."""
        with self._lock:
            self._entries.clear()
            self._size = 0

    def info(self) -> dict:
        """``{"entries": n, "bytes": b}``: what the cache holds now."""
        with self._lock:
            return {"entries": len(self._entries), "bytes": int(self._size)}
