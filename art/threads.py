"""How many threads a job uses, and ``[fn(x) for x in items]`` on them.

NumPy's large array operations, SciPy's ``ndimage`` and sparse products release the GIL, so
independent pieces of work (beams, structures, classes, halves of a point set) run side by side
on Python threads. The budget is one per job: ``ART_JOB_THREADS`` when set (``art serve`` and
``art batch`` set it for each re-plan of a worker, :mod:`art.node.engine`), else the CPUs this
process may run on, at most :data:`MAX_THREADS`. Each caller splits its work so that every result
is the same whatever the number of threads.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

#: Most threads used.
MAX_THREADS = 8


def threads() -> int:
    """Threads to use: ``ART_JOB_THREADS`` when set, else the CPUs this process may run on (≤ ``MAX_THREADS``)."""
    value = os.environ.get("ART_JOB_THREADS", "")
    try:
        n = int(value) if value else len(os.sched_getaffinity(0))
    except (ValueError, AttributeError):
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_THREADS))


def parallel(fn: Callable[[Any], Any], items: Iterable[Any], *, most: int | None = None) -> list[Any]:
    """``[fn(item) for item in items]``, in order, on :func:`threads` threads (at most ``most``)."""
    items = list(items)
    n = min(threads(), len(items), most if most is not None else len(items))
    if n <= 1:
        return [fn(it) for it in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="art") as pool:
        return list(pool.map(fn, items))


def in_background(fn: Callable[..., Any], *args: Any, name: str) -> Any:
    """Start ``fn(*args)`` on a new thread named ``name`` and return its
    :class:`concurrent.futures.Future`: ``result()`` waits and gives what ``fn`` returned or raises
    what it raised. The one way art runs work beside a job's stages (the demo's daily CBCT, the
    report's PDF, the DVH prefetch, the warm-up)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)  # the thread ends with the work


def lower_this_threads_priority(nice: int = 19) -> bool:
    """Give the calling thread the scheduling priority ``nice`` (Linux: a thread's id is a task
    the kernel schedules on its own), so that it takes only CPU time the process's other threads
    leave idle: background work beside a job (``art demo``'s daily CBCT while the reference plan
    is made). Threads it starts inherit it. Returns False, changing nothing, on other systems or
    when the kernel refuses; the work then runs at the usual priority, only slower beside the job.
    """
    import sys
    import threading

    if not sys.platform.startswith("linux"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), int(nice))
    except OSError:
        return False
    return True
