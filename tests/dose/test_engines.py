"""The dose-engine registry (issue 19, part C): names, labels, lazy import, clear errors, the default check engine."""

from __future__ import annotations

import sys

import pytest

from art.dose import engines
from art.dose.engines import (
    DEFAULT_ENGINE, ENGINE_LABELS, ENGINES, default_check_engine, engine_available, engine_name, get_engine, other_engine,
)  # fmt: skip
from art.errors import InputError


def test_the_registry_names_the_pencil_beam_and_the_collapsed_cone_engines():
    assert ENGINES == {"pb": "art.dose.calc:dose", "ccc": "art.dose.ccc:dose"}
    assert ENGINE_LABELS == {"pb": "pencil beam", "ccc": "collapsed-cone convolution/superposition"}
    assert DEFAULT_ENGINE == "pb"


def test_pb_is_the_pencil_beam_dose_function():
    from art.dose.calc import dose

    assert get_engine("pb") is dose
    assert get_engine(" PB ") is dose  # case and blanks ignored
    assert engine_name("Pb") == "pb" and engine_available("pb")


@pytest.mark.parametrize("bad", ["mc", "", "pencil", None, 3, "pb,ccc"])
def test_an_unknown_engine_is_an_input_error_listing_the_engines_and_naming_the_parameter(bad):
    with pytest.raises(InputError) as info:
        get_engine(bad, parameter="--check-engine")
    msg = str(info.value)
    assert msg.startswith("--check-engine: unknown dose engine")
    assert "pb (pencil beam)" in msg and "ccc (collapsed-cone convolution/superposition)" in msg


def test_the_other_engine_is_the_second_algorithm():
    assert other_engine("pb") == "ccc" and other_engine("CCC") == "pb"


def test_naming_an_engine_imports_nothing(monkeypatch):
    """The registry holds import strings: asking for a name, a label or the other engine imports no engine module."""
    monkeypatch.delitem(sys.modules, "art.dose.calc", raising=False)
    assert engine_name("ccc") == "ccc" and other_engine("pb") == "ccc" and ENGINE_LABELS["ccc"]
    assert "art.dose.calc" not in sys.modules


def test_an_engine_whose_module_is_missing_is_refused_clearly_and_the_default_check_falls_back(monkeypatch):
    """Before the collapsed-cone engine is installed (or in a copy without it): asked for, a clear error; by default, the same algorithm."""
    monkeypatch.setitem(engines.ENGINES, "ccc", "art.dose.no_such_engine:dose")
    assert not engine_available("ccc")
    with pytest.raises(InputError, match=r"final engine: the collapsed-cone convolution/superposition engine \('ccc', module art.dose.no_such_engine\) is not installed"):
        get_engine("ccc", parameter="final engine")
    assert default_check_engine("pb") == "pb"


def test_an_engine_module_that_fails_to_import_something_else_is_not_hidden(monkeypatch, tmp_path):
    """Only the engine's own module missing means 'not installed': a broken engine raises its own import error."""
    (tmp_path / "broken_engine_for_test.py").write_text("import no_such_package_for_art_tests\n\ndef dose(*a, **k):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(engines.ENGINES, "ccc", "broken_engine_for_test:dose")
    with pytest.raises(ModuleNotFoundError, match="no_such_package_for_art_tests"):
        get_engine("ccc")


def test_ccc_is_the_collapsed_cone_dose_function_and_checks_pb_by_default():
    ccc = pytest.importorskip("art.dose.ccc")
    assert get_engine("ccc") is ccc.dose
    assert default_check_engine("pb") == "ccc" and default_check_engine("ccc") == "pb"
