"""Segment-weight refinement against the influence-matrix dose of the optimised weights."""

import numpy as np
import pytest

from art.delivery import check_plan, refine_segment_weights, segment_beamlet_matrix, sequence_plan
from art.dose import influence_matrix, load_machine
from art.geometry import Grid, Volume
from art.plan import Beam, Plan
from art.structures import Structure, StructureSet


@pytest.fixture(scope="module")
def setup():
    machine = load_machine()
    g = Grid((20, 30, 30), (6.0, 6.0, 6.0), (-57.0, -87.0, -87.0))
    z, y, x = g.lps_coordinates()
    body = np.broadcast_to((x / 85.0) ** 2 + (y / 85.0) ** 2 <= 1.0, g.shape).copy()
    ptv = np.broadcast_to((np.abs(x) <= 20) & (np.abs(y) <= 15) & (np.abs(z) <= 15), g.shape).copy()
    ss = StructureSet(g, [Structure("BODY", body, g, "EXTERNAL"), Structure("PTV", ptv, g, "PTV")])
    ct = Volume(np.where(body, 0.0, -1000.0).astype(np.float32), g)
    beams = [Beam("G0", 0.0), Beam("G90", 90.0)]
    im = influence_matrix(ct, ss, beams, machine, dose_grid_mm=6.0, bixel_mm=5.0, workers=1, measure_dropped=False)
    return machine, im


def test_segment_matrix_reproduces_segment_fluence(setup):
    machine, im = setup
    w = np.random.default_rng(0).uniform(1, 10, im.n_beamlets)
    plan = Plan([Beam(b.name, b.gantry_deg, fluence=f, fluence_grid=g) for b, (f, g) in zip(im.beams, im.fluence_maps(w))], 1, machine.name)
    seq, _ = sequence_plan(plan, machine, levels=50, min_segment_mu=0)
    s = segment_beamlet_matrix(seq, im, machine, transmission=False)
    mu = np.array([x.mu for b in seq.beams for x in b.segments])
    rec = s @ mu
    # 50 levels: each beamlet within half a level of its weight
    step = max(f.max() for f, _ in im.fluence_maps(w)) / 50
    assert np.all(np.abs(rec - w) <= step / 2 + 1e-6)
    assert s.shape == (im.n_beamlets, mu.size)


def test_refinement_reduces_the_dose_difference(setup):
    machine, im = setup
    rng = np.random.default_rng(1)
    w = rng.uniform(2, 12, im.n_beamlets)
    plan = Plan([Beam(b.name, b.gantry_deg, fluence=f, fluence_grid=g) for b, (f, g) in zip(im.beams, im.fluence_maps(w))], 1, machine.name)
    seq, _ = sequence_plan(plan, machine, levels=4)
    ref, st = refine_segment_weights(seq, im, w, machine)
    assert st["rms_after"] < st["rms_before"]
    assert st["rms_before"] > 0.005  # 4 levels leave a visible error to recover
    assert check_plan(ref, machine) == []
    assert [len(b.segments) for b in ref.beams] == [len(b.segments) for b in seq.beams]
    # the stated RMS is the real one
    s = segment_beamlet_matrix(ref, im, machine)
    mu = np.array([x.mu for b in ref.beams for x in b.segments])
    d_opt = im.matrix @ w.astype(np.float32)
    d_ref = im.matrix @ (s @ mu).astype(np.float32)
    rows = d_opt >= 0.1 * d_opt.max()
    rms = np.sqrt(np.mean((d_ref[rows] - d_opt[rows]) ** 2)) / d_opt.max()
    assert rms == pytest.approx(st["rms_after"], rel=1e-3)


def test_reduced_problem_has_the_full_problems_bounded_solution():
    """The Cholesky-reduced least-squares problem gives the same bounded optimum (active bounds included)."""
    from scipy.optimize import lsq_linear

    from art.delivery.refine import _reduced

    rng = np.random.default_rng(3)
    a = rng.random((4000, 30)) * (rng.random((4000, 30)) < 0.7)
    b = a @ rng.normal(1.0, 2.0, 30) + rng.normal(0, 0.1, 4000)  # some weights negative: bounds active
    lb = np.full(30, 0.5)
    r, c = _reduced(a, b)
    assert r.shape == (30, 30)
    full = lsq_linear(a, b, bounds=(lb, np.inf), method="trf", tol=1e-12)
    red = lsq_linear(r, c, bounds=(lb, np.inf), method="trf", tol=1e-12)
    assert np.sum(np.isclose(full.x, 0.5)) >= 3
    np.testing.assert_allclose(red.x, full.x, atol=1e-6 * np.abs(full.x).max())
    assert np.sum((a @ red.x - b) ** 2) == pytest.approx(np.sum((a @ full.x - b) ** 2), rel=1e-9)


def test_reduced_problem_keeps_a_rank_deficient_matrix():
    from art.delivery.refine import _reduced

    a = np.random.default_rng(4).random((500, 6))
    a[:, 5] = 0.0  # a segment without dose in the fitted voxels
    b = np.ones(500)
    r, c = _reduced(a, b)
    assert r is a and c is b
