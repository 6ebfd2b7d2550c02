"""Collapsed-cone transport on the lattice lines: the engine's heavy loop (NumPy or CuPy).

For each lattice direction ``v`` (see :mod:`art.dose.ccc.directions`) the voxels form lines
``p, p + v, p + 2v, …``; each voxel stands for a segment of length ``L = |v|`` (mm) of its
line. With ``q = Σ_b c_vbj T_b`` the energy (per unit mass, Gy) released in the voxel into the
cone of ``v`` and carried by exponent ``j`` (``a_j`` per radiological mm), ``x = a_j ρ L`` and
``g(x) = (1 − e^{−x}) / x`` (→ 1 at 0), the voxel receives

    dose += q (1 − g) + a_j F_in g                         (its own release, the flux entering)
    F_out = q / a_j + (F_in − q / a_j) e^{−x}              (the flux leaving, 0 entering the grid)

(computed with ``Φ = a_j F``, see :func:`sweep`)

which is the exact solution along the segment for a piecewise-constant release and density.
In an infinite homogeneous medium with uniform release the flux settles at ``q / a`` and the
dose is ``Σ q = T Σ c`` (energy conservation).

The lines of ``v`` are swept slice by slice along ``v``'s major axis: the flux of slice ``k``
comes from slice ``k − v_major`` shifted by ``v``'s two other components; every step is a
vector operation on whole (exponent × cross-section) arrays, so the same code runs on NumPy
and CuPy (``xp``). ``v`` and ``−v`` share ``e^{−x}`` and ``g``.
"""

from __future__ import annotations

import numpy as np

from art.backend import array_namespace


