"""Interrupted runs (issue 9, item 3): SIGINT/SIGTERM mid-stage leave the previous result intact.

A previous result is written to ``OUT``; the same command is started again into
``OUT`` as a separate process and interrupted once it has started writing its
temporary folder (``.OUT.tmp-*`` holds files). Then: exit code 130, no
traceback, ``OUT`` byte-for-byte as before (every file's name and SHA-256), and
no ``.OUT.tmp-*`` / ``.OUT.old-*`` left next to it.

The fast cases use ``art phantom`` (atomic output from its first second); the
``art plan`` cases (interrupt during optimisation and during export) are slow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from art.provenance import sha256_file, sha256_tree

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


# ----------------------------------------------------------------------------- helpers
def tree_state(folder: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every file under ``folder`` (names and bytes)."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith((f".{out.name}.tmp-", f".{out.name}.old-")))


def start_art(argv: list[str], cwd: Path) -> subprocess.Popen:
    """``art ARGV`` in a child process with default SIGINT/SIGTERM handling (even if we run in the background)."""

    def defaults():  # a shell's background job may inherit SIGINT ignored; the user's terminal would not
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "art_cli.main", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=defaults,
    )


def wait_for(proc: subprocess.Popen, ready, *, what: str, timeout_s: float = 240.0) -> None:
    """Poll until ``ready()`` is true; fail if the process ends first."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}; stderr:\n{err[-2000:]}")
        if time.monotonic() - t0 > timeout_s:
            proc.kill()
            proc.communicate()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def tmp_with_files(out: Path, *, min_files: int = 1):
    def ready() -> bool:
        for d in out.parent.glob(f".{out.name}.tmp-*"):
            try:
                if sum(1 for p in d.rglob("*") if p.is_file()) >= min_files:
                    return True
            except FileNotFoundError:  # removed under us
                pass
        return False

    return ready


def interrupt_and_check(proc: subprocess.Popen, sig: int, out: Path, before: dict[str, str], before_tree: str) -> str:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the interrupted run did not end within 120 s")
    assert proc.returncode == 130, f"exit code {proc.returncode}, stderr:\n{err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    assert tree_state(out) == before, "the previous result changed"
    assert sha256_tree(sorted(p for p in out.rglob("*") if p.is_file())) == before_tree
    assert leftovers(out) == [], f"left behind: {leftovers(out)}"
    return err


