"""``--final-engine`` and ``--check-engine`` on ``art plan``, ``art replan`` and ``art demo`` (issue 19, part C).

The options are checked before anything is read or written: an unknown engine is a usage error (exit 2)
naming the option and listing the engines; an engine that is not installed is refused (exit 1) before
the plan is computed. Running with the options: tests/test_workflow_e2e.py.
"""

from __future__ import annotations

import pytest

from art.dose import engines
from art_cli.app import run

COMMANDS = {
    "plan": ["plan", "--ct", "CT", "--structures", "RS.dcm", "--protocol", "protocol.toml"],
    "replan": ["replan", "--reference", "ref", "--cbct", "CBCT"],
    "demo": ["demo"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_names_both_options_and_the_engines(command, capsys):
    assert run([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--final-engine {pb,ccc}" in out and "--check-engine {pb,ccc}" in out
    assert "pencil beam" in out and "collapsed-cone" in out
    assert "default: the other algorithm than --final-engine" in out


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("option", ["--final-engine", "--check-engine"])
def test_an_unknown_engine_is_a_usage_error_naming_the_option(command, option, tmp_path, capsys):
    out = tmp_path / "out"
    code = run(COMMANDS[command] + ["--out", str(out), option, "montecarlo"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert option in err and "unknown dose engine 'montecarlo'" in err
    assert "pb (pencil beam)" in err and "ccc (collapsed-cone convolution/superposition)" in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["plan", "replan"])
def test_an_engine_that_is_not_installed_is_refused_before_any_work(command, tmp_path, capsys, monkeypatch):
    """Asked for by name, a missing engine stops the command at once (exit 1), not after the optimisation."""
    monkeypatch.setitem(engines.ENGINES, "ccc", "art.dose.no_such_engine:dose")
    out = tmp_path / "out"
    code = run(COMMANDS[command] + ["--out", str(out), "--final-engine", "CCC"])
    err = capsys.readouterr().err
    assert code == 1
    assert "final_engine: the collapsed-cone convolution/superposition engine ('ccc', module art.dose.no_such_engine) is not installed" in err
    assert not out.exists()
