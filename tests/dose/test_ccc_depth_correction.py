"""The collapsed-cone depth correction (``ccc.depth_correction``): read and validated, a beam's
segments split between its field sizes, applied to the TERMA at the radiological depth, fitted by
the commissioning (art.dose.ccc.commission.fit_depth_correction)."""

import dataclasses

import numpy as np
import pytest

from art.dose.ccc import ccc_model
from art.dose.ccc.calibration import open_field_beam, phantom_density, water_grid
from art.dose.ccc.commission import engine_pdd_errors, fit_depth_correction
from art.dose.ccc.kernels import group_kernels
from art.dose.ccc.model import parse_section
from art.dose.ccc.output import depth_correction_row, depth_parts
from art.dose.ccc.terma import beam_terma
from art.errors import MachineDataError
from art.plan import Beam

from .conftest import machine_with_ccc, open_segment

GOOD = {"spectrum": {"energies_mev": [1.0, 2.0, 6.0], "fluence": [0.5, 0.3, 0.2]}, "source_sigma_mm": 1.0}
TABLE = {"field_sizes_mm": [30, 100, 200], "depths_mm": [15, 50, 300], "factor": [[1.0, 0.9, 0.8], [1.0, 1.0, 1.0], [1.0, 1.1, 1.2]]}


@pytest.mark.parametrize("table, field", [
    ({**TABLE, "field_sizes_mm": [30, 20, 200]}, "ccc.depth_correction.field_sizes_mm"),
    ({**TABLE, "depths_mm": [15, 300, 50]}, "ccc.depth_correction.depths_mm"),
    ({**TABLE, "depths_mm": [-5, 50, 300]}, "ccc.depth_correction.depths_mm"),
    ({**TABLE, "factor": [[1.0, 0.9, 0.8], [1.0, 1.0, 1.0]]}, "ccc.depth_correction.factor"),
    ({**TABLE, "factor": [[1.0, 0.9], [1.0, 1.0], [1.0, 1.1]]}, "ccc.depth_correction.factor"),
    ({**TABLE, "factor": [[1.0, 0.9, 0.3], [1.0, 1.0, 1.0], [1.0, 1.1, 1.2]]}, "ccc.depth_correction.factor"),
    ({**TABLE, "factor": [1.0, 0.9, 0.8]}, "ccc.depth_correction.factor"),
    ({"field_sizes_mm": [30], "depths_mm": [15]}, "ccc.depth_correction.factor"),
    ([1, 2], "ccc.depth_correction"),
])  # fmt: skip
def test_a_bad_depth_correction_is_refused_naming_file_and_field(tmp_path, table, field):
    with pytest.raises(MachineDataError, match=rf"dc\.json.*field '{field}'"):
        ccc_model(machine_with_ccc(tmp_path / "dc.json", {**GOOD, "depth_correction": table}))


def test_the_table_is_read_and_interpolated_in_field_size_clamped_at_its_ends():
    model = parse_section({**GOOD, "depth_correction": TABLE}, "<t>")
    assert parse_section(GOOD, "<t>").depth_field_mm.size == 0  # absent: factor 1
    assert model.depth_factor.shape == (3, 3)
    np.testing.assert_allclose(depth_correction_row(model, 65.0), [1.0, 0.95, 0.9])
    np.testing.assert_allclose(depth_correction_row(model, 10.0), [1.0, 0.9, 0.8])
    np.testing.assert_allclose(depth_correction_row(model, 500.0), [1.0, 1.1, 1.2])


