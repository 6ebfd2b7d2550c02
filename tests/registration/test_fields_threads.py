"""Sampling images and fields with the points split between two threads gives SciPy's single call, to the last bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from art.registration.fields import _map_coordinates


@pytest.mark.parametrize("kw", [dict(order=1, mode="constant", cval=-7.0, prefilter=False), dict(order=1, mode="nearest", prefilter=False)])
def test_threaded_sampling_is_bit_identical(kw):
    rng = np.random.default_rng(0)
    a = rng.random((30, 40, 50)).astype(np.float32)
    c = rng.uniform(-2.0, 52.0, (3, 1_200_001))  # above the threshold: split; points outside too
    np.testing.assert_array_equal(_map_coordinates(a, c, **kw), ndimage.map_coordinates(a, c, **kw))
