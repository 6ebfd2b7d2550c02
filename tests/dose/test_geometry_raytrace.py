"""IEC 61217 conventions and radiological depth."""

import numpy as np
import pytest

from art.dose import BeamFrame, bev_to_lps_matrix, dose, radiological_depth
from art.dose.machine import hu_to_density
from art.geometry import Grid, Volume
from art.plan import Beam, Plan

from .conftest import open_segment


@pytest.mark.parametrize(
    "gantry, source_dir",
    [(0, (0, -1, 0)), (90, (1, 0, 0)), (180, (0, 1, 0)), (270, (-1, 0, 0))],
)
def test_gantry_source_position_hfs(gantry, source_dir):
    """HFS: gantry 0 source anterior (-y), 90 on the patient's left (+x), 180 posterior, 270 right."""
    f = BeamFrame(gantry, 0, 0, (10.0, 20.0, 30.0), 1000.0)
    np.testing.assert_allclose((f.source - f.isocenter) / 1000.0, source_dir, atol=1e-12)


def test_bev_axes_and_rotations():
    r = bev_to_lps_matrix(0, 0, 0)
    np.testing.assert_allclose(r[:, 0], (1, 0, 0), atol=1e-12)  # X_b: patient left
    np.testing.assert_allclose(r[:, 1], (0, 0, 1), atol=1e-12)  # Y_b: towards the gantry = superior (HFS)
    # collimator 90 (counter-clockwise seen from the source): X_b turns onto the old Y_b
    r90 = bev_to_lps_matrix(0, 90, 0)
    np.testing.assert_allclose(r90[:, 0], (0, 0, 1), atol=1e-12)
    # couch 90 (counter-clockwise seen from above): the gantry direction (+Y_f) points to the patient's left
    np.testing.assert_allclose(bev_to_lps_matrix(0, 0, 90)[:, 1], (1, 0, 0), atol=1e-12)
    # couch rotation does not move a gantry-0 source (vertical axis)
    np.testing.assert_allclose(bev_to_lps_matrix(0, 0, 37)[:, 2], (0, -1, 0), atol=1e-12)
    for g, c, t in [(33, 71, 12), (200, 300, -45)]:
        m = bev_to_lps_matrix(g, c, t)
        np.testing.assert_allclose(m.T @ m, np.eye(3), atol=1e-12)
        assert np.linalg.det(m) == pytest.approx(1.0)


def test_bev_round_trip():
    f = BeamFrame(51, 20, 10, (5.0, -3.0, 12.0), 1000.0)
    rng = np.random.default_rng(1)
    p = rng.uniform(-150, 150, (50, 3))
    u, v, z = f.to_bev(p)
    np.testing.assert_allclose(f.from_bev(u, v, z), p, atol=1e-9)
    u0, v0, z0 = f.to_bev(f.isocenter[None, :])
    assert (u0[0], v0[0], z0[0]) == pytest.approx((0.0, 0.0, 1000.0))


def _slab_density(rho_slab=0.25):
    g = Grid((40, 160, 100), (4.0, 2.0, 4.0), (-198.0, -99.0, -78.0))
    _, y, _ = g.axis_positions()
    rho = np.zeros(g.shape, np.float32)
    rho[:, (y > -60) & (y < 200), :] = 1.0
    rho[:, (y > 0) & (y < 60), :] = rho_slab  # faces at y = 0 and 60 lie on voxel faces
    return Volume(rho, g)


def test_radiological_depth_through_lung_slab():
    dens = _slab_density(0.25)
    f = BeamFrame(0, 0, 0, (0.0, 0.0, 0.0), 1000.0)
    y = np.array([-30.0, -2.0, 30.0, 80.0, 150.0])
    pts = np.column_stack([np.zeros_like(y), y, np.zeros_like(y)])
    expected = np.where(y < 0, y + 60, np.where(y < 60, 60 + 0.25 * y, 60 + 15 + (y - 60)))
    np.testing.assert_allclose(radiological_depth(dens, f, pts), expected, atol=0.05)