def test_segments_are_shared_between_the_field_sizes_around_their_equivalent_square(machine):
    model = parse_section({**GOOD, "depth_correction": TABLE}, "<t>")
    segs = [open_segment(machine, 30.0, mu=10.0), open_segment(machine, 65.0, mu=20.0), open_segment(machine, 60.0, 300.0, mu=5.0),
            open_segment(machine, 300.0, mu=4.0)]  # fmt: skip  # equivalent squares 30, 65, 100, 300
    parts = depth_parts(Beam("A", 0.0, segments=segs), machine, model)
    rows = {tuple(row): [(round(s.jaws[1] - s.jaws[0]), s.mu) for s in part.segments] for part, row in parts}
    assert rows == {(1.0, 0.9, 0.8): [(30, 10.0), (65, 10.0)], (1.0, 1.0, 1.0): [(65, 10.0), (60, 5.0)], (1.0, 1.1, 1.2): [(300, 4.0)]}
    assert depth_parts(Beam("A", 0.0, segments=segs), machine, parse_section(GOOD, "<t>"))[0][1] is None
    flu = np.zeros((8, 8))
    flu[2:5, 2:5] = 1.0  # 3 x 3 bixels of 10 mm: equivalent square 30
    e = np.arange(-40.0, 41.0, 10.0)
    [(fb, row)] = depth_parts(Beam("F", 0.0, fluence=flu, fluence_grid={"x_edges_mm": e, "y_edges_mm": e}), machine, model)
    np.testing.assert_allclose(row, [1.0, 0.9, 0.8])
    assert fb.fluence is flu


def test_the_parts_carry_the_output_correction_of_each_segment(machine):
    """With both tables, each part's MU is the segment's MU × its output correction × its share."""
    oc = {"field_sizes_mm": [30, 100, 200], "factor": [0.9, 1.0, 1.1]}
    model = parse_section({**GOOD, "depth_correction": TABLE, "output_correction": oc}, "<t>")
    segs = [open_segment(machine, 30.0, mu=10.0), open_segment(machine, 65.0, mu=20.0)]
    parts = depth_parts(Beam("A", 0.0, segments=segs), machine, model)
    mus = {tuple(row): [s.mu for s in part.segments] for part, row in parts}
    assert mus == {(1.0, 0.9, 0.8): [pytest.approx(9.0), pytest.approx(20.0 * 0.95 * 0.5)], (1.0, 1.0, 1.0): [pytest.approx(20.0 * 0.95 * 0.5)]}
    flu = np.zeros((8, 8))
    flu[2:5, 2:5] = 1.0
    e = np.arange(-40.0, 41.0, 10.0)
    [(fb, row)] = depth_parts(Beam("F", 0.0, fluence=flu, fluence_grid={"x_edges_mm": e, "y_edges_mm": e}), machine, model)
    np.testing.assert_allclose(fb.fluence, 0.9 * flu)
    np.testing.assert_allclose(row, [1.0, 0.9, 0.8])


def _plain(machine):
    """The machine's model without its depth correction."""
    return dataclasses.replace(ccc_model(machine), depth_field_mm=np.zeros(0), depth_mm=np.zeros(0), depth_factor=np.zeros((0, 0)))


