"""art.threads: the job's thread budget (ART_JOB_THREADS, else the CPUs) and parallel() in order on it."""

from __future__ import annotations

import threading

import numpy as np
from scipy import sparse

from art.optimize.products import SparseProducts
from art.threads import MAX_THREADS, parallel, threads


def test_the_budget_is_art_job_threads_when_set_and_bounded(monkeypatch):
    monkeypatch.setenv("ART_JOB_THREADS", "3")
    assert threads() == 3
    monkeypatch.setenv("ART_JOB_THREADS", "1000")
    assert threads() == MAX_THREADS
    monkeypatch.delenv("ART_JOB_THREADS")
    assert 1 <= threads() <= MAX_THREADS


def test_parallel_keeps_the_order_and_stays_within_the_budget(monkeypatch):
    names: set[str] = set()

    def square(x: int) -> int:
        names.add(threading.current_thread().name)
        return x * x

    monkeypatch.setenv("ART_JOB_THREADS", "4")
    assert parallel(square, range(50), most=2) == [x * x for x in range(50)]
    assert len(names) <= 2
    names.clear()
    monkeypatch.setenv("ART_JOB_THREADS", "1")
    assert parallel(square, range(10)) == [x * x for x in range(10)]
    assert names == {threading.current_thread().name}  # one thread: the caller's own


def test_a_one_thread_job_keeps_the_optimiser_products_on_one_thread(monkeypatch):
    b = sparse.random(50_000, 100, density=0.1, format="csr", random_state=1)
    monkeypatch.setenv("ART_JOB_THREADS", "1")
    assert not SparseProducts(b).threaded
    monkeypatch.setenv("ART_JOB_THREADS", "2")
    p = SparseProducts(b)
    assert p.threaded
    x = np.random.default_rng(0).random(100)
    assert np.array_equal(p.dot(x), b @ x)
