"""Keep BLAS single-threaded while the dose engine runs its own worker threads.

The influence-matrix build parallelises over beams with Python threads; the small
matrix products inside each beam then must not start BLAS threads of their own: on
a loaded 2-core machine OpenBLAS threads spinning next to the workers made the build
~2.7× more CPU-expensive (measured: 37 s vs 14 s of CPU for the demo patient).

:func:`single_threaded_blas` uses ``threadpoolctl`` when it is installed and
otherwise calls OpenBLAS's own ``set_num_threads`` through ``ctypes`` on the
libraries NumPy and SciPy bundle (their wheels each ship a ``scipy_openblas``); if neither works it
does nothing (the results are identical either way, only the speed differs).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os
import threading

_lock = threading.Lock()
_depth = 0
_saved: list[int] | None = None

_SET = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_", "openblas_get_num_threads")


@functools.lru_cache(maxsize=1)
def _openblas() -> tuple:
    """(get, set) ctypes functions of every OpenBLAS NumPy and SciPy bundle (``numpy.libs``,
    ``scipy.libs``: SciPy's sparse, optimise and linear-algebra code calls its own copy), or ()."""
    found = []
    try:
        import numpy as np

        site = os.path.dirname(os.path.dirname(np.__file__))
        for path in sorted(glob.glob(os.path.join(site, "numpy.libs", "*openblas*.so*")) + glob.glob(os.path.join(site, "scipy.libs", "*openblas*.so*"))):
            lib = ctypes.CDLL(path)
            get = next((getattr(lib, n) for n in _GET if hasattr(lib, n)), None)
            put = next((getattr(lib, n) for n in _SET if hasattr(lib, n)), None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                get.argtypes = []
                put.restype = None
                put.argtypes = [ctypes.c_int]
                found.append((get, put))
    except (OSError, AttributeError):
        pass
    return tuple(found)


@contextlib.contextmanager
def single_threaded_blas():
    """Context manager: BLAS limited to one thread inside (re-entrant, thread-safe)."""
    global _depth, _saved
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    libs = _openblas()
    if not libs:
        yield
        return
    with _lock:
        if _depth == 0:
            _saved = [int(get()) for get, _ in libs]
            for _, put in libs:
                put(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                for (_, put), n in zip(libs, _saved):
                    put(n)
                _saved = None
