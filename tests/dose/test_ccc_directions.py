"""CCC cone directions: the 98 lattice vectors and their kernel weights."""

import math

import numpy as np
import pytest

from art.dose.ccc.directions import cone_weights, lattice_vectors, physical_vectors
from art.dose.ccc.kernels import poly_kernel, reference_spectrum


@pytest.mark.parametrize("reach, count", [(2, 98), (3, 290)])
def test_primitive_vectors_in_opposite_pairs(reach, count):
    v = lattice_vectors(reach)
    assert v.shape == (count, 3)
    assert len({tuple(x) for x in v}) == count
    assert np.abs(v).max() == reach
    assert all(math.gcd(math.gcd(abs(a), abs(b)), abs(c)) == 1 for a, b, c in v)
    np.testing.assert_array_equal(v[0::2], -v[1::2])


def test_physical_vectors_follow_spacing_and_orientation():
    v = lattice_vectors()
    p = physical_vectors((3.0, 2.0, 1.0), np.eye(3))
    np.testing.assert_allclose(p, np.stack([v[:, 2] * 1.0, v[:, 1] * 2.0, v[:, 0] * 3.0], axis=1))
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(physical_vectors((3.0, 2.0, 1.0), rot), p @ rot.T)


@pytest.mark.parametrize("seed, reach", [(0, 2), (1, 2), (2, 3)])
def test_cone_weights_sum_to_the_kernel_total_for_any_beam(seed, reach):
    k = poly_kernel(*reference_spectrum())
    rng = np.random.default_rng(seed)
    d = rng.normal(size=3)
    spacing = tuple(rng.uniform(1.0, 4.0, size=3))
    c = cone_weights(k, d, spacing, np.eye(3), reach)
    assert c.shape == (lattice_vectors(reach).shape[0], k.a_per_mm.size)
    np.testing.assert_allclose(c.sum(axis=0), k.amplitudes.sum(axis=0), rtol=1e-10, atol=1e-14)
    # each cone's radial density (signed amplitudes) is non-negative
    r = np.linspace(0.0, 1000.0, 2001)
    assert ((c * k.a_per_mm) @ np.exp(-np.outer(k.a_per_mm, r))).min() >= -1e-12


def test_forward_energy_goes_along_the_beam():
    k = poly_kernel(*reference_spectrum())
    v = lattice_vectors()
    c = cone_weights(k, [0.0, 1.0, 0.0], (2.5, 2.5, 2.5), np.eye(3)).sum(axis=1)
    assert tuple(v[np.argmax(c)]) == (0, 1, 0)  # (dk, dj, di): +y
    back = [m for m in range(98) if tuple(v[m]) == (0, -1, 0)][0]
    assert c[back] < 0.05 * c.max()
