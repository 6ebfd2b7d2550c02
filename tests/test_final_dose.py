"""The evaluated dose (issue 15, item 1): the export grid, structures as exported, normalisation on the final dose."""

from __future__ import annotations

import numpy as np
import pytest

from art.errors import InputError
from art.evaluate.polygons import polygon_samples
from art.final_dose import NORMALISATION_MARGIN, evaluation_structures, final_grid, normalise
from art.io.rtdose import stored_dose
from art.geometry import Grid, Volume
from art.protocol import parse_protocol
from art.structures import Structure, StructureSet


@pytest.mark.parametrize("spacing", [(3.0, 2.0, 2.0), (2.0, 0.9765625, 0.9765625), (5.0, 4.0, 4.0)])
def test_final_grid_covers_the_ct_to_its_outer_voxel_edges(spacing):
    ct = Grid((41, 60, 70), spacing, (-33.3, 12.1, -100.7))
    g = final_grid(ct, 2.5)
    assert g.spacing == (2.5, 2.5, 2.5)
    assert g.direction == ct.direction
    lo_ct = ct.index_to_lps(np.array([-0.5, -0.5, -0.5]))
    hi_ct = ct.index_to_lps(np.array(ct.shape, float) - 0.5)
    lo_g = g.index_to_lps(np.array([-0.5, -0.5, -0.5]))
    hi_g = g.index_to_lps(np.array(g.shape, float) - 0.5)
    assert np.all(lo_g <= lo_ct + 1e-6) and np.all(hi_g >= hi_ct - 1e-6)
    assert np.all(hi_g - lo_g < hi_ct - lo_ct + 3 * 2.5 + 1e-6)  # a voxel more at most, and one margin voxel each side in-plane
    centre = lambda gr: gr.index_to_lps((np.asarray(gr.shape, float) - 1) / 2)  # noqa: E731
    np.testing.assert_allclose(centre(g), centre(ct), atol=1e-9)


@pytest.mark.parametrize("bad", [0, -1, 0.2, 7.5, float("nan"), "fine", None])
def test_final_grid_spacing_is_checked_naming_the_option(bad):
    with pytest.raises(InputError, match="final_grid_mm"):
        final_grid(Grid((4, 4, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0)), bad)


def _disc_structure(grid: Grid, radius: float, name: str = "Disc") -> Structure:
    x, y, z = grid.lps_coordinates(np.float64)
    mask = (x**2 + y**2 <= radius**2) & (np.abs(z) <= 10.0)
    return Structure(name, mask, grid, roi_type="ORGAN")


def test_mask_only_structures_are_measured_by_the_polygons_the_rtstruct_export_writes(tmp_path):
    from art.io import read_rtstruct, write_image_series, write_rtstruct
    from art.io.dicom_common import PatientInfo

    grid = Grid((11, 32, 32), (3.0, 2.0, 2.0), (-31.0, -31.0, -15.0))
    ct = Volume(np.zeros(grid.shape, np.float32), grid)
    image = write_image_series(ct, tmp_path / "CT", patient=PatientInfo(name="A^B", id="X"))
    s = _disc_structure(image.grid, 13.0)
    ss = StructureSet(image.grid, [s])
    ev = evaluation_structures(ss)
    assert ev["Disc"].contours is not None and s.contours is None
    assert ev["Disc"].mask is s.mask  # the mask is kept for the optimiser
    write_rtstruct(ss, image, tmp_path / "RS.dcm")
    back = read_rtstruct(tmp_path / "RS.dcm", image)["Disc"]
    assert len(back.contours) == len(ev["Disc"].contours)
    for a, b in zip(ev["Disc"].contours, back.contours):
        np.testing.assert_allclose(a, b, atol=1e-9)
    dose = Volume((image.grid.lps_coordinates(np.float32)[0] + 50.0).astype(np.float32), image.grid)
    d1, v1 = polygon_samples(dose, ev["Disc"])
    d2, v2 = polygon_samples(dose, back)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(v1, v2)


