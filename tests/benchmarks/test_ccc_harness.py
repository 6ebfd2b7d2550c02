"""The dose-engine validation harness (benchmarks/ccc_*.py): its phantoms have the densities they
claim (also through art's HU table), its measures compute what they say on analytic inputs, and
the WiscPlan engine's input/output files are written and read in the engine's layout."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf, ndtri

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import ccc_common as cc  # noqa: E402
import ccc_reference as ref  # noqa: E402
import ccc_validation as val  # noqa: E402


def _erf_field(x, half, sigma_left, sigma_right):
    """A field of half-width ``half`` whose edges are Gaussian-blurred (error functions)."""
    right = 0.5 * (1 + erf((half - x) / (sigma_right * np.sqrt(2))))
    left = 0.5 * (1 + erf((half + x) / (sigma_left * np.sqrt(2))))
    return right + left - 1.0


# ----------------------------------------------------------------------------- phantoms
@pytest.mark.parametrize("spacing", [2.0, 2.5, 5.0])
def test_grid_puts_faces_on_the_surface_and_slabs_and_centres_on_the_axis(spacing):
    g = cc.phantom_grid(spacing)
    z, y, x = g.axes()
    assert g.shape == (z.size, y.size, x.size)
    assert y[0] - spacing / 2 == pytest.approx(-cc.AIR_MM) and y[-1] + spacing / 2 == pytest.approx(cc.SIZE_MM)
    assert 0.0 in np.round(x, 9) and 0.0 in np.round(z, 9)
    assert x[0] == pytest.approx(-cc.SIZE_MM / 2) and x[-1] == pytest.approx(cc.SIZE_MM / 2)
    for slabs in cc.CASES.values():
        for lo, hi, _, _ in slabs:  # slab faces fall between voxel centres, on voxel faces
            assert np.min(np.abs(y - lo)) == pytest.approx(spacing / 2) and np.min(np.abs(y - hi)) == pytest.approx(spacing / 2)


def test_grid_refuses_a_spacing_that_cuts_a_slab():
    with pytest.raises(ValueError, match="slab faces"):
        cc.phantom_grid(3.0)


@pytest.mark.parametrize("case", list(cc.CASES))
def test_density_array_has_the_claimed_layers(case):
    g = cc.phantom_grid(2.5)
    rho = cc.density_array(case, g)
    assert rho.shape == g.shape and rho.dtype == np.float32
    assert np.all(rho == rho[:1, :, :1])  # laterally uniform
    col = rho[0, :, 0]
    _, y, _ = g.axes()
    expect = np.where(y < 0, cc.AIR_DENSITY, 1.0)
    for lo, hi, value, _ in cc.CASES[case]:
        inside = (y > lo) & (y < hi)
        assert inside.sum() == round((hi - lo) / 2.5)
        expect[inside] = value
    np.testing.assert_allclose(col, expect, rtol=1e-6)
    assert {"lung": 0.25, "bone": 1.6}.get(case, 1.0) in set(np.round(col.astype(np.float64), 6).tolist())  # the brief's values


@pytest.mark.parametrize("case", list(cc.CASES))
def test_art_phantom_hu_give_the_claimed_densities_through_the_default_table(case):
    from art.dose.machine import hu_to_density

    g = cc.phantom_grid(5.0)
    ct = val.art_phantom(case, g)
    assert ct.grid.shape == g.shape and tuple(ct.grid.origin) == pytest.approx(g.origin)
    np.testing.assert_allclose(hu_to_density(ct.array), cc.density_array(case, g), rtol=1e-4, atol=1e-6)


def test_hu_for_density_inverts_the_table_and_refuses_out_of_range():
    from art.dose.machine import load_hu_table

    t = load_hu_table()
    assert val.hu_for_density(1.0, t) == pytest.approx(0.0)
    assert val.hu_for_density(1.6, t) == pytest.approx(1000.0)
    assert val.hu_for_density(0.25, t) == pytest.approx(-1000 + 300 * (0.25 - 0.001) / (0.3 - 0.001))
    with pytest.raises(ValueError, match="outside"):
        val.hu_for_density(2.5, t)


def test_open_field_plan_and_machine_dose():
    from art.dose import load_machine

    m = load_machine()
    plan = val.open_field_plan(m, 30.0)
    (seg,) = plan.beams[0].segments
    assert seg.jaws == (-15.0, 15.0, -15.0, 15.0) and seg.mu == val.MU and plan.beams[0].gantry_deg == 0.0
    assert np.all(seg.leaf_positions[0] <= -15.0) and np.all(seg.leaf_positions[1] >= 15.0)
    assert val.machine_dose(m, m.calib_field_mm, m.calib_depth_mm) == pytest.approx(m.dose_per_mu_gy * val.MU)
    assert val.machine_dose(m, 30.0, 100.0) == pytest.approx(m.dose_per_mu_gy * val.MU * float(m.output_factor(30.0)) * float(m.pdd(100.0, 30.0)) / 100)


# ----------------------------------------------------------------------------- measures
def test_penumbra_of_an_erf_edge_is_its_known_80_20_width():
    x = np.arange(-80.0, 80.0001, 0.05)
    width_per_sigma = ndtri(0.8) - ndtri(0.2)  # 1.6832...
    p = _erf_field(x, 50.0, 3.0, 3.0)
    assert cc.penumbra_80_20(x, 2.0 * p) == pytest.approx(3.0 * width_per_sigma, abs=0.01)
    assert cc.field_width_50(x, p) == pytest.approx(100.0, abs=0.01)
    q = _erf_field(x, 40.0, 2.0, 4.0)  # different edges: the mean, and each side on its own
    assert cc.penumbra_80_20(x, q) == pytest.approx(3.0 * width_per_sigma, abs=0.01)
    e = cc.profile_edges(x, q, (0.8, 0.2))
    assert e[0.2][0] - e[0.8][0] == pytest.approx(2.0 * width_per_sigma, abs=0.01)
    assert e[0.2][1] - e[0.8][1] == pytest.approx(4.0 * width_per_sigma, abs=0.01)


@pytest.mark.parametrize("sigma", [3.0, 4.0, 6.0])
@pytest.mark.parametrize("edge", [50.0, 50.7, 51.25])
def test_penumbra_on_the_2_5_mm_grid_is_within_a_tenth_of_a_mm(sigma, edge):
    x = np.arange(-150.0, 150.0001, 2.5)
    p = _erf_field(x, edge, sigma, sigma)
    assert cc.penumbra_80_20(x, p) == pytest.approx(sigma * (ndtri(0.8) - ndtri(0.2)), abs=0.1)
    assert cc.field_width_50(x, p) == pytest.approx(2 * edge, abs=0.1)


def test_cax_difference_is_local_percent_within_the_range():
    d = np.arange(0.0, 300.0, 2.5)
    ref_ = np.exp(-0.005 * d)
    dose = ref_ * np.where(d < 15.0, 1.5, 1.02)  # the build-up is excluded
    r = cc.cax_difference(d, dose, ref_)
    assert r["max_abs_pct"] == pytest.approx(2.0) and r["mean_abs_pct"] == pytest.approx(2.0) and r["mean_pct"] == pytest.approx(2.0)
    dose2 = ref_ * np.where((d >= 100) & (d < 150), 0.9, 1.0)
    r2 = cc.cax_difference(d, dose2, ref_, depth_range=(15.0, 250.0))
    n_in = np.sum((d >= 15) & (d <= 250))
    assert r2["max_abs_pct"] == pytest.approx(10.0) and r2["mean_pct"] == pytest.approx(-10.0 * 20 / n_in)


def test_lung_drop_is_the_mean_dose_ratio_over_the_slab():
    d = np.arange(0.0, 300.0, 2.5)
    ref_ = np.exp(-0.005 * d)
    dose = ref_ * np.where((d >= 40) & (d <= 80), 0.9, 1.3)
    assert cc.lung_drop(d, dose, ref_) == pytest.approx(-10.0)
    assert cc.lung_drop(d, 1.05 * ref_, ref_, depth_range=(35.0, 45.0)) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        cc.lung_drop(d, dose, ref_, depth_range=(400.0, 500.0))


# ----------------------------------------------------------------------------- WiscPlan files
def test_engine_inputs_follow_the_engine_layout(tmp_path):
    photons = tmp_path / "photons"
    kdir = photons / ref.KERNEL_SETS["6MV"]
    kdir.mkdir(parents=True)
    for name in ("kernel_header.txt", "radii.bin", "total.bin"):
        (kdir / name).write_bytes(b"")
    g = cc.phantom_grid(5.0)
    rho = cc.density_array("lung", g)
    cmd = ref.write_inputs(tmp_path / "work", photons, "6MV", rho, g, 30.0)
    assert cmd[1:] == [str(tmp_path / "work" / n) for n in ("kernels.txt", "geometry.txt", "beam.txt", "dose.bin")]
    klines = (tmp_path / "work" / "kernels.txt").read_text().split()
    assert klines[0::2] == ["kernel_header", "kernel_radii", "kernel_total"]
    head = (tmp_path / "work" / "header.txt").read_text().splitlines()
    assert [int(v) for v in head[1].split()] == [g.shape[2], g.shape[1], g.shape[0]]  # x, y, z counts
    assert [float(v) for v in head[3].split()] == pytest.approx([o / 10 for o in g.origin])  # cm, isocentre at 0
    assert [float(v) for v in head[5].split()] == pytest.approx([0.5, 0.5, 0.5])
    raw = np.fromfile(tmp_path / "work" / "density.bin", np.float32)
    nz, ny, nx = g.shape
    i, j, k = 3, 10, 7  # GRID_VALUE(i, j, k) = matrix[i + M (j + N k)]
    assert raw.size == rho.size and raw[i + nx * (j + ny * k)] == rho[k, j, i]
    spec = (tmp_path / "work" / "beam.txt").read_text().split("\n")
    vec = {spec[n - 1]: np.array([float(v) for v in spec[n].split()]) for n in range(len(spec)) if spec[n - 1] in ("y_vec", "ip", "jp", "kp")}
    np.testing.assert_allclose(np.cross(vec["ip"], vec["jp"]), vec["kp"])
    np.testing.assert_allclose(vec["y_vec"], [0.0, -100.0, 0.0])  # source anterior, SAD 100 cm
    assert [float(v) for v in spec[spec.index("SAD xp yp del_xp del_yp") + 1].split()] == [100.0, 0.0, 0.0, 3.0, 3.0]


def test_read_dose_rebuilds_the_sparse_output(tmp_path):
    shape = (4, 5, 6)
    rng = np.random.default_rng(0)
    dense = np.where(rng.random(shape) > 0.6, rng.random(shape), 0.0).astype(np.float32)
    flat = dense.reshape(-1)  # (z, y, x) C order = the engine's i + M (j + N k)
    ind = np.flatnonzero(flat).astype(np.int32)
    header = np.array([1, 0, shape[2], shape[1], shape[0], ind.size], np.int32)
    (tmp_path / "d.bin").write_bytes(header.tobytes() + ind.tobytes() + flat[ind].tobytes())
    np.testing.assert_array_equal(ref.read_dose(tmp_path / "d.bin", shape), dense)
    with pytest.raises(RuntimeError, match="grid"):
        ref.read_dose(tmp_path / "d.bin", (6, 5, 4))
