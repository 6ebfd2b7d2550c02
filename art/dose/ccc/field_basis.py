"""Central-axis depth doses of a square field in water, one per spectrum energy, for the spectrum fit.

The engine's photon dose is linear in the spectrum's fluence once the energy groups' kernels are
fixed: a group's TERMA is ``T_g = Σ_{E∈g} φ_E T_E`` (``T_E`` the TERMA of a unit fluence of energy E)
and the transport is linear in it, so ``D = Σ_E φ_E (T_E ⊗ K_g(E))``. :func:`field_basis` computes
each ``T_E ⊗ K_g(E)`` on the central axis once per field (one transport per energy), and
:meth:`FieldBasis.dose` gives the central axis of any spectrum from them (a matrix product) — the
engine's own dose for the spectrum whose group kernels were used (``kernel_fluence``), and close to
it for spectra near it (a group's kernel is its energies' kernels weighted by the spectrum within the
group: it moves little with the spectrum's tilt). The electron contamination is linear too:
``C = f · (Σ_E φ_E E μ_E) · c_λ(d)``, with ``c_λ`` kept per depth λ.

The commissioning (:mod:`art.dose.ccc.commission`) fits the spectrum to several fields' PDDs at
once with these bases, then checks the fit with the engine itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from art.dose.ccc.calibration import central_axis, open_field_beam, phantom_density, water_grid
from art.dose.ccc.core import BeamSource, directions_for
from art.dose.ccc.kernels import SCALES_MM, GroupedKernel, energy_groups, load_tables, poly_kernel
from art.dose.ccc.model import CCCModel, spectrum_model
from art.dose.ccc.terma import beam_terma
from art.dose.machine import Machine


@dataclass(frozen=True)
class FieldBasis:
    """The central-axis doses of one square field per spectrum energy (see the module docstring).

    Attributes
    ----------
    field_mm : float
        Side of the square field at the PDD table's SSD (mm).
    depths_mm : (n,)
        Depths of the voxel centres on the central axis.
    energies_mev : (nE,)
    photon : (nE, n)
        Photon dose of a unit fluence of each energy (arbitrary units common to all energies).
    contamination : dict
        λ (mm) → (n,) the contamination dose per unit fraction and unit ``Σ_E φ_E E μ_E``, same units.
    kernel_fluence : (nE,)
        The spectrum whose energy groups' kernels transported the energies.
    """

    field_mm: float
    depths_mm: np.ndarray
    energies_mev: np.ndarray
    photon: np.ndarray
    contamination: dict
    kernel_fluence: np.ndarray

    def dose(self, fluence, fraction: float = 0.0, depth_mm: float | None = None) -> np.ndarray:
        """Central-axis dose (n,) of the spectrum ``fluence`` (nE,) with an electron contamination
        ``fraction`` of depth ``depth_mm`` (one of the basis's λ)."""
        phi = np.asarray(fluence, dtype=np.float64)
        out = phi @ self.photon
        if fraction:
            t = load_tables()
            idx = t.energy_index(self.energies_mev)
            out = out + fraction * float(np.sum(phi * t.energies_mev[idx] * t.mu_per_mm[idx])) * self.contamination[depth_mm]
        return out


def fit_phantom(machine: Machine, field_mm: float, *, spacing: float, depth_mm: float):
    """The beam (100 MU, gantry 0, the surface at the PDD table's SSD) and water grid of a square
    field of side ``field_mm`` at that SSD: (beam, grid). The phantom extends
    0.6 × the field + 40 mm from the axis (as ``tests/dose/test_ccc_water.py``), at least the field's
    half width at ``depth_mm`` + 15 mm."""
    iso = machine.sad_mm - machine.pdd_ssd_mm
    beam = open_field_beam(machine, field_mm * machine.sad_mm / machine.pdd_ssd_mm, mu=100.0, isocenter_lps=(0.0, iso, 0.0))
    half = max(0.6 * field_mm + 40.0, 0.5 * field_mm * (1.0 + depth_mm / machine.pdd_ssd_mm) + 15.0)
    return beam, water_grid((spacing,) * 3, half_width_mm=half, depth_mm=depth_mm)


def field_basis(machine: Machine, field_mm: float, energies_mev, kernel_fluence, *, spacing: float = 2.5, depth_mm: float = 420.0,
                lambdas=(4.0, 6.0, 8.0, 11.0, 15.0, 20.0), workers: int | None = None) -> FieldBasis:  # fmt: skip
    """The :class:`FieldBasis` of a square field (side ``field_mm`` at the PDD table's SSD) in water.

    ``energies_mev``: the spectrum's energies (tabulated kernel energies); ``kernel_fluence``: the
    spectrum whose energy groups' kernels transport them (an energy whose group has no fluence in it
    is transported with the group's kernel for a flat fluence). One TERMA for all energies, one
    transport per energy (the engine's, NumPy, ``workers`` threads), on a ``spacing`` mm grid.
    """
    from art.dose.ccc.transport import transport

    e = np.asarray(energies_mev, dtype=np.float64)
    kf = np.asarray(kernel_fluence, dtype=np.float64)
    n = e.size
    beam, grid = fit_phantom(machine, field_mm, spacing=spacing, depth_mm=depth_mm)
    rho = np.ones(grid.shape, np.float32)
    density = phantom_density(rho, grid)
    flat = poly_kernel(e, np.ones(n))  # its TERMA weights: E μ_E / n
    groups = energy_groups(e, np.ones(n))
    kernels = tuple(poly_kernel(e[idx], kf[idx] if kf[idx].sum() > 0 else np.ones(idx.size)) for idx in groups)
    singles = GroupedKernel(flat, tuple(np.array([i]) for i in range(n)), (flat,) * n)
    model = spectrum_model(e, np.ones(n) / n)
    points = grid.index_to_lps(np.indices(grid.shape).reshape(3, -1).T.astype(np.float64))
    terma = beam_terma(beam, machine, model, singles, density, points, voxel_mm=spacing)[0] * np.float32(n)
    terma = terma.reshape((n,) + grid.shape)
    points = None  # noqa: F841 - freed before the transport
    vectors, lengths, weights = directions_for([BeamSource(beam, machine, model, GroupedKernel(flat, groups, kernels))], grid, "HFS")
    a = 1.0 / np.asarray(SCALES_MM)
    group_of = {int(i): g for g, idx in enumerate(groups) for i in idx}
    photon = []
    for i in range(n):
        d = transport(terma[i : i + 1], rho, weights[:, group_of[i] : group_of[i] + 1], a, vectors, lengths, workers=workers or 2)
        depths, cax = central_axis(np.asarray(d), grid)
        photon.append(cax)
    terma = None  # noqa: F841
    nz, ny, nx = grid.shape
    cax_points = grid.index_to_lps(np.stack([np.full(ny, nz // 2), np.arange(ny), np.full(ny, nx // 2)], axis=1).astype(np.float64))
    unit = float(flat.terma_weights().sum())
    cont = {}
    for lam in lambdas:
        m = CCCModel(**{**model.__dict__, "contamination_fraction": 1.0, "contamination_depth_mm": float(lam)})
        cont[float(lam)] = beam_terma(beam, machine, m, flat, density, cax_points, voxel_mm=spacing)[1].astype(np.float64) / unit
    return FieldBasis(float(field_mm), depths, e, np.asarray(photon), cont, kf)
