"""``art course``: options, exit codes 0/1/2/3 and no output on bad input (synthetic fractions, no re-plan)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from art_cli.app import run
from tests.course.synthetic import shift, wave, write_fraction, write_reference


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_course")
    ref = write_reference(root)
    days = [write_fraction(root, "day1", ref, dose=lambda p: np.full(len(p), 3.0), displacement=wave(4.0)),
            write_fraction(root, "day2", ref, dose=lambda p: np.full(len(p), 3.0), displacement=shift((4.0, 0.0, 0.0))),
            write_fraction(root, "cold", ref, dose=lambda p: np.full(len(p), 2.5))]  # fmt: skip
    return {"root": root, "ref": str(ref), "days": [str(d) for d in days]}


def test_course_writes_its_folder_and_prints_the_summary(case, tmp_path, capsys):
    out = tmp_path / "course"
    rc = run(["course", "--reference", case["ref"], "--fractions", *case["days"][:2], "--out", str(out), "--grid-mm", "4", "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    summary = json.loads(cap.out)
    assert [f["folder"] for f in summary["fractions"]] == ["day1", "day2"]  # in the order given
    assert {p.name for p in out.iterdir()} >= {"RTDOSE.dcm", "summary.json", "report.html"}
    assert "2 of 20 fractions accumulated by pull" in cap.err and "PTV" in cap.err


def test_fractions_keep_their_order_and_delivered_takes_several_values(case, tmp_path, capsys):
    out = tmp_path / "c"
    rc = run(["course", "--reference", case["ref"], "--fractions", case["days"][1], case["days"][0], "--delivered", "1=scheduled",
              "2=adapted", "--out", str(out), "--grid-mm", "4", "--method", "energy", "--projection", "last"])  # fmt: skip
    assert rc == 3, capsys.readouterr().err  # the scheduled plan (one open 100 MU field) gives ~1 Gy a day: projected short
    s = json.loads((out / "summary.json").read_text())
    assert [f["folder"] for f in s["fractions"]] == ["day2", "day1"]
    assert [f["delivered_plan"] for f in s["fractions"]] == ["scheduled", "adapted"]
    assert s["method"] == "energy" and s["projection_basis"] == "last"


def test_a_projection_missing_a_priority1_goal_exits_3(case, tmp_path, capsys):
    rc = run(["course", "--reference", case["ref"], "--fractions", case["days"][2], "--out", str(tmp_path / "c"), "--grid-mm", "4"])
    err = capsys.readouterr().err
    assert rc == 3 and "projection misses priority-1 goal(s): PTV D95% 50.0 Gy (≥ 57 Gy)" in err
    assert (tmp_path / "c" / "RTDOSE.dcm").is_file()


def test_a_fraction_given_twice_exits_1_naming_it_and_writes_nothing(case, tmp_path, capsys):
    out = tmp_path / "never"
    rc = run(["course", "--reference", case["ref"], "--fractions", case["days"][0], case["days"][0], "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("art: error:") and case["days"][0] in err and "given twice" in err
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--method", "warp"], ["--projection", "median"], ["--grid-mm", "9"]])
def test_bad_options_are_usage_errors(case, tmp_path, extra, capsys):
    out = tmp_path / "never"
    assert run(["course", "--reference", case["ref"], "--fractions", case["days"][0], "--out", str(out), *extra]) == 2
    assert not out.exists()


def test_fractions_are_required(case, tmp_path, capsys):
    assert run(["course", "--reference", case["ref"], "--out", str(tmp_path / "x")]) == 2
    assert "--fractions" in capsys.readouterr().err
