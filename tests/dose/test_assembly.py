"""Matrix assembly helpers and the BLAS thread limit used by the influence-matrix build."""

import numpy as np
import pytest
import scipy.sparse as sp

from art.blas import _openblas, single_threaded_blas
from art.dose.influence import _hstack_csr
from art.dose.influence_beam import _assemble_csr


def _random_blocks(rng, n_rows=300, widths=(7, 1, 12, 5)):
    mats = []
    for w in widths:
        m = sp.random(n_rows, w, density=0.3, format="csr", dtype=np.float32, random_state=rng)
        m.sort_indices()
        mats.append(m)
    return mats


def test_hstack_csr_equals_scipy_hstack():
    rng = np.random.default_rng(3)
    mats = _random_blocks(rng)
    got = _hstack_csr(mats)
    ref = sp.hstack(mats, format="csr")
    ref.sort_indices()
    assert got.shape == ref.shape and got.has_sorted_indices
    np.testing.assert_array_equal(got.indptr, ref.indptr)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.data, ref.data)
    # the sorted flag is true: re-sorting changes nothing
    chk = got.copy()
    chk.has_sorted_indices = False
    chk.sort_indices()
    np.testing.assert_array_equal(chk.indices, got.indices)


def test_assemble_csr_from_unsorted_pieces():
    rng = np.random.default_rng(4)
    dense = (rng.random((50, 9)) < 0.4) * rng.random((50, 9))
    r, c = np.nonzero(dense)
    perm = rng.permutation(r.size)
    pieces = np.array_split(perm, 5)
    m = _assemble_csr([r[p].astype(np.int32) for p in pieces], [c[p].astype(np.int32) for p in pieces], [dense[r[p], c[p]].astype(np.float32) for p in pieces], dense.shape)
    assert m.has_sorted_indices
    np.testing.assert_allclose(m.toarray(), dense.astype(np.float32))


def test_single_threaded_blas_restores_and_keeps_results():
    rng = np.random.default_rng(5)
    a = rng.random((300, 200), dtype=np.float32)
    b = rng.random((200, 100), dtype=np.float32)
    ref = a @ b
    libs = _openblas()  # NumPy's and SciPy's OpenBLAS
    before = [get() for get, _ in libs]
    with single_threaded_blas():
        assert all(get() == 1 for get, _ in libs)
        with single_threaded_blas():  # re-entrant
            np.testing.assert_allclose(a @ b, ref, rtol=1e-5)
        assert all(get() == 1 for get, _ in libs)
    assert [get() for get, _ in libs] == before


def test_single_threaded_blas_reaches_scipys_own_openblas():
    """SciPy bundles its own OpenBLAS (scipy.libs): its threads spin next to art's worker threads unless limited too."""
    import glob
    import os

    import scipy

    site = os.path.dirname(os.path.dirname(scipy.__file__))
    if not glob.glob(os.path.join(site, "scipy.libs", "*openblas*.so*")):
        pytest.skip("this SciPy does not bundle an OpenBLAS of its own")
    assert len(_openblas()) >= 2