def test_structures_with_polygons_and_empty_ones_are_kept_as_they_are():
    grid = Grid((5, 8, 8), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    poly = (np.array([[2.0, 2.0, 4.0], [8.0, 2.0, 4.0], [8.0, 8.0, 4.0]]),)
    given = Structure("Given", np.zeros(grid.shape, bool), grid, contours=poly, frame_of_reference_uid="1.2.3")
    empty = Structure("Empty", np.zeros(grid.shape, bool), grid)
    ev = evaluation_structures(StructureSet(grid, [given, empty]))
    assert ev["Given"] is given and ev["Empty"].contours is None


def test_normalisation_holds_the_prescription_goal_exactly_on_the_final_dose():
    from art.evaluate import evaluate_goals
    from art.plan import Beam, Plan, Segment

    grid = Grid((16, 40, 40), (2.5, 2.5, 2.5), (-48.75, -48.75, -18.75))
    ev = evaluation_structures(StructureSet(grid, [_disc_structure(grid, 20.0, "PTV")]))
    x, y, z = grid.lps_coordinates(np.float64)
    dose = Volume((40.0 + 0.3 * x + 0.1 * y).astype(np.float32), grid)  # a gradient across the target
    protocol = parse_protocol(
        'name = "t"\n[prescription]\ntarget = "PTV"\ndose_gy = 50.0\nfractions = 25\n[beams]\nenergy = "6X"\ngantry_angles = [0]\n'
        'isocenter = "PTV"\n[[goals]]\nstructure = "PTV"\nmetric = "D95%"\nat_least = 47.5\npriority = 1\n'
    )
    seg = Segment(np.zeros((2, 60)), (-10.0, 10.0, -10.0, 10.0), 100.0)
    plan = Plan(beams=[Beam("B1", 0.0, segments=[seg])], fractions=25, machine_name="generic")
    new_plan, new_dose, factor = normalise(plan, dose, ev, protocol)
    (g,) = evaluate_goals(new_dose, ev, protocol, mode="polygons")
    assert g.met and g.value == pytest.approx(47.5 * (1 + NORMALISATION_MARGIN), abs=0.02)  # met with the margin, within the sampling's steps
    assert g.value >= 47.5 * (1 + NORMALISATION_MARGIN)
    assert new_plan.beams[0].segments[0].mu == pytest.approx(100.0 * factor)
    step = float(new_dose.array.max()) / 65535  # the dose as the RT Dose file stores it: 16-bit steps
    np.testing.assert_allclose(new_dose.array, dose.array * np.float32(factor), atol=0.51 * step + 1e-6)
    np.testing.assert_array_equal(stored_dose(new_dose).array, new_dose.array)  # storing it again changes nothing


def test_the_evaluated_dose_is_the_dose_read_back_from_the_exported_file(tmp_path):
    from art.io import write_image_series
    from art.io.dicom_common import PatientInfo
    from art.io.rtdose import read_rtdose, write_rtdose

    grid = Grid((12, 20, 24), (3.0, 2.0, 2.0), (-23.0, -19.0, -16.5))
    image = write_image_series(Volume(np.zeros(grid.shape, np.float32), grid), tmp_path / "CT", patient=PatientInfo(name="A^B", id="X"))
    g = final_grid(image.grid, 2.5)
    x, y, z = g.lps_coordinates(np.float64)
    raw = Volume((30.0 + 0.37 * x - 0.21 * y + 0.05 * z + 0.013 * x * y).clip(0).astype(np.float32), g)
    stored = stored_dose(raw)
    write_rtdose(stored, image, tmp_path / "RD.dcm", plan_ds_or_uid="1.2.3.4")
    back = read_rtdose(tmp_path / "RD.dcm")
    assert back.grid.same_as(g)
    np.testing.assert_array_equal(back.array, stored.array)


def test_the_final_dose_is_computed_by_the_engine_named():
    """Issue 19: ``final_dose(..., engine=...)`` picks the engine from the registry; pencil beam by default."""
    from art.dose.calc import dose
    from art.final_dose import final_dose
    from tests.engine_case import engine_case

    c = engine_case()
    expected = stored_dose(dose(c.ct, c.plan, c.machine, dose_grid=c.grid, structures=c.structures))
    for kwargs in ({}, {"engine": "pb"}, {"engine": "PB"}):
        got = final_dose(c.ct, c.plan, c.machine, c.structures, c.grid, **kwargs)
        assert got.grid.same_as(c.grid)
        np.testing.assert_array_equal(got.array, expected.array)
    with pytest.raises(InputError, match="final engine: unknown dose engine 'monte-carlo'; choose one of pb .pencil beam., ccc"):
        final_dose(c.ct, c.plan, c.machine, c.structures, c.grid, engine="monte-carlo")


def test_the_final_dose_by_the_collapsed_cone_engine():
    ccc = pytest.importorskip("art.dose.ccc")
    from art.final_dose import final_dose
    from tests.engine_case import engine_case

    c = engine_case()
    got = final_dose(c.ct, c.plan, c.machine, c.structures, c.grid, engine="ccc")
    expected = stored_dose(ccc.dose(c.ct, c.plan, c.machine, dose_grid=c.grid, structures=c.structures))
    np.testing.assert_array_equal(got.array, expected.array)
