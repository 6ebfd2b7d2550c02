"""CCC cone directions: the 98 lattice vectors and their kernel weights."""

import math

import numpy as np
import pytest

from art.dose.ccc.directions import cone_weights, lattice_vectors, physical_vectors, transport_vectors
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


def test_transport_vectors_add_fine_forward_directions_near_each_beam():
    base = lattice_vectors(3)
    v = transport_vectors([(0.0, 1.0, 0.0)], (2.5, 2.5, 2.5), np.eye(3), reach=3, fine_reach=5, fine_angle_deg=12.0)
    np.testing.assert_array_equal(v[: len(base)], base)
    extra = {tuple(e) for e in v[len(base) :].tolist()}
    assert extra == {(1, 5, 0), (-1, 5, 0), (0, 5, 1), (0, 5, -1)}  # (dk, dj, di): 11.3° from +y, forward only
    oblique = np.array([np.sin(0.9), np.cos(0.9), 0.0])
    w = transport_vectors([oblique, (0.0, 1.0, 0.0)], (2.5, 2.5, 2.5), np.eye(3), reach=3, fine_reach=5, fine_angle_deg=12.0)
    u = physical_vectors((2.5, 2.5, 2.5), np.eye(3), vectors=w[len(base) :])
    cos = (u / np.linalg.norm(u, axis=1, keepdims=True)) @ np.stack([oblique, (0.0, 1.0, 0.0)]).T
    assert len(w) > len(v) and np.all(cos.max(axis=1) >= np.cos(np.deg2rad(12.0)))
    assert len({tuple(e) for e in w.tolist()}) == len(w)  # no direction twice
    np.testing.assert_array_equal(transport_vectors([oblique], (2.5,) * 3, np.eye(3), reach=3, fine_reach=0), base)


def test_cone_weights_with_fine_vectors_conserve_energy_and_narrow_the_forward_cone():
    k = poly_kernel(*reference_spectrum())
    base = lattice_vectors(3)
    v = transport_vectors([(0.0, 1.0, 0.0)], (2.5, 2.5, 2.5), np.eye(3), reach=3, fine_reach=5, fine_angle_deg=12.0)
    coarse = cone_weights(k, [0.0, 1.0, 0.0], (2.5, 2.5, 2.5), np.eye(3), 3)
    fine = cone_weights(k, [0.0, 1.0, 0.0], (2.5, 2.5, 2.5), np.eye(3), vectors=v)
    np.testing.assert_allclose(fine.sum(axis=0), k.amplitudes.sum(axis=0), rtol=1e-10, atol=1e-14)
    axis = [m for m in range(len(base)) if tuple(base[m]) == (0, 1, 0)][0]
    assert fine[axis].sum() < 0.9 * coarse[axis].sum()  # part of the axis cone's energy moves to the fine cones
    assert fine[len(base) :].sum() > 0.1 * coarse[axis].sum()
