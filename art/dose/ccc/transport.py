"""Collapsed-cone transport on the lattice lines: the engine's heavy loop (NumPy or CuPy).

For each lattice direction ``v`` (see :mod:`art.dose.ccc.directions`) the voxels form lines
``p, p + v, p + 2v, …``; each voxel stands for a segment of length ``L = |v|`` (mm) of its
line. With ``q = Σ_p c_vpj T_p`` the energy (per unit mass, Gy) released in the voxel into the
cone of ``v`` and carried by exponent ``j`` (``p``: the sources, a beam's energy groups) (``a_j`` per radiological mm), ``x = a_j ρ L`` and
``g(x) = (1 − e^{−x}) / x`` (→ 1 at 0), the voxel receives

    dose += q (1 − g) + a_j F_in g                         (its own release, the flux entering)
    F_out = q / a_j + (F_in − q / a_j) e^{−x}              (the flux leaving, 0 entering the grid)

(computed with ``Φ = a_j F``, see :func:`sweep`)

which is the exact solution along the segment for a piecewise-constant release and density.
In an infinite homogeneous medium with uniform release the flux settles at ``q / a`` and the
dose is ``Σ q = T Σ c`` (energy conservation).

**Entry into the medium.** A vector that advances ``s`` voxels along its major axis has ``s``
interleaved lines; voxel p's segment is centred on it (from p − v/2 to p + v/2). Where a line
enters the medium (a voxel of density ≥ :data:`MEDIUM_DENSITY` whose predecessor p − v is
lighter or outside the grid), the surface crosses the line somewhere between the two, and the
segment misses (or reaches beyond) part of the medium by up to half its length. Without a
correction every line starts with no flux, and under a flat surface on a grid plane the lines of
a field all have the same phase at a given depth: the dose in the build-up and around d_max is a
staircase (±2 %). So an entering line starts with the flux of the missing part, ``Φ_in = q (1 −
e^{−x δ})``, with δ (−½ … ½) the signed fraction of the segment between the surface and the
segment's start (negative where the segment reaches out of the medium), the surface found among
the points of the line between p − v and p (one per slice, nearest voxel): ``δ = ½ − (n_out −
½) / s`` with ``n_out`` of those ``s`` points (p − v included) outside the medium. For a uniform
release in a half-space this makes every line's flux the exact one from the surface; vectors
with ``s = 1`` need none (δ = 0).

The lines of ``v`` are swept slice by slice along ``v``'s major axis: the flux of slice ``k``
comes from slice ``k − v_major`` shifted by ``v``'s two other components; every step is a
vector operation on whole (exponent × cross-section) arrays, so the same code runs on NumPy
and CuPy (``xp``). Directions of equal length share ``e^{−x}`` and ``g``; those that also go
through the slices in the same order are swept in lockstep, one matrix product per slice giving
the release into all their cones (the sources' slice read once: the cost of the release grows
little with the number of sources), and slices without any release skip it.
"""

from __future__ import annotations

import numpy as np

from art.backend import array_namespace, to_numpy

#: density (relative to water) from which a voxel is medium for the entry correction (and, in
#: :mod:`art.dose.ccc.core`, for the transport box)
MEDIUM_DENSITY = 0.05


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


def _entry_offsets(v) -> list[tuple[int, int, int]]:
    """Offsets (major, y, x) from a voxel to the ``s`` points of its line between p − v (included) and
    p (excluded), one per slice, the other two axes rounded to the nearest voxel (halves up); the
    first is the predecessor p − v."""
    s = abs(int(v[0]))
    sign = 1 if v[0] > 0 else -1
    return [(-sign * (s - i), -int(np.floor(v[1] * (s - i) / s + 0.5)), -int(np.floor(v[2] * (s - i) / s + 0.5))) for i in range(s)]


#: the longest major step of a lattice vector the entry correction pads the medium for
_PAD = 8


