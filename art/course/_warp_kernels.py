"""The numerical kernels of :mod:`art.course.warp`: slabs, affine maps, field sampling, fixed point, deposit.

Inside these kernels ``n`` points are kept as *rows*, shape ``(3, n)`` float64:
``x, y, z`` (LPS mm) or ``k, j, i`` (continuous array index). Work is cut into
slabs of whole z-slices of about ``CHUNK_POINTS`` points and the slabs run on
a few threads (``ART_JOB_THREADS`` when set, else this process's CPUs, at
most :data:`art.threads.MAX_THREADS`; :mod:`art.threads`): ``scipy.ndimage.map_coordinates`` and NumPy's large
array operations release the GIL.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from art.geometry import Grid
from art.threads import parallel, threads

#: Points handled at once by one thread (one (3, n) float64 array of them is 12 MB).
CHUNK_POINTS = 500_000


# ---------------------------------------------------------------------------- threads and slabs
def z_slabs(shape: tuple[int, ...], points: int = CHUNK_POINTS) -> list[tuple[int, int]]:
    """Ranges ``[k0, k1)`` of whole z-slices with about ``points`` voxels each."""
    per_slice = max(1, int(np.prod(shape[1:3])))
    step = max(1, points // per_slice)
    return [(k0, min(shape[0], k0 + step)) for k0 in range(0, shape[0], step)]


# ---------------------------------------------------------------------------- geometry on rows
def affine(rows: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``matrix @ rows + offset`` for rows (3, n), elementwise (memory-bound; no BLAS threads)."""
    out = np.empty(rows.shape, dtype=np.float64)
    for r in range(3):
        out[r] = rows[0] * matrix[r, 0] + rows[1] * matrix[r, 1] + rows[2] * matrix[r, 2] + offset[r]
    return out


