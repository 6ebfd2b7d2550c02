"""art.threads: the job's thread budget (ART_JOB_THREADS, else the CPUs) and parallel() in order on it."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
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


def test_lower_this_threads_priority_changes_only_the_calling_thread():
    """On Linux the calling thread gets nice 19 and the others keep theirs; elsewhere nothing changes."""
    import sys
    import threading

    from art.threads import lower_this_threads_priority

    def nice_of(tid: int) -> int:
        return os.getpriority(os.PRIO_PROCESS, tid)

    main = threading.get_native_id()
    before = nice_of(main)
    seen: dict = {}

    def work() -> None:
        seen["lowered"] = lower_this_threads_priority()
        seen["nice"] = nice_of(threading.get_native_id())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert nice_of(main) == before
    if sys.platform.startswith("linux"):
        assert seen["lowered"] is True and seen["nice"] == 19
    else:
        assert seen["lowered"] is False


def test_in_background_runs_on_its_own_named_thread_and_gives_result_or_error():
    from art.threads import in_background

    seen = {}

    def work(x):
        seen["thread"] = threading.current_thread().name
        return 2 * x

    assert in_background(work, 21, name="art-test").result() == 42
    assert seen["thread"].startswith("art-test") and seen["thread"] != threading.current_thread().name

    def fail():
        raise ValueError("the work failed")

    future = in_background(fail, name="art-test")
    assert isinstance(future.exception(), ValueError)
    with pytest.raises(ValueError, match="the work failed"):
        future.result()
