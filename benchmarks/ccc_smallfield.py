"""Small-field depth doses of the collapsed cone, decomposed: lattice directions, kernel fit,
kernel hardening with depth, machine table (issue 19).

For one square open field (gantry 0, SSD 100 cm, generic 6X machine) in a water phantom on a
2.5 mm grid, with **the engine's own TERMA** (``art.dose.ccc.terma.beam_terma``: fluence map,
source and voxel blur, inverse square, attenuation of the spectrum; one TERMA per energy group of
``art.dose.ccc.kernels.GROUP_EDGES_MEV``), computes on the central axis:

* ``cccN``: the lattice collapsed-cone transport (``art.dose.ccc.transport``) of the energy groups,
  each with its kernel, with the directions of ``{−N..N}³``; ``engine``: with the engine's directions
  (``art.dose.ccc.core``: those of ``{−3..3}³`` plus the forward ones of ``{−5..5}³`` within 12° of
  the beam); ``engine_unhardened``: the same with one kernel for the whole spectrum (the total TERMA);
* ``fit``: the **exact superposition** Σ_g T_g ⊗ K_g of the same group TERMAs with the same fitted
  group kernels (Σ_j A_ij (1 − e^{−a_j r}) per zenith bin): in homogeneous water (a convex phantom)
  superposition is a convolution; each kernel is voxelised voxel-to-voxel (source uniform in its
  voxel, energy binned into the receiving voxel) by stratified sampling and convolved by FFT. The
  kernel axis is the beam's central axis (not tilted along divergent rays), as in the engine: at
  most 1.1° off for a 3×3 cm² field's rays, against zenith bins of 3.75°; ``fit_unhardened``: the
  total TERMA with the whole spectrum's fitted kernel;
* ``table_kernel``: Σ_g T_g ⊗ K_g with the tabulated group kernels (interpolated in log r, as the
  fit is) instead of their exponential fits;
* ``hard``: Σ_E T_E ⊗ K_E, the tabulated mono-energetic kernels each convolved with its own
  energy's TERMA: the exact hardening with depth, which the groups approximate;

each with the engine's electron contamination added (the same for all), normalised at d_max
(15 mm), against the machine file's PDD table.

Run: ``.venv/bin/python benchmarks/ccc_smallfield.py [--fields 30 50 100] [--reach 3]``
(about 1 min per field on one core); prints a table and writes
``benchmarks/results/ccc_smallfield.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEPTHS = np.array([15.0, 20, 30, 40, 50, 60, 80, 100, 120, 140, 160, 180, 200, 225, 250, 275])
HALF_MM = {30.0: 60.0, 50.0: 75.0, 100.0: 100.0}


@dataclasses.dataclass
class Case:
    """One field in a water phantom: grid, density, the engine's TERMA per energy group (G, nz, ny, nx;
    no contamination), contamination, and the spectrum's group kernels."""

    field_mm: float
    grid: object
    rho: np.ndarray
    terma: np.ndarray
    contamination: np.ndarray
    grouped: object
    beam: object
    machine: object
    model: object
    points: np.ndarray

    @property
    def kernel(self):
        """The whole spectrum's kernel."""
        return self.grouped.kernel

    def sources(self, *, hardened: bool = True) -> list[tuple[np.ndarray, object]]:
        """(TERMA, kernel) per energy group, or (hardened False) the total TERMA with the whole spectrum's kernel."""
        if hardened:
            return list(zip(self.terma, self.grouped.kernels))
        return [(self.terma.sum(axis=0), self.kernel)]


