"""`art train-contours` end to end on a tiny budget (slow: generates digital patients)."""

import json

import pytest

from art_cli.app import run


def test_train_contours_help(capsys):
    assert run(["train-contours", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--cases" in out and "--epochs" in out and "--seed" in out


def test_train_contours_rejects_bad_counts(tmp_path):
    assert run(["train-contours", "--out", str(tmp_path / "o"), "--epochs", "0"]) == 2
    assert not (tmp_path / "o").exists()


def test_train_rejects_overlapping_validation_seeds(tmp_path):
    from art.contouring.training import train
    from art.errors import InputError

    with pytest.raises(InputError, match="overlap"):
        train(tmp_path, seeds=[9000], val_seeds=[9000], epochs=1, patch=(16, 32, 32), spacing_mm=(4, 4, 4), seed=0, progress=False)


@pytest.mark.slow
def test_train_contours_writes_a_loadable_model_and_card(tmp_path, monkeypatch):
    monkeypatch.setenv("ART_CONTOUR_CACHE", str(tmp_path / "cache"))
    import art.contouring.training as tr

    monkeypatch.setattr(tr, "DEFAULT_VAL_SEEDS", (9000,))
    monkeypatch.setattr(tr.train, "__kwdefaults__", {**tr.train.__kwdefaults__, "val_seeds": (9000,), "patch": (16, 32, 32)})
    out = tmp_path / "model"
    assert run(["train-contours", "--out", str(out), "--cases", "1", "--epochs", "1", "--seed", "3"]) == 0
    card = json.loads((out / "contour_unet.json").read_text())
    assert card["classes"][0] == "background" and card["spacing_mm"] == [4.0, 4.0, 4.0]
    assert card["training"]["train_seeds"] == [100] and card["training"]["val_seeds"] == [9000]
    assert set(card["validation_dice"]) == set(card["classes"][1:])
    assert "train-contours" in card["training"]["command"]
    from art.contouring import load_model

    m = load_model(out / "contour_unet.pt", device="cpu")
    assert m.card["patch"] == [16, 32, 32]
