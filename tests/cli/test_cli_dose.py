"""``art dose``: recompute an RT Plan's dose on a CT; outputs, summary, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from art.dose import dose, load_machine
from art.geometry import Grid, Volume
from art.io import PatientInfo, write_image_series, write_rtstruct
from art.io.rtdose import read_rtdose
from art.io.rtplan import write_rtplan
from art.io.validate import run_dciodvfy
from art.plan import Beam, Plan, Segment
from art.structures import Structure, StructureSet
from art_cli.app import run

MACHINE = load_machine()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_dose")
    g = Grid((16, 30, 30), (5.0, 5.0, 5.0), (-72.5, -72.5, -37.5))
    z, y, x = np.indices(g.shape)
    body = (y - 14.5) ** 2 + (x - 14.5) ** 2 < 13**2
    ct = np.where(body, 0.0, -1000.0).astype(np.float32)
    image = write_image_series(Volume(ct, g), tmp / "ct", patient=PatientInfo(name="C^D", id="C1"))
    ptv = np.zeros(g.shape, bool)
    ptv[7:10, 13:17, 13:17] = True
    ss = StructureSet(g, [Structure("BODY", body, g, roi_type="EXTERNAL"), Structure("PTV", ptv, g, roi_type="PTV")])
    write_rtstruct(ss, image, tmp / "RS.dcm")
    n = MACHINE.mlc.n_pairs
    lp = np.vstack([np.full(n, -20.0), np.full(n, 20.0)])
    plan = Plan(
        [Beam(f"G{a}", a, isocenter_lps=(0.0, 0.0, 0.0), segments=[Segment(lp, (-25, 25, -20, 20), 50.0)]) for a in (0, 90, 180, 270)],
        fractions=10,
        machine_name=MACHINE.name,
    )
    write_rtplan(plan, image, tmp / "RS.dcm", tmp / "RP.dcm", machine=MACHINE, label="cli", prescription_gy=20.0, target_name="PTV")
    other = write_image_series(Volume(ct, g), tmp / "other_ct", patient=PatientInfo(name="C^D", id="C1"))
    return {"tmp": tmp, "image": image, "plan": plan, "structures": ss, "other": other}


def test_art_dose_writes_rtdose_and_summary(case, tmp_path, capsys):
    out = tmp_path / "res"
    args = ["dose", "--ct", str(case["tmp"] / "ct"), "--plan", str(case["tmp"] / "RP.dcm"), "--structures", str(case["tmp"] / "RS.dcm")]
    assert run(args + ["--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert printed["plan"] == summary["plan"]
    assert sorted(p.name for p in out.iterdir()) == ["RTDOSE.dcm", "summary.json"]
    prov = summary["provenance"]
    assert prov["version"] and set(prov["inputs"]) >= {"ct", "rtplan", "rtstruct"}
    assert [b["mu"] for b in summary["plan"]["beams"]] == [50.0] * 4 and summary["plan"]["fractions"] == 10
    # the RTDOSE is the engine's dose of the plan (independent path: plan object -> dose)
    got = read_rtdose(out / "RTDOSE.dcm")
    ref = dose(case["image"].volume, case["plan"], MACHINE, structures=case["structures"])
    assert got.grid.same_as(ref.grid)
    top = float(ref.array.max())
    assert np.abs(got.array - ref.array).max() <= 1e-3 * top
    assert summary["dose"]["max_gy"] == pytest.approx(top, rel=1e-3)
    ptv = [s for s in summary["structures"] if s["structure"] == "PTV"][0]
    # four opposed beams around a central target: the target is the hottest region, D98 <= Dmean <= Dmax
    assert ptv["D98%"] <= ptv["Dmean"] <= ptv["Dmax"] <= summary["dose"]["max_gy"] + 1e-6
    assert ptv["Dmean"] > 0.8 * summary["dose"]["max_gy"]
    errors = run_dciodvfy(out / "RTDOSE.dcm")
    if errors is not None:
        assert errors == []


def test_frame_of_reference_mismatch_is_refused(case, tmp_path, capsys):
    out = tmp_path / "res"
    assert run(["dose", "--ct", str(case["tmp"] / "other_ct"), "--plan", str(case["tmp"] / "RP.dcm"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "frame of reference" in err and "RP.dcm" in err
    assert not out.exists()


def test_missing_plan_is_an_error(case, tmp_path, capsys):
    out = tmp_path / "res"
    assert run(["dose", "--ct", str(case["tmp"] / "ct"), "--plan", str(tmp_path / "nope.dcm"), "--out", str(out)]) == 1
    assert "not found" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_engine_is_a_usage_error(case, tmp_path, capsys):
    out = tmp_path / "res"
    args = ["dose", "--ct", str(case["tmp"] / "ct"), "--plan", str(case["tmp"] / "RP.dcm"), "--out", str(out), "--engine", "mc"]
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "--engine" in err and "'mc'" in err and "ccc" in err
    assert not out.exists()


def test_engine_ccc_is_the_collapsed_cone_dose(case, tmp_path, capsys):
    """``--engine ccc``: the RTDOSE is art.dose.ccc's dose of the plan; the summary names the engine; the two
    algorithms agree in the homogeneous target region within a few per cent."""
    ccc = pytest.importorskip("art.dose.ccc")
    out = tmp_path / "res"
    args = ["dose", "--ct", str(case["tmp"] / "ct"), "--plan", str(case["tmp"] / "RP.dcm"), "--structures", str(case["tmp"] / "RS.dcm")]
    assert run(args + ["--out", str(out), "--engine", "ccc"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"]["name"] == "ccc" and summary["provenance"]["parameters"]["engine"] == "ccc"
    got = read_rtdose(out / "RTDOSE.dcm")
    ref = ccc.dose(case["image"].volume, case["plan"], MACHINE, structures=case["structures"])
    assert got.grid.same_as(ref.grid)
    assert np.abs(got.array - ref.array).max() <= 1e-3 * float(ref.array.max())
    pb = dose(case["image"].volume, case["plan"], MACHINE, structures=case["structures"])
    ptv = case["structures"]["PTV"].mask
    from art.geometry import resample

    ptv_d = resample(Volume(ptv.astype(np.float32), case["structures"].grid), ref.grid, order=1).array > 0.5
    assert float(ref.array[ptv_d].mean()) == pytest.approx(float(pb.array[ptv_d].mean()), rel=0.04)
