"""`art phantom` writes a readable patient with ground truth."""

import sys

import pytest

from art.io.rtstruct import read_rtstruct
from art.io.series import read_image_series
from art_cli.app import run
from art_phantoms.write import load_truth


def test_art_phantom_writes_readable_dicom_and_truth(tmp_path):
    out = tmp_path / "p"
    assert run(["phantom", "--seed", "2", "--fractions", "1", "--spacing", "4,4,4", "--out", str(out)]) == 0
    ct = read_image_series(out / "CT")
    cbct = read_image_series(out / "CBCT_01")
    assert cbct.frame_of_reference_uid == ct.frame_of_reference_uid
    ss = read_rtstruct(out / "RTSTRUCT.dcm", ct)
    assert {"BODY", "PTV", "CTV", "Rectum", "Bladder"} <= set(ss.names)
    truth = load_truth(out, 1)
    assert truth.daily_to_planning.shape == truth.daily_grid.shape + (3,)
    assert "PTV" in truth.structures
    assert (out / "protocol.toml").is_file() and (out / "manifest.json").is_file()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are per thread on Linux only")
def test_the_background_fractions_leave_no_low_priority_thread_behind(tmp_path):
    """The fractions run on a lowest-priority thread (``start_phantom``); once they are written no
    thread of the process keeps that priority (a thread pool created on it would slow the job later)."""
    import glob
    import time

    from art_phantoms.write import start_phantom

    started = start_phantom(tmp_path / "p", seed=1, fractions=1, spacing=(5.0, 4.0, 4.0))
    seen = []
    while started._future is not None and not started._future.done():
        seen += [_nice(t) for t in glob.glob("/proc/self/task/*/stat")]
        time.sleep(0.05)
    started.finish()
    after = [_nice(t) for t in glob.glob("/proc/self/task/*/stat")]
    assert after and all(n == 0 for n in after), after
    assert 19 in seen or not seen  # the thread ran at nice 19 while it was seen


def _nice(stat_path: str) -> int:
    try:
        return int(open(stat_path).read().rsplit(")", 1)[1].split()[16])
    except (OSError, IndexError, ValueError):  # the thread ended meanwhile
        return 0
