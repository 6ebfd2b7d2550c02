"""Report figures: sizes, content, orientation and the data behind the curves."""

from __future__ import annotations

import numpy as np
import pytest

from art.errors import InputError
from art.evaluate import dvh
from art.geometry import Grid, Volume
from art.report import figures as F

from .conftest import png_pixels, png_size


def _data_position(img, row: int, col: int) -> tuple[float, float]:
    """Data coordinates (mm) of the centre of pixel (row, col) of an AxesImage."""
    arr = img.get_array()
    nr, nc = arr.shape[:2]
    left, right, bottom, top = img.get_extent()
    x = left + (col + 0.5) * (right - left) / nc
    if img.origin == "upper":
        y = top + (row + 0.5) * (bottom - top) / nr
    else:
        y = bottom + (row + 0.5) * (top - bottom) / nr
    return x, y


# ------------------------------------------------------------------ DVH
def test_dvh_figure_lines_carry_the_curves_styles_and_structure_colours(case):
    sched = {s.name: dvh(case.dose, s) for s in case.structures if s.roi_type != "EXTERNAL"}
    adapted_dose = Volume(case.dose.array * 1.1, case.grid)
    adapt = {s.name: dvh(adapted_dose, s) for s in case.structures if s.roi_type != "EXTERNAL"}
    curves = {
        "scheduled": {k: (h.dose_gy, h.volume_pct) for k, h in sched.items()},
        "adapted": {k: (h.dose_gy, h.volume_pct) for k, h in adapt.items()},
    }
    fig = F.dvh_figure(curves, colors=case.structures, as_figure=True)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert len(lines) == 6
    for label, per in curves.items():
        for name, (d, v) in per.items():
            ln = lines[f"{label}: {name}"]
            np.testing.assert_array_equal(ln.get_xdata(), d)
            np.testing.assert_array_equal(ln.get_ydata(), v)
            assert ln.get_linestyle() == ("--" if label == "scheduled" else "-")
            rgb = tuple(round(c * 255) for c in ln.get_color()[:3])
            assert rgb == case.structures[name].color
    # a known dose: the PTV sees >= 40 Gy everywhere -> its curve is 100 % up to the PTV minimum
    d, v = curves["scheduled"]["PTV"]
    ptv_min = float(case.dose.array[case.structures["PTV"].mask].min())
    assert ptv_min > 40
    assert np.all(v[d < ptv_min - 0.02] == pytest.approx(100.0))
    assert v[-1] == 0.0


def test_dvh_figure_png_size_and_content():
    d = np.linspace(0, 60, 50)
    png = F.dvh_figure({"reference": {"PTV": (d, 100 * (d < 55))}}, figsize=(6, 4), dpi=50)
    assert png_size(png) == (300, 200)
    px = png_pixels(png)
    assert px.shape[:2] == (200, 300)
    assert px[..., :3].std() > 0.05  # not blank
    # a curve in the default colour cycle appears somewhere (blue-ish pixels)
    blue = (px[..., 2] > 0.6) & (px[..., 0] < 0.3)
    assert blue.sum() > 20


def test_dvh_figure_accepts_dvh_objects_and_rejects_bad_input(case):
    h = dvh(case.dose, case.structures["PTV"])
    fig = F.dvh_figure({"reference": {"PTV": h}, "other": {"PTV": h.to_dict()}}, as_figure=True)
    styles = {ln.get_label(): ln.get_linestyle() for ln in fig.axes[0].get_lines()}
    assert styles == {"reference: PTV": "-", "other: PTV": "-"}
    with pytest.raises(InputError, match="curves"):
        F.dvh_figure({})
    with pytest.raises(InputError, match="equal length"):
        F.dvh_figure({"a": {"PTV": ([0, 1, 2], [100, 50])}})


# ------------------------------------------------------------------ dose wash
def test_dose_wash_png_size_deterministic_and_changes_with_dose(case):
    kw = dict(dose_max=60.0, figsize=(9, 3.5), dpi=60)
    a = F.dose_wash_figure(case.ct, case.dose, case.structures, (0, 0, 0), **kw)
    b = F.dose_wash_figure(case.ct, case.dose, case.structures, (0, 0, 0), **kw)
    c = F.dose_wash_figure(case.ct, Volume(case.dose.array * 0.5, case.grid), case.structures, (0, 0, 0), **kw)
    assert png_size(a) == (540, 210)
    assert a == b  # deterministic, so the next comparison means something
    pa, pc = png_pixels(a), png_pixels(c)
    assert np.abs(pa - pc).max() > 0.2
    assert pa[..., :3].std() > 0.05


