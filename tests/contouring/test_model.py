"""The shipped contouring model and the plug-in loader."""

import json
import shutil
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from art.contouring.confidence import dice  # noqa: E402
from art.contouring.inference import predict_probabilities, segment  # noqa: E402
from art.contouring.model import card_path, load_model, normalise, shipped_model_path  # noqa: E402
from art.errors import InputError  # noqa: E402

ORGANS = ("Bladder", "Rectum", "Prostate", "FemoralHead_L", "FemoralHead_R")


@pytest.fixture(scope="module")
def model():
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def day():
    """A held-out patient (seed never used in training: 100-2099 train, 9000-9005 validation), 4 mm CBCT."""
    from art_phantoms import CbctArtefacts, make_fraction, make_pelvis

    case = make_pelvis(seed=9150, spacing=(4.0, 4.0, 4.0))
    return make_fraction(case, fraction=2, artefacts=CbctArtefacts(spacing=(4.0, 4.0, 4.0)))


def test_shipped_model_card_matches_the_weights(model):
    card = json.loads(card_path(shipped_model_path()).read_text())
    assert card["classes"][0] == "background" and "Bladder" in card["classes"]
    from art.provenance import sha256_file

    assert card["weights_sha256"] == sha256_file(shipped_model_path())
    assert shipped_model_path().stat().st_size < 20e6
    assert not set(card["training"]["train_seeds"]) & set(card["training"]["val_seeds"])


def test_shipped_model_segments_a_held_out_cbct(model, day):
    res = segment(day.cbct, model=model, tta=False)
    assert res.structures.grid.same_as(day.cbct.grid)
    assert res.structures["BODY"].roi_type == "EXTERNAL" and res.structures["Bladder"].roi_type == "ORGAN"
    d = {n: dice(res.structures[n].mask, day.truth.structures[n].mask) for n in ORGANS + ("BODY",)}
    # floors far above what an untrained or a wrong-side network reaches (~0); the shipped weights
    # reach BODY 0.92, Bladder 0.94, Rectum 0.97, Prostate 0.97, heads 0.99 here (one pass, no augmentation)
    assert d["BODY"] > 0.85
    assert d["Bladder"] > 0.85
    assert d["FemoralHead_L"] > 0.9 and d["FemoralHead_R"] > 0.9
    assert d["Rectum"] > 0.85 and d["Prostate"] > 0.85
    assert set(res.confidence) == set(res.structures.names)


def test_inference_is_deterministic(model, day):
    img = normalise(day.cbct.array, model.card["normalisation"])
    a = predict_probabilities(model, img)
    b = predict_probabilities(model, img)
    assert np.array_equal(a, b)
    assert np.allclose(a.sum(axis=0), 1.0, atol=1e-4)


def test_corrupted_weights_give_a_clear_error(tmp_path):
    src = shipped_model_path()
    bad = tmp_path / "broken.pt"
    data = src.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    shutil.copy(card_path(src), tmp_path / "broken.json")
    with pytest.raises(InputError) as e:
        load_model(bad)
    assert str(bad) in str(e.value) and "TorchScript" in str(e.value)


def test_missing_card_is_an_error(tmp_path):
    p = tmp_path / "m.pt"
    shutil.copy(shipped_model_path(), p)
    with pytest.raises(InputError, match="card"):
        load_model(p)


class _Threshold(torch.nn.Module):
    """A user's 'model': bone (normalised > 2) vs the rest; logits for (background, Bone)."""

    def forward(self, x):
        bone = (x > 2.0).float()
        return torch.cat([1.0 - bone, bone], dim=1) * 10.0


def test_plugin_torchscript_model_with_card(tmp_path, day):
    p = tmp_path / "user.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_Threshold()).save(str(p))
    card = {"classes": ["background", "Bone"], "spacing_mm": [4, 4, 4], "normalisation": {"type": "fixed", "offset_hu": 0, "scale_hu": 100, "clip": [-10, 20]}}
    (tmp_path / "user.json").write_text(json.dumps(card))
    m = load_model(p)
    assert m.classes == ["background", "Bone"]
    res = segment(day.cbct, model=m, tta=False)
    bone = res.structures["Bone"].mask
    assert dice(bone, day.truth.structures["Bones"].mask) > 0.5
    assert "BODY" not in res.structures