class EntryCandidates:
    """The voxels where a line of step ``s`` may enter the medium with a release: medium, with some
    release, and a voxel that is not medium (or the grid's edge) within ``s`` voxels along every axis
    (the predecessor p − v is one of them). Host arrays; per step, computed once and kept. The medium
    is kept padded with :data:`_PAD` voxels of vacuum, flat, so that any point within that many voxels
    of a candidate is one gather."""

    def __init__(self, rho, released) -> None:
        self.rho = to_numpy(rho)
        host = self.rho >= MEDIUM_DENSITY
        self.shape = host.shape
        self._inside = host
        self._released = host & to_numpy(released)
        self.padded = np.pad(host, _PAD).ravel()
        self._by_step: dict[int, tuple] = {}

    def strides(self) -> tuple[int, int, int]:
        """Flat strides of the padded medium along (k, y, x)."""
        _, ny, nx = (n + 2 * _PAD for n in self.shape)
        return ny * nx, nx, 1

    def __call__(self, step: int) -> tuple:
        """(k, y, x, flat index in the padded medium) of the candidates for vectors of major step
        ``step``, in C order (sorted by slice)."""
        if step not in self._by_step:
            from scipy.ndimage import minimum_filter

            if step > _PAD:
                raise ValueError(f"a lattice vector's step {step} exceeds the entry correction's padding {_PAD}")
            deep = minimum_filter(self._inside.view(np.uint8), size=2 * step + 1, mode="constant", cval=0).view(bool)
            k, y, x = np.nonzero(self._released & ~deep)
            sk, sy, _ = self.strides()
            self._by_step[step] = (k, y, x, (k + _PAD) * sk + (y + _PAD) * sy + (x + _PAD))
        return self._by_step[step]


def _entries(candidates: EntryCandidates, v, a_per_mm, length_mm: float, xp) -> dict:
    """The voxels where the lines of ``v`` (major, y, x; ``|v[0]| > 1``) enter the medium, from
    :class:`EntryCandidates`, by slice: {k: (iy, ix, f)} in ``xp``, with ``f = 1 − e^{−x δ}`` (J, n)
    float32 (δ the signed missing fraction of the entering voxel's segment, the module docstring;
    the entering flux is ``q f``)."""
    kk, iy, ix, flat = candidates(abs(int(v[0])))
    sk, sy, sx = candidates.strides()
    shifts = [dk * sk + oy * sy + ox * sx for dk, oy, ox in _entry_offsets(v)]
    enters = ~candidates.padded[flat + shifts[0]]  # shifts[0]: the predecessor p − v
    if not enters.any():
        return {}
    k, flat = kk[enters], flat[enters]
    n_out = sum((~candidates.padded[flat + sh]).astype(np.int32) for sh in shifts)
    delta = 0.5 - (n_out - 0.5) / len(shifts)
    iy, ix = iy[enters], ix[enters]
    x_delta = np.outer(np.asarray(a_per_mm, np.float64) * length_mm, candidates.rho[k, iy, ix] * delta)
    f = (-np.expm1(-x_delta)).astype(np.float32)
    starts = np.flatnonzero(np.r_[True, np.diff(k) != 0])
    stops = np.r_[starts[1:], k.size]
    iy, ix, f = xp.asarray(iy), xp.asarray(ix), xp.asarray(f)  # one transfer; the slices below are views
    return {int(k[a]): (iy[a:b], ix[a:b], f[:, a:b]) for a, b in zip(starts, stops)}