def test_radiological_depth_oblique():
    """Homogeneous water, oblique beam (gantry 30): depth = path length in water."""
    dens = _slab_density(1.0)
    f = BeamFrame(30, 0, 0, (0.0, 0.0, 0.0), 1000.0)
    pts = np.array([[0.0, 50.0, 0.0], [0.0, 100.0, 0.0]])
    d = radiological_depth(dens, f, pts)
    # ray from the source to each point crosses the surface y = -60
    src = f.source
    for k, p in enumerate(pts):
        t = (-60.0 - src[1]) / (p[1] - src[1])
        entry = src + t * (p - src)
        assert d[k] == pytest.approx(np.linalg.norm(p - entry), abs=0.3)


def _water_box(size=(45, 46, 46), spacing=4.0):
    g = Grid(size, (spacing,) * 3, tuple(-(n - 1) * spacing / 2 for n in size[::-1]))
    hu = np.zeros(g.shape, np.float32)
    # air border of 2 voxels
    hu[:, :2, :] = hu[:, -2:, :] = -1000
    hu[:, :, :2] = hu[:, :, -2:] = -1000
    return Volume(hu, g)


@pytest.mark.parametrize("gantry, entry_sign", [(90, +1), (270, -1)])
def test_lateral_beams_enter_from_patient_left_right(machine, gantry, entry_sign):
    ct = _water_box()
    plan = Plan([Beam("L", gantry, segments=[open_segment(machine, 60.0)])], 1, machine.name)
    d = dose(ct, plan, machine, dose_grid_mm=None).array
    k = ct.grid.shape[0] // 2
    j = ct.grid.shape[1] // 2
    row = d[k, j, :]
    _, _, x = ct.grid.axis_positions()
    near = row[np.argmin(np.abs(x - entry_sign * 60))]
    far = row[np.argmin(np.abs(x + entry_sign * 60))]
    assert near > 1.3 * far  # the entrance side gets more dose


def test_opposed_beams_symmetric(machine):
    ct = _water_box()
    seg = open_segment(machine, 60.0)
    plan = Plan([Beam("A", 0, segments=[seg]), Beam("P", 180, segments=[seg])], 1, machine.name)
    d = dose(ct, plan, machine, dose_grid_mm=None).array
    np.testing.assert_allclose(d, d[:, ::-1, :], rtol=0, atol=2e-3 * d.max())


def test_dose_additive_over_beams_and_course_total(machine):
    ct = _water_box()
    seg = open_segment(machine, 60.0)
    b1, b2 = Beam("A", 0, segments=[seg]), Beam("B", 90, segments=[seg])
    d1 = dose(ct, Plan([b1], 1, machine.name), machine, dose_grid_mm=8.0)
    d2 = dose(ct, Plan([b2], 1, machine.name), machine, dose_grid_mm=8.0)
    d12 = dose(ct, Plan([b1, b2], 5, machine.name), machine, dose_grid_mm=8.0)
    assert d12.grid.spacing == (8.0, 8.0, 8.0)
    np.testing.assert_allclose(d12.array, 5 * (d1.array + d2.array), rtol=1e-5, atol=1e-6)


def test_lung_slab_raises_dose_beyond_and_widens_penumbra(machine):
    """Behind a lung slab the dose is higher than in water (less attenuation), and the
    penumbra inside the lung is wider than in water at the same depth."""
    from art.dose.calc import beam_dose_at

    from .conftest import water_phantom

    def lung(hu, g):
        _, y, _ = g.axis_positions()
        hu = hu.copy()
        hu[:, (y > 40) & (y < 120), :] = -775.0  # density 0.225 (table: -700 -> 0.3, -1000 -> 0.001)
        return hu

    w = water_phantom(spacing=(4.0, 2.0, 2.0))
    l_ = water_phantom(spacing=(4.0, 2.0, 2.0), hu_fn=lung)
    dw, dl = (Volume(hu_to_density(v.array), v.grid) for v in (w, l_))
    beam = Beam("A", 0, segments=[open_segment(machine, 100.0)])
    pts = np.array([[0.0, y, 0.0] for y in (20.0, 150.0, 200.0)])
    a, b = beam_dose_at(dw, beam, machine, pts), beam_dose_at(dl, beam, machine, pts)
    assert b[0] == pytest.approx(a[0], rel=1e-3)  # before the slab: unchanged
    # beyond the slab: the 80 mm lung slab is ~62 mm less water -> about exp(0.0045*62) more
    assert 1.15 < b[1] / a[1] < 1.45 and 1.15 < b[2] / a[2] < 1.45
    x = np.arange(0.0, 100.0, 0.25)
    prof = np.column_stack([x, np.full_like(x, 100.0), np.zeros_like(x)])

    def pen(dens):
        p = beam_dose_at(dens, beam, machine, prof)
        p = p / p[0]
        return np.interp(-0.2, -p, x) - np.interp(-0.8, -p, x)

    assert pen(dl) > pen(dw) + 2.0


