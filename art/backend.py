"""Array backend: NumPy always, CuPy when installed and a GPU is present.

``ART_BACKEND=numpy`` or ``ART_BACKEND=cupy`` forces the choice; forcing CuPy
on a machine without it raises :class:`~art.errors.BackendError`.

Backend-neutral code takes its namespace from its inputs with
:func:`array_namespace`, so one function serves NumPy, CuPy and
``array_api_strict`` (used in tests to catch calls CuPy would not accept).
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import numpy as np

from art.errors import BackendError

BACKENDS = ("numpy", "cupy")


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, missing driver ...
        return False


def backend_name() -> str:
    """The backend in force: ``ART_BACKEND`` if set, else ``"cupy"`` when a GPU is usable, else ``"numpy"``."""
    forced = os.environ.get("ART_BACKEND", "").strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise BackendError(f"ART_BACKEND must be one of {', '.join(BACKENDS)}, got {forced!r}")
        if forced == "cupy" and not gpu_available():
            raise BackendError("ART_BACKEND=cupy but CuPy is not installed or no CUDA GPU is visible (pip install 'art-radiotherapy[gpu]')")
        return forced
    return "cupy" if gpu_available() else "numpy"


def get_namespace(name: str | None = None) -> ModuleType:
    """The array module for ``name`` (default: :func:`backend_name`)."""
    name = name or backend_name()
    if name == "numpy":
        return np
    if name == "cupy":
        if not gpu_available():
            raise BackendError("the CuPy backend needs CuPy and a CUDA GPU")
        import cupy

        return cupy
    raise BackendError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def array_namespace(*arrays: Any) -> ModuleType:
    """The array namespace of the given arrays (NumPy, CuPy or any array-API namespace).

    Mixed namespaces are an error; Python scalars and ``None`` are ignored.
    """
    spaces = []
    for a in arrays:
        if a is None or isinstance(a, (int, float, complex, bool)):
            continue
        if isinstance(a, np.ndarray) or np.isscalar(a):
            ns = np
        elif hasattr(a, "__array_namespace__"):
            ns = a.__array_namespace__()
        elif type(a).__module__.startswith("cupy"):
            import cupy

            ns = cupy
        else:
            ns = np
        # NumPy >= 2 returns the numpy module itself from __array_namespace__
        if ns not in spaces:
            spaces.append(ns)
    if not spaces:
        return np
    if len(spaces) > 1:
        raise BackendError(f"arrays from different backends mixed: {[s.__name__ for s in spaces]}")
    return spaces[0]


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy copy/view of any backend array (CuPy arrays are copied to the host)."""
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def to_backend(a: Any, xp: ModuleType) -> Any:
    """Move a NumPy array to the namespace ``xp``."""
    if xp is np:
        return to_numpy(a)
    return xp.asarray(a)
