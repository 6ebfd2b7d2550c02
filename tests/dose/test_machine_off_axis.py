"""The 10X and 6FFF machines in water with the pencil-beam engine: central-axis data, the
off-axis profile (fluence ratio and softening) in plan dose and in the influence matrix."""

import dataclasses

import numpy as np
import pytest

from art.dose import dose, influence_matrix, load_machine
from art.dose.calc import beam_dose_at, beam_fluence, segment_fluence
from art.dose.engine import beam_points, softening_factor
from art.dose.machine import DATA_DIR, hu_to_density
from art.dose.beam_geometry import BeamFrame
from art.geometry import Grid, Volume
from art.plan import Beam, Plan
from art.structures import Structure, StructureSet

from .conftest import open_segment, water_phantom

FFF = load_machine(DATA_DIR / "generic_6fff.json")
TENX = load_machine(DATA_DIR / "generic_10x.json")
SIX = load_machine()


@pytest.fixture(scope="module")
def water():
    ct = water_phantom(spacing=(5.0, 2.0, 5.0), half_xz=250.0)
    return Volume(hu_to_density(ct.array), ct.grid)


def _dose(water, machine, side, points, mu=100.0):
    beam = Beam("A", 0.0, energy=machine.energy, segments=[open_segment(machine, side, mu=mu)])
    return beam_dose_at(water, beam, machine, np.asarray(points, float))


def _cax(depths):
    d = np.asarray(depths, float)
    return np.column_stack([np.zeros_like(d), d, np.zeros_like(d)])


@pytest.mark.parametrize("machine", [FFF, TENX], ids=["6FFF", "10X"])
def test_central_axis_pdd_output_and_calibration(water, machine):
    """The engine reproduces each file's central-axis data with its off-axis profile applied."""
    dref = machine.calib_depth_mm
    depths = np.arange(1.0, 60.0, 1.0)
    d = _dose(water, machine, 100.0, _cax(depths))
    assert abs(depths[np.argmax(d)] - dref) <= 2.0
    ref = _dose(water, machine, 100.0, _cax([dref]))[0]
    assert ref == pytest.approx(1.0, rel=0.01)  # 100 MU -> 1 Gy at d_ref, 10x10, SSD 100
    for side in (100.0, 300.0):
        dd = _dose(water, machine, side, _cax([dref, 100.0, 200.0]))
        for k, depth in enumerate((100.0, 200.0)):
            assert 100 * dd[k + 1] / dd[0] == pytest.approx(float(machine.pdd(depth, side)), rel=0.015), (side, depth)
        assert dd[0] / ref == pytest.approx(float(machine.output_factor(side)), rel=0.015), side


def test_fff_dose_off_axis_follows_the_files_ratio(water):
    """40x40 at SSD 100: at 100 mm depth, 110 mm off axis (100 mm at the isocentre plane) the FFF dose
    is lower than on the axis by about the file's fluence ratio (0.84), a flattened beam's is not."""
    depth, x = 100.0, 110.0
    pts = np.array([[0.0, depth, 0.0], [x, depth, 0.0], [0.0, depth, x]])
    fff = _dose(water, FFF, 400.0, pts)
    six = _dose(water, SIX, 400.0, pts)
    r_iso = x * 1000.0 / (1000.0 + depth)
    soft = np.exp(-(FFF.off_axis_mu_ratio(r_iso) - 1) * FFF.effective_mu_per_mm() * (depth - FFF.calib_depth_mm))
    expected = float(FFF.off_axis_ratio(r_iso) * soft)
    assert 0.8 < expected < 0.86
    flat_ratio = six[1] / six[0]
    assert 0.95 < flat_ratio <= 1.01
    for k in (1, 2):  # along X and along Y: the profile is radial
        assert fff[k] / fff[0] == pytest.approx(expected * flat_ratio, abs=0.03)
    assert fff[1] / fff[0] == pytest.approx(fff[2] / fff[0], abs=0.005)


