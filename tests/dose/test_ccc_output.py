"""The collapsed-cone output correction: equivalent squares of apertures, the ``output_correction``
table (read, validated, applied per segment) and its fit to the machine's output factors."""


import numpy as np
import pytest

from art.dose import ccc
from art.dose.ccc import ccc_model
from art.dose.ccc.model import parse_section
from art.dose.ccc.output import aperture_equivalent_square, corrected_beam, mask_equivalent_square, output_correction
from art.errors import MachineDataError
from art.plan import Beam, Plan, Segment

from .conftest import machine_with_ccc, open_segment
from .test_ccc_water import cax, water_ct

GOOD = {"spectrum": {"energies_mev": [1.0, 2.0, 6.0], "fluence": [0.5, 0.3, 0.2]}, "source_sigma_mm": 1.0}
BND = np.arange(-50.0, 51.0, 10.0)  # 10 pairs of 10 mm


def test_equivalent_square_of_a_rectangle_is_2xy_over_x_plus_y():
    lp = np.array([np.full(10, -200.0), np.full(10, 200.0)])  # leaves retracted: the jaws' 60 x 30 field
    assert aperture_equivalent_square(lp, BND, (-30.0, 30.0, -15.0, 15.0)) == pytest.approx(2 * 60 * 30 / 90)
    lp = np.array([np.full(10, -20.0), np.full(10, 20.0)])  # the leaves shape a 40 x 100 field inside 60 x 200 jaws
    assert aperture_equivalent_square(lp, BND, (-30.0, 30.0, -100.0, 100.0)) == pytest.approx(2 * 40 * 100 / 140)


def test_equivalent_square_of_an_l_shape():
    # pairs 0-4 (y -50..0) open x 0..40, pairs 5-9 (y 0..50) open x 0..10: an L of area 40*50 + 10*50 = 2500
    lp = np.array([np.zeros(10), np.r_[np.full(5, 40.0), np.full(5, 10.0)]])
    # perimeter: 40 (bottom) + 50 + 50 (left) + 10 (top) + 50 (inner vertical) + 30 (step) + 50 (right, lower) = 280
    assert aperture_equivalent_square(lp, BND, (-100.0, 100.0, -100.0, 100.0)) == pytest.approx(4 * 2500 / 280)
    # the jaws clip it to y -20..20 (an L of 40 x 20 + 10 x 20): area 1000, perimeter 40+40+10+20+30+20 = 160
    assert aperture_equivalent_square(lp, BND, (-100.0, 100.0, -20.0, 20.0)) == pytest.approx(4 * 1000 / 160)
    # a closed pair splits the aperture in two rectangles: their perimeters add
    lp2 = np.array([np.zeros(10), np.r_[np.full(4, 40.0), 0.0, np.full(5, 10.0)]])
    assert aperture_equivalent_square(lp2, BND, (-100.0, 100.0, -100.0, 100.0)) == pytest.approx(4 * (1600 + 500) / (2 * 80 + 2 * 60))
    assert aperture_equivalent_square(np.zeros((2, 10)), BND, (-100.0, 100.0, -100.0, 100.0)) == 0.0
    # the same L as a pixel mask (5 mm pixels)
    e = np.arange(-50.0, 51.0, 5.0)
    xc, yc = np.meshgrid(0.5 * (e[1:] + e[:-1]), 0.5 * (e[1:] + e[:-1]))
    mask = ((yc < 0) & (xc > 0) & (xc < 40)) | ((yc > 0) & (xc > 0) & (xc < 10))
    assert mask_equivalent_square(mask, e, e) == pytest.approx(4 * 2500 / 280)
    assert mask_equivalent_square(np.zeros_like(mask), e, e) == 0.0