def make_case(field_mm: float, *, spacing: float = 2.5, depth_mm: float = 300.0, half_mm: float | None = None, model=None) -> Case:
    """The field's phantom (surface y = 0, voxel centres on the axis) and its TERMA (units ∝ MU)."""
    from art.dose import load_machine
    from art.dose.ccc.calibration import open_field_beam, phantom_density, water_grid
    from art.dose.ccc.kernels import group_kernels
    from art.dose.ccc.model import ccc_model
    from art.dose.ccc.terma import beam_terma

    machine = load_machine()
    model = model if model is not None else ccc_model(machine)
    grouped = group_kernels(model.energies_mev, model.fluence)
    half = half_mm if half_mm is not None else HALF_MM.get(float(field_mm), max(60.0, 0.75 * field_mm + 30.0))
    grid = water_grid((spacing,) * 3, half_width_mm=half, depth_mm=depth_mm)
    rho = np.ones(grid.shape, np.float32)
    beam = open_field_beam(machine, field_mm, mu=100.0)
    points = grid.index_to_lps(np.indices(grid.shape).reshape(3, -1).T.astype(np.float64))
    t, c = beam_terma(beam, machine, model, grouped, phantom_density(rho, grid), points, voxel_mm=spacing, patient_position="HFS")
    return Case(float(field_mm), grid, rho, t.reshape((-1,) + grid.shape), c.reshape(grid.shape), grouped, beam, machine, model, points)


def ccc_transport(case: Case, *, reach: int | None = None, vectors=None, workers: int = 1, hardened: bool = True) -> np.ndarray:
    """The lattice transport of the case's TERMA (no contamination; per energy group with the group
    kernels, or not ``hardened``) with the engine's directions (``art.dose.ccc.core``: REACH plus
    the fine forward ones), or the lattice of ``reach``, or ``vectors``."""
    from art.dose.ccc import core
    from art.dose.ccc.directions import cone_weights, lattice_vectors, physical_vectors, transport_vectors
    from art.dose.ccc.transport import transport

    g = case.grid
    if vectors is not None:
        vec = np.asarray(vectors)
    elif reach is not None:
        vec = lattice_vectors(reach)
    else:
        vec = transport_vectors([(0.0, 1.0, 0.0)], g.spacing, g.direction_matrix, reach=core.REACH, fine_reach=core.FINE_REACH,
                                fine_angle_deg=core.FINE_ANGLE_DEG)  # fmt: skip
    src = case.sources(hardened=hardened)
    w = np.stack([cone_weights(k, (0.0, 1.0, 0.0), g.spacing, g.direction_matrix, vectors=vec) for _, k in src], axis=1).astype(np.float32)
    lengths = np.linalg.norm(physical_vectors(g.spacing, g.direction_matrix, vectors=vec), axis=1)
    terma = np.stack([t for t, _ in src]).astype(np.float32)
    return np.asarray(transport(terma, case.rho, w, case.kernel.a_per_mm, vec, lengths, workers=workers), np.float64)


# ------------------------------------------------------------------------- exact superposition


def table_cumulative(cumulative: np.ndarray, radii_mm: np.ndarray):
    """C_i(r) of a tabulated kernel, interpolated linearly in log r (0 at 1 µm), constant beyond the table."""
    lr = np.log(np.concatenate([[1e-3], radii_mm]))
    cum = np.concatenate([np.zeros((cumulative.shape[0], 1)), cumulative], axis=1)

    def fn(r):
        x = np.log(np.maximum(np.asarray(r, float), 1e-3))
        return np.array([np.interp(x, lr, c) for c in cum])

    return fn