def sweep(terma, w, e, g, vectors, dose, *, busy=None, candidates=None, a_per_mm=None, length_mm: float = 0.0) -> None:
    """Transport the release of directions of one length, swept in the same order, along their lines;
    add the flux part of the dose in place.

    With ``Φ = a F`` (the flux times its exponent) the recurrence reads ``dose += q + (Φ_in − q) g``
    and ``Φ_out = q + (Φ_in − q) e^{−x}``; the ``q`` term, summed over all directions, is the
    local release ``T Σ c`` and is added once by :func:`transport`, so this adds ``(Φ_in − q) g``.
    The directions go through the slices in lockstep: one product per slice gives the release
    into all their cones (``terma``'s slice is read once for all of them).

    Parameters
    ----------
    terma : (nk, P, ny * nx) float32
        Release per source and voxel (Gy), slice by slice along the sweep's axis (the layout whose
        first axis is the directions' major axis).
    w : (D·J, P) float32
        The cones' weights, direction by direction: ``q = w @ terma[k]`` is the release into each
        cone per exponent.
    e, g : (J, nk, ny, nx) float32
        From :func:`attenuation` for the directions' length.
    vectors : list of D (int, int, int)
        The lattice vectors in the same layout (``|v[0]|`` ≥ the others), all with ``v[0]`` of the same sign.
    dose : (nk, ny, nx) float32
        Accumulates the dose.
    busy : (nk,) bool, keyword-only
        The slices where some source is not 0 (default: all); elsewhere the release is 0 and
        only the flux is carried on.
    candidates : EntryCandidates, keyword-only
        :class:`EntryCandidates` of the medium (density ≥ :data:`MEDIUM_DENSITY`) in the same layout:
        the lines entering it get the entry correction of the module docstring (None: every line
        starts with no flux).
    a_per_mm : (J,), length_mm : float, keyword-only
        The exponents and the directions' length (mm), for the entry correction.
    """
    xp = _namespace(e)
    nj, nk, ny, nx = e.shape
    nd = len(vectors)
    busy = np.ones(nk, bool) if busy is None else np.asarray(busy, bool)
    steps = [abs(int(v[0])) for v in vectors]
    shifts = [(_shift_slices(int(v[1]), ny), _shift_slices(int(v[2]), nx)) for v in vectors]
    rings = [[xp.zeros((nj, ny, nx), np.float32) for _ in range(s)] for s in steps]
    spare = [xp.empty((nj, ny, nx), np.float32) for _ in range(nd)]
    tmp = xp.empty((nj, ny, nx), np.float32)
    red = xp.empty((ny, nx), np.float32)
    qk = xp.empty((nd * nj, ny * nx), np.float32)
    entry = [_entries(candidates, v, a_per_mm, length_mm, xp) if candidates is not None and abs(int(v[0])) > 1 else {} for v in vectors]
    order = range(nk) if vectors[0][0] > 0 else range(nk - 1, -1, -1)
    for t, k in enumerate(order):
        if busy[k]:
            xp.matmul(w, terma[k], out=qk)
        for d in range(nd):
            ring, cur, ((dy, sy, zy), (dx, sx, zx)) = rings[d], spare[d], shifts[d]
            prev = ring[t % steps[d]]
            cur[:, dy, dx] = prev[:, sy, sx]  # Φ_in: the flux of the line's previous voxel
            cur[:, zy, :] = 0.0  # lines entering the grid
            cur[:, :, zx] = 0.0
            q = qk[d * nj : (d + 1) * nj].reshape(nj, ny, nx)
            if busy[k]:
                if k in entry[d]:  # lines entering the medium: Φ_in = q (1 − e^{−x δ})
                    iy, ix, f = entry[d][k]
                    cur[:, iy, ix] = q[:, iy, ix] * f
                cur -= q  # Φ_in − q
            xp.multiply(cur, g[:, k], out=tmp)
            dose[k] += xp.sum(tmp, axis=0, out=red)
            cur *= e[:, k]
            if busy[k]:
                cur += q  # Φ_out
            ring[t % steps[d]], spare[d] = cur, prev