def to_index(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset taking LPS (x, y, z) to continuous indices (k, j, i) of ``grid`` (its affine, any direction)."""
    a = grid.affine
    inv = np.linalg.inv(a[:3, :3])[::-1]  # rows give i, j, k → reversed to k, j, i
    return inv, -inv @ a[:3, 3]


def to_lps(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset taking indices (k, j, i) of ``grid`` to LPS (x, y, z)."""
    a = grid.affine
    return a[:3, :3][:, ::-1], a[:3, 3]


def slab_points(grid: Grid, k0: int, k1: int) -> np.ndarray:
    """LPS voxel centres of slices ``k0 .. k1 - 1`` as rows (3, n), voxels in C order."""
    k, j, i = np.meshgrid(np.arange(k0, k1), np.arange(grid.shape[1]), np.arange(grid.shape[2]), indexing="ij")
    return affine(np.stack([k.ravel(), j.ravel(), i.ravel()]).astype(np.float64), *to_lps(grid))


def norms(rows: np.ndarray) -> np.ndarray:
    """Euclidean length of each column of rows (3, n)."""
    return np.sqrt(rows[0] * rows[0] + rows[1] * rows[1] + rows[2] * rows[2])


class Field:
    """A displacement field sampled at LPS rows (3, n): trilinear inside, nearest extension outside."""

    def __init__(self, u: np.ndarray, grid: Grid):
        self.grid = grid
        self.index = to_index(grid)
        self.components = [np.ascontiguousarray(u[..., a]) for a in range(3)]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        c = affine(points, *self.index)
        out = np.empty(points.shape, dtype=np.float64)
        for a in range(3):
            out[a] = ndimage.map_coordinates(self.components[a], c, order=1, mode="nearest", prefilter=False)
        return out


# ---------------------------------------------------------------------------- the fixed point
#: Plain fixed-point steps before the points still above the tolerance switch to Newton steps.
PLAIN_STEPS = 8


def invert_points(field: Field, x: np.ndarray, iterations: int, tol_mm: float, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Solve ``v = −u(x + v)`` for the points ``x`` (rows); returns v (rows), |residual| (mm) and the evaluations used.

    Fixed-point iteration from ``v = 0`` (or ``start``) on ``f(v) = −u(x + v) − v``
    (``|f(v)|`` is the residual ``|φ(x + v) − x|``): ``v ← v + α f(v)``. Its error
    shrinks by ``|∇u|`` a step, slowly where the field compresses strongly
    (``det(I + ∇u)`` near 0), so after ``PLAIN_STEPS`` the points left take
    Newton steps ``v ← v + α (I + ∇u)⁻¹ f(v)`` (``∇u`` by central differences).
    A step is kept only where it lowers the residual; elsewhere ``α`` is halved.
    Points leave once within ``tol_mm`` (or once ``α`` < 1/64: not invertible
    there; the best iterate is kept).
    """
    n = x.shape[1]
    out_v, out_r = np.empty((3, n)), np.empty(n)
    idx = np.arange(n)
    v = np.zeros((3, n)) if start is None else start
    f = -field(x) if start is None else -(field(x + v) + v)
    r = norms(f)
    alpha = np.ones(n)
    steps = 1
    while True:
        done = (r <= tol_mm) | (alpha < 1.0 / 64)
        last = steps >= iterations or bool(done.all())
        if last or 10 * int(done.sum()) > len(r):
            keep = np.zeros_like(done) if last else ~done
            out_v[:, idx[~keep]], out_r[idx[~keep]] = v[:, ~keep], r[~keep]
            if last:
                return out_v, out_r, steps
            x, v, f, r, alpha, idx = x[:, keep], v[:, keep], f[:, keep], r[keep], alpha[keep], idx[keep]
        if steps == PLAIN_STEPS:
            alpha[:] = 1.0
        cand = alpha * (f if steps < PLAIN_STEPS else _newton_direction(field, x + v, f))
        steps += 1
        cand += v
        f_c = field(x + cand)
        f_c += cand
        np.negative(f_c, out=f_c)
        r_c = norms(f_c)
        better = r_c < r
        if better.all():
            v, f, r = cand, f_c, r_c
        else:
            v[:, better], f[:, better], r[better] = cand[:, better], f_c[:, better], r_c[better]
            alpha[~better] *= 0.5


def _newton_direction(field: Field, y: np.ndarray, f: np.ndarray, h: float = 0.25) -> np.ndarray:
    """``(I + ∇u(y))⁻¹ f`` per point (rows); ``f`` itself where that matrix is near singular."""
    jac = np.empty((y.shape[1], 3, 3))
    for a in range(3):
        e = np.zeros((3, 1))
        e[a] = h
        jac[:, :, a] = ((field(y + e) - field(y - e)) / (2 * h)).T
    jac += np.eye(3)
    ok = np.abs(np.linalg.det(jac)) > 1e-3
    step = f.copy()
    if ok.any():
        step[:, ok] = np.linalg.solve(jac[ok], f[:, ok].T[..., None])[..., 0].T
    return step


# ---------------------------------------------------------------------------- the deposit
def deposit(dose: np.ndarray, rho: np.ndarray, grid: Grid, field: Field, target: Grid, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Energy (Gy · g/cm³ · mm³) and mass (g/cm³ · mm³) arriving at each target voxel.

    Every daily voxel within 2 voxels of a non-zero energy ``dose · rho`` is split
    into ``s³`` sub-points carrying ``1/s³`` of its energy and mass; each goes to
    ``φ(q)`` and is shared among the 8 nearest target voxels (trilinear weights).
    """
    near = ndimage.binary_dilation(dose * rho > 0, iterations=2)  # their mass shares target voxels with the energy
    offsets = (np.arange(s) + 0.5) / s - 0.5
    sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
    dv = grid.voxel_volume_mm3 / len(sub)
    slabs = z_slabs(grid.shape, CHUNK_POINTS // 2)
    n = min(threads(), len(slabs))
    maps = (to_lps(grid), to_index(target))

    def group(slabs_of_thread: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        energy, mass = np.zeros(target.size), np.zeros(target.size)
        for k0, k1 in slabs_of_thread:
            ix = np.nonzero(near[k0:k1])
            if not ix[0].size:
                continue
            ix = (ix[0] + k0, ix[1], ix[2])
            kji = np.stack(ix).astype(np.float64)
            w_m = rho[ix].astype(np.float64) * dv
            w_e = dose[ix] * w_m
            for o in sub:
                q = affine(kji + o[:, None], *maps[0])
                trilinear_add(energy, mass, target.shape, affine(q + field(q), *maps[1]), w_e, w_m)
        return energy, mass

    parts = parallel(group, [slabs[w::n] for w in range(max(1, n))])
    energy, mass = parts[0]
    for e, m in parts[1:]:
        energy += e
        mass += m
    return energy.reshape(target.shape), mass.reshape(target.shape)


def trilinear_add(energy: np.ndarray, mass: np.ndarray, shape: tuple[int, int, int], t: np.ndarray, w_e: np.ndarray, w_m: np.ndarray) -> None:
    """Add ``w_e`` and ``w_m`` at continuous target indices ``t`` (rows k, j, i) with trilinear weights (flat accumulators)."""
    base = np.floor(t)
    frac = t - base
    base = base.astype(np.int64)
    n = np.asarray(shape, dtype=np.int64)[:, None]
    inner = np.all((base >= 0) & (base < n - 1), axis=0)  # all 8 corners inside
    if inner.all():
        _add_corners(energy, mass, shape, base, frac, w_e, w_m, check=False)
        return
    edge = ~inner & np.all((base >= -1) & (base < n), axis=0)  # some corners inside
    for sel, check in ((inner, False), (edge, True)):
        if sel.any():
            _add_corners(energy, mass, shape, base[:, sel], frac[:, sel], w_e[sel], w_m[sel], check=check)


def _add_corners(energy, mass, shape, base, frac, w_e, w_m, *, check: bool) -> None:  # noqa: ANN001
    """The 8 corners of :func:`trilinear_add`; ``check``: drop the corners outside the grid."""
    ny, nx = shape[1], shape[2]
    flat0 = (base[0] * ny + base[1]) * nx + base[2]
    lo = max(0, int(flat0.min()))
    size = min(energy.size, int(flat0.max()) + ny * nx + nx + 2) - lo
    near = [1 - frac[a] for a in range(3)]
    e_k = [w_e * near[0], w_e * frac[0]]
    m_k = [w_m * near[0], w_m * frac[0]]
    acc_e, acc_m = np.zeros(size), np.zeros(size)
    for corner in range(8):
        d = ((corner >> 2) & 1, (corner >> 1) & 1, corner & 1)
        wji = (frac[1] if d[1] else near[1]) * (frac[2] if d[2] else near[2])
        flat = flat0 + ((d[0] * ny + d[1]) * nx + d[2] - lo)
        we, wm = e_k[d[0]] * wji, m_k[d[0]] * wji
        if check:
            ok = np.ones(wji.shape, dtype=bool)
            for a in range(3):
                c = base[a] + d[a]
                ok &= (c >= 0) & (c < shape[a])
            flat, we, wm = flat[ok], we[ok], wm[ok]
        acc_e += np.bincount(flat, weights=we, minlength=size)[:size]
        acc_m += np.bincount(flat, weights=wm, minlength=size)[:size]
    energy[lo : lo + size] += acc_e
    mass[lo : lo + size] += acc_m


# ---------------------------------------------------------------------------- the Jacobian
def jacobian_slab(u: np.ndarray, grid: Grid, k0: int, k1: int) -> np.ndarray:
    """``det(I + ∂u/∂p)`` on slices ``k0 .. k1 - 1`` (central differences, one-sided at the grid's faces), float32."""
    m = np.linalg.inv(grid.direction_matrix @ np.diag(grid.spacing_xyz))  # d(i, j, k) / d(x, y, z)
    h0, h1 = max(0, k0 - 1), min(grid.shape[0], k1 + 1)
    jac = [[None] * 3 for _ in range(3)]
    for comp in range(3):
        part = u[h0:h1, ..., comp].astype(np.float64)
        grads = []  # d u_comp / d (i, j, k)
        for axis in (2, 1, 0):
            g = np.gradient(part, axis=axis) if part.shape[axis] > 1 else np.zeros_like(part)
            grads.append(g[k0 - h0 : k1 - h0])
        for c in range(3):
            jac[comp][c] = grads[0] * m[0, c] + grads[1] * m[1, c] + grads[2] * m[2, c] + (1.0 if comp == c else 0.0)
    (a, b, c), (d, e, f), (g, h, i) = jac
    return (a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)).astype(np.float32)
