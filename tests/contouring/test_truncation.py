"""Contours cut by the CBCT's field of view (issue 16, item 9): recognised, completed from the propagated contour, flagged, discounted."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from art.contouring.truncation import EDGE_MARGIN_MM, complete_truncated, edge_regions, reaches_edge_band
from art.geometry import Grid
from art.structures import Structure, StructureSet

GRID = Grid(shape=(20, 40, 40), spacing=(3.0, 2.0, 2.0), origin=(-39.0, -39.0, -30.0))


def _ellipsoid(grid: Grid, centre_zyx, semi_mm) -> np.ndarray:
    z, y, x = np.indices(grid.shape, dtype=float)
    sp = grid.spacing
    return (((z - centre_zyx[0]) * sp[0] / semi_mm[0]) ** 2 + ((y - centre_zyx[1]) * sp[1] / semi_mm[1]) ** 2
            + ((x - centre_zyx[2]) * sp[2] / semi_mm[2]) ** 2) <= 1.0  # fmt: skip


def _case():
    """A bladder running beyond the last slice (the network's contour tapering away there) and a rectum well inside."""
    bladder = _ellipsoid(GRID, (17, 20, 20), (27.0, 20.0, 24.0))  # to slice 17 + 9 > 19: cut by the last slice
    assert bladder[-1].sum() > 100
    from scipy import ndimage

    ai_bladder = bladder.copy()
    for k, drop in ((17, 2), (18, 5)):  # the network's taper: smaller and smaller, nothing on the last slice
        ai_bladder[k] = ndimage.binary_erosion(bladder[k], iterations=drop)
    ai_bladder[19] = False
    rectum = _ellipsoid(GRID, (8, 28, 20), (12.0, 8.0, 8.0))
    ai_rectum = np.roll(rectum, 1, axis=2)
    planning = StructureSet(GRID, [Structure("Bladder", bladder, GRID, "ORGAN"), Structure("Rectum", rectum, GRID, "ORGAN")])
    propagated = planning  # the planning contours deformed to today: here today's truth
    ai = StructureSet(GRID, [Structure("Bladder", ai_bladder, GRID, "ORGAN"), Structure("Rectum", ai_rectum, GRID, "ORGAN")])
    contours = SimpleNamespace(structures=ai, confidence={"Bladder": 0.96, "Rectum": 0.95}, flagged=[])
    return planning, propagated, contours


def test_edge_regions_are_the_outer_layer_and_a_margin_wide_band():
    fov = np.ones(GRID.shape, bool)
    band, outer = edge_regions(fov, GRID, margin_mm=EDGE_MARGIN_MM)
    assert outer[0].all() and outer[-1].all() and outer[:, 0].all() and outer[:, :, -1].all() and not outer[5, 5:-5, 5:-5].any()
    # 10 mm: three 3 mm slices from each end, five 2 mm columns from each side
    assert band[:3].all() and band[-3:].all() and not band[3:-3, 5:-5, 5:-5].any() and band[10, :5].all() and not band[10, 5, 5:-5].any()


def test_an_organ_beyond_the_last_slice_is_completed_flagged_and_discounted():
    from art.adapt import daily_structures

    planning, propagated, contours = _case()
    fov = np.ones(GRID.shape, bool)
    daily, sources, qa, flagged = daily_structures(planning, propagated, contours, confidence_threshold=0.8, field_of_view=fov)
    rows = {r["structure"]: r for r in qa}
    b = rows["Bladder"]
    assert sources["Bladder"] == "ai+propagated" and b["flagged"] and "Bladder" in flagged
    t = b["truncated"]
    assert t["edges"] == ["superior"] and 0 < t["added_from_propagated_percent"] < t["in_edge_band_percent"] < 100
    assert b["network_confidence"] == 0.96 and "field of view" in b["review"]
    assert b["confidence"] == pytest.approx(0.96 * (1 - t["in_edge_band_percent"] / 100), abs=2e-3)
    assert b["confidence"] < 0.96 * 0.95
    band, _ = edge_regions(fov, GRID)
    got, ai, prop = daily.find("Bladder").mask, contours.structures.find("Bladder").mask, propagated.find("Bladder").mask
    assert np.array_equal(got[band], (ai | prop)[band]) and np.array_equal(got[~band], ai[~band])
    assert got[-1].sum() == prop[-1].sum() > 100 and ai[-1].sum() == 0  # completed where the network lost it
    # the organ well inside the field of view is the network's, not flagged, confidence untouched
    r = rows["Rectum"]
    assert sources["Rectum"] == "ai" and not r["flagged"] and r["truncated"] is None and r["confidence"] == 0.95
    assert np.array_equal(daily.find("Rectum").mask, contours.structures.find("Rectum").mask)
    # without the field of view nothing is recognised (the check can fail)
    _, sources0, qa0, flagged0 = daily_structures(planning, propagated, contours, confidence_threshold=0.8)
    assert sources0["Bladder"] == "ai" and "Bladder" not in flagged0


def test_an_organ_crossing_the_fov_cylinder_is_cut_in_plane():
    z, y, x = np.indices(GRID.shape, dtype=float)
    fov = ((y - 19.5) * 2.0) ** 2 + ((x - 19.5) * 2.0) ** 2 <= 30.0**2  # a 60 mm cylinder: padding outside
    organ = _ellipsoid(GRID, (10, 20, 33), (12.0, 8.0, 10.0))  # reaching x = 33 + 5 voxels, beyond the cylinder's x = 34.5
    ai = organ & fov & ~((np.abs(x - 19.5) * 2.0 > 26.0))  # the network stops short of the edge
    cut = complete_truncated(ai, organ, fov, GRID, confidence=0.9)
    assert cut is not None and cut.edges == ["in-plane"]
    assert cut.mask[~fov].sum() == (organ & ~fov).sum() > 0 and cut.confidence < 0.9
    inside = _ellipsoid(GRID, (10, 20, 20), (12.0, 8.0, 8.0))
    assert complete_truncated(inside, inside, fov, GRID, confidence=0.9) is None


def test_edge_names_follow_the_slice_axis_and_bad_inputs_are_refused():
    from art.errors import InputError

    flipped = Grid(shape=GRID.shape, spacing=GRID.spacing, origin=(-39.0, -39.0, 27.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    organ = np.zeros(GRID.shape, bool)
    organ[-2:, 15:25, 15:25] = True
    fov = np.ones(GRID.shape, bool)
    assert complete_truncated(organ, organ, fov, GRID, confidence=1.0).edges == ["superior"]
    assert complete_truncated(organ, organ, fov, flipped, confidence=1.0).edges == ["inferior"]
    with pytest.raises(InputError, match="field_of_view"):
        edge_regions(fov[1:], GRID)
    with pytest.raises(InputError, match="confidence"):
        complete_truncated(organ, organ, fov, GRID, confidence=1.5)


def test_a_cut_organ_does_not_guide_the_registration():
    from art.adapt import _guide_structures

    planning, _, contours = _case()
    fov = np.ones(GRID.shape, bool)
    assert set(_guide_structures(planning, contours, 0.8)) == {"Bladder", "Rectum"}
    assert set(_guide_structures(planning, contours, 0.8, fov)) == {"Rectum"}
    assert reaches_edge_band(contours.structures.find("Bladder").mask, fov, GRID)
