"""Patient identifiers are shown only with ``--verbose-phi`` (issue 9)."""

from art.io import PatientInfo
from art.privacy import identifiers, set_verbose_phi, verbose_phi
from art_cli.app import run


def test_identifiers_hidden_by_default_and_shown_when_asked():
    p = PatientInfo(name="Doe^Jane", id="P123")
    set_verbose_phi(False)
    assert identifiers(p) == {}
    set_verbose_phi(True)
    try:
        assert identifiers(p) == {"Patient name": "Doe^Jane", "Patient ID": "P123"}
    finally:
        set_verbose_phi(False)


def test_cli_flag_switches_it_per_run(tmp_path, capsys):
    assert run(["--verbose-phi", "phantom", "--seed", "0", "--fractions", "0", "--spacing", "6,6,6", "--out", str(tmp_path / "a")]) == 0
    assert verbose_phi()
    assert run(["phantom", "--seed", "0", "--fractions", "0", "--spacing", "6,6,6", "--out", str(tmp_path / "b")]) == 0
    assert not verbose_phi()
    assert "ART^Phantom" not in capsys.readouterr().err
