"""The `art` command: help, version, usage errors and commands not built yet."""

import subprocess
import sys

import pytest

from art_cli.app import run

COMMANDS = ["phantom", "demo", "plan", "dose", "replan", "export", "register", "serve", "jobs", "batch", "course"]


def test_top_level_help_lists_every_command(capsys):
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for c in COMMANDS:
        assert c in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    assert run([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"art {command}" in out and "--help" in out


def test_version(capsys):
    from art import __version__

    assert run(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    assert run(["frobnicate"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_missing_option_is_a_usage_error(capsys):
    assert run(["plan", "--ct", "x"]) == 2
    assert "Missing option" in capsys.readouterr().err


def test_bad_site_is_a_usage_error(tmp_path, capsys):
    assert run(["phantom", "--site", "brain", "--out", str(tmp_path / "o")]) == 2
    assert "site" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "art_cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "phantom" in out.stdout


def test_not_built_helper_refuses_with_exit_2(capsys):
    """A command specified but not built yet says so and exits 2 (none left today)."""
    from typer.exceptions import Exit

    from art_cli.options import not_built

    with pytest.raises(Exit) as info:
        not_built("future", "issue 99")
    assert info.value.exit_code == 2
    assert "not built yet" in capsys.readouterr().err


def test_every_designed_command_is_registered():
    from art_cli.app import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert set(COMMANDS) <= names


@pytest.mark.parametrize("with_pdf", [False, True])
def test_demo_names_exactly_the_files_it_wrote(tmp_path, monkeypatch, capsys, with_pdf):
    """Issue 16 item 8: the demo lists the files written, ``report.pdf`` only when it exists."""
    import art.jobs

    def fake_demo_job(out, **_):
        for name, files in (("reference", ["RTPLAN.dcm", "report.html"]), ("adapted", ["RTPLAN.dcm", "REG.dcm", "report.html"])):
            (out / name).mkdir(parents=True)
            for f in files + (["report.pdf"] if with_pdf else []):
                (out / name / f).write_text("x")
        row = {"priority": 1, "structure": "PTV", "metric": "D95%", "goal": "≥ 57 Gy", "value": 58.0, "unit": "Gy", "met": True}
        return {
            "adaptive": {"plans": {"scheduled": {"goals": [row]}, "adapted": {"goals": [row]}}, "priority1_met": True,
                         "recommendation": {"plan": "adapted", "reason": "r"}},
            "total_time_s": 1.0,
            "written": {n: art.jobs.written_files(out / n) for n in ("reference", "adapted")},
        }  # fmt: skip

    monkeypatch.setattr(art.jobs, "demo_job", fake_demo_job)
    assert run(["demo", "--out", str(tmp_path / "demo")]) == 0
    err = capsys.readouterr().err
    assert "report.html/.pdf" not in err
    assert ("report.pdf" in err) == with_pdf
    assert "adapted/ (REG.dcm, RTPLAN.dcm, report.html" in err