def test_off_axis_softening_is_the_per_voxel_depth_factor(water):
    """The same machine without mu_ratio: the dose ratio is exp(-(mu_ratio(r) - 1) mu_eff (d - d_ref))
    at every point (the kernel does not depend on mu_ratio); softening lowers the deep off-axis dose."""
    hard = dataclasses.replace(FFF, oar_mu_ratio=np.ones_like(FFF.oar_mu_ratio))
    assert not hard.has_off_axis_softening and hard.digest == FFF.digest
    depths = np.array([5.0, 100.0, 200.0])
    pts = np.column_stack([150.0 * (1000.0 + depths) / 1000.0, depths, np.zeros(3)])  # 150 mm at the isocentre plane
    ratio = _dose(water, FFF, 400.0, pts) / _dose(water, hard, 400.0, pts)
    beam = Beam("A", 0.0, energy="6FFF", segments=[open_segment(FFF, 400.0)])
    bp = beam_points(water, BeamFrame.of(beam), pts)
    np.testing.assert_allclose(ratio, softening_factor(FFF, bp), rtol=1e-4)
    mu = FFF.effective_mu_per_mm()
    np.testing.assert_allclose(ratio, np.exp(-(FFF.off_axis_mu_ratio(150.0) - 1) * mu * (depths - 13.0)), rtol=0.01)
    assert ratio[2] < ratio[1] < 1.0 < ratio[0]


def test_fluence_maps_carry_the_ratio_and_flat_machines_are_untouched():
    seg = open_segment(FFF, 300.0)
    beam = Beam("A", 0.0, energy="6FFF", segments=[seg])
    flu, ex, ey = beam_fluence(beam, FFF)
    open_, _, _ = segment_fluence([seg], FFF)  # the open fluence (what sequencing compares) has no ratio
    cx, cy = 0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1])
    r = np.hypot(cx[None, :], cy[:, None])
    np.testing.assert_allclose(flu, open_ * FFF.off_axis_ratio(r))
    assert flu.max() / flu[r > 140].max() > 1.3  # the FFF peak
    six_beam = Beam("A", 0.0, segments=[open_segment(SIX, 300.0)])
    f6, _, _ = beam_fluence(six_beam, SIX)
    np.testing.assert_array_equal(f6, segment_fluence(six_beam.segments, SIX)[0])


@pytest.fixture(scope="module")
def slab_case():
    g = Grid((30, 40, 80), (5.0, 5.0, 5.0), (-197.5, -97.5, -72.5))  # origin (x, y, z) LPS
    x, y, z = g.lps_coordinates()  # LPS x, y, z arrays of shape (nz, ny, nx)
    body = np.broadcast_to(np.abs(y) <= 90.0, g.shape).copy()
    hu = np.where(body, 0.0, -1000.0).astype(np.float32)
    ptv = np.broadcast_to((np.abs(x) <= 140) & (np.abs(y) <= 20) & (np.abs(z) <= 25), g.shape).copy()
    ss = StructureSet(g, [Structure("BODY", body, g, "EXTERNAL"), Structure("PTV", ptv, g, "PTV")])
    return Volume(hu, g), ss


def test_influence_matrix_carries_the_profile_like_the_plan_dose(slab_case):
    """One wide FFF beam: the matrix (columns scaled at the beamlet centres, softening per voxel) gives the
    plan-dose engine's dose for unit weights, and off axis less than on the axis, as the FFF profile says."""
    ct, ss = slab_case
    beams = [Beam("G0", 0.0, energy="6FFF")]
    im = influence_matrix(ct, ss, beams, FFF, dose_grid_mm=5.0, bixel_mm=5.0, workers=1, measure_dropped=False)
    w = np.ones(im.n_beamlets)
    d_im = im.dose(w).array
    f, grid = im.fluence_maps(w)[0]
    plan = Plan([Beam("G0", 0.0, energy="6FFF", fluence=f, fluence_grid=grid)], 1, FFF.name)
    d_full = dose(ct, plan, FFF, dose_grid_mm=5.0, structures=ss).array
    from art.geometry import resample_mask

    ptv = resample_mask(ss["PTV"].volume, im.dose_grid).array
    assert d_im[ptv].mean() == pytest.approx(d_full[ptv].mean(), rel=0.005)
    # along x at the target's centre depth: centre vs 100 mm off axis, in both engines
    k, j = im.dose_grid.shape[0] // 2, im.dose_grid.shape[1] // 2
    xs = im.dose_grid.origin[0] + im.dose_grid.spacing[2] * np.arange(im.dose_grid.shape[2])
    i0, i1 = int(np.argmin(np.abs(xs))), int(np.argmin(np.abs(xs - 100.0)))
    for d in (d_im, d_full):
        assert d[k, j, i1] / d[k, j, i0] == pytest.approx(float(FFF.off_axis_ratio(100.0)), abs=0.03)
    assert d_im[k, j, i1] / d_im[k, j, i0] == pytest.approx(d_full[k, j, i1] / d_full[k, j, i0], abs=0.005)
