"""CCC transport: energy conservation, the recurrence against a brute-force line sum, threads, CuPy."""

import numpy as np
import pytest

from art.backend import gpu_available
from art.dose.ccc.directions import lattice_vectors, physical_vectors
from art.dose.ccc.transport import transport


def _setup(shape, spacing=(2.0, 2.0, 2.0)):
    v = lattice_vectors()
    lengths = np.linalg.norm(physical_vectors(spacing, np.eye(3)), axis=1)
    return v, lengths


def test_homogeneous_medium_dose_is_terma_times_cone_weights():
    """Uniform release in a medium much larger than the exponents' ranges: dose = T Σc in the middle."""
    n = 40
    v, lengths = _setup((n, n, n))
    rho = np.ones((n, n, n), np.float32)
    terma = np.full((2, n, n, n), 1.5, np.float32)
    a = np.array([1.0, 0.5, 0.25])
    w = np.random.default_rng(0).random((98, 2, 3)).astype(np.float32)
    d = transport(terma, rho, w, a, v, lengths)
    assert d[n // 2, n // 2, n // 2] == pytest.approx(1.5 * float(w.sum()), rel=1e-4)
    assert d[0, 0, 0] < 0.8 * d[n // 2, n // 2, n // 2]  # a corner misses the flux from outside


def _brute_force(terma, rho, w, a, vectors, lengths):
    """Σ over each voxel's line: its own release q(1 - g) plus every upstream voxel's escaping
    energy attenuated through the voxels between, deposited with a g."""
    nz, ny, nx = rho.shape
    out = np.zeros(rho.shape)
    q_all = np.einsum("mbj,bzyx->mjzyx", w.astype(np.float64), terma.astype(np.float64))
    for m, v in enumerate(vectors):
        x = a[:, None, None, None] * rho[None].astype(np.float64) * lengths[m]
        g = -np.expm1(-x) / x
        for z in range(nz):
            for y in range(ny):
                for xx in range(nx):
                    q = q_all[m, :, z, y, xx]
                    dose = np.sum(q * (1 - g[:, z, y, xx]))
                    att = np.ones_like(a)
                    p = np.array([z, y, xx]) - v
                    while np.all(p >= 0) and np.all(p < np.array(rho.shape)):
                        qs = q_all[m, :, p[0], p[1], p[2]]
                        xs = x[:, p[0], p[1], p[2]]
                        dose += np.sum(qs * -np.expm1(-xs) * att * g[:, z, y, xx])
                        att = att * np.exp(-xs)
                        p = p - v
                    out[z, y, xx] += dose
    return out


def test_recurrence_equals_brute_force_line_sum():
    rng = np.random.default_rng(1)
    shape = (6, 7, 8)
    v, lengths = _setup(shape, spacing=(3.0, 2.0, 2.5))
    lengths = np.linalg.norm(physical_vectors((3.0, 2.0, 2.5), np.eye(3)), axis=1)
    pick = [m for m, vec in enumerate(v) if tuple(vec) in {(0, 0, 1), (0, 0, -1), (1, 2, 0), (-1, -2, 0), (2, -1, 1), (0, 1, -2), (1, 1, 1)}]
    rho = rng.uniform(0.2, 1.8, shape).astype(np.float32)
    terma = rng.uniform(0.0, 2.0, (2,) + shape).astype(np.float32)
    a = np.array([0.9, 0.2, 0.03])
    w = rng.random((len(pick), 2, 3)).astype(np.float32)
    got = transport(terma, rho, w, a, v[pick], lengths[pick], entry=False)  # the plain recurrence
    want = _brute_force(terma, rho, w, a, v[pick], lengths[pick])
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5 * want.max())


def test_two_workers_give_the_same_dose():
    rng = np.random.default_rng(2)
    shape = (12, 10, 14)
    v, lengths = _setup(shape)
    rho = rng.uniform(0.2, 1.5, shape).astype(np.float32)
    terma = rng.uniform(0.0, 1.0, (1,) + shape).astype(np.float32)
    w = rng.random((98, 1, 2)).astype(np.float32)
    a = np.array([0.5, 0.05])
    one = transport(terma, rho, w, a, v, lengths, workers=1)
    two = transport(terma, rho, w, a, v, lengths, workers=2)
    np.testing.assert_allclose(one, two, rtol=1e-5)


@pytest.mark.gpu
def test_cupy_equals_numpy():
    if not gpu_available():
        pytest.skip("needs CuPy and a CUDA GPU")
    import cupy

    rng = np.random.default_rng(3)
    shape = (30, 26, 28)
    v, lengths = _setup(shape)
    rho = rng.uniform(0.2, 1.5, shape).astype(np.float32)
    terma = rng.uniform(0.0, 1.0, (3,) + shape).astype(np.float32)
    w = rng.random((98, 3, 5)).astype(np.float32)
    a = 1.0 / np.array([1.0, 4.0, 15.0, 60.0, 250.0])
    ref = transport(terma, rho, w, a, v, lengths)
    got = transport(cupy.asarray(terma), cupy.asarray(rho), w, a, v, lengths)
    np.testing.assert_allclose(cupy.asnumpy(got), ref, rtol=1e-4, atol=1e-6 * float(ref.max()))


def test_lockstep_sweep_of_equal_lengths_and_slices_without_release_equal_brute_force():
    """Directions of one length and sign are swept together (one product per slice for all of
    them), steps 1 and 2 mixed; slices without any release skip the product: still the line sums."""
    rng = np.random.default_rng(4)
    shape = (7, 6, 8)
    spacing = (2.0, 2.0, 2.0)
    v = np.array([(1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1), (-1, 1, 0), (2, 1, 0), (2, 0, -1), (1, 2, 0)])
    lengths = np.linalg.norm(physical_vectors(spacing, np.eye(3), vectors=v), axis=1)
    rho = rng.uniform(0.2, 1.8, shape).astype(np.float32)
    terma = rng.uniform(0.0, 2.0, (3,) + shape).astype(np.float32)
    terma[:, :2] = 0.0  # no release in the first slices of the z sweeps ...
    terma[:, :, 4:] = 0.0  # ... nor beyond y = 3 (the y sweeps) ...
    terma[1, :, :, :3] = 0.0  # ... and a source that is 0 where the others are not
    a = np.array([0.9, 0.2, 0.03])
    w = rng.random((len(v), 3, 3)).astype(np.float32)
    got = transport(terma, rho, w, a, v, lengths, workers=2, entry=False)  # the plain recurrence
    want = _brute_force(terma, rho, w, a, v, lengths)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5 * want.max())


