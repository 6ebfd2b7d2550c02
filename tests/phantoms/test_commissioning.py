"""TG-119-style commissioning cases: geometry against analytic volumes, protocols."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from art.evaluate import evaluate_goals
from art.geometry import Volume
from art.protocol import parse_protocol
from art_phantoms.commissioning import c_shape, multi_target


@pytest.fixture(scope="module")
def easy():
    return c_shape()


@pytest.fixture(scope="module")
def mt():
    return multi_target()


def c_area(r_in, r_out, half_opening):
    """Area (mm²) of an annulus minus the strip |x| < w on one side (y < 0), with w = r_in."""
    assert half_opening == r_in

    def half_strip(r, w):  # area of the disc of radius r with |x| < w, one side of y = 0
        w = min(w, r)
        return w * math.sqrt(r * r - w * w) + r * r * math.asin(w / r)

    annulus = math.pi * (r_out**2 - r_in**2)
    strip = half_strip(r_out, half_opening) - half_strip(r_in, half_opening)
    return annulus - strip


def test_c_shape_ct(easy):
    ct = easy.ct
    assert ct.array.dtype == np.float32
    assert ct.grid.shape == (60, 128, 128) and ct.grid.spacing == (2.5, 2.5, 2.5)
    assert np.allclose(ct.grid.corners_lps().mean(axis=0), 0.0)  # centred on the origin
    body = easy.structures["BODY"]
    assert body.roi_type == "EXTERNAL"
    assert set(np.unique(ct.array[body.mask])) == {0.0}
    assert set(np.unique(ct.array[~body.mask])) == {-1000.0}
    assert body.volume_cc == pytest.approx(math.pi * 150**2 * 150 / 1000, rel=0.02)


def test_c_shape_volumes(easy):
    ptv, core = easy.structures["PTV"], easy.structures["Core"]
    assert ptv.roi_type == "PTV"
    assert ptv.volume_cc == pytest.approx(c_area(15.0, 37.0, 15.0) * 80 / 1000, rel=0.05)
    assert core.volume_cc == pytest.approx(math.pi * 10**2 * 100 / 1000, rel=0.05)
    # extents along z: 80 mm and 100 mm
    z = easy.ct.grid.axis_positions()[0]
    for s, length in ((ptv, 80.0), (core, 100.0)):
        zs = z[np.any(s.mask, axis=(1, 2))]
        assert zs.max() - zs.min() + easy.ct.grid.spacing[0] == pytest.approx(length)


def test_c_shape_core_separated_from_target(easy):
    ptv, core = easy.structures["PTV"], easy.structures["Core"]
    assert not np.any(ptv.mask & core.mask)
    dist = ndimage.distance_transform_edt(~core.mask, sampling=easy.ct.grid.spacing)
    assert dist[ptv.mask].min() >= 5.0 - 1e-6  # the 5 mm gap between voxel centres
    # centred on the origin, the C opens anteriorly (-y in LPS)
    c = core.centroid_lps()
    assert np.allclose(c, 0.0, atol=1e-6)
    idx = easy.ct.grid.lps_to_index(np.array([[0.0, -25.0, 0.0], [0.0, 25.0, 0.0], [25.0, 0.0, 0.0]]))
    k, j, i = np.rint(idx).astype(int).T
    assert list(ptv.mask[k, j, i]) == [False, True, True]


def test_c_shape_protocols(easy):
    p = easy.protocol
    assert parse_protocol(easy.protocol_text) == p
    p.check_structures(easy.structures.names)
    assert p.prescription.target == "PTV" and p.prescription.dose_gy == 50.0 and p.prescription.fractions == 25
    assert p.beams.gantry_angles == tuple(float(a) for a in range(0, 360, 40))
    assert p.beams.isocenter == (0.0, 0.0, 0.0)
    goals = {(g.structure, g.metric.text): g for g in p.goals}
    assert goals[("PTV", "D95%")].at_least == 50.0
    assert goals[("Core", "D10%")].at_most == 25.0
    hard = c_shape(hard=True, spacing=(5.0, 5.0, 5.0))
    assert {(g.structure, g.metric.text): g for g in hard.protocol.goals}[("Core", "D10%")].at_most == 10.0
    assert hard.ct.grid.spacing == (5.0, 5.0, 5.0)


def test_c_shape_goals_on_an_ideal_dose(easy):
    """50 Gy in the PTV, 5 Gy elsewhere meets every goal; a core at 30 Gy fails its goal."""
    ptv, core = easy.structures["PTV"], easy.structures["Core"]
    arr = np.where(ptv.mask, 50.5, 5.0).astype(np.float32)
    res = evaluate_goals(Volume(arr, easy.ct.grid), easy.structures, easy.protocol)
    assert all(r.met for r in res), [str(r) for r in res]
    arr[core.mask] = 30.0
    res = evaluate_goals(Volume(arr, easy.ct.grid), easy.structures, easy.protocol)
    assert [r.met for r in res if r.structure == "Core"] == [False]


def test_multi_target(mt):
    names = mt.structures.names
    assert names == ["BODY", "PTV_Superior", "PTV_Central", "PTV_Inferior"]
    cyl = math.pi * 20**2 * 40 / 1000
    targets = [mt.structures[n] for n in names[1:]]
    for t in targets:
        assert t.roi_type == "PTV"
        assert t.volume_cc == pytest.approx(cyl, rel=0.05)
        assert t.centroid_lps()[:2] == pytest.approx([0.0, 0.0], abs=1e-6)
    zc = [t.centroid_lps()[2] for t in targets]
    assert zc == pytest.approx([40.0, 0.0, -40.0], abs=1.5)  # superior is +z
    for a in range(3):
        for b in range(a + 1, 3):
            assert not np.any(targets[a].mask & targets[b].mask)
    union = targets[0].mask | targets[1].mask | targets[2].mask
    labels, n = ndimage.label(union)
    assert n == 1  # stacked without gaps
    assert mt.ct.grid.shape[0] * mt.ct.grid.spacing[0] >= 120 + 20


def test_multi_target_protocol(mt):
    p = mt.protocol
    assert parse_protocol(mt.protocol_text) == p
    p.check_structures(mt.structures.names)
    assert p.prescription.target == "PTV_Central" and p.prescription.fractions == 25
    assert p.beams.gantry_angles == (0, 51, 103, 154, 206, 257, 309)
    d99 = {g.structure: g.at_least for g in p.goals if g.metric.text == "D99%"}
    assert d99 == {"PTV_Central": 50.0, "PTV_Superior": 25.0, "PTV_Inferior": 12.5}
    assert all(g.priority == 1 for g in p.goals if g.metric.text == "D99%")
