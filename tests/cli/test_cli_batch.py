"""``art batch`` command contract: checks before anything runs, exit codes, --json rows, the summary table.

The full run of two real re-plans (one good, one whose CBCT is in another frame of reference)
is marked slow.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket

import pytest

from art_cli.app import run
from art_cli.commands.batch import exit_code


def call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(argv)
    return code, out.getvalue(), err.getvalue()


def listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def site(tmp_path):
    for d in ("ref1", "ref2", "cbct1", "cbct2"):
        (tmp_path / d).mkdir()
    return tmp_path


TWO_ROWS = """
[[job]]
name = "p1"
reference = "ref1"
cbct = "cbct1"
out = "results/p1"

[[job]]
name = "p2"
reference = "ref2"
cbct = "cbct2"
out = "results/p2"
"""


def test_help_names_the_options():
    code, out, _ = call(["batch", "--help"])
    assert code == 0
    for opt in ("--scheduler", "--workers", "--threads-per-worker", "--retries", "--json", "MANIFEST"):
        assert opt in out, opt


def test_one_invalid_row_fails_before_anything_runs(site):
    manifest = site / "batch.toml"
    manifest.write_text(TWO_ROWS.replace('cbct = "cbct2"', 'cbct = "cbct-missing"'), encoding="utf-8")
    before = listing(site)
    code, out, err = call(["batch", str(manifest)])
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert "batch.toml" in line and "[[job]] 2 ('p2')" in line and "'cbct' folder not found" in line, line
    assert listing(site) == before and out == ""  # nothing written, no cluster started


def test_every_failed_job_is_a_row_and_the_exit_code_is_1(site):
    """Real cluster, real run_replan: empty reference folders fail as input errors, each in its own row."""
    manifest = site / "batch.toml"
    manifest.write_text(TWO_ROWS, encoding="utf-8")
    code, out, err = call(["batch", str(manifest), "--workers", "1", "--threads-per-worker", "1", "--retries", "0", "--json"])
    assert code == 1, err
    res = json.loads(out)
    assert res["exit_code"] == 1 and [r["name"] for r in res["jobs"]] == ["p1", "p2"]
    for r, ref in zip(res["jobs"], ("ref1", "ref2")):
        assert r["status"] == "failed" and r["exit_code"] == 1 and ref in r["error"], r
    assert not (site / "results").exists() or not any((site / "results").iterdir())
    assert "art batch" in err and "0 of 2 re-plan(s) done, 2 failed" in err and "embedded cluster of 1 worker(s)" in err


def test_an_unreachable_scheduler_is_exit_1_naming_it(site):
    manifest = site / "batch.toml"
    manifest.write_text(TWO_ROWS, encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    before = listing(site)
    code, _, err = call(["batch", str(manifest), "--scheduler", address])
    assert code == 1 and address in err.strip().splitlines()[-1], err
    assert listing(site) == before


def test_bad_option_values_are_usage_errors(site):
    manifest = site / "batch.toml"
    manifest.write_text(TWO_ROWS, encoding="utf-8")
    assert call(["batch", str(manifest), "--workers", "0"])[0] == 2
    assert call(["batch", str(manifest), "--retries", "-1"])[0] == 2


def row(status: str, met: bool | None) -> dict:
    return {"status": status, "priority1_met": met}


def test_exit_codes():
    assert exit_code([row("done", True), row("done", True)]) == 0
    assert exit_code([row("done", True), row("done", False)]) == 3
    assert exit_code([row("done", False), row("failed", None)]) == 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_real_batch_of_two_replans(tmp_path):
    """Two real re-plans on a coarse phantom: one good, one whose CBCT is in another frame of reference (no REG)."""
    from tests.independent_reg import rewrite_in_own_frame
    from tests.node.replan_case import make_case

    case = make_case(tmp_path / "case")
    rewrite_in_own_frame(case["cbcts"][0], tmp_path / "CBCT_OWN", offset_mm=(-40.0, 25.0, 310.0))
    manifest = tmp_path / "batch.toml"
    manifest.write_text(
        '[defaults]\nfinal_grid_mm = 4.0\n\n'
        '[[job]]\nname = "good"\nreference = "case/reference"\ncbct = "case/patient/CBCT_01"\nout = "results/good"\n\n'
        '[[job]]\nname = "other-frame"\nreference = "case/reference"\ncbct = "CBCT_OWN"\nout = "results/other-frame"\n',
        encoding="utf-8",
    )
    code, out, err = call(["batch", str(manifest), "--workers", "2", "--threads-per-worker", "1", "--json"])
    assert code == 1, err[-3000:]
    good, bad = json.loads(out)["jobs"]
    assert good["status"] == "done" and good["exit_code"] in (0, 3) and good["recommendation"] in ("adapted", "scheduled"), good
    summary = json.loads((tmp_path / "results" / "good" / "summary.json").read_text(encoding="utf-8"))
    assert summary["priority1_met"] == good["priority1_met"] and summary["recommendation"]["plan"] == good["recommendation"]
    assert {"RTPLAN.dcm", "RTDOSE.dcm", "summary.json"} <= {p.name for p in (tmp_path / "results" / "good").iterdir()}
    assert bad["status"] == "failed" and "CBCT_OWN" in bad["error"] and "frame of reference" in bad["error"], bad
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["good"]  # no other-frame, no temporary folder
    assert "1 of 2 re-plan(s) done, 1 failed" in err