def _support_axes_from_words(position):
    """LPS directions of the IEC patient-support axes, from what the position says (not from art's table).

    Y_s points towards the gantry: the patient's head (head first, +z) or feet (feet first, -z);
    Z_s points up: anterior (supine, -y) or posterior (prone, +y); X_s = Y_s x Z_s (IEC systems are right-handed).
    """
    ys = np.array({"HF": (0.0, 0.0, 1.0), "FF": (0.0, 0.0, -1.0)}[position[:2]])
    zs = np.array({"S": (0.0, -1.0, 0.0), "P": (0.0, 1.0, 0.0)}[position[2]])
    return np.cross(ys, zs), ys, zs


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP"])
@pytest.mark.parametrize("gantry", [0, 90, 180, 270, 45])
def test_source_direction_for_each_patient_position(position, gantry):
    """IEC 61217: the source turns from above the couch (gantry 0, +Z_f) towards +X_f (gantry 90)."""
    xs, _, zs = _support_axes_from_words(position)
    a = np.deg2rad(gantry)
    expected = np.cos(a) * zs + np.sin(a) * xs
    f = BeamFrame(gantry, 0, 0, (10.0, 20.0, 30.0), 1000.0, patient_position=position)
    np.testing.assert_allclose((f.source - f.isocenter) / 1000.0, expected, atol=1e-12)


def test_named_beams_for_each_patient_position():
    """The clinical names: gantry 90 enters the patient's left for HFS and FFP, the right for FFS and HFP;
    gantry 0 is anterior for supine and posterior for prone patients."""
    left, right, anterior, posterior = (1, 0, 0), (-1, 0, 0), (0, -1, 0), (0, 1, 0)
    for position, g90, g0 in [("HFS", left, anterior), ("FFS", right, anterior), ("HFP", right, posterior), ("FFP", left, posterior)]:
        m = bev_to_lps_matrix(90, 0, 0, patient_position=position)
        np.testing.assert_allclose(m[:, 2], g90, atol=1e-12)
        np.testing.assert_allclose(bev_to_lps_matrix(0, 0, 0, patient_position=position)[:, 2], g0, atol=1e-12)


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP"])
def test_couch_and_collimator_for_each_patient_position(position):
    """Couch 90 (counter-clockwise seen from above) turns X_s onto the gantry direction: Y_b = X_s;
    collimator 90 turns X_b onto Y_b (the gantry direction, Y_s at couch 0)."""
    xs, ys, zs = _support_axes_from_words(position)
    np.testing.assert_allclose(bev_to_lps_matrix(0, 0, 90, patient_position=position)[:, 1], xs, atol=1e-12)
    np.testing.assert_allclose(bev_to_lps_matrix(0, 90, 0, patient_position=position)[:, 0], ys, atol=1e-12)
    m = bev_to_lps_matrix(33, 71, 12, patient_position=position)
    np.testing.assert_allclose(m.T @ m, np.eye(3), atol=1e-12)
    assert np.linalg.det(m) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", ["HFDL", "FFDR", "LFS", "hfs", "", None, "XYZ"])
def test_decubitus_and_unknown_positions_refused(bad):
    from art.errors import InputError

    with pytest.raises(InputError, match="patient_position"):
        bev_to_lps_matrix(0, 0, 0, patient_position=bad)
