"""Keep BLAS single-threaded while the dose engine runs its own worker threads.

The influence-matrix build parallelises over beams with Python threads; the small
matrix products inside each beam then must not start BLAS threads of their own: on
a loaded 2-core machine OpenBLAS threads spinning next to the workers made the build
~2.7× more CPU-expensive (measured: 37 s vs 14 s of CPU for the demo patient).

:func:`single_threaded_blas` uses ``threadpoolctl`` when it is installed and
otherwise calls OpenBLAS's own ``set_num_threads`` through ``ctypes`` on the
library NumPy links (NumPy's wheels bundle ``scipy_openblas``); if neither works it
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
_saved: int | None = None

_SET = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_", "openblas_get_num_threads")


@functools.lru_cache(maxsize=1)
def _openblas():
    """(get, set) ctypes functions of NumPy's OpenBLAS, or None."""
    try:
        import numpy as np

        libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
        for path in sorted(glob.glob(os.path.join(libdir, "*openblas*.so*"))):
            lib = ctypes.CDLL(path)
            get = next((getattr(lib, n) for n in _GET if hasattr(lib, n)), None)
            put = next((getattr(lib, n) for n in _SET if hasattr(lib, n)), None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                get.argtypes = []
                put.restype = None
                put.argtypes = [ctypes.c_int]
                return get, put
    except (OSError, AttributeError):
        pass
    return None


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
    fns = _openblas()
    if fns is None:
        yield
        return
    get, put = fns
    with _lock:
        if _depth == 0:
            _saved = int(get())
            put(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                put(_saved)
                _saved = None
