"""``art replan`` command contract for a CBCT in its own frame of reference (issue 16, item 6).

``--registration REG.dcm`` (or the one REG in the CBCT folder) links the CBCT's frame to
the planning CT's; without one, or with one that does not link exactly these two frames,
the command fails with exit code 1, a one-line message naming the file, and no output
folder. (The full re-plan in the CBCT's own frame: tests/test_own_frame_cbct.py, slow.)
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from art_cli.app import run
from tests.independent_reg import rewrite_in_own_frame, translation, write_reg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

OFFSET = (-40.0, 25.0, 310.0)  # the CBCT's own frame: its points are the shared frame's + OFFSET


def call(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = run(argv)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A coarse phantom, a reference folder (a simple plan, no optimisation) and its CBCT in an own frame."""
    from tests.node.cases import quick_reference

    root = tmp_path_factory.mktemp("replan_frames")
    c = quick_reference(root)
    own = root / "CBCT_OWN"
    own_for = rewrite_in_own_frame(c["patient"] / "CBCT_01", own, offset_mm=OFFSET)
    return {"root": root, "patient": c["patient"], "ref": c["reference"], "own": own, "own_for": own_for, "ct_for": c["frame"], "pid": c["patient_id"]}


def replan_argv(c, cbct: Path, out: Path, *extra: str) -> list[str]:
    return ["replan", "--reference", str(c["ref"]), "--cbct", str(cbct), "--out", str(out), *extra]


def test_help_names_the_registration_option(capsys):
    assert run(["replan", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--registration" in text and "frame of reference" in text


def test_own_frame_without_a_reg_is_an_error(case, tmp_path):
    out = tmp_path / "out"
    code, err = call(replan_argv(case, case["own"], out))
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert "CBCT_OWN" in line and "frame of reference" in line and "REG" in line and "--registration" in line, line
    assert not out.exists()


def test_reg_linking_another_frame_is_an_error_naming_it(case, tmp_path):
    out = tmp_path / "out"
    reg = write_reg(tmp_path / "WRONG_REG.dcm", registered_for=case["ct_for"], patient_id=case["pid"],
                    items=[{"frame": "2.25.12345678901234567890", "matrix": translation(np.negative(OFFSET))}])  # fmt: skip
    code, err = call(replan_argv(case, case["own"], out, "--registration", str(reg)))
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert "WRONG_REG.dcm" in line and "does not register the CBCT's frame" in line, line
    assert not out.exists()


def test_wrong_reg_found_in_the_cbct_folder_is_an_error_naming_it(case, tmp_path):
    cbct = tmp_path / "CBCT_OWN"
    shutil.copytree(case["own"], cbct)
    write_reg(cbct / "IGRT_REG.dcm", registered_for=case["ct_for"], patient_id="SOMEONE-ELSE",
              items=[{"frame": case["own_for"], "matrix": translation(np.negative(OFFSET))}])  # fmt: skip
    out = tmp_path / "out"
    code, err = call(replan_argv(case, cbct, out))
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert "IGRT_REG.dcm" in line and "PatientID" in line and "SOMEONE-ELSE" not in line and case["pid"] not in line, line
    assert not out.exists()


def test_reg_given_for_a_cbct_in_the_ct_frame_is_an_error(case, tmp_path):
    reg = write_reg(tmp_path / "REG.dcm", registered_for=case["ct_for"], patient_id=case["pid"],
                    items=[{"frame": case["own_for"], "matrix": translation(np.negative(OFFSET))}])  # fmt: skip
    out = tmp_path / "out"
    code, err = call(replan_argv(case, case["patient"] / "CBCT_01", out, "--registration", str(reg)))
    assert code == 1, err
    assert "REG.dcm" in err and "shares the planning CT's frame" in err, err
    assert not out.exists()


def test_missing_registration_file_is_an_error(case, tmp_path):
    out = tmp_path / "out"
    code, err = call(replan_argv(case, case["own"], out, "--registration", str(tmp_path / "nope.dcm")))
    assert code == 1, err
    assert "nope.dcm" in err and not out.exists()
