"""CCC kernels: the converted tables, the polyenergetic kernel and its fixed-exponent fit."""

import numpy as np
import pytest

from art.dose.ccc.kernels import SCALES_MM, group_kernels, load_tables, poly_kernel, reference_spectrum


def test_tables_as_converted():
    t = load_tables()
    assert t.total.shape == (18, 48, 24)
    assert t.energies_mev[:14].tolist() == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert t.extrapolated.tolist() == [False] * 14 + [True] * 4
    assert t.radii_mm[0] == pytest.approx(0.5) and t.radii_mm[-1] == pytest.approx(600.0)
    assert t.angle_edges_deg[0] == 0.0 and t.angle_edges_deg[-1] == pytest.approx(180.0)
    sums = t.total.sum(axis=(1, 2))
    assert np.all((sums > 0.93) & (sums < 0.995))  # energy deposited within 60 cm
    # water: mu/rho at 6 MeV 0.0277 cm2/g (NIST); the extrapolated energies attenuate less
    assert t.mu_per_mm[13] == pytest.approx(0.00277, rel=1e-3)
    assert np.all(np.diff(t.mu_per_mm) < 0)


def test_forward_peaked_kernel():
    k = poly_kernel(*reference_spectrum())
    per_sr = k.cumulative[:, -1] / k.solid_angles
    assert per_sr[0] > 20 * per_sr[24]  # 0-3.75 deg vs 90-93.75 deg
    assert per_sr[0] > 100 * per_sr[-1]


def test_fit_reproduces_the_tabulated_cumulative_fractions():
    """Tolerance: |fit - table| <= 0.002 of the released energy at every tabulated radius and
    zenith bin, and <= 3 % of the bin's own total for bins holding >= 1 % of the energy."""
    k = poly_kernel(*reference_spectrum())
    fitted = k.fitted_cumulative(k.radii_mm)
    assert np.abs(fitted - k.cumulative).max() <= 0.002
    assert k.fit_max_error <= 0.002 and k.fit_max_rel_error <= 0.03
    # signed amplitudes, but a non-negative radial density (energy per radiological mm) everywhere
    r = np.linspace(0.0, 2000.0, 20001)
    density = (k.amplitudes * k.a_per_mm) @ np.exp(-np.outer(k.a_per_mm, r))
    assert density.min() >= -1e-12
    assert k.a_per_mm.tolist() == pytest.approx([1.0 / s for s in SCALES_MM])
    # the fit's total stays close to the table's (no energy invented)
    assert k.amplitudes.sum() == pytest.approx(k.cumulative[:, -1].sum(), rel=0.05)


def test_mono_energetic_spectrum_is_the_table():
    t = load_tables()
    k = poly_kernel([2.0], [1.0])
    np.testing.assert_allclose(k.cumulative, np.cumsum(t.total[9], axis=1), rtol=1e-12)
    assert k.terma_weights() == pytest.approx([2.0 * t.mu_per_mm[9]])


def test_poly_kernel_weights_by_energy_released():
    t = load_tables()
    k = poly_kernel([1.0, 6.0], [1.0, 1.0])
    w = np.array([1.0 * t.mu_per_mm[6], 6.0 * t.mu_per_mm[13]])
    expect = (w[0] * np.cumsum(t.total[6], axis=1) + w[1] * np.cumsum(t.total[13], axis=1)) / w.sum()
    np.testing.assert_allclose(k.cumulative, expect, rtol=1e-10)


def test_bad_spectra_are_refused():
    with pytest.raises(ValueError, match="not in the kernel table"):
        poly_kernel([7.0], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        poly_kernel([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(ValueError, match="same length"):
        poly_kernel([1.0, 2.0], [1.0])


def _ten_mv_spectrum():
    t = load_tables()
    e = t.energies_mev[:16]  # 0.2-6 MeV tabulated, 8 and 10 MeV extrapolated
    f = np.concatenate([t.fluence_6mv, [0.004, 0.003]])
    return e, f


def test_energy_groups_partition_the_spectrum_and_keep_its_terma():
    e, f = _ten_mv_spectrum()
    gk = group_kernels(e, f, edges_mev=(2.0, 4.0, 7.0))
    assert [idx.tolist() for idx in gk.groups] == [list(range(9)), [9, 10], [11, 12, 13], [14, 15]]
    assert gk.kernel.energies_mev[[8, 9, 13, 14]] == pytest.approx([1.5, 2.0, 6.0, 8.0], rel=1e-6)
    w = gk.terma_weights()  # (n_E, G): each energy's weight in its own group only
    assert w.shape == (16, 4)
    np.testing.assert_allclose(w.sum(axis=1), gk.kernel.terma_weights(), rtol=1e-12)
    assert np.all((w > 0).sum(axis=1) == 1)
    # each group's kernel is the polyenergetic kernel of the spectrum restricted to the group
    mid = poly_kernel(e[9:11], f[9:11])
    np.testing.assert_allclose(gk.kernels[1].amplitudes, mid.amplitudes, rtol=1e-12)
    # no edges: one group, the spectrum's own kernel; a group without fluence is dropped
    one = group_kernels(e, f, edges_mev=())
    assert len(one.kernels) == 1 and one.kernels[0] is one.kernel
    assert len(group_kernels(e[:14], f[:14], edges_mev=(2.0, 4.0, 7.0)).kernels) == 3
    f0 = f.copy()
    f0[9:11] = 0.0
    assert len(group_kernels(e, f0, edges_mev=(2.0, 4.0, 7.0)).kernels) == 3


def test_harder_groups_have_more_forward_kernels():
    """Hardening: the higher the group's energies, the more of its energy goes forward (0-15 deg)."""
    gk = group_kernels(*_ten_mv_spectrum(), edges_mev=(2.0, 4.0, 7.0))
    forward = [k.cumulative[:4, -1].sum() / k.cumulative[:, -1].sum() for k in gk.kernels]
    assert np.all(np.diff(forward) > 0.02), forward
    for k in gk.kernels:  # every group's fit keeps the kernel's energy
        assert k.amplitudes.sum() == pytest.approx(k.cumulative[:, -1].sum(), rel=0.12)