def voxel_kernel(cum_fn, angle_edges_deg, shape, h: float, *, n_samples: int = 16_000_000, seed: int = 0, r_max: float = 600.0) -> np.ndarray:
    """Voxel-to-voxel point kernel on offsets (2n − 1 per axis of ``shape``), beam along +axis 1.

    ``cum_fn(r) -> (na, len(r))``: cumulative energy fraction per zenith bin within radius r.
    The energy of each (zenith bin, thin shell) is spread by stratified sampling: cos θ uniform in
    the bin, φ uniform, r uniform in the shell, the source uniform in its voxel; energy landing
    outside the offset range is dropped (it would leave the phantom).
    """
    rng = np.random.default_rng(seed)
    edges = np.concatenate([[0.0], np.geomspace(1e-2, r_max, 700)])
    cum = cum_fn(edges)
    e_ik = np.clip(np.diff(cum, axis=1), 0.0, None)  # (na, nk)
    total = e_ik.sum()
    n_ik = np.where(e_ik > 0, np.floor(n_samples * e_ik / total).astype(np.int64) + 1, 0)
    ci, ck = np.nonzero(n_ik)
    counts = n_ik[ci, ck]
    weights = e_ik[ci, ck] / counts
    cos_e = np.cos(np.deg2rad(angle_edges_deg))
    kshape = tuple(2 * n - 1 for n in shape)
    centre = np.array([n - 1 for n in shape])
    out = np.zeros(int(np.prod(kshape)), np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    cut = np.searchsorted(starts, np.arange(0, starts[-1], 4_000_000), side="right") - 1  # groups of ~4 M samples
    bounds = np.unique(np.concatenate([cut, [len(counts)]]))
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx = np.repeat(np.arange(a, b), counts[a:b])
        i, k, wt = ci[idx], ck[idx], weights[idx]
        u = rng.random((5, idx.size))
        cth = cos_e[i] - u[0] * (cos_e[i] - cos_e[i + 1])
        sth = np.sqrt(np.clip(1.0 - cth * cth, 0.0, None))
        phi = 2 * np.pi * u[1]
        r = edges[k] + u[2] * (edges[k + 1] - edges[k])
        src = (rng.random((3, idx.size)) - 0.5) * h
        p = np.stack([src[0] + r * sth * np.cos(phi), src[1] + r * cth, src[2] + r * sth * np.sin(phi)])
        ijk = np.rint(p / h).astype(np.int64) + centre[:, None]
        ok = np.all((ijk >= 0) & (ijk < np.array(kshape)[:, None]), axis=0)
        flat = np.ravel_multi_index(tuple(ijk[:, ok]), kshape)
        out += np.bincount(flat, weights=wt[ok], minlength=out.size)
    return out.reshape(kshape)


def superpose(terma: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Σ_s T(s) K(r − s) on the grid (FFT; ``kernel`` on offsets −(n−1)..(n−1))."""
    from scipy.signal import fftconvolve

    return fftconvolve(np.asarray(terma, np.float64), kernel, mode="same")


def fitted_kernel(case: Case, kernel=None, **kw) -> np.ndarray:
    """The voxelised exponential fit of ``kernel`` (default: the whole spectrum's)."""
    k = case.kernel if kernel is None else kernel
    return voxel_kernel(k.fitted_cumulative, k.angle_edges_deg, case.grid.shape, case.grid.spacing[0], **kw)


def tabulated_kernel(case: Case, kernel=None, **kw) -> np.ndarray:
    """The voxelised tabulated ``kernel`` (default: the whole spectrum's)."""
    k = case.kernel if kernel is None else kernel
    return voxel_kernel(table_cumulative(k.cumulative, k.radii_mm), k.angle_edges_deg, case.grid.shape, case.grid.spacing[0], **kw)


def superposition(case: Case, *, tabulated: bool = False, hardened: bool = True, **kw) -> np.ndarray:
    """The exact superposition Σ_g T_g ⊗ K_g of the case's group TERMAs with their fitted (or
    ``tabulated``) kernels; not ``hardened``: the total TERMA with the whole spectrum's kernel."""
    make = tabulated_kernel if tabulated else fitted_kernel
    out = np.zeros(case.grid.shape, np.float64)
    for t, k in case.sources(hardened=hardened):
        out += superpose(t, make(case, k, **kw))
    return out


def hardened_superposition(case: Case, *, n_samples: int = 6_000_000) -> np.ndarray:
    """Σ_E T_E ⊗ K_E: each energy's TERMA with its own (tabulated) mono-energetic kernel."""
    from art.dose.ccc.calibration import phantom_density
    from art.dose.ccc.kernels import load_tables
    from art.dose.ccc.terma import beam_terma

    t = load_tables()
    k = case.kernel
    idx = t.energy_index(k.energies_mev)
    out = np.zeros(case.grid.shape, np.float64)
    model = dataclasses.replace(case.model, contamination_fraction=0.0)
    for n, e in enumerate(idx):
        if k.fluence[n] <= 0:
            continue
        one = np.zeros_like(k.fluence)
        one[n] = k.fluence[n]
        ke = dataclasses.replace(k, fluence=one)
        te, _ = beam_terma(case.beam, case.machine, model, ke, phantom_density(case.rho, case.grid), case.points,
                           voxel_mm=case.grid.spacing[0], patient_position="HFS")  # fmt: skip
        cum = np.cumsum(t.total[e], axis=1)
        kern = voxel_kernel(table_cumulative(cum, t.radii_mm), t.angle_edges_deg, case.grid.shape, case.grid.spacing[0],
                            n_samples=n_samples, seed=int(e))  # fmt: skip
        out += superpose(te.reshape(case.grid.shape), kern)
    return out


# ------------------------------------------------------------------------- measures


def cax(case: Case, dose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nz, ny, nx = case.grid.shape
    y = case.grid.origin[1] + case.grid.spacing[1] * np.arange(ny)
    return y, np.asarray(dose, np.float64)[nz // 2, :, nx // 2]


def pdd(case: Case, dose: np.ndarray, *, contamination: bool = True) -> np.ndarray:
    """PDD (%) at DEPTHS normalised at 15 mm, with the case's contamination added."""
    d = dose + (case.contamination if contamination else 0.0)
    y, c = cax(case, d)
    v = np.interp(DEPTHS, y, c)
    return 100.0 * v / v[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=float, nargs="+", default=[30.0, 50.0, 100.0])
    ap.add_argument("--reach", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--samples", type=int, default=16_000_000)
    ap.add_argument("--no-hard", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ccc_smallfield.json"))
    args = ap.parse_args(argv)
    res = {"depths_mm": DEPTHS.tolist(), "fields": {}}
    for f in args.fields:
        t0 = time.perf_counter()
        case = make_case(f)
        row = {"table": case.machine.pdd(DEPTHS, f).tolist(), "shape": list(case.grid.shape)}
        for r in args.reach:
            row[f"ccc{r}"] = pdd(case, ccc_transport(case, reach=r)).tolist()
        row["engine"] = pdd(case, ccc_transport(case)).tolist()
        row["engine_unhardened"] = pdd(case, ccc_transport(case, hardened=False)).tolist()
        row["fit"] = pdd(case, superposition(case, n_samples=args.samples)).tolist()
        row["fit_seed1"] = pdd(case, superposition(case, n_samples=args.samples, seed=1)).tolist()
        row["fit_unhardened"] = pdd(case, superposition(case, hardened=False, n_samples=args.samples)).tolist()
        row["table_kernel"] = pdd(case, superposition(case, tabulated=True, n_samples=args.samples)).tolist()
        if not args.no_hard:
            row["hard"] = pdd(case, hardened_superposition(case)).tolist()
        row["seconds"] = time.perf_counter() - t0
        res["fields"][str(f)] = row
        report(f, row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


def report(field: float, row: dict) -> None:
    keys = [k for k in row if k not in ("shape", "seconds")]
    print(f"\nfield {field:g} mm ({row['seconds']:.0f} s); PDD (%), normalised at 15 mm")
    print("depth " + " ".join(f"{k:>12s}" for k in keys))
    for n, d in enumerate(DEPTHS):
        print(f"{d:5.0f} " + " ".join(f"{row[k][n]:12.2f}" for k in keys))
    tab = np.asarray(row["table"])
    for k in keys:
        if k == "table":
            continue
        diff = 100 * (np.asarray(row[k]) / tab - 1)
        print(f"  {k:>12s} vs table: max |Δ| {np.abs(diff).max():5.2f} %, mean {diff.mean():+5.2f} %, at 200 mm {diff[DEPTHS == 200][0]:+5.2f} %")


if __name__ == "__main__":
    raise SystemExit(main())
