"""The optimiser's threaded sparse products are bit-identical to SciPy's single-threaded ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from art.optimize.products import MIN_NNZ, SparseProducts


@pytest.mark.parametrize("shape, density", [((40_000, 900), 0.02), ((3_000, 7), 0.5), ((25_000, 1_300), 0.01)])
def test_threaded_products_are_bit_identical(shape, density):
    rng = np.random.default_rng(7)
    b = sparse.random(*shape, density=density, format="csr", random_state=rng, dtype=np.float64)
    b.data *= rng.lognormal(0.0, 3.0, b.nnz)  # wide dynamic range: any change of summation order would show
    p = SparseProducts(b, threads=2)
    assert p.threaded == (b.nnz >= MIN_NNZ)
    for _ in range(3):
        x = rng.lognormal(0.0, 2.0, shape[1]) * rng.choice([-1.0, 1.0], shape[1])
        g = rng.standard_normal(shape[0]) * 1e3
        assert np.array_equal(p.dot(x), b @ x)
        assert np.array_equal(p.tdot(g), b.T @ g)


def test_one_thread_and_small_matrices_are_not_split():
    b = sparse.random(100, 20, density=0.3, format="csr", random_state=1)
    assert not SparseProducts(b).threaded
    big = sparse.random(50_000, 100, density=0.1, format="csr", random_state=1)
    assert not SparseProducts(big, threads=1).threaded
    assert SparseProducts(big, threads=2).threaded