@pytest.mark.parametrize("table, field", [
    ({"field_sizes_mm": [30, 20], "factor": [1.0, 1.0]}, "ccc.output_correction.field_sizes_mm"),
    ({"field_sizes_mm": [30, 100], "factor": [1.0]}, "ccc.output_correction.factor"),
    ({"field_sizes_mm": [30, 100], "factor": [0.2, 1.0]}, "ccc.output_correction.factor"),
    ({"factor": [1.0]}, "ccc.output_correction.field_sizes_mm"),
    ([1, 2], "ccc.output_correction"),
])  # fmt: skip
def test_a_bad_output_correction_is_refused_naming_file_and_field(tmp_path, table, field):
    with pytest.raises(MachineDataError, match=rf"oc\.json.*field '{field}'"):
        ccc_model(machine_with_ccc(tmp_path / "oc.json", {**GOOD, "output_correction": table}))


def test_the_correction_scales_each_segment_by_its_equivalent_square(machine):
    model = parse_section({**GOOD, "output_correction": {"field_sizes_mm": [30, 100, 200], "factor": [0.9, 1.0, 1.1]}}, "<t>")
    assert parse_section(GOOD, "<t>").output_field_mm.size == 0  # absent: factor 1
    np.testing.assert_allclose(output_correction(model, [10.0, 30.0, 65.0, 100.0, 400.0]), [0.9, 0.9, 0.95, 1.0, 1.1])
    beam = Beam("A", 0.0, segments=[open_segment(machine, 30.0, mu=10.0), open_segment(machine, 100.0, mu=20.0), open_segment(machine, 60.0, 300.0, mu=5.0)])
    mus = [s.mu for s in corrected_beam(beam, machine, model).segments]
    np.testing.assert_allclose(mus, [9.0, 20.0, 5.0 * 1.0])  # 60 x 300: equivalent square 100
    assert [s.mu for s in beam.segments] == [10.0, 20.0, 5.0]  # the plan's beam is left alone
    flu = np.zeros((8, 8))
    flu[2:5, 2:5] = 1.0  # 3 x 3 bixels of 10 mm
    e = np.arange(-40.0, 41.0, 10.0)
    fb = Beam("F", 0.0, fluence=flu, fluence_grid={"x_edges_mm": e, "y_edges_mm": e})
    np.testing.assert_allclose(corrected_beam(fb, machine, model).fluence, 0.9 * flu)


def _square_dose_per_mu(machine, side):
    ct = water_ct(2.5, 0.5 * side + 25.0, 300.0)
    plan = Plan([Beam("A", 0.0, segments=[open_segment(machine, side, mu=100.0)])], fractions=1, machine_name=machine.name)
    y, d = cax(ccc.dose(ct, plan, machine, dose_grid_mm=None, backend="numpy"))
    return float(np.interp(machine.calib_depth_mm, y, d)) / 100.0


@pytest.mark.slow
@pytest.mark.parametrize("side", [30.0, 50.0, 200.0])
def test_the_6x_engine_reproduces_the_output_factor_table(machine, side):
    """S_cp · dose/MU at the calibration depth, SSD 100 cm, water, 2.5 mm grid: within 1 %."""
    assert ccc_model(machine).output_field_mm.size > 0
    table = machine.dose_per_mu_gy * float(machine.output_factor(side))
    assert _square_dose_per_mu(machine, side) == pytest.approx(table, rel=0.01)


def test_a_segment_shaped_by_the_leaves_gets_the_correction_of_its_aperture(machine):
    """A 30 x 30 mm aperture formed by the leaves inside 100 x 100 jaws: the correction of 30 mm."""
    model = ccc_model(machine)
    lp = np.zeros((2, machine.mlc.n_pairs))
    lp[0], lp[1] = -15.0, 15.0
    seg = Segment(lp, (-50.0, 50.0, -15.0, 15.0), 10.0)
    out = corrected_beam(Beam("A", 0.0, segments=[seg]), machine, model).segments[0].mu
    assert out == pytest.approx(10.0 * float(output_correction(model, 30.0)))
