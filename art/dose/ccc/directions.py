"""Cone directions of the lattice collapsed-cone engine and their kernel weights.

The transport directions are the 98 primitive vectors of {−2..2}³ in grid-index space
(``(dk, dj, di)``, array order): along such a vector every voxel lies on exactly one line,
and consecutive voxels of a line are one vector apart, so no interpolation is needed
("lattice CCC"). Each direction stands for the cone of emission directions closer to it
than to any other (its Voronoi cell on the unit sphere, in physical space, i.e. after the
voxel spacing and the grid's orientation), found by a fine quasi-uniform sampling of the
sphere.

For a beam whose photons travel along the unit vector ``d``, the weight of cone ``m`` and
exponent ``j`` is ``c_mj = ∫_cell(m) κ_j(θ(ω)) dΩ`` with θ the angle between ω and ``d``
(the kernel is not tilted along divergent rays) and κ_j the fitted kernel per steradian. The
samples of each zenith bin are weighted so that the bin's solid angle is integrated
exactly: Σ_m c_mj = Σ_i A_ij, whatever the beam direction (energy conservation).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from art.dose.ccc.kernels import PolyKernel

#: number of quasi-uniform samples of the sphere (the smallest zenith bin, 0–3.75°, gets ~140)
N_SPHERE = 1 << 17


@functools.lru_cache(maxsize=4)
def lattice_vectors(reach: int = 2) -> np.ndarray:
    """The primitive integer vectors of {−reach..reach}³ (gcd of the components 1), in array
    order (dk, dj, di); each ``v`` is followed by ``−v``. ``reach`` 2: 98 vectors, 3: 290."""
    out = []
    seen = set()
    r = range(-reach, reach + 1)
    for k in r:
        for j in r:
            for i in r:
                v = (k, j, i)
                if v == (0, 0, 0) or math.gcd(math.gcd(abs(k), abs(j)), abs(i)) != 1 or v in seen:
                    continue
                w = (-k, -j, -i)
                out += [v, w]
                seen.update((v, w))
    return np.asarray(out, dtype=np.int64)


def physical_vectors(spacing_zyx, direction_matrix, reach: int = 2, *, vectors=None) -> np.ndarray:
    """The lattice vectors (of ``reach``, or ``vectors`` (M, 3) (dk, dj, di)) in LPS mm, (M, 3):
    ``D @ (di dx, dj dy, dk dz)``."""
    v = (lattice_vectors(reach) if vectors is None else np.asarray(vectors)).astype(np.float64)
    dz, dy, dx = (float(s) for s in spacing_zyx)
    xyz = np.stack([v[:, 2] * dx, v[:, 1] * dy, v[:, 0] * dz], axis=1)
    return xyz @ np.asarray(direction_matrix, dtype=np.float64).T


@functools.lru_cache(maxsize=1)
def sphere_samples() -> np.ndarray:
    """A Fibonacci lattice of ``N_SPHERE`` unit vectors, (N, 3) float64."""
    n = N_SPHERE
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    s = np.sqrt(1.0 - z * z)
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)


@functools.lru_cache(maxsize=8)
def _cells(spacing: tuple, direction: tuple, vectors: tuple) -> np.ndarray:
    units = physical_vectors(spacing, np.asarray(direction).reshape(3, 3), vectors=np.asarray(vectors).reshape(-1, 3))
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    samples = sphere_samples()
    out = np.empty(samples.shape[0], np.int64)
    for a in range(0, samples.shape[0], 16384):
        out[a : a + 16384] = np.argmax(samples[a : a + 16384] @ units.T, axis=1)
    return out


def voronoi_cells(spacing_zyx, direction_matrix, reach: int = 2, *, vectors=None) -> np.ndarray:
    """Index of the lattice direction (of ``reach``, or of ``vectors``) nearest to each sphere sample, (N,) int64."""
    spacing = tuple(round(float(s), 9) for s in spacing_zyx)
    direction = tuple(round(float(v), 12) for v in np.asarray(direction_matrix, dtype=np.float64).reshape(-1))
    vec = lattice_vectors(int(reach)) if vectors is None else np.asarray(vectors, dtype=np.int64)
    return _cells(spacing, direction, tuple(int(c) for c in vec.reshape(-1)))


def transport_vectors(beam_directions, spacing_zyx, direction_matrix, *, reach: int = 3, fine_reach: int = 0,
                      fine_angle_deg: float = 0.0) -> np.ndarray:  # fmt: skip
    """The transport directions: the primitive vectors of {−reach..reach}³, plus those of
    {−fine_reach..fine_reach}³ within ``fine_angle_deg`` of a beam's direction (forward only).

    The extra directions narrow the cones around each beam's forward (and backward) axis, where
    the kernel's scatter is concentrated: with the coarse cones alone a small field's forward
    scatter, within ~9° of the axis, travels along the central axis (its PDD falls too slowly).

    Parameters
    ----------
    beam_directions : (B, 3)
        LPS unit directions of the beams' photons.
    spacing_zyx, direction_matrix
        The dose grid's voxel size (mm) and orientation.
    reach, fine_reach : int, keyword-only
    fine_angle_deg : float, keyword-only
        0 (or ``fine_reach`` ≤ ``reach``): the lattice of ``reach`` only.

    Returns
    -------
    (M, 3) int64 (dk, dj, di): first ``lattice_vectors(reach)`` (each ``v`` followed by ``−v``), then the
    forward extra directions (without their opposites).
    """
    base = lattice_vectors(reach)
    if fine_reach <= reach or fine_angle_deg <= 0:
        return base
    fine = lattice_vectors(fine_reach)
    known = {tuple(v) for v in base.tolist()}
    extra = np.array([v for v in fine.tolist() if tuple(v) not in known], dtype=np.int64).reshape(-1, 3)
    u = physical_vectors(spacing_zyx, direction_matrix, vectors=extra)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    d = np.asarray(beam_directions, dtype=np.float64).reshape(-1, 3)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    near = (u @ d.T).max(axis=1) >= np.cos(np.deg2rad(fine_angle_deg))  # forward only: the backscatter is small
    return np.concatenate([base, extra[near]])


def cone_fractions(angle_edges_deg, beam_direction, spacing_zyx, direction_matrix, reach: int = 2, *, vectors=None) -> np.ndarray:
    """Fraction of each kernel zenith bin's solid angle that falls in each cone, for one beam, (M, nbin) float64.

    The zenith bins (``angle_edges_deg``, from 0 = the beam's direction to 180°) are those of the
    kernel tables; each column sums to 1. :func:`cone_weights` is this times the kernel's amplitudes.
    """
    edges = np.asarray(angle_edges_deg, dtype=np.float64)
    d = np.asarray(beam_direction, dtype=np.float64).reshape(3)
    d = d / np.linalg.norm(d)
    theta = np.degrees(np.arccos(np.clip(sphere_samples() @ d, -1.0, 1.0)))
    nbin = edges.size - 1
    zbin = np.clip(np.searchsorted(edges, theta, side="right") - 1, 0, nbin - 1)
    cells = voronoi_cells(spacing_zyx, direction_matrix, reach, vectors=vectors)
    m = (lattice_vectors(reach) if vectors is None else np.asarray(vectors)).shape[0]
    counts = np.bincount(cells * nbin + zbin, minlength=m * nbin).reshape(m, nbin).astype(np.float64)
    per_bin = counts.sum(axis=0)
    if np.any(per_bin == 0):  # cannot happen with N_SPHERE samples; guard against edits
        raise RuntimeError("a zenith bin of the kernel has no sphere sample: raise N_SPHERE")
    return counts / per_bin[None, :]


def cone_weights(kernel: PolyKernel, beam_direction, spacing_zyx, direction_matrix, reach: int = 2, *, vectors=None) -> np.ndarray:
    """Kernel weights ``c_mj`` of the cones for one beam, (M, J) float64.

    Parameters
    ----------
    kernel : PolyKernel
    beam_direction : (3,)
        LPS direction of the beam's photons (source → isocentre).
    spacing_zyx : (3,) mm ; direction_matrix : (3, 3)
        The dose grid's voxel size and orientation.
    reach : int
        The directions are the primitive vectors of {−reach..reach}³ (M = 98 for 2, 290 for 3) …
    vectors : (M, 3) int, keyword-only
        … or these (:func:`transport_vectors`).

    Returns
    -------
    ndarray (M, J)
        Fraction of the energy released at a point that is carried along cone m by
        exponent j; ``c.sum(0) == kernel.amplitudes.sum(0)`` (to rounding).
    """
    frac = cone_fractions(kernel.angle_edges_deg, beam_direction, spacing_zyx, direction_matrix, reach, vectors=vectors)
    return frac @ kernel.amplitudes
