"""Array backend selection and backend-neutral helpers."""

import numpy as np
import pytest

from art import backend
from art.errors import BackendError


def test_numpy_is_always_available(monkeypatch):
    monkeypatch.setenv("ART_BACKEND", "numpy")
    assert backend.backend_name() == "numpy"
    assert backend.get_namespace() is np


def test_unknown_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("ART_BACKEND", "tpu")
    with pytest.raises(BackendError, match="ART_BACKEND"):
        backend.backend_name()


def test_forcing_cupy_without_gpu_fails_clearly(monkeypatch):
    if backend.gpu_available():
        pytest.skip("a GPU is present")
    monkeypatch.setenv("ART_BACKEND", "cupy")
    with pytest.raises(BackendError, match="CuPy"):
        backend.backend_name()


def test_default_without_gpu_is_numpy(monkeypatch):
    monkeypatch.delenv("ART_BACKEND", raising=False)
    assert backend.backend_name() == ("cupy" if backend.gpu_available() else "numpy")


def test_array_namespace_follows_inputs():
    xps = pytest.importorskip("array_api_strict")
    a = xps.asarray([1.0, 2.0])
    assert backend.array_namespace(a, 3.0, None) is xps
    assert backend.array_namespace(np.zeros(2)) is np
    with pytest.raises(BackendError, match="mixed"):
        backend.array_namespace(a, np.zeros(2))


def test_to_numpy_passthrough_and_conversion():
    a = np.arange(3)
    assert backend.to_numpy(a) is a
    np.testing.assert_array_equal(backend.to_numpy([1, 2]), [1, 2])


@pytest.mark.gpu
def test_cupy_namespace_round_trip():
    if not backend.gpu_available():
        pytest.skip("no CuPy/GPU")
    cp = backend.get_namespace("cupy")
    x = backend.to_backend(np.arange(5.0), cp)
    assert backend.array_namespace(x) is cp
    np.testing.assert_array_equal(backend.to_numpy(x * 2), np.arange(5.0) * 2)
