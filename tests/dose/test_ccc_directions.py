"""CCC cone directions: the 98 lattice vectors and their kernel weights."""

import math

import numpy as np
import pytest

from art.dose.ccc.directions import cone_weights, lattice_vectors, physical_vectors
from art.dose.ccc.kernels import poly_kernel, reference_spectrum


def test_98_primitive_vectors_in_opposite_pairs():
    v = lattice_vectors()
    assert v.shape == (98, 3)
    assert len({tuple(x) for x in v}) == 98
    assert np.abs(v).max() == 2
    assert all(math.gcd(math.gcd(abs(a), abs(b)), abs(c)) == 1 for a, b, c in v)
    np.testing.assert_array_equal(v[0::2], -v[1::2])


def test_physical_vectors_follow_spacing_and_orientation():
    v = lattice_vectors()
    p = physical_vectors((3.0, 2.0, 1.0), np.eye(3))
    np.testing.assert_allclose(p, np.stack([v[:, 2] * 1.0, v[:, 1] * 2.0, v[:, 0] * 3.0], axis=1))
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(physical_vectors((3.0, 2.0, 1.0), rot), p @ rot.T)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cone_weights_sum_to_the_kernel_total_for_any_beam(seed):
    k = poly_kernel(*reference_spectrum())
    rng = np.random.default_rng(seed)
    d = rng.normal(size=3)
    spacing = tuple(rng.uniform(1.0, 4.0, size=3))
    c = cone_weights(k, d, spacing, np.eye(3))
    assert c.shape == (98, k.a_per_mm.size)
    assert np.all(c >= 0)
    np.testing.assert_allclose(c.sum(axis=0), k.amplitudes.sum(axis=0), rtol=1e-10, atol=1e-14)


def test_forward_energy_goes_along_the_beam():
    k = poly_kernel(*reference_spectrum())
    v = lattice_vectors()
    c = cone_weights(k, [0.0, 1.0, 0.0], (2.5, 2.5, 2.5), np.eye(3)).sum(axis=1)
    assert tuple(v[np.argmax(c)]) == (0, 1, 0)  # (dk, dj, di): +y
    back = [m for m in range(98) if tuple(v[m]) == (0, -1, 0)][0]
    assert c[back] < 0.05 * c.max()