def test_plugin_with_wrong_class_count_is_rejected(tmp_path):
    p = tmp_path / "user.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_Threshold()).save(str(p))
    card = {"classes": ["background", "A", "B"], "spacing_mm": [4, 4, 4], "normalisation": {"type": "fixed"}}
    (tmp_path / "user.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="3 classes"):
        load_model(p)


def test_mirror_order_swaps_left_and_right_classes():
    from art.contouring.inference import _mirror_order

    classes = ["background", "BODY", "Bladder", "FemoralHead_L", "FemoralHead_R", "Kidney_L"]
    assert _mirror_order(classes) == [0, 1, 2, 4, 3, 5]  # a class without its twin stays


def test_mirrored_pass_keeps_left_and_right(model, day, monkeypatch):
    # the mirrored test-time pass alone: its prediction, mirrored back with _L/_R swapped, must keep the sides
    import art.contouring.inference as inf

    monkeypatch.setattr(inf, "_TTA", tuple(t for t in inf._TTA if t[3]))
    res = inf.segment(day.cbct, model=model, tta=True)
    for n in ("FemoralHead_L", "FemoralHead_R"):
        assert dice(res.structures[n].mask, day.truth.structures[n].mask) > 0.85, n


@pytest.mark.parametrize("shift", [(0.5, 0.5, 0.5), (-0.5, 0.0, -0.5)])
def test_organ_crossing_the_cbct_edge_is_segmented_up_to_the_last_slice(model, day, shift, monkeypatch):
    # cut the CBCT through the bladder: a test-time pass on a shifted grid must see the last slices as
    # tissue, not air (shift +0.5), and map its probabilities back onto them (shift -0.5)
    import art.contouring.inference as inf
    from art.geometry import Volume

    monkeypatch.setattr(inf, "_TTA", ((shift, 0.0, 1.0, False),))

    bl = day.truth.structures["Bladder"].mask
    zs = np.nonzero(bl.any(axis=(1, 2)))[0]
    k = int((zs[0] + zs[-1]) // 2)
    g = day.cbct.grid.crop((slice(0, k + 1), slice(None), slice(None)))
    cut = Volume(day.cbct.array[: k + 1], g)
    res = segment(cut, model=model, tta=True)
    last_true = bl[k]
    last_pred = res.structures["Bladder"].mask[-1]
    assert dice(last_pred, last_true) > 0.7, dice(last_pred, last_true)


def test_fine_tuning_starts_from_the_given_weights(tmp_path):
    from art.contouring.labels import CLASSES
    from art.contouring.network import UNet3D
    from art.contouring.training import CHANNELS, _load_init

    net = UNet3D(1, len(CLASSES), CHANNELS)
    rec = _load_init(net, shipped_model_path())
    ref = load_model(device="cpu", optimise=False).module.state_dict()
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref[k].cpu()), k
    assert len(rec["weights_sha256"]) == 64 and "train-contours" in rec["command"]
    with pytest.raises(InputError):
        _load_init(net, tmp_path / "missing.pt")


def test_the_shipped_network_is_optimised_for_inference_with_the_same_outputs():
    """On the CPU the loaded network is frozen and optimised (its weights folded into the graph: no
    state_dict left) and gives the loaded module's logits on a CBCT-like input."""
    import torch

    fast = load_model(device="cpu")
    plain = load_model(device="cpu", optimise=False)
    assert len(plain.module.state_dict()) > 0 and len(fast.module.state_dict()) == 0
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 1, 16, 32, 32)).astype(np.float32))
    with torch.no_grad():
        a, b = fast.module(x), plain.module(x)
    assert float((a - b).abs().max()) < 1e-3
    assert float(b.abs().max()) > 0.1
