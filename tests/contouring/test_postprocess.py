"""Post-processing, sanity checks, confidence and normalisation (no network needed)."""

import numpy as np
import pytest

from art.contouring.confidence import confidence, dice
from art.contouring.inference import anatomical_checks, postprocess_mask
from art.contouring.model import normalise, read_card
from art.errors import InputError
from art.geometry import Grid
from art.structures import Structure, StructureSet

NORM = {"type": "body_mean", "scale_hu": 200.0, "clip": [-6.0, 6.0], "body_threshold_hu": -500.0, "window_hu": [-200.0, 200.0], "offset_hu": 0.0}


def test_postprocess_keeps_largest_component_and_fills_holes():
    m = np.zeros((20, 20, 20), bool)
    m[2:12, 2:12, 2:12] = True
    m[6, 6, 6] = False  # enclosed hole
    m[15:17, 15:17, 15:17] = True  # small island
    out = postprocess_mask(m)
    assert out[6, 6, 6] and not out[15:17, 15:17, 15:17].any()
    assert out.sum() == 1000


def test_postprocess_axial_fill_fills_slice_holes_open_in_3d():
    m = np.zeros((5, 12, 12), bool)
    m[:, 2:10, 2:10] = True
    m[:, 5:7, 5:7] = False  # a tube open at both ends: not a 3D hole
    assert not postprocess_mask(m)[2, 5, 5]
    assert postprocess_mask(m, fill="axial")[2, 5, 5]


def _ball(shape, c, r):
    z, y, x = np.indices(shape)
    return (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r


def _pelvis_like(swap_heads=False):
    g = Grid(shape=(40, 60, 80), spacing=(4.0, 4.0, 4.0), origin=(-158.0, -118.0, -78.0))
    sh = g.shape
    body = np.zeros(sh, bool)
    body[:, 5:55, 5:75] = True
    organs = {
        "Bladder": _ball(sh, (28, 22, 40), 9),  # superior (high z), anterior (low y)
        "Rectum": _ball(sh, (15, 40, 40), 4),
        "Prostate": _ball(sh, (14, 30, 40), 5),
        "FemoralHead_L": _ball(sh, (15, 28, 65), 6),  # +x = patient left
        "FemoralHead_R": _ball(sh, (15, 28, 15), 6),
    }
    if swap_heads:
        organs["FemoralHead_L"], organs["FemoralHead_R"] = organs["FemoralHead_R"], organs["FemoralHead_L"]
    ss = StructureSet(g, [Structure("BODY", body, g, roi_type="EXTERNAL")] + [Structure(n, m, g) for n, m in organs.items()])
    return ss


def test_anatomical_checks_pass_on_plausible_anatomy():
    assert anatomical_checks(_pelvis_like()) == {}


def test_anatomical_checks_flag_swapped_femoral_heads_and_empty_structures():
    r = anatomical_checks(_pelvis_like(swap_heads=True))
    assert set(r) == {"FemoralHead_L", "FemoralHead_R"}
    ss = _pelvis_like()
    ss["Prostate"].mask[:] = False
    assert "empty" in anatomical_checks(ss)["Prostate"]


def test_confidence_tta_and_propagated_agreement():
    ss = _pelvis_like()
    b = ss["Bladder"].mask
    c = confidence(ss, tta_masks={"Bladder": [b, b]})
    assert c["Bladder"] == 1.0
    shifted = np.roll(b, 30, axis=2)  # disjoint
    c = confidence(ss, tta_masks={"Bladder": [b, shifted]})
    assert c["Bladder"] == pytest.approx(0.5)
    prop = StructureSet(ss.grid, [Structure("Bladder", shifted, ss.grid)])
    c = confidence(ss, propagated=prop)
    assert c["Bladder"] == 0.0 and c["Rectum"] == 1.0


def test_dice_values():
    a = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b = np.zeros_like(a)
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


def test_normalise_is_robust_to_a_global_hu_offset():
    rng = np.random.default_rng(0)
    img = np.full((20, 30, 30), -1000.0, np.float32)
    img[:, 5:25, 5:25] = rng.normal(30.0, 60.0, (20, 20, 20))
    a = normalise(img, NORM)
    b = normalise(img + 70.0, NORM)
    inside = img > -500
    assert np.abs(a[inside] - b[inside]).mean() < 0.05  # 0.35 without the body-mean subtraction
    assert a[0, 0, 0] == pytest.approx(-5.15, abs=0.1)  # air: (-1000 - ~30) / 200


@pytest.mark.parametrize(
    "text, field",
    [
        ("{not json", "JSON"),
        ('{"spacing_mm": [4, 4, 4], "normalisation": {"type": "fixed"}}', "classes"),
        ('{"classes": ["background", "A"], "spacing_mm": [4, 4], "normalisation": {"type": "fixed"}}', "spacing_mm"),
        ('{"classes": ["background", "A"], "spacing_mm": [4, 4, 4], "normalisation": {"type": "zscore"}}', "normalisation"),
        ('{"classes": ["background", "A"], "spacing_mm": [4, 4, 4], "normalisation": {"type": "fixed"}, "patch": [30, 64, 64]}', "divisible"),
    ],
)
def test_bad_card_names_file_and_field(tmp_path, text, field):
    p = tmp_path / "m.json"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        read_card(p)
    assert str(p) in str(e.value) and field in str(e.value)


def test_label_map_organs_over_body_on_a_coarser_grid():
    from art.contouring.dataset import label_map
    from art.contouring.labels import CLASSES

    ss = _pelvis_like()
    fine = ss.grid
    coarse = Grid(shape=(20, 30, 40), spacing=(8.0, 8.0, 8.0), origin=tuple(np.asarray(fine.origin) + 2.0))
    lab = label_map(ss, coarse)
    assert lab.dtype == np.uint8 and lab.shape == coarse.shape
    for i, name in enumerate(CLASSES[2:], start=2):
        vol_cc = np.count_nonzero(lab == i) * coarse.voxel_volume_cc
        assert vol_cc == pytest.approx(ss[name].volume_cc, rel=0.35), name
    assert (lab == 0).sum() > 0 and (lab == 1).sum() > 0


def test_intensity_consistent_trims_fat_taken_into_a_fluid_organ():
    from art.contouring.inference import intensity_consistent

    rng = np.random.default_rng(0)
    img = np.full((20, 40, 40), -100.0, dtype=np.float32)  # fat
    z, y, x = np.ogrid[:20, :40, :40]
    bladder = (z - 8) ** 2 / 36 + (y - 20) ** 2 / 100 + (x - 20) ** 2 / 100 <= 1
    img[bladder] = 10.0 + 300.0  # urine, with a global offset the rule must not care about
    img[~bladder] += 300.0
    img += rng.normal(0.0, 30.0, img.shape).astype(np.float32)  # CBCT noise
    over = bladder.copy()
    over[12:20, 14:26, 14:26] = True  # the network took the fat above the dome
    out = intensity_consistent(over, img, (3.0, 2.0, 2.0), below_hu=60.0)
    assert (out & ~bladder).sum() < 0.1 * (over & ~bladder).sum()
    assert (out & bladder).sum() > 0.95 * bladder.sum()
    # a contour that is all urine stays (but for a few boundary voxels blurred by the smoothing); an empty one stays empty
    same = intensity_consistent(bladder, img, (3.0, 2.0, 2.0), below_hu=60.0)
    assert not (same & ~bladder).any() and same.sum() > 0.995 * bladder.sum()
    assert not intensity_consistent(np.zeros_like(bladder), img, (3.0, 2.0, 2.0), below_hu=60.0).any()
