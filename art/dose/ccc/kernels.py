"""Point-spread kernels of the collapsed-cone engine: tables, polyenergetic kernel, exponential fit.

The tables (``art/dose/data/ccc_kernels.npz``, converted by ``make_ccc_kernels.py`` from the
opentps-core 2.0.0 ``Kernels_6MV`` data, Apache-2.0, OpenTPS consortium) give, for
mono-energetic photons interacting at the origin of an infinite water medium, the fraction
of their energy deposited in each (zenith bin, radial shell) voxel: 48 zenith bins of 3.75°
(0 = the photon's direction), 24 shells out to 60 cm; energies 0.2–6 MeV tabulated,
8–20 MeV extrapolated (see the script).

A spectrum ``φ_E`` (relative photon fluence per energy) gives the polyenergetic kernel as
the mono kernels weighted by ``φ_E · E · μ_E`` (the energy each energy releases, as
opentps' ``make_poly``). For each zenith bin ``i`` the cumulative fraction deposited within
radiological radius ``r`` is fitted by non-negative sums of a FIXED set of exponentials,

    C_i(r) ≈ Σ_j A_ij (1 − exp(−a_j r)),      a_j = 1 / SCALES_MM[j]   (per radiological mm),

so that the transport along each cone line is one first-order recurrence per exponent, and,
because the exponents are the same for every spectrum and beam, the sources of all beams
(and all machines) add before the transport. The amplitudes may be negative (a difference of
two exponentials rises and falls, as the forward electrons' deposition does), the fitted radial
density itself is non-negative.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from art.dose.machine import DATA_DIR

KERNEL_FILE = DATA_DIR / "ccc_kernels.npz"
#: 1/a_j, radiological mm: four for the electrons set in motion (up to ~2 cm at 6 MV), one for the scatter
SCALES_MM = (2.0, 4.0, 8.0, 16.0, 250.0)
#: the fit's range: what a patient can hold (beyond it the scatter exponential continues)
FIT_TO_MM = 300.0
#: kernel hardening with depth: the spectrum is split into energy groups at these edges (MeV; an
#: energy equal to an edge belongs to the group above it), each group with its own TERMA (its own
#: attenuation) and its own kernel (:func:`group_kernels`); () = one polyenergetic kernel, not hardened.
#: 0.2–1.5, 2–3, 4–6 MeV and the extrapolated 8–20 MeV (10X): 3 groups for 6X and 6FFF, 4 for 10X. Against
#: one group per tabulated energy (exact hardening) the 6X 5×5 / 10×10 cm² PDD at 30 cm is 0.6 / 0.4 %
#: low (edges 1 and 3 MeV: 1.0 / 0.6 %; no hardening: 4.8 / 3.1 %; 10X without the 7 MeV edge: 1.5 %)
GROUP_EDGES_MEV = (2.0, 4.0, 7.0)


@dataclass(frozen=True)
class KernelTables:
    """The kernel tables as stored (see the module docstring).

    Attributes
    ----------
    energies_mev, mu_per_mm, mu_en_per_mm : (ne,)
        Energies; μ and μ_en in water per radiological mm (cm²/g / 10).
    extrapolated : (ne,) bool
        Energies whose kernel is the stretched 6 MeV kernel.
    fluence_6mv : (14,)
        The reference 6 MV spectrum on the first 14 energies.
    radii_mm : (nr,) outer radii of the shells; angle_edges_deg : (na + 1,) from 0 to 180.
    total : (ne, na, nr) fraction of the energy deposited per (zenith bin, shell).
    """

    energies_mev: np.ndarray
    mu_per_mm: np.ndarray
    mu_en_per_mm: np.ndarray
    extrapolated: np.ndarray
    fluence_6mv: np.ndarray
    radii_mm: np.ndarray
    angle_edges_deg: np.ndarray
    total: np.ndarray

    def energy_index(self, energies_mev) -> np.ndarray:
        """Indices of tabulated energies (each must match one within 1 keV), else ValueError."""
        e = np.asarray(energies_mev, dtype=np.float64).reshape(-1)
        idx = np.abs(e[:, None] - self.energies_mev[None, :]).argmin(axis=1)
        bad = np.abs(self.energies_mev[idx] - e) > 1e-3
        if np.any(bad):
            raise ValueError(f"energies {e[bad].tolist()} MeV are not in the kernel table ({self.energies_mev.tolist()})")
        return idx


@functools.lru_cache(maxsize=1)
def load_tables() -> KernelTables:
    """The shipped kernel tables (read once)."""
    with np.load(KERNEL_FILE) as d:
        return KernelTables(
            energies_mev=d["energies_mev"].astype(np.float64),
            mu_per_mm=d["mu_cm2_g"].astype(np.float64) / 10.0,
            mu_en_per_mm=d["mu_en_cm2_g"].astype(np.float64) / 10.0,
            extrapolated=d["extrapolated"].astype(bool),
            fluence_6mv=d["fluence_6mv"].astype(np.float64),
            radii_mm=d["radii_cm"].astype(np.float64) * 10.0,
            angle_edges_deg=np.concatenate([[0.0], d["angles_deg"].astype(np.float64)]),
            total=d["total"].astype(np.float64),
        )


@dataclass(frozen=True)
class PolyKernel:
    """A polyenergetic kernel and its exponential fit.

    Attributes
    ----------
    energies_mev, fluence, mu_per_mm, mu_en_per_mm : (n,)
        The spectrum (fluence normalised to sum 1) and its attenuation coefficients.
    angle_edges_deg : (na + 1,)
    radii_mm : (nr,)
    cumulative : (na, nr)
        Tabulated cumulative fraction per zenith bin at the shells' outer radii.
    a_per_mm : (J,)
        The fixed exponents (per radiological mm).
    amplitudes : (na, J)
        A_ij (signed; the radial density they make is ≥ 0); the fit's total per bin is ``amplitudes.sum(1)``.
    fit_max_error : float
        Largest |fit − table| of the cumulative fractions (absolute, out of the whole kernel).
    fit_max_rel_error : float
        The same per bin relative to that bin's total, worst bin of those holding ≥ 1 % of the energy.
    """

    energies_mev: np.ndarray
    fluence: np.ndarray
    mu_per_mm: np.ndarray
    mu_en_per_mm: np.ndarray
    angle_edges_deg: np.ndarray
    radii_mm: np.ndarray
    cumulative: np.ndarray
    a_per_mm: np.ndarray
    amplitudes: np.ndarray
    fit_max_error: float
    fit_max_rel_error: float

    @property
    def solid_angles(self) -> np.ndarray:
        """Solid angle (sr) of each zenith bin, (na,)."""
        c = np.cos(np.deg2rad(self.angle_edges_deg))
        return 2.0 * np.pi * (c[:-1] - c[1:])

    def per_steradian(self) -> np.ndarray:
        """κ_ij = A_ij / Ω_i: the fitted kernel per steradian in each zenith bin, (na, J)."""
        return self.amplitudes / self.solid_angles[:, None]

    def terma_weights(self) -> np.ndarray:
        """φ_E · E · μ_E of each energy (per mm), (n,): TERMA = Σ_E w_E exp(−μ_E d)."""
        return self.fluence * self.energies_mev * self.mu_per_mm

    def fitted_cumulative(self, r_mm) -> np.ndarray:
        """Σ_j A_ij (1 − exp(−a_j r)) at radii r (mm), shape (na, len(r))."""
        r = np.asarray(r_mm, dtype=np.float64).reshape(-1)
        return self.amplitudes @ (1.0 - np.exp(-np.outer(self.a_per_mm, r)))


def _pair_basis(a_per_mm: np.ndarray) -> np.ndarray:
    """Amplitude vectors (nb, J) of the non-negative radial densities the fit combines: each
    exponential ``a_j e^{−a_j r}`` and each difference ``e^{−a_i r} − e^{−a_k r}`` (a_i < a_k),
    which rises from 0 and falls (the forward electrons' deposition)."""
    order = np.argsort(a_per_mm)
    rows = [np.eye(a_per_mm.size)[j] for j in range(a_per_mm.size)]
    for n, i in enumerate(order):
        for k in order[n + 1 :]:
            v = np.zeros(a_per_mm.size)
            v[i], v[k] = 1.0 / a_per_mm[i], -1.0 / a_per_mm[k]
            rows.append(v)
    return np.asarray(rows)


def fit_exponentials(cumulative: np.ndarray, radii_mm: np.ndarray, a_per_mm: np.ndarray, *, fit_to_mm: float = FIT_TO_MM) -> np.ndarray:
    """Amplitudes A (na, J) with Σ_j A_ij (1 − e^{−a_j r}) ≈ cumulative[i](r) for r ≤ ``fit_to_mm``.

    Least squares weighted uniformly in r (the tabulated radii and every 5 mm from 10 mm, the table
    interpolated linearly in log r): energy misplaced by Δr moves the dose by about μ Δr, wherever
    it is. The amplitudes may be negative, but the fitted radial density is a non-negative
    combination (NNLS) of :func:`_pair_basis`, so the kernel stays ≥ 0 at every radius.
    """
    from scipy.optimize import nnls

    rf = np.unique(np.concatenate([radii_mm[radii_mm <= fit_to_mm], np.arange(10.0, fit_to_mm + 1e-9, 5.0)]))
    lr = np.log(np.concatenate([[1e-3], radii_mm]))
    table = np.array([np.interp(np.log(rf), lr, np.concatenate([[0.0], c])) for c in cumulative])
    sw = np.sqrt(np.gradient(rf))
    pairs = _pair_basis(a_per_mm)
    basis = ((1.0 - np.exp(-np.outer(rf, a_per_mm))) @ pairs.T) * sw[:, None]
    return np.array([nnls(basis, c * sw, maxiter=100 * basis.shape[1])[0] @ pairs for c in table])


@functools.lru_cache(maxsize=16)
def _poly_cached(energies: tuple, fluence: tuple) -> PolyKernel:
    t = load_tables()
    idx = t.energy_index(energies)
    phi = np.asarray(fluence, dtype=np.float64)
    phi = phi / phi.sum()
    w = phi * t.energies_mev[idx] * t.mu_per_mm[idx]
    kern = np.einsum("e,eak->ak", w / w.sum(), t.total[idx])
    cum = np.cumsum(kern, axis=1)
    a = 1.0 / np.asarray(SCALES_MM)
    amps = fit_exponentials(cum, t.radii_mm, a)
    fitted = amps @ (1.0 - np.exp(-np.outer(a, t.radii_mm)))
    err = np.abs(fitted - cum)
    big = cum[:, -1] >= 0.01 * cum[:, -1].sum()
    return PolyKernel(
        energies_mev=t.energies_mev[idx], fluence=phi, mu_per_mm=t.mu_per_mm[idx], mu_en_per_mm=t.mu_en_per_mm[idx],
        angle_edges_deg=t.angle_edges_deg, radii_mm=t.radii_mm, cumulative=cum, a_per_mm=a, amplitudes=amps,
        fit_max_error=float(err.max()), fit_max_rel_error=float((err[big].max(axis=1) / cum[big, -1]).max()),
    )  # fmt: skip


def poly_kernel(energies_mev, fluence) -> PolyKernel:
    """The polyenergetic kernel of a spectrum (cached per spectrum).

    Parameters
    ----------
    energies_mev : sequence of float
        Energies of the spectrum; each must be a tabulated kernel energy.
    fluence : sequence of float
        Relative photon fluence per energy (≥ 0, not all 0).

    Returns
    -------
    PolyKernel
    """
    e = tuple(float(v) for v in np.asarray(energies_mev, dtype=np.float64).reshape(-1))
    f = tuple(float(v) for v in np.asarray(fluence, dtype=np.float64).reshape(-1))
    if len(e) != len(f) or not e:
        raise ValueError("energies and fluence must be non-empty and of the same length")
    if min(f) < 0 or sum(f) <= 0:
        raise ValueError("the fluence must be non-negative and not all zero")
    return _poly_cached(e, f)


def reference_spectrum() -> tuple[np.ndarray, np.ndarray]:
    """The opentps 6 MV spectrum: (energies MeV, relative fluence), 14 values."""
    t = load_tables()
    return t.energies_mev[:14].copy(), t.fluence_6mv.copy()


@dataclass(frozen=True)
class GroupedKernel:
    """A spectrum split into energy groups, each with its own polyenergetic kernel (hardening with depth).

    Attributes
    ----------
    kernel : PolyKernel
        The whole spectrum's kernel: its TERMA weights (:meth:`PolyKernel.terma_weights`, normalised
        over the whole spectrum) and μ give each group's TERMA (the weights of the group's energies).
    groups : tuple of (n_g,) int arrays
        Indices into ``kernel.energies_mev`` of each group's energies (groups without fluence dropped).
    kernels : tuple of PolyKernel
        Each group's kernel: the spectrum restricted to the group, fitted on the same exponents.
    """

    kernel: PolyKernel
    groups: tuple
    kernels: tuple

    def terma_weights(self) -> np.ndarray:
        """(n, G) matrix of the whole spectrum's TERMA weights split by group: TERMA_g = Σ_E W[E, g] exp(−μ_E d)."""
        w = self.kernel.terma_weights()
        out = np.zeros((w.size, len(self.groups)))
        for g, idx in enumerate(self.groups):
            out[idx, g] = w[idx]
        return out


def energy_groups(energies_mev, fluence, edges_mev=None) -> tuple:
    """Indices of the energies in each group (``edges_mev``: the group boundaries, default
    :data:`GROUP_EDGES_MEV`), groups with some fluence only."""
    edges_mev = GROUP_EDGES_MEV if edges_mev is None else edges_mev
    e = np.asarray(energies_mev, dtype=np.float64).reshape(-1)
    f = np.asarray(fluence, dtype=np.float64).reshape(-1)
    label = np.searchsorted(np.asarray(edges_mev, dtype=np.float64), e + 1e-9, side="right") if len(edges_mev) else np.zeros(e.size, int)
    return tuple(idx for g in np.unique(label) if f[(idx := np.flatnonzero(label == g))].sum() > 0)


def group_kernels(energies_mev, fluence, *, edges_mev=None) -> GroupedKernel:
    """The spectrum's kernel and its energy groups' kernels (each cached per spectrum as :func:`poly_kernel`).

    Parameters
    ----------
    energies_mev, fluence : sequence of float
        The spectrum (as :func:`poly_kernel`).
    edges_mev : sequence of float, keyword-only
        Group boundaries (MeV); default (None) :data:`GROUP_EDGES_MEV`; () = one group (no hardening).

    Returns
    -------
    GroupedKernel
    """
    whole = poly_kernel(energies_mev, fluence)
    groups = energy_groups(whole.energies_mev, whole.fluence, edges_mev)
    if len(groups) == 1:
        return GroupedKernel(whole, groups, (whole,))
    kernels = tuple(poly_kernel(whole.energies_mev[idx], whole.fluence[idx]) for idx in groups)
    return GroupedKernel(whole, groups, kernels)