def test_dose_wash_orientation_and_aspect(case):
    """A hot spot at the patient's left, anterior, superior shows where the labels say."""
    hot = np.array([20.0, -14.0, 9.0])  # x left, y anterior (negative), z superior
    x, y, z = case.grid.lps_coordinates()
    d = np.exp(-((x - hot[0]) ** 2 + (y - hot[1]) ** 2 + (z - hot[2]) ** 2) / (2 * 3.0**2)).astype(np.float32) * 50
    fig = F.dose_wash_figure(case.ct, Volume(d, case.grid), case.structures, hot, as_figure=True)
    axes = [ax for ax in fig.axes if ax.get_title() in ("axial", "coronal", "sagittal")]
    assert [ax.get_title() for ax in axes] == ["axial", "coronal", "sagittal"]
    expected = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}  # (horizontal, vertical) LPS axes
    letters = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
    for ax in axes:
        wash = ax.get_images()[1]
        arr = np.ma.filled(wash.get_array(), 0)
        r, c = np.unravel_index(int(np.argmax(arr)), arr.shape)
        h, v = expected[ax.get_title()]
        xd, yd = _data_position(wash, r, c)
        assert xd == pytest.approx(hot[h], abs=2.01)
        assert yd == pytest.approx(hot[v], abs=3.01)
        # display: where does the hot spot sit in the axes (0..1 from left / from bottom)?
        fx, fy = ax.transAxes.inverted().transform(ax.transData.transform((xd, yd)))
        texts = {t.get_text(): t.get_position() for t in ax.texts}
        left, right, top, bottom = letters[ax.get_title()]
        assert texts[left][0] < 0.5 < texts[right][0] and texts[bottom][1] < 0.5 < texts[top][1]
        if ax.get_title() in ("axial", "coronal"):
            assert fx > 0.5  # patient left is on the right of the view (the L side)
        else:
            assert fx < 0.5  # anterior is on the left of the sagittal view (the A side)
        if ax.get_title() == "axial":
            assert fy > 0.5  # anterior at the top
        else:
            assert fy > 0.5  # superior at the top
        # aspect: the drawn extent equals the physical extent, equal scaling
        ext = wash.get_extent()
        width, height = abs(ext[1] - ext[0]), abs(ext[3] - ext[2])
        phys = {0: 40 * 2.0, 1: 40 * 2.0, 2: 20 * 3.0}
        assert width == pytest.approx(phys[h]) and height == pytest.approx(phys[v])
        assert ax.get_aspect() == 1.0