def _terma(machine, model, rho, *, side=100.0):
    grid = water_grid((2.5, 5.0, 2.5), half_width_mm=30.0, depth_mm=200.0)
    beam = open_field_beam(machine, side, mu=100.0, isocenter_lps=(0.0, 0.0, 0.0))
    points = grid.index_to_lps(np.indices(grid.shape).reshape(3, -1).T.astype(np.float64))
    kernel = group_kernels(model.energies_mev, model.fluence)
    t, c = beam_terma(beam, machine, model, kernel, phantom_density(rho, grid), points, voxel_mm=2.5)
    nz, ny, nx = grid.shape
    depth = grid.origin[1] + grid.spacing[1] * np.arange(ny)
    return depth, t.sum(axis=0).reshape(grid.shape)[nz // 2, :, nx // 2], c.reshape(grid.shape)[nz // 2, :, nx // 2]


def test_the_terma_is_scaled_by_the_factor_at_the_radiological_depth(machine):
    """A 10×10 field (one part, the 100 mm row: 1 to 50 mm, then 0.8 from 60 mm) in water and with a
    lung slab (ρ 0.25, 30–90 mm): the TERMA over the uncorrected one is the row at the radiological
    depth (at 97.5 mm: 97.5 mm of water, 52.5 mm behind the slab), the electron contamination unchanged."""
    base = _plain(machine)
    table = {"field_sizes_mm": [100.0], "depths_mm": [15.0, 50.0, 60.0, 400.0], "factor": [[1.0, 1.0, 0.8, 0.8]]}
    model = dataclasses.replace(base, depth_field_mm=np.array([100.0]), depth_mm=np.array(table["depths_mm"]), depth_factor=np.array(table["factor"]))
    grid_rho = np.ones(water_grid((2.5, 5.0, 2.5), half_width_mm=30.0, depth_mm=200.0).shape, np.float32)
    lung = grid_rho.copy()
    lung[:, 6:18] = 0.25  # voxels 6..17 of 5 mm: 30-90 mm
    for rho, behind in ((grid_rho, 1.0), (lung, 0.25)):
        depth, plain, c0 = _terma(machine, base, rho)
        _, corrected, c1 = _terma(machine, model, rho)
        k = int(np.argmin(np.abs(depth - 100.0)))  # the voxel centred at 97.5 mm
        radiological = 30.0 + 60.0 * behind + (depth[k] - 90.0)
        expect = np.interp(radiological, table["depths_mm"], table["factor"][0])
        assert corrected[k] / plain[k] == pytest.approx(expect, abs=0.01)
        assert corrected[2] / plain[2] == pytest.approx(1.0, abs=1e-6)  # 12.5 mm: before the first depth
        np.testing.assert_array_equal(c0, c1)


def test_a_correction_of_one_changes_nothing(machine):
    base = _plain(machine)
    ones = dataclasses.replace(base, depth_field_mm=np.array([30.0, 400.0]), depth_mm=np.array([0.0, 400.0]), depth_factor=np.ones((2, 2)))
    rho = np.ones(water_grid((2.5, 5.0, 2.5), half_width_mm=30.0, depth_mm=200.0).shape, np.float32)
    _, a, _ = _terma(machine, base, rho)
    _, b, _ = _terma(machine, ones, rho)
    np.testing.assert_allclose(b, a, rtol=1e-5)


def test_the_fit_makes_a_small_field_pdd_the_tables(machine):
    """The fixed point on a 3×3 cm² field (5 mm grid, to 200 mm): the engine's PDD differences shrink
    from several % (the kernels' small-field PDD falls more slowly than the table's) to a few tenths."""
    base = _plain(machine)
    table, record = fit_depth_correction(machine, base, spacing=5.0, deepest=200.0, fields=[30.0], progress=lambda s: None)
    [f] = record["fields"]
    assert f["max_abs_percent_before"] > 2.0
    assert f["max_abs_percent_after"] < 0.5 * f["max_abs_percent_before"]
    assert f["max_abs_percent_after"] < 1.0
    assert table["factor"][0][0] == 1.0 and table["depths_mm"][0] == machine.calib_depth_mm
    # the engine with the fitted table gives the recorded differences
    model = dataclasses.replace(base, depth_field_mm=np.array(table["field_sizes_mm"]), depth_mm=np.array(table["depths_mm"]),
                                depth_factor=np.array(table["factor"]))  # fmt: skip
    _, err = engine_pdd_errors(machine, model, 30.0, deepest=200.0, spacing=5.0)
    np.testing.assert_allclose(err, f["difference_percent_after"], atol=0.02)


def test_every_shipped_machine_carries_a_depth_correction_for_its_pdd_table():
    from art.dose.library import load_library

    for m in load_library().machines:
        model = ccc_model(m)
        np.testing.assert_allclose(model.depth_field_mm, m.pdd_field_mm * m.sad_mm / m.pdd_ssd_mm, atol=1e-3)
        assert model.depth_mm[0] == m.calib_depth_mm and model.depth_mm[-1] == 300.0
        np.testing.assert_array_equal(model.depth_factor[:, 0], 1.0)
        assert m.ccc["commissioning"]["depth_correction"]["steps"] >= 1
