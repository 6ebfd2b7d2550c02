"""The planning pelvis: determinism, anatomy ranges, HU per tissue, structure consistency, protocol."""

import json

import numpy as np
import pytest
from scipy import ndimage

from art.errors import InputError
from art_phantoms import default_protocol_path, default_protocol_text, make_pelvis

NAMES = ["BODY", "PTV", "CTV", "Prostate", "SeminalVesicles", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R", "Bones"]


def test_same_seed_same_arrays(coarse_case):
    again = make_pelvis(seed=0, spacing=(4.0, 4.0, 4.0))
    assert np.array_equal(again.ct.array, coarse_case.ct.array)
    for s in coarse_case.structures:
        assert np.array_equal(again.structures[s.name].mask, s.mask), s.name
    assert again.params == coarse_case.params


def test_different_seed_different_anatomy(coarse_case):
    other = make_pelvis(seed=7, spacing=(4.0, 4.0, 4.0))
    assert not np.array_equal(other.ct.array, coarse_case.ct.array)
    for name in ("Prostate", "Bladder", "Rectum"):
        assert other.structures[name].voxel_count != coarse_case.structures[name].voxel_count, name


def test_grid_types_and_names(coarse_case):
    ct = coarse_case.ct
    assert ct.array.dtype == np.float32
    assert ct.grid.shape == (62, 75, 100)  # 250 x 300 x 400 mm at 4 mm
    assert coarse_case.structures.names == NAMES
    types = {s.name: s.roi_type for s in coarse_case.structures}
    assert types["BODY"] == "EXTERNAL" and types["PTV"] == "PTV" and types["CTV"] == "CTV" and types["Rectum"] == "ORGAN"
    assert coarse_case.structures.external().name == "BODY"
    json.dumps(coarse_case.params)  # serialisable


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_anatomical_ranges(seed):
    case = make_pelvis(seed=seed, spacing=(4.0, 4.0, 4.0))
    s = case.structures
    assert 20.0 <= s["Prostate"].volume_cc <= 70.0
    assert 100.0 <= s["Bladder"].volume_cc <= 450.0
    assert 30.0 <= s["Rectum"].volume_cc <= 200.0
    # femoral heads: about 44-50 mm spheres (+ neck) on either side, left at +x
    for name, sign in (("FemoralHead_L", 1), ("FemoralHead_R", -1)):
        fh = s[name]
        assert 40.0 <= fh.volume_cc <= 140.0
        assert sign * fh.centroid_lps()[0] > 70.0
    # body size
    body = s["BODY"].mask
    z, y, x = case.ct.grid.axis_positions()
    k = int(np.argmin(np.abs(z - s["Prostate"].centroid_lps()[2])))
    cols = np.flatnonzero(body[k].any(axis=0))
    rows = np.flatnonzero(body[k].any(axis=1))
    assert 330.0 <= x[cols[-1]] - x[cols[0]] + 4.0 <= 400.0
    assert 210.0 <= y[rows[-1]] - y[rows[0]] + 4.0 <= 275.0
    # the prostate lies posterior to the symphysis and anterior to the rectum, inferior to the bladder
    pc, rc, bc = (s[n].centroid_lps() for n in ("Prostate", "Rectum", "Bladder"))
    assert bc[2] > pc[2] + 25.0
    assert rc[1] > pc[1] + 15.0


@pytest.mark.parametrize("seed", [0, 5])
def test_structures_consistent(seed):
    case = make_pelvis(seed=seed, spacing=(4.0, 4.0, 4.0))
    s = case.structures
    body = s["BODY"].mask
    for st in s:
        assert not st.is_empty, st.name
        assert not np.any(st.mask & ~body), f"{st.name} leaves the body"
    ctv, ptv = s["CTV"].mask, s["PTV"].mask
    assert np.all(ptv[ctv])
    assert np.all(ctv[s["Prostate"].mask])
    # organs do not overlap each other
    organs = ["Prostate", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R"]
    total = sum(s[n].mask.astype(int) for n in organs)
    assert total.max() == 1
    assert np.all(s["Bones"].mask[s["FemoralHead_L"].mask])
    # the PTV is the CTV grown by about 7 mm: every PTV voxel within 7 mm, and 6 mm around the CTV inside the PTV
    sp = case.ct.grid.spacing
    dist_out = ndimage.distance_transform_edt(~ctv, sampling=sp)
    assert dist_out[ptv].max() <= 7.0 + 1e-6
    assert np.all(ptv[(dist_out <= 6.0) & body])
    assert case.params["ptv_margin_mm"] == 7.0


def test_ptv_margin_option():
    a = make_pelvis(seed=2, spacing=(4.0, 4.0, 4.0), ptv_margin_mm=5.0)
    b = make_pelvis(seed=2, spacing=(4.0, 4.0, 4.0))
    assert a.structures["PTV"].volume_cc < b.structures["PTV"].volume_cc
    assert np.array_equal(a.structures["CTV"].mask, b.structures["CTV"].mask)


def test_hu_per_tissue(coarse_case):
    ct, s, hu = coarse_case.ct.array, coarse_case.structures, coarse_case.params["anatomy"]["hu"]
    core = lambda m, n=1: ndimage.binary_erosion(m, iterations=n)  # noqa: E731
    assert abs(np.median(ct[core(s["Prostate"].mask)]) - hu["prostate"]) < 8.0
    assert 35.0 <= hu["prostate"] <= 45.0
    assert abs(np.median(ct[core(s["Bladder"].mask, 2)]) - hu["urine"]) < 8.0
    assert 0.0 <= hu["urine"] <= 20.0
    fh = np.median(ct[core(s["FemoralHead_L"].mask, 2)])
    assert abs(fh - hu["trabecular_bone"]) < 40.0 and 180.0 <= fh <= 320.0
    assert 1000.0 <= hu["cortical_bone"] <= 1200.0
    assert s["Bones"].mask.any() and np.percentile(ct[s["Bones"].mask], 90) > 700.0
    air = ~ndimage.binary_dilation(s["BODY"].mask, iterations=2)
    assert abs(np.median(ct[air]) + 1000.0) < 5.0
    # soft tissue: the histogram of the body outside the named structures peaks at muscle and fat
    rest = s["BODY"].mask & ~np.any([st.mask for st in s if st.name != "BODY"], axis=0)
    h, edges = np.histogram(ct[rest], bins=np.arange(-300.0, 300.0, 5.0))
    centres = 0.5 * (edges[1:] + edges[:-1])
    soft, fat = centres > -40, centres < -40
    assert abs(centres[soft][np.argmax(h[soft])] - hu["muscle"]) < 12.0
    assert abs(centres[fat][np.argmax(h[fat])] - hu["fat"]) < 15.0


def test_ct_noise(coarse_case):
    ct, s = coarse_case.ct.array, coarse_case.structures
    urine = ndimage.binary_erosion(s["Bladder"].mask, iterations=3)
    sd = float(ct[urine].std())
    assert 8.0 <= sd <= 16.0
    assert sd == pytest.approx(coarse_case.params["anatomy"]["ct_noise_hu"], rel=0.25)


def test_rectal_gas_in_planning():
    plain = make_pelvis(seed=4, spacing=(4.0, 4.0, 4.0))
    gassy = make_pelvis(seed=4, spacing=(4.0, 4.0, 4.0), rectal_gas=True)
    rect = gassy.structures["Rectum"].mask
    assert np.count_nonzero(gassy.ct.array[rect] < -500) > 5
    assert np.count_nonzero(plain.ct.array[rect] < -500) == 0
    # same anatomy otherwise
    assert np.array_equal(plain.structures["Prostate"].mask, gassy.structures["Prostate"].mask)
    assert np.array_equal(plain.structures["Rectum"].mask, rect)


def test_default_spacing_size_and_isocentre(fine_case):
    assert fine_case.ct.grid.shape == (83, 150, 200)
    assert fine_case.ct.grid.spacing == (3.0, 2.0, 2.0)
    iso = np.asarray(fine_case.params["isocenter_mm"])
    assert np.allclose(iso, fine_case.structures["PTV"].centroid_lps())


@pytest.mark.parametrize(
    "kwargs",
    [dict(seed=-1), dict(seed=1.5), dict(spacing=(0, 2, 2)), dict(spacing=(2, 2)), dict(field_mm=(100, 100, 100)), dict(ptv_margin_mm=-1)],
)
def test_bad_input(kwargs):
    with pytest.raises(InputError):
        make_pelvis(**kwargs)


def test_protocol_file_parses_and_matches_structures(coarse_case):
    from art.protocol import load_protocol, parse_protocol

    text = default_protocol_text()
    assert default_protocol_path().read_text(encoding="utf-8") == text
    proto = load_protocol(default_protocol_path())
    assert proto.name == "Prostate 60 Gy in 20"
    assert parse_protocol(text).name == proto.name
    names = set(coarse_case.structures.names)
    import tomllib

    doc = tomllib.loads(text)
    assert doc["prescription"] == {"target": "PTV", "dose_gy": 60.0, "fractions": 20}
    assert len(doc["beams"]["gantry_angles"]) == 7 and doc["beams"]["energy"] == "6X"
    for g in doc["goals"]:
        assert g["structure"] in names, g["structure"]
    ptv_d95 = [g for g in doc["goals"] if g["structure"] == "PTV" and g["metric"] == "D95%"]
    assert ptv_d95 and ptv_d95[0]["at_least"] == 57.0 and ptv_d95[0]["priority"] == 1
