"""The optimiser's two sparse products, ``B @ x`` and ``B.T @ g``, on two threads.

Most of an L-BFGS-B fluence optimisation is these two products (hundreds of each per plan).
SciPy's sparse products run on one core with the GIL released, so two threads each doing half
the work take about half the time. The halves are chosen so that every output element is
computed by exactly the same sequence of floating-point operations as the single-threaded
product: ``B @ x`` is split by **rows** of B (each row's sum is unchanged), ``B.T @ g`` by
**columns** of B (each beamlet's sum over the voxels keeps its order). The results are
therefore bit-identical to ``B @ x`` and ``B.T @ g`` — threading changes nothing but the time.
The column split costs a second copy of B (the optimiser's sampled matrix: tens of MB).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import sparse

from art.threads import threads as job_threads

#: Below this many non-zeros the products stay on one thread (the hand-over costs more than it saves).
MIN_NNZ = 200_000

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _helper() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="art-products")
        return _pool


class SparseProducts:
    """``B @ x`` (:meth:`dot`) and ``B.T @ g`` (:meth:`tdot`) of a CSR matrix, on two threads when it is large.

    Parameters
    ----------
    b : csr_matrix, shape (m, n)
        Sorted indices (as SciPy builds them).
    threads : int, keyword-only
        2 or 1; default 2 when the job may use 2 threads or more (:func:`art.threads.threads`).
    """

    def __init__(self, b: sparse.csr_matrix, *, threads: int | None = None) -> None:
        self.b = b
        self.bt = b.T  # CSC view: the scatter product is faster than a CSR transpose here
        if threads is None:
            threads = min(2, job_threads())
        self.threaded = threads >= 2 and b.nnz >= MIN_NNZ and min(b.shape) >= 2
        if not self.threaded:
            return
        b.sort_indices()
        self.row_cut = int(np.clip(np.searchsorted(b.indptr, b.nnz / 2.0), 1, b.shape[0] - 1))
        counts = np.cumsum(np.bincount(b.indices, minlength=b.shape[1]))
        self.col_cut = int(np.clip(np.searchsorted(counts, b.nnz / 2.0), 1, b.shape[1] - 1))
        self.rows = (b[: self.row_cut], b[self.row_cut :])
        self.cols_t = (b[:, : self.col_cut].T, b[:, self.col_cut :].T)

    def dot(self, x: np.ndarray) -> np.ndarray:
        """``B @ x``, shape (m,)."""
        if not self.threaded:
            return self.b @ x
        other = _helper().submit(self.rows[1].__matmul__, x)
        top = self.rows[0] @ x
        return np.concatenate([top, other.result()])

    def tdot(self, g: np.ndarray) -> np.ndarray:
        """``B.T @ g``, shape (n,)."""
        if not self.threaded:
            return self.bt @ g
        other = _helper().submit(self.cols_t[1].__matmul__, g)
        left = self.cols_t[0] @ g
        return np.concatenate([left, other.result()])
