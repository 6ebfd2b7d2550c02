"""art.content_cache: digests that change with any bit of content, an LRU within its byte budget."""

import numpy as np

from art.content_cache import ContentCache, Digest
from art.geometry import Grid


def test_digest_changes_with_values_dtype_shape_and_grid():
    a = np.arange(12, dtype=np.float32)
    g = Grid((1, 3, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    base = Digest(a, g).digest()
    assert Digest(a.copy(), g).digest() == base
    b = a.copy()
    b[5] = np.nextafter(b[5], np.float32(1e9))
    assert Digest(b, g).digest() != base
    assert Digest(a.astype(np.float64), g).digest() != base
    assert Digest(a.reshape(3, 4), g).digest() != base
    assert Digest(a, Grid((1, 3, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.5))).digest() != base


def test_least_recently_used_go_first_and_oversized_values_are_not_kept():
    c = ContentCache(3 * 800)
    for k in (b"a", b"b", b"c"):
        c.put(k, np.zeros(100))  # 800 bytes each
    assert c.get(b"a") is not None  # a is now the most recent
    c.put(b"d", np.zeros(100))
    assert c.get(b"b") is None and c.get(b"a") is not None and c.get(b"d") is not None
    assert c.info() == {"entries": 3, "bytes": 2400}
    c.put(b"big", np.zeros(1000))
    assert c.get(b"big") is None and c.info()["entries"] == 3
    c.clear()
    assert c.info() == {"entries": 0, "bytes": 0}


def test_values_are_copies_and_read_only():
    c = ContentCache(10_000)
    x = np.ones(10)
    c.put(b"k", x)
    x[0] = 5.0
    (kept,) = c.get(b"k")
    assert kept[0] == 1.0 and not kept.flags.writeable
