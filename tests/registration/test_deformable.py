import numpy as np
import pytest

from art.errors import InputError
from art.registration import (
    RigidResult,
    contour_metrics,
    propagate_rigid,
    propagate_structures,
    register_deformable,
    synthetic_ct,
    tre_stats,
    volume_changes,
    warp_ct,
)
from art.registration.fields import grid_points
from art.registration.rigid import field_of_view
from art_phantoms import inverse_consistency


def test_deformable_beats_rigid_and_does_not_fold(reg_case, deformed_day, deformed_reg):
    rigid, res = deformed_reg
    truth = deformed_day.truth
    sp = deformed_day.cbct.grid.spacing
    defo = propagate_structures(reg_case.structures, res)
    rig = propagate_rigid(reg_case.structures, rigid, target_grid=deformed_day.cbct.grid)
    for name in ("Prostate", "Bladder"):
        d = contour_metrics(defo[name].mask, truth.structures[name].mask, sp)
        r = contour_metrics(rig[name].mask, truth.structures[name].mask, sp)
        assert d["dice"] > r["dice"] + 0.01, (name, d, r)
    # TRE near the organs improves over the rigid map
    organs = truth.structures["Prostate"].mask | truth.structures["Bladder"].mask
    pts = grid_points(deformed_day.cbct.grid)
    t_def = tre_stats(res.cbct_to_ct, truth.daily_to_planning, organs)
    t_rig = tre_stats(rigid.cbct_to_ct_points(pts) - pts, truth.daily_to_planning, organs)
    assert t_def["mean"] < t_rig["mean"] - 0.5
    q = res.quality
    assert q["folded_voxels_cbct"] == 0 and q["folded_voxels_ct"] == 0
    assert q["jacobian_min_cbct"] > 0 and q["jacobian_min_ct"] > 0
    assert res.cbct_to_ct.shape == deformed_day.cbct.grid.shape + (3,)
    assert res.ct_to_cbct.shape == reg_case.ct.grid.shape + (3,)
    assert res.cbct_to_ct.dtype == np.float32


def test_inverse_consistency(reg_case, deformed_day, deformed_reg):
    _, res = deformed_reg
    body = deformed_day.truth.structures["BODY"].mask
    # independent implementation (the phantom's): CBCT -> CT -> CBCT
    r = inverse_consistency(res.cbct_to_ct, res.cbct_grid, res.ct_to_cbct, res.ct_grid, mask=body)
    assert r.size > 0.5 * body.sum()
    assert np.mean(r) < 0.3 and np.percentile(r, 99) < 1.5
    assert res.quality["inverse_consistency_mean_mm"] == pytest.approx(float(np.mean(r)), abs=0.1)


def test_volume_changes_follow_the_jacobian(reg_case, deformed_reg):
    _, res = deformed_reg
    prop = propagate_structures(reg_case.structures, res)
    ch = volume_changes(reg_case.structures, prop, result=res)
    b = ch["Bladder"]
    assert b["propagated_cc"] == pytest.approx(b["expected_cc"], rel=0.08)
    assert b["ratio"] > 1.1  # the bladder filled (35 %)


def test_identity_propagation_is_exact(reg_case):
    from art.registration.deformable import DeformableResult

    g = reg_case.ct.grid
    zero = np.zeros(g.shape + (3,), np.float32)
    res = DeformableResult(zero, zero, g, g, RigidResult.identity())
    out = propagate_structures(reg_case.structures, res)
    for s in reg_case.structures:
        assert np.array_equal(out[s.name].mask, s.mask)


def test_synthetic_ct_closer_to_truth_than_cbct(reg_case, deformed_day, deformed_reg):
    _, res = deformed_reg
    sct, info = synthetic_ct(reg_case.ct, deformed_day.cbct, res, return_info=True)
    truth = deformed_day.truth.daily_ct.array
    body = deformed_day.truth.structures["BODY"].mask & field_of_view(deformed_day.cbct)
    mae_s = np.abs(sct.array - truth)[body].mean()
    mae_c = np.abs(deformed_day.cbct.array - truth)[body].mean()
    mae_w = np.abs(warp_ct(reg_case.ct, res).array - truth)[body].mean()
    assert mae_s < 0.75 * mae_c
    assert mae_s <= mae_w + 0.5
    assert 0.9 < info["slope"] < 1.1
    # today's gas is in the synthetic CT (the planning CT had none)
    gas = (truth < -600) & body
    assert gas.sum() > 0
    assert sct.array[gas].mean() < -500
    assert sct.array.dtype == np.float32 and sct.grid.same_as(deformed_day.cbct.grid)


def test_deformable_validates(reg_case, deformed_day):
    with pytest.raises(InputError, match="rigid"):
        register_deformable(reg_case.ct, deformed_day.cbct, rigid=None)
    with pytest.raises(InputError, match="guide_structures"):
        register_deformable(reg_case.ct, deformed_day.cbct, rigid=RigidResult.identity(), guide_structures={"Bladder": (1, 2)})