# ----------------------------------------------------------------------------- art phantom (fast)
@pytest.fixture
def previous_phantom(tmp_path) -> Path:
    """A complete previous ``art phantom`` result in ``OUT`` (made in-process: same atomic writer)."""
    from art_cli.app import run

    out = tmp_path / "OUT"
    assert run(["phantom", "--seed", "1", "--fractions", "0", "--spacing", "6,5,5", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("sig", SIGNALS)
def test_interrupted_phantom_keeps_previous_result(previous_phantom, tmp_path, sig):
    out = previous_phantom
    before, before_tree = tree_state(out), sha256_tree(sorted(p for p in out.rglob("*") if p.is_file()))
    assert len(before) > 10 and "RTSTRUCT.dcm" in before
    # a different patient with many fractions: would change every file of OUT if it finished
    proc = start_art(["phantom", "--seed", "2", "--fractions", "8", "--spacing", "6,5,5", "--out", str(out)], tmp_path)
    wait_for(proc, tmp_with_files(out, min_files=5), what="the temporary folder held files")
    interrupt_and_check(proc, sig, out, before, before_tree)


def test_interrupt_in_the_final_swap_never_loses_the_result(tmp_path, monkeypatch):
    """SIGINT between "previous moved aside" and "new moved in": OUT is the previous or the new result, whole.

    A real signal is raised right after the first ``os.replace`` of the swap (the
    narrowest window): the result folder must never be missing or partial.
    """
    import threading

    import art.outputs as outputs

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only: this test must run in it")
    # start from Python's own SIGINT handling, whatever the process inherited or an earlier
    # test's native library left at the OS level (the default is what a user's terminal gives)
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_in_the_final_swap(tmp_path, monkeypatch, outputs)
    finally:
        signal.signal(signal.SIGINT, previous_handler if previous_handler is not None else signal.default_int_handler)


def _interrupt_in_the_final_swap(tmp_path, monkeypatch, outputs):
    out = tmp_path / "OUT"
    with outputs.atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("previous")
    previous = tree_state(out)
    real_replace = os.replace
    calls = []

    def replace_then_signal(src, dst):
        real_replace(src, dst)
        calls.append((src, dst))
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_signal)
    with pytest.raises(KeyboardInterrupt):
        with outputs.atomic_output_dir(out) as tmp:
            (tmp / "a.txt").write_text("new")
            (tmp / "b.txt").write_text("new")
    monkeypatch.undo()
    assert len(calls) >= 1
    ref = tmp_path / "new"
    ref.mkdir()
    (ref / "a.txt").write_text("new")
    (ref / "b.txt").write_text("new")
    state = tree_state(out) if out.is_dir() else None
    assert state in (previous, tree_state(ref)), f"OUT after an interrupt in the swap: {state}"
    assert leftovers(out) == [], f"left behind: {leftovers(out)}"


# ----------------------------------------------------------------------------- art plan (slow)
FAST_PROTOCOL = {
    "gantry_angles = [0, 51, 103, 154, 206, 257, 309]": "gantry_angles = [0, 120, 240]",
    "grid_mm = 3.0": "grid_mm = 6.0",
    "bixel_mm = 5.0": "bixel_mm = 10.0",
}


@pytest.fixture
def plan_inputs(coarse_patient, tmp_path) -> list[str]:
    text = (coarse_patient / "protocol.toml").read_text()
    for a, b in FAST_PROTOCOL.items():
        assert a in text, a
        text = text.replace(a, b)
    protocol = tmp_path / "protocol.toml"
    protocol.write_text(text)
    return ["--ct", str(coarse_patient / "CT"), "--structures", str(coarse_patient / "RTSTRUCT.dcm"), "--protocol", str(protocol)]


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_interrupted_plan_keeps_previous_result(plan_inputs, tmp_path, sig):
    """``art plan`` into a folder holding a previous plan, interrupted during optimisation, then during export."""
    from art_cli.app import run

    out = tmp_path / "OUT"
    assert run(["plan", *plan_inputs, "--out", str(out)]) in (0, 3)
    before, before_tree = tree_state(out), sha256_tree(sorted(p for p in out.rglob("*") if p.is_file()))
    assert {"RTPLAN.dcm", "RTDOSE.dcm", "RTSTRUCT.dcm", "summary.json", "report.html"} <= set(before)

    # 1. during the optimisation stage (before anything is written)
    proc = start_art(["plan", *plan_inputs, "--out", str(out)], tmp_path)
    err_lines: list[str] = []

    def optimising() -> bool:  # the "dose influence" stage has finished: optimisation runs now
        line = proc.stderr.readline()
        if line:
            err_lines.append(line)
        return any("dose influence (" in ln for ln in err_lines)

    wait_for(proc, optimising, what="the optimisation stage started")
    time.sleep(0.5)
    assert leftovers(out) == []
    proc.send_signal(sig)
    rest = proc.communicate(timeout=120)[1]
    err = "".join(err_lines) + rest
    # before the output folder is opened SIGTERM has its default action (the process ends on the signal)
    assert proc.returncode in (130, -sig), f"exit code {proc.returncode}, stderr:\n{err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    assert tree_state(out) == before and leftovers(out) == []

    # 2. during export (the temporary folder holds files)
    proc = start_art(["plan", *plan_inputs, "--out", str(out)], tmp_path)
    wait_for(proc, tmp_with_files(out, min_files=1), what="the export started")
    interrupt_and_check(proc, sig, out, before, before_tree)