def test_dose_wash_same_view_for_a_flipped_array_orientation(case):
    """The planes are drawn in patient space: flipping the array (and the direction) changes nothing."""
    g = case.grid
    flip = Grid(shape=g.shape, spacing=g.spacing, origin=(39.0, 39.0, -28.5), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert np.allclose(flip.index_to_lps([0, 39, 39]), g.index_to_lps([0, 0, 0]))
    ct2 = Volume(case.ct.array[:, ::-1, ::-1].copy(), flip)
    dose2 = Volume(case.dose.array[:, ::-1, ::-1].copy() * np.float32(1.0), flip)
    rng = np.random.default_rng(1)
    noise = rng.random(g.shape).astype(np.float32) * 10
    dose_a = Volume(case.dose.array + noise, g)
    dose_b = Volume(dose2.array + noise[:, ::-1, ::-1], flip)
    p = (5.0, -7.0, 4.5)
    f1 = F.dose_wash_figure(case.ct, dose_a, case.structures, p, as_figure=True)
    f2 = F.dose_wash_figure(ct2, dose_b, case.structures, p, as_figure=True)
    for a1, a2 in zip(f1.axes[:3], f2.axes[:3]):
        for i1, i2 in zip(a1.get_images(), a2.get_images()):
            np.testing.assert_allclose(np.ma.filled(i1.get_array(), -1), np.ma.filled(i2.get_array(), -1), atol=1e-4)
            assert i1.get_extent() == pytest.approx(i2.get_extent())


def test_dose_wash_contours_drawn_in_structure_colours(case):
    fig = F.dose_wash_figure(case.ct, case.dose, case.structures, (0, 0, 0), as_figure=True)
    axial = fig.axes[0]
    colours = set()
    for coll in axial.collections:
        for c in np.atleast_2d(coll.get_edgecolor()):
            colours.add(tuple(round(v * 255) for v in c[:3]))
    assert (255, 0, 0) in colours and (150, 75, 0) in colours  # PTV and rectum cross the axial plane at z ~ 0


def test_dose_wash_rejects_a_point_outside_the_image(case):
    with pytest.raises(InputError, match="point_lps"):
        F.dose_wash_figure(case.ct, case.dose, case.structures, (0, 0, 500))
    with pytest.raises(InputError, match="dose"):
        F.dose_wash_figure(case.ct, case.dose.array, case.structures, (0, 0, 0))


# ------------------------------------------------------------------ difference, gamma, checkerboard, MU
def test_difference_figure_shows_b_minus_a_with_symmetric_diverging_scale(case):
    b = Volume(case.dose.array + 3.0 * (case.grid.lps_coordinates()[2] > 0), case.grid)
    fig = F.difference_figure(case.ct, case.dose, b, case.structures, (1, 1, 1.5), as_figure=True)
    coronal = fig.axes[1]
    im = coronal.get_images()[1]
    assert im.get_cmap().name == "RdBu_r"
    lo, hi = im.get_clim()
    assert lo == -hi and hi == pytest.approx(3.0, abs=1e-4)
    assert "largest |difference| on these planes 3 Gy" in fig.get_suptitle()
    arr = np.ma.filled(im.get_array(), 0.0)
    # rows run inferior -> superior (origin lower): superior half +3 Gy, inferior half 0
    zc = np.linspace(im.get_extent()[2], im.get_extent()[3], arr.shape[0] + 1)
    zc = (zc[:-1] + zc[1:]) / 2
    assert np.allclose(arr[zc > 0], 3.0, atol=1e-4) and np.allclose(arr[zc < 0], 0.0)


def test_gamma_figure_reports_the_pass_rate(case):
    g = np.full(case.grid.shape, np.nan, dtype=np.float32)
    body = case.structures["BODY"].mask
    vals = np.where(np.arange(body.sum()) % 4 == 0, 1.5, 0.5)  # 75 % pass
    g[body] = vals
    fig = F.gamma_figure(case.ct, Volume(g, case.grid), case.structures, criteria="3 %/2 mm", as_figure=True)
    hist = fig.axes[3]
    assert "pass rate 75.0 %" in hist.get_title()
    assert f"n = {int(body.sum())}" in hist.get_title()
    png = F.gamma_figure(case.ct, Volume(g, case.grid), figsize=(12, 4), dpi=50)
    assert png_size(png) == (600, 200)


def test_checkerboard_alternates_images_and_overlay_is_grey_when_aligned(case):
    a = Volume(np.full(case.grid.shape, -400.0, np.float32), case.grid)
    b = Volume(np.full(case.grid.shape, 400.0, np.float32), case.grid)
    fig = F.checkerboard_figure(a, b, (0, 0, 0), square_mm=10.0, as_figure=True)
    board = fig.axes[0].get_images()[0].get_array()
    assert set(np.unique(board)) == {0.0, 1.0}
    assert 0.3 < board.mean() < 0.7
    # 10 mm squares on 2 mm pixels: 5 pixels per square along each axis
    assert board[0, 0] != board[0, 5] and board[0, 0] == board[0, 4] and board[0, 0] != board[5, 0]
    same = F.checkerboard_figure(case.ct, case.ct, as_figure=True)
    rgb = same.axes[3].get_images()[0].get_array()
    assert np.allclose(rgb[..., 0], rgb[..., 1]) and np.allclose(rgb[..., 1], rgb[..., 2])
    shifted = Volume(np.roll(case.ct.array, 4, axis=1), case.grid)
    rgb2 = F.checkerboard_figure(case.ct, shifted, as_figure=True).axes[3].get_images()[0].get_array()
    assert np.abs(rgb2[..., 0] - rgb2[..., 1]).max() > 0.5  # misalignment is coloured


def test_mu_bar_heights(tmp_path):
    mu = {"scheduled": {"G0": 120.0, "G51": 80.5}, "adapted": {"G0": 110.0, "G51": 95.0, "G103": 10.0}}
    fig = F.mu_bar_figure(mu, as_figure=True)
    conts = fig.axes[0].containers
    assert [b.get_height() for b in conts[0]] == [120.0, 80.5, 0.0]
    assert [b.get_height() for b in conts[1]] == [110.0, 95.0, 10.0]
    assert png_size(F.mu_bar_figure({"G0": 1.0}, figsize=(4, 3), dpi=50)) == (200, 150)
    with pytest.raises(InputError, match="MU"):
        F.mu_bar_figure({"G0": -1.0})


@pytest.mark.parametrize("dpi", [50, 100])
def test_figure_to_png_is_savefig_to_the_byte(case, dpi):
    """One draw with the layout engine inside it gives the PNG matplotlib's ``savefig`` writes (which
    draws twice with a layout engine), at the asked resolution."""
    import io

    p = case.structures["PTV"].centroid_lps()
    for make in (lambda: F.dose_wash_figure(case.ct, case.dose, case.structures, p, as_figure=True),
                 lambda: F.dvh_figure({"plan": {"PTV": (np.linspace(0, 60, 50), np.linspace(100, 0, 50))}}, as_figure=True)):  # fmt: skip
        fig = make()
        assert fig.get_layout_engine() is not None
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        png = F.figure_to_png(make(), dpi=dpi)
        assert png == buf.getvalue()
        w, h = fig.get_size_inches()
        assert png_size(png) == (round(w * dpi), round(h * dpi))