def test_guide_structures_pull_the_organ_onto_its_ai_contour(reg_case, deformed_day, deformed_reg):
    rigid, plain = deformed_reg
    truth = deformed_day.truth
    guides = {"Bladder": (reg_case.structures["Bladder"].volume, truth.structures["Bladder"].volume)}
    guided = register_deformable(reg_case.ct, deformed_day.cbct, rigid=rigid, guide_structures=guides, ct_body=reg_case.structures["BODY"].volume)
    sp = deformed_day.cbct.grid.spacing
    d_plain = contour_metrics(propagate_structures(reg_case.structures, plain)["Bladder"].mask, truth.structures["Bladder"].mask, sp)
    d_guided = contour_metrics(propagate_structures(reg_case.structures, guided)["Bladder"].mask, truth.structures["Bladder"].mask, sp)
    assert d_guided["dice"] > d_plain["dice"]
    assert guided.quality["folded_voxels_cbct"] == 0


def test_save_writes_documented_format(tmp_path, deformed_reg):
    import json

    rigid, res = deformed_reg
    res.save(tmp_path / "reg")
    doc = json.loads((tmp_path / "reg" / "registration.json").read_text())
    assert doc["format"] == "art.registration/1"
    np.testing.assert_allclose(doc["rigid"]["matrix_4x4"], rigid.matrix_4x4)
    with np.load(tmp_path / "reg" / "fields.npz") as f:
        np.testing.assert_array_equal(f["cbct_to_ct"], res.cbct_to_ct)
        assert f["ct_to_cbct"].shape == res.ct_grid.shape + (3,)


def test_import_stays_light():
    import subprocess
    import sys

    code = "import sys, art.registration; print('SimpleITK' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_motion_across_the_superior_edge_is_kept(deformed_day, deformed_reg):
    # the filling bladder pushes tissue across the CBCT's last slices: the field must follow it there
    # (a field faded to the rigid map at the grid's superior border would leave the rigid error)
    rigid, res = deformed_reg
    truth = deformed_day.truth
    pts = grid_points(deformed_day.cbct.grid)
    rig = rigid.cbct_to_ct_points(pts) - pts
    body = truth.structures["BODY"].mask & field_of_view(deformed_day.cbct)
    moving = np.linalg.norm(truth.daily_to_planning - rig, axis=-1) > 2.0
    top = np.zeros_like(body)
    top[-2:] = True
    sel = top & body & moving
    assert sel.sum() > 100  # the case moves tissue there
    t_def = tre_stats(res.cbct_to_ct, truth.daily_to_planning, sel)["mean"]
    t_rig = tre_stats(rig, truth.daily_to_planning, sel)["mean"]
    assert t_def < 0.6 * t_rig, (t_def, t_rig)


def test_maps_join_the_rigid_map_continuously_beyond_the_cbct(deformed_day, deformed_reg):
    from art.registration.deformable import EDGE_FADE_MM

    rigid, res = deformed_reg
    g = deformed_day.cbct.grid
    k = g.shape[0] - 1
    ij = np.argwhere(np.linalg.norm(res.cbct_to_ct[k] - (rigid.cbct_to_ct_points(grid_points(g)[k]) - grid_points(g)[k]), axis=-1) > 2.0)
    assert len(ij) > 0
    on = g.index_to_lps(np.column_stack([np.full(len(ij), k), ij]).astype(float))
    normal = g.index_to_lps([k + 1, 0, 0]) - g.index_to_lps([k, 0, 0])
    normal /= np.linalg.norm(normal)
    # on the last slice: the stored field; just beyond it: nearly the same; EDGE_FADE_MM beyond: the rigid map
    np.testing.assert_allclose(res.cbct_to_ct_points(on), on + res.cbct_to_ct[k][tuple(ij.T)], atol=1e-3)
    near = on + 0.5 * normal
    np.testing.assert_allclose(res.cbct_to_ct_points(near) - near, res.cbct_to_ct_points(on) - on, atol=0.3)
    far = on + (EDGE_FADE_MM + 1.0) * normal
    np.testing.assert_allclose(res.cbct_to_ct_points(far), rigid.cbct_to_ct_points(far), atol=1e-6)
    # the planning-grid inverse agrees with the CBCT-grid field at those points
    back = res.ct_to_cbct_points(res.cbct_to_ct_points(on))
    assert np.percentile(np.linalg.norm(back - on, axis=-1), 95) < 1.0


def test_extend_field_interpolates_inside_and_fades_beyond():
    from art.geometry import Grid
    from art.registration.deformable import extend_field

    g = Grid(shape=(4, 5, 6), spacing=(3.0, 2.0, 2.0), origin=(-5.0, -4.0, 10.0))
    u = np.zeros(g.shape + (3,), dtype=np.float32)
    u[..., 2] = np.arange(4, dtype=np.float32)[:, None, None]  # dz grows with the slice index
    inside = g.index_to_lps([[1.5, 2.0, 3.0]])
    np.testing.assert_allclose(extend_field(u, g, inside), [[0.0, 0.0, 1.5]], atol=1e-6)
    top = g.index_to_lps([3.0, 2.0, 3.0])
    for d_mm, w in ((0.0, 1.0), (15.0, 0.5), (30.0, 0.0), (45.0, 0.0)):
        p = top + np.array([0.0, 0.0, d_mm])  # +z beyond the last slice
        np.testing.assert_allclose(extend_field(u, g, p[None], fade_mm=30.0)[0], [0.0, 0.0, 3.0 * w], atol=1e-5)
