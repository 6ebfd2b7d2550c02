"""Dose-influence matrix: consistency with the plan-dose engine, sparsity accounting, MLC segments."""

import numpy as np
import pytest
import scipy.sparse as sp

from art.dose import dose, influence_matrix
from art.dose.calc import segment_fluence
from art.dose.machine import hu_to_density
from art.geometry import Grid, Volume
from art.plan import Beam, Plan, Segment
from art.structures import Structure, StructureSet


@pytest.fixture(scope="module")
def case():
    g = Grid((40, 50, 60), (4.0, 4.0, 4.0), (-118.0, -98.0, -78.0))
    z, y, x = g.lps_coordinates()
    body = (x / 110.0) ** 2 + (y / 90.0) ** 2 <= 1.0
    body = np.broadcast_to(body, g.shape).copy()
    hu = np.where(body, 0.0, -1000.0).astype(np.float32)
    ptv = (np.abs(x) <= 20) & (np.abs(y - 5) <= 16) & (np.abs(z) <= 18)
    ss = StructureSet(g, [Structure("BODY", body, g, "EXTERNAL"), Structure("PTV", np.broadcast_to(ptv, g.shape).copy(), g, "PTV")])
    return Volume(hu, g), ss


@pytest.fixture(scope="module")
def im(case, machine):
    ct, ss = case
    beams = [Beam("G0", 0.0), Beam("G120", 120.0, collimator_deg=15.0), Beam("G240", 240.0)]
    return influence_matrix(ct, ss, beams, machine, dose_grid_mm=6.0, bixel_mm=5.0, workers=1)


def test_matrix_format_and_tables(im, case):
    ct, ss = case
    m = im.matrix
    assert sp.isspmatrix_csr(m) or isinstance(m, sp.csr_array)
    assert m.dtype == np.float32 and m.shape == (im.voxel_indices.size, im.n_beamlets)
    assert np.all(np.diff(im.voxel_indices) > 0)
    assert im.dose_grid.spacing == (6.0, 6.0, 6.0)
    assert set(np.unique(im.beam_index)) == {0, 1, 2}
    t = im.beamlet_table()
    assert t.shape == (im.n_beamlets,)
    # bixel centres lie on the 5 mm grid (edges at multiples of 5 mm)
    np.testing.assert_allclose(np.mod(im.bev_x_mm - 2.5, 5.0), 0.0, atol=1e-9)
    # the PTV (40 mm wide) needs at least 8 x 8 beamlets per beam, not absurdly many
    for k in range(3):
        assert 64 <= im.columns(k).size <= 300
    assert m.nnz > 0 and np.all(m.data > 0)