@pytest.mark.parametrize("vector", [(3, 1, -2), (-2, 1, 0), (5, 2, 1), (1, 0, 0)])
def test_entry_correction_gives_each_line_the_flux_from_the_surface(vector):
    """Uniform release in a half-space (medium for z ≥ 3 on one side, nothing in front): with the entry
    correction each voxel's dose is the exact one of its segment, q − q e^{−a ℓ0} g(aL), ℓ0 the path
    from the surface to the segment's start (negative where the segment reaches out of the medium),
    whatever the phase of its line; without it the lines of a stride s > 1 start late or early."""
    v = np.array([vector])
    spacing = (2.0, 2.5, 3.0)
    length = float(np.linalg.norm(physical_vectors(spacing, np.eye(3), vectors=v), axis=1)[0])
    shape, z0, a, q = (16, 9, 11), 3, np.array([0.08, 0.01]), 1.3
    rho = np.full(shape, 0.001, np.float32)
    terma = np.zeros((1,) + shape, np.float32)
    if v[0, 0] > 0:
        rho[z0:], terma[0, z0:] = 1.0, q
        depth = np.arange(shape[0]) - (z0 - 0.5)  # index units from the surface, along z
    else:
        rho[: shape[0] - z0], terma[0, : shape[0] - z0] = 1.0, q
        depth = (shape[0] - z0 - 0.5) - np.arange(shape[0])
    w = np.ones((1, 1, a.size), np.float32)
    got = transport(terma, rho, w, a, v, [length])
    plain = transport(terma, rho, w, a, v, [length], entry=False)
    s = abs(int(v[0, 0]))
    ell0 = depth / s * length - length / 2  # mm along the line
    x = a * length
    g = -np.expm1(-x) / x
    want = (q - q * np.exp(-np.outer(ell0, a)) * g).sum(axis=1)  # (nz,) per exponent summed
    # voxels whose line reaches the surface inside the grid (not through a lateral face)
    zz, yy, xx = np.indices(shape)
    back = np.where(depth[zz] > 0, depth[zz] / s, 0.0)
    ok = (depth[zz] > 0) & (yy - v[0, 1] * back >= -0.5) & (yy - v[0, 1] * back <= shape[1] - 0.5) \
        & (xx - v[0, 2] * back >= -0.5) & (xx - v[0, 2] * back <= shape[2] - 0.5)
    assert ok.sum() > 300
    np.testing.assert_allclose(got[ok], want[zz[ok]], rtol=2e-4)
    if s > 1:
        assert np.max(np.abs(plain[ok] - want[zz[ok]])) > 0.01 * q
    else:
        np.testing.assert_allclose(plain[ok], got[ok], rtol=1e-6)