def _namespace(*arrays):
    """NumPy or CuPy (the module itself, also where a CuPy array reports a stricter array-API namespace)."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy
    return array_namespace(*arrays)


def _shift_slices(p: int, n: int) -> tuple[slice, slice, slice]:
    """(destination, source, zero strip) slices along one axis for a shift by ``p`` voxels."""
    if p > 0:
        return slice(p, n), slice(0, n - p), slice(0, p)
    if p < 0:
        return slice(0, n + p), slice(-p, n), slice(n + p, n)
    return slice(0, n), slice(0, n), slice(0, 0)


def attenuation(rho, a_per_mm, length_mm: float):
    """``e^{−x}`` and ``g(x) = (1 − e^{−x}) / x`` for ``x = a_j ρ L``.

    Parameters
    ----------
    rho : (nk, ny, nx) density (relative to water) in the sweep's layout
    a_per_mm : (J,) exponents
    length_mm : float
        Length of the lattice vector, mm.

    Returns
    -------
    E, G : (J, nk, ny, nx) float32 arrays in ``rho``'s namespace
    """
    xp = _namespace(rho)
    aL = xp.asarray(np.asarray(a_per_mm, np.float32) * np.float32(length_mm)).reshape(-1, 1, 1, 1)
    x = rho[None] * aL
    xp.maximum(x, np.float32(1e-12), out=x)
    em = xp.expm1(-x)
    g = em / x
    g *= -1.0
    em += 1.0
    return em, g


def sweep(terma, w, e, g, v: tuple[int, int, int], dose) -> None:
    """Transport one direction's release along its lines, adding the flux part of the dose in place.

    With ``Φ = a F`` (the flux times its exponent) the recurrence reads ``dose += q + (Φ_in − q) g``
    and ``Φ_out = q + (Φ_in − q) e^{−x}``; the ``q`` term, summed over all directions, is the
    local release ``T Σ c`` and is added once by :func:`transport`, so this adds ``(Φ_in − q) g``.

    Parameters
    ----------
    terma : (B, nk, ny, nx) float32
        Release per beam and voxel (Gy), in the layout whose axis 1 is ``v``'s major axis.
    w : (J, B) float32
        The cone's weights: ``q = w @ terma`` is the release into the cone per exponent (computed
        slice by slice, so that it stays in the cache).
    e, g : (J, nk, ny, nx) float32
        From :func:`attenuation` for ``v``'s length.
    v : (int, int, int)
        The lattice vector in the same layout (``|v[0]|`` ≥ the others, 1 or 2).
    dose : (nk, ny, nx) float32
        Accumulates the dose.
    """
    xp = _namespace(terma)
    nj, nk, ny, nx = e.shape
    nb = terma.shape[0]
    step = abs(int(v[0]))
    dy, sy, zy = _shift_slices(int(v[1]), ny)
    dx, sx, zx = _shift_slices(int(v[2]), nx)
    ring = [xp.zeros((nj, ny, nx), np.float32) for _ in range(step)]
    cur = xp.empty((nj, ny, nx), np.float32)
    tmp = xp.empty((nj, ny, nx), np.float32)
    red = xp.empty((ny, nx), np.float32)
    qk = xp.empty((nj, ny * nx), np.float32)
    flat = terma.reshape(nb, nk, ny * nx)
    order = range(nk) if v[0] > 0 else range(nk - 1, -1, -1)
    for t, k in enumerate(order):
        prev = ring[t % step]
        cur[:, dy, dx] = prev[:, sy, sx]  # Φ_in: the flux of the line's previous voxel
        cur[:, zy, :] = 0.0  # lines entering the grid
        cur[:, :, zx] = 0.0
        xp.matmul(w, flat[:, k], out=qk)
        q = qk.reshape(nj, ny, nx)
        cur -= q  # Φ_in − q
        xp.multiply(cur, g[:, k], out=tmp)
        dose[k] += xp.sum(tmp, axis=0, out=red)
        cur *= e[:, k]
        cur += q  # Φ_out
        ring[t % step], cur = cur, prev


def transport(terma, rho, weights, a_per_mm, vectors, lengths_mm, *, workers: int = 1):
    """Dose of the released energy of all beams, by collapsed-cone transport.

    Parameters
    ----------
    terma : (B, nz, ny, nx) float32
        Per beam, TERMA-like release per unit mass (Gy once calibrated), NumPy or CuPy.
    rho : (nz, ny, nx) float32
        Density relative to water.
    weights : (M, B, J)
        Cone weights ``c_mbj`` of each direction, beam and exponent.
    a_per_mm : (J,)
    vectors : (M, 3) int
        Lattice vectors (dk, dj, di); ``v`` and ``−v`` adjacent.
    lengths_mm : (M,)
        Their lengths in mm.
    workers : int, keyword-only
        Threads (NumPy only); each sweeps its share of the directions into its own accumulator.

    Returns
    -------
    (nz, ny, nx) float32 dose in the inputs' namespace.
    """
    xp = _namespace(terma, rho)
    vectors = np.asarray(vectors, dtype=np.int64)
    # the local release summed over cones and exponents: T_b Σ_mj c_mbj
    local = xp.asarray(np.asarray(weights, np.float64).sum(axis=(0, 2)).astype(np.float32))
    out = xp.tensordot(local, terma, axes=1).astype(np.float32)
    for axis in range(3):
        pairs = _pairs_with_major_axis(vectors, axis)
        if not pairs:
            continue
        perm = [axis] + [d for d in range(3) if d != axis]
        t_ax = xp.ascontiguousarray(xp.transpose(terma, [0] + [1 + d for d in perm]))  # (B, nk, ny, nx)
        r_ax = xp.ascontiguousarray(xp.transpose(rho, perm))
        pairs.sort(key=lambda pair: round(float(lengths_mm[pair[0]]), 6))  # equal lengths share e^{-x} and g
        jobs = [[(m, vectors[m][perm], float(lengths_mm[m])) for m in pair] for pair in pairs]
        acc = _run_pairs(jobs, t_ax, r_ax, weights, a_per_mm, workers=workers if xp is np else 1)
        out += xp.transpose(acc, np.argsort(perm))
    return out


def _pairs_with_major_axis(vectors: np.ndarray, axis: int) -> list[list[int]]:
    """Indices of the directions whose major (first largest) axis is ``axis``, grouped ``[v, −v]``."""
    out: list[list[int]] = []
    seen: set[int] = set()
    for m, v in enumerate(vectors):
        if m in seen or int(np.argmax(np.abs(v))) != axis:
            continue
        group = [m] + [n for n in range(len(vectors)) if n not in seen and n != m and np.array_equal(vectors[n], -v)]
        seen.update(group)
        out.append(group)
    return out


def _run_pairs(jobs, t_ax, r_ax, weights, a_per_mm, *, workers: int):
    """Sweep the (v, −v) groups of one layout, on ``workers`` threads; the summed dose (nk, ny, nx)."""
    xp = _namespace(t_ax)
    nb, nk, ny, nx = t_ax.shape

    def run(chunk):
        acc = xp.zeros((nk, ny, nx), np.float32)
        length, e, g = None, None, None
        for group in chunk:
            if group[0][2] != length:
                length = group[0][2]
                e = g = None  # free before the next pair is allocated
                e, g = attenuation(r_ax, a_per_mm, length)
            for m, v, _ in group:
                w = xp.asarray(np.ascontiguousarray(np.asarray(weights[m], np.float32).T))  # (J, B)
                sweep(t_ax, w, e, g, tuple(int(c) for c in v), acc)
        return acc

    if workers <= 1 or len(jobs) < 2:
        return run(jobs)
    from concurrent.futures import ThreadPoolExecutor

    from art.blas import single_threaded_blas

    cut = [round(len(jobs) * i / workers) for i in range(workers + 1)]  # contiguous shares keep equal lengths together
    chunks = [jobs[cut[i] : cut[i + 1]] for i in range(workers)]
    with single_threaded_blas(), ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(run, chunks))
    total = parts[0]
    for p in parts[1:]:
        total += p
    return total