def test_weights_to_dose_is_sum_of_columns(im):
    rng = np.random.default_rng(3)
    w = rng.uniform(0, 2, im.n_beamlets)
    d = im.dose(w, fractions=3).array.reshape(-1)[im.voxel_indices]
    cols = sum(w[j] * im.matrix[:, j].toarray().ravel() for j in range(0, im.n_beamlets, 7))
    w_sub = np.zeros_like(w)
    w_sub[::7] = w[::7]
    np.testing.assert_allclose(im.dose(w_sub).array.reshape(-1)[im.voxel_indices], cols, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(d, 3 * (im.matrix @ w.astype(np.float32)), rtol=1e-5)


def _full_dose(case, im, w, machine):
    ct, ss = case
    beams = [Beam(b.name, b.gantry_deg, b.collimator_deg, b.couch_deg, b.isocenter_lps, fluence=f, fluence_grid=g) for b, (f, g) in zip(im.beams, im.fluence_maps(w))]
    return dose(ct, Plan(beams, 1, machine.name), machine, dose_grid_mm=6.0, structures=ss)


def test_matrix_agrees_with_full_pencil_beam_dose(case, im, machine):
    """D @ w against the plan-dose engine (full kernel, no truncation) for uniform and
    modulated weights; the reported dropped fraction matches the measured loss."""
    ct, ss = case
    from art.geometry import resample_mask

    ptv = resample_mask(ss["PTV"].volume, im.dose_grid).array
    rng = np.random.default_rng(0)
    for w in (np.ones(im.n_beamlets), rng.uniform(0.3, 1.7, im.n_beamlets)):
        d_im = im.dose(w).array
        d_full = _full_dose(case, im, w, machine).array
        assert d_im[ptv].mean() == pytest.approx(d_full[ptv].mean(), rel=0.01)
        hi = d_full > 0.5 * d_full.max()
        assert np.max(np.abs(d_im[hi] - d_full[hi])) < 0.03 * d_full.max()
    measured = 1.0 - im.dose(np.ones(im.n_beamlets)).array.sum() / _full_dose(case, im, np.ones(im.n_beamlets), machine).array.sum()
    assert im.dropped_fraction == pytest.approx(measured, abs=0.01)
    assert im.dropped_fraction < 0.05


def test_open_mlc_equals_jaw_field(machine):
    """Segment with the leaves on the jaw edges = jaw-only field (MLC retracted)."""
    from .conftest import open_segment

    f1, ex1, ey1 = segment_fluence([open_segment(machine, 80.0, 60.0, leaves_at_jaws=True)], machine)
    f2, ex2, ey2 = segment_fluence([open_segment(machine, 80.0, 60.0)], machine)
    np.testing.assert_allclose(f1, f2, atol=1e-12)
    assert f1.sum() * 1.25**2 == pytest.approx(100.0 * 80 * 60 * float(machine.head_scatter(2 * 80 * 60 / 140)), rel=1e-9)


def test_mlc_transmission_and_partial_leaves(machine):
    n = machine.mlc.n_pairs
    lp = np.zeros((2, n))
    lp[0, :], lp[1, :] = -3.3, -3.3  # closed everywhere (touching at -3.3)
    lp[0, 30], lp[1, 30] = -10.0, 12.6  # one 5 mm pair open [0, 5] mm in y
    seg = Segment(lp, (-50.0, 50.0, -20.0, 20.0), 10.0)
    f, ex, ey = segment_fluence([seg], machine, fluence_mm=1.0)
    sc = float(machine.head_scatter(2 * 100 * 40 / 140))
    open_area = f.sum() / (10.0 * sc)
    t = machine.mlc.transmission
    assert open_area == pytest.approx(22.6 * 5.0 + t * (100 * 40 - 22.6 * 5.0), rel=1e-9)


def test_aperture_of_beamlets_matches_their_columns(case, im, machine):
    """An MLC aperture equal to a block of beamlets gives ~ the sum of those columns."""
    ct, ss = case
    k = 0
    cols = im.columns(k)
    bx, by = im.bev_x_mm[cols], im.bev_y_mm[cols]
    sel = cols[(np.abs(bx) < 15) & (np.abs(by) < 15)]  # central 6 x 6 beamlets (30 x 30 mm)
    assert sel.size == 36
    w = np.zeros(im.n_beamlets)
    w[sel] = 100.0
    d_cols = im.dose(w).array
    n = machine.mlc.n_pairs
    lp = np.zeros((2, n))
    bnd = machine.mlc.boundaries_mm
    inside = (bnd[:-1] >= -15 - 1e-9) & (bnd[1:] <= 15 + 1e-9)
    lp[0, inside], lp[1, inside] = -15.0, 15.0
    lp[0, ~inside], lp[1, ~inside] = -0.25, 0.25
    seg = Segment(lp, (-15.0, 15.0, -15.0, 15.0), 100.0)
    beam = im.beams[k]
    plan = Plan([Beam("S", beam.gantry_deg, beam.collimator_deg, beam.couch_deg, beam.isocenter_lps, segments=[seg])], 1, machine.name)
    d_seg = dose(ct, plan, machine, dose_grid_mm=6.0, structures=ss).array
    # head scatter differs: the matrix uses the beam's beamlet bounding box, the segment its jaws
    sc_ratio = float(machine.head_scatter(30.0) / im.head_scatter[k])
    hi = d_seg > 0.5 * d_seg.max()
    ratio = d_seg[hi].sum() / (d_cols[hi].sum() * sc_ratio)
    assert ratio == pytest.approx(1.0, abs=0.04)


def test_influence_input_errors(case, machine):
    ct, ss = case
    from art.errors import InputError

    with pytest.raises(InputError, match="bixel_mm"):
        influence_matrix(ct, ss, [Beam("A", 0.0)], machine, bixel_mm=0)
    with pytest.raises(InputError, match="no structure named"):
        influence_matrix(ct, ss, [Beam("A", 0.0)], machine, target="GTV")


@pytest.mark.gpu
def test_cupy_matches_numpy(case, im, machine):
    """The numeric core under CuPy agrees with NumPy to 1e-4 relative."""
    cp = pytest.importorskip("cupy")
    from art.backend import gpu_available
    from art.dose.engine import beam_points, fluence_dose, kernel_terms
    from art.dose.beam_geometry import BeamFrame
    from art.dose.kernel import fit_kernel

    if not gpu_available():
        pytest.skip("no CUDA GPU")
    ct, ss = case
    dens = Volume(hu_to_density(ct.array), ct.grid)
    pts_lps = ct.grid.index_to_lps(np.argwhere(ss["BODY"].mask)[::5].astype(float))
    frame = BeamFrame(30.0, 0.0, 0.0, (0, 0, 0), 1000.0)
    pts = beam_points(dens, frame, pts_lps)
    k = fit_kernel(machine)
    amp, sig = kernel_terms(k, pts)
    flu = np.random.default_rng(0).uniform(0, 1, (12, 10)).astype(np.float32)
    ex, ey = np.arange(11) * 5.0 - 25, np.arange(13) * 5.0 - 30
    ref = fluence_dose(amp, sig, pts.u, pts.v, ex, ey, flu)
    amp_g, sig_g = kernel_terms(k, pts, xp=cp)
    got = fluence_dose(amp_g, sig_g, cp.asarray(pts.u), cp.asarray(pts.v), ex, ey, flu)
    np.testing.assert_allclose(cp.asnumpy(got), ref, rtol=1e-4, atol=1e-6 * float(ref.max()))


@pytest.fixture(scope="module")
def one_beam_exact_and_sparse(case, machine):
    ct, ss = case
    beams = [Beam("G30", 30.0, collimator_deg=10.0)]
    kw = dict(dose_grid_mm=6.0, bixel_mm=5.0, workers=1)
    exact = influence_matrix(ct, ss, beams, machine, threshold=0.0, **kw)
    sparse = influence_matrix(ct, ss, beams, machine, **kw)
    plain = influence_matrix(ct, ss, beams, machine, compensate=False, **kw)
    return exact, sparse, plain


def test_block_accounting_is_exact_for_block_constant_fluence(one_beam_exact_and_sparse):
    """Dose of a fluence constant over each 25 mm block of beamlets equals the dense
    (untruncated) matrix's dose voxel by voxel; the dropped fraction is honest."""
    exact, sparse, plain = one_beam_exact_and_sparse
    assert exact.matrix.shape == sparse.matrix.shape
    assert sparse.matrix.nnz < 0.5 * exact.matrix.nnz
    k = sparse.stats["block_bixels"]
    ix = np.round(sparse.bev_x_mm / 5.0 - 0.5).astype(int)
    iy = np.round(sparse.bev_y_mm / 5.0 - 0.5).astype(int)
    blk = (iy - iy.min()) // k * 1000 + (ix - ix.min()) // k
    _, inv = np.unique(blk, return_inverse=True)
    w = np.random.default_rng(1).uniform(0.2, 2.0, inv.max() + 1)[inv].astype(np.float32)
    d_exact = exact.matrix @ w
    d_sparse = sparse.matrix @ w
    np.testing.assert_allclose(d_sparse, d_exact, rtol=2e-4, atol=1e-4 * float(d_exact.max()))
    full = float((exact.matrix @ np.ones(exact.n_beamlets, np.float32)).sum(dtype=np.float64))
    for im in (sparse, plain):
        stored = float((im.matrix @ np.ones(im.n_beamlets, np.float32)).sum(dtype=np.float64))
        assert im.dropped_fraction == pytest.approx(1 - stored / full, abs=1e-4)
    assert sparse.dropped_fraction < 0.01
    # plain thresholding loses the broad scatter: the reason for the block accounting
    assert plain.dropped_fraction > 0.05
    assert plain.stats["below_threshold_fraction"] == pytest.approx(plain.dropped_fraction, abs=1e-6)


def test_modulated_error_statistic_is_measured(one_beam_exact_and_sparse):
    """The reported error of the random test fluence matches a direct comparison."""
    exact, sparse, _ = one_beam_exact_and_sparse
    w = np.random.default_rng(0).uniform(0.3, 1.7, sparse.n_beamlets).astype(np.float32)
    err = np.abs(sparse.matrix @ w - exact.matrix @ w).sum() / (exact.matrix @ w).sum()
    assert err < 0.1
    assert sparse.stats["modulated_error"] == pytest.approx(float(err), rel=0.5, abs=2e-3)


@pytest.mark.gpu
def test_cupy_matrix_matches_numpy(case, im, machine):
    """The whole matrix built with the CuPy core equals the NumPy one to 1e-4 relative."""
    pytest.importorskip("cupy")
    from art.backend import gpu_available

    if not gpu_available():
        pytest.skip("no CUDA GPU")
    ct, ss = case
    g = influence_matrix(ct, ss, im.beams, machine, dose_grid_mm=6.0, bixel_mm=5.0, backend="cupy")
    assert g.stats["backend"] == "cupy"
    assert g.matrix.shape == im.matrix.shape
    w = np.random.default_rng(2).uniform(0, 2, im.n_beamlets).astype(np.float32)
    ref = im.matrix @ w
    np.testing.assert_allclose(g.matrix @ w, ref, rtol=1e-4, atol=1e-4 * float(ref.max()))
    # entries at the threshold may fall either side in float32 on the two backends
    assert abs(g.matrix.nnz - im.matrix.nnz) <= 1e-3 * im.matrix.nnz
    assert g.dropped_fraction == pytest.approx(im.dropped_fraction, abs=1e-4)
