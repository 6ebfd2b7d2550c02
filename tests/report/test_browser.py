"""The report renders in a real headless browser (Debian's chromium) without errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from art.report import adaptive_report_model, write_pdf, write_report

from .conftest import png_pixels, png_size

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)")

# console messages chromium logs with --enable-logging=stderr
_CONSOLE_ERROR = re.compile(r"(Uncaught|CONSOLE[(:]\d+.*(error|Error)|Failed to load resource|net::ERR_)")


def _screenshot(page: Path, tmp: Path, name: str) -> tuple[Path, subprocess.CompletedProcess]:
    shot = tmp / f"{name}.png"
    profile = tmp / f"profile-{name}"
    cmd = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        "--window-size=1200,3000",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp)})
    return shot, proc


def _console_errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if _CONSOLE_ERROR.search(ln)]


def test_error_detection_works(tmp_path):
    """The stderr check below can fail: a page with a script error and a missing image is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>x</p><img src="missing.png"><script>undefinedFunction();</script></body></html>')
    _, proc = _screenshot(bad, tmp_path, "bad")
    errors = _console_errors(proc.stderr)
    assert any("undefinedFunction" in e for e in errors), proc.stderr[-2000:]


def test_report_renders_in_headless_chromium(case, tmp_path):
    scheduled = type(case.dose)(case.dose.array * 0.8, case.grid)
    rows = [
        {"structure": "PTV", "metric": "D95%", "goal": "≥ 40 Gy", "value": 38.0, "met": False, "priority": 1, "unit": "Gy"},
        {"structure": "Rectum <&>", "metric": "V50Gy", "goal": "≤ 20 %", "value": 10.0, "met": True, "priority": 2, "unit": "%"},
    ]
    adapted = [dict(rows[0], value=44.0, met=True), rows[1]]
    model = adaptive_report_model(
        case.ct,
        case.structures,
        scheduled,
        case.dose,
        rows,
        adapted,
        registration={"couch_shift_mm": (0.5, -1.0, 2.0), "folded_voxels": 0},
        contour_qa=[{"structure": "Bladder", "dice_ai_vs_propagated": 0.5, "flagged": True}],
        timings={"register": 1.5, "optimise": 3.0},
        warnings=["synthetic test case"],
    )
    page = write_report(model, tmp_path / "report.html")
    shot, proc = _screenshot(page, tmp_path, "report")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 10_000
    png = shot.read_bytes()
    assert png_size(png) == (1200, 3000)
    px = png_pixels(png)[..., :3]
    assert px.std() > 0.1  # not blank
    # the page draws the pass/fail colours of the goal table and the jet colours of the dose wash
    fail_bg = np.all(np.abs(px - np.array([0xFB, 0xE3, 0xE4]) / 255) < 0.02, axis=-1)
    pass_bg = np.all(np.abs(px - np.array([0xE3, 0xF4, 0xE6]) / 255) < 0.02, axis=-1)
    assert fail_bg.sum() > 200 and pass_bg.sum() > 200
    assert _console_errors(proc.stderr) == []

    pdf = write_pdf(page, tmp_path / "report.pdf")
    assert pdf is not None and pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 50_000