def transport(terma, rho, weights, a_per_mm, vectors, lengths_mm, *, workers: int = 1, entry: bool = True):
    """Dose of the released energy of all sources, by collapsed-cone transport.

    Parameters
    ----------
    terma : (P, nz, ny, nx) float32
        Per source (a beam, or one energy group of a beam), TERMA-like release per unit mass (Gy
        once calibrated), NumPy or CuPy.
    rho : (nz, ny, nx) float32
        Density relative to water.
    weights : (M, P, J)
        Cone weights ``c_mpj`` of each direction, source and exponent.
    a_per_mm : (J,)
    vectors : (M, 3) int
        Lattice vectors (dk, dj, di).
    lengths_mm : (M,)
        Their lengths in mm.
    workers : int, keyword-only
        Threads (NumPy only); each sweeps its share of the directions into its own accumulator.
    entry : bool, keyword-only
        The entry correction of the module docstring (True); False: every line starts with no flux
        (the plain recurrence, as tested against a brute-force line sum).

    Returns
    -------
    (nz, ny, nx) float32 dose in the inputs' namespace.
    """
    xp = _namespace(terma, rho)
    vectors = np.asarray(vectors, dtype=np.int64)
    # the local release summed over cones and exponents: T_p Σ_mj c_mpj
    local = xp.asarray(np.asarray(weights, np.float64).sum(axis=(0, 2)).astype(np.float32))
    out = xp.tensordot(local, terma, axes=1).astype(np.float32)
    for axis in range(3):
        groups = _lockstep_groups(vectors, lengths_mm, axis)
        if not groups:
            continue
        perm = [axis] + [d for d in range(3) if d != axis]
        p = terma.shape[0]
        t_ax = xp.ascontiguousarray(xp.transpose(terma, [1 + perm[0], 0, 1 + perm[1], 1 + perm[2]]))  # (nk, P, ny, nx)
        t_ax = t_ax.reshape(t_ax.shape[0], p, -1)
        released = xp.any(t_ax != 0, axis=1)  # (nk, ny·nx): some source releases energy in the voxel
        busy = to_numpy(xp.any(released, axis=1))
        r_ax = xp.ascontiguousarray(xp.transpose(rho, perm))
        jobs = [[(m, vectors[m][perm], float(lengths_mm[m])) for m in group] for group in groups]
        cand = EntryCandidates(r_ax, released.reshape(r_ax.shape)) if entry else None
        released = None  # noqa: F841 - freed before the sweeps
        acc = _run_groups(jobs, t_ax, r_ax, weights, a_per_mm, busy=busy, candidates=cand, workers=workers if xp is np else 1)
        out += xp.transpose(acc, np.argsort(perm))
    return out


def _lockstep_groups(vectors: np.ndarray, lengths_mm, axis: int) -> list[list[int]]:
    """Indices of the directions whose major (first largest) axis is ``axis``, grouped by length and
    the sign of that component (swept together, :func:`sweep`), the groups ordered by length (each
    length's two signs adjacent: they share ``e^{−x}`` and ``g``)."""
    out: dict[tuple, list[int]] = {}
    for m, v in enumerate(vectors):
        if int(np.argmax(np.abs(v))) == axis:
            out.setdefault((round(float(lengths_mm[m]), 6), int(np.sign(v[axis]))), []).append(m)
    return [out[key] for key in sorted(out, key=lambda key: (key[0], -key[1]))]


def _run_groups(jobs, t_ax, r_ax, weights, a_per_mm, *, busy, candidates, workers: int):
    """Sweep the lockstep groups of one layout, on ``workers`` threads; the summed dose (nk, ny, nx)."""
    xp = _namespace(r_ax)
    nk, ny, nx = r_ax.shape

    def run(share):
        acc = xp.zeros((nk, ny, nx), np.float32)
        length, e, g = None, None, None
        for group in share:
            if group[0][2] != length:
                length = group[0][2]
                e = g = None  # free before the next pair is allocated
                e, g = attenuation(r_ax, a_per_mm, length)
            w = np.concatenate([np.asarray(weights[m], np.float32).T for m, _, _ in group])  # (D·J, P)
            sweep(t_ax, xp.asarray(np.ascontiguousarray(w)), e, g, [tuple(int(c) for c in v) for _, v, _ in group], acc, busy=busy,
                  candidates=candidates, a_per_mm=a_per_mm, length_mm=length)
        return acc

    if workers <= 1 or len(jobs) < 2:
        return run(jobs)
    from concurrent.futures import ThreadPoolExecutor

    from art.blas import single_threaded_blas

    # contiguous shares (equal lengths stay together) of about the same number of directions
    ends = np.cumsum([len(group) for group in jobs])
    cut = [0] + [int(np.searchsorted(ends, ends[-1] * i / workers)) + 1 for i in range(1, workers)] + [len(jobs)]
    shares = [jobs[cut[i] : cut[i + 1]] for i in range(workers)]
    with single_threaded_blas(), ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(run, shares))
    total = parts[0]
    for p in parts[1:]:
        total += p
    return total
