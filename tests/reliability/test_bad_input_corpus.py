"""The bad-input corpus (issue 9): broken variants of a digital patient, generated on the fly.

For every case: the exact exit code, a one-line message on stderr that names the
file (or folder) and the problem, and nothing left in ``--out``. The run prints
how many cases were tried (``bad-input corpus: N cases tried``).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from art_cli.app import run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ----------------------------------------------------------------------------- helpers
def ct_files(patient: Path) -> list[Path]:
    files = sorted((patient / "CT").iterdir())
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))


def edit_all(folder: Path, fn) -> None:
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        fn(ds)
        ds.save_as(f)


def plan_argv(patient: Path, out: Path, *, protocol: Path | None = None, extra=()) -> list[str]:
    return [
        "plan", "--ct", str(patient / "CT"), "--structures", str(patient / "RTSTRUCT.dcm"),
        "--protocol", str(protocol or patient / "protocol.toml"), "--out", str(out), *extra,
    ]


def edit_protocol(patient: Path, old: str, new: str) -> Path:
    p = patient / "protocol.toml"
    text = p.read_text()
    assert old in text, old
    p.write_text(text.replace(old, new, 1))
    return p


def make_reference(patient: Path, root: Path) -> Path:
    """A reference folder (CT, RTSTRUCT, a simple 2-beam RTPLAN, protocol) without optimising."""
    from art.dose import load_machine
    from art.io import read_image_series
    from art.io.rtplan import write_rtplan
    from art.plan import Beam, Plan, Segment

    ref = root / "reference"
    ref.mkdir()
    shutil.copytree(patient / "CT", ref / "CT")
    shutil.copy2(patient / "RTSTRUCT.dcm", ref / "RTSTRUCT.dcm")
    shutil.copy2(patient / "protocol.toml", ref / "protocol.toml")
    machine = load_machine()
    ct = read_image_series(ref / "CT")
    n = machine.mlc.n_pairs
    seg = Segment(np.vstack([np.full(n, -20.0), np.full(n, 20.0)]), (-20.0, 20.0, -20.0, 20.0), 100.0)
    iso = tuple(ct.grid.index_to_lps(np.array([[s / 2 for s in ct.grid.shape]], float))[0])
    plan = Plan([Beam("B1", 0.0, isocenter_lps=iso, segments=[seg]), Beam("B2", 180.0, isocenter_lps=iso, segments=[seg])], fractions=20, machine_name=machine.name)
    write_rtplan(plan, ct, ref / "RTSTRUCT.dcm", ref / "RTPLAN.dcm", machine=machine, label="REF", prescription_gy=60.0, target_name="PTV")
    return ref


def replan_argv(ref: Path, cbct: Path, out: Path) -> list[str]:
    return ["replan", "--reference", str(ref), "--cbct", str(cbct), "--out", str(out)]


# ----------------------------------------------------------------------------- the cases
def case_missing_slice(patient, tmp):
    ct_files(patient)[len(ct_files(patient)) // 2].unlink()
    return plan_argv(patient, tmp / "out"), 1, ["CT", "spacing"]


def case_duplicated_slice(patient, tmp):
    f = ct_files(patient)[3]
    ds = pydicom.dcmread(f)
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    ds.save_as(f.with_name("copy.dcm"))
    return plan_argv(patient, tmp / "out"), 1, ["same slice position"]


def case_truncated_file(patient, tmp):
    f = ct_files(patient)[4]
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])
    return plan_argv(patient, tmp / "out"), 1, [f.name]


def case_wrong_modality(patient, tmp):
    edit_all(patient / "CT", lambda ds: setattr(ds, "Modality", "MR"))
    return plan_argv(patient, tmp / "out"), 1, ["CT", "MR"]


def case_mixed_series(patient, tmp):
    for f in ct_files(patient)[::2]:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".2"
        ds.save_as(f)
    return plan_argv(patient, tmp / "out"), 1, ["2 CT series"]


def case_uneven_spacing(patient, tmp):
    for f in ct_files(patient)[5:]:
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], float(ds.ImagePositionPatient[2]) + 2.0]
        ds.save_as(f)
    return plan_argv(patient, tmp / "out"), 1, ["spacing"]


def case_gantry_tilt(patient, tmp):
    edit_all(patient / "CT", lambda ds: setattr(ds, "GantryDetectorTilt", 12.0))
    return plan_argv(patient, tmp / "out"), 1, ["tilt"]


def case_nan_in_image(patient, tmp):
    f = ct_files(patient)[2]
    ds = pydicom.dcmread(f)
    ds.RescaleSlope = "NaN"
    ds.save_as(f)
    return plan_argv(patient, tmp / "out"), 1, [f.name]


def case_non_dicom_and_empty_folder(patient, tmp):
    for f in (patient / "CT").iterdir():
        f.unlink()
    (patient / "CT" / "notes.txt").write_text("not an image")
    return plan_argv(patient, tmp / "out"), 1, ["CT", "no CT image"]


def case_rtstruct_references_another_series(patient, tmp):
    ds = pydicom.dcmread(patient / "RTSTRUCT.dcm")
    for roi in ds.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = "2.25.1234"
    for fr in ds.ReferencedFrameOfReferenceSequence:
        fr.FrameOfReferenceUID = "2.25.1234"
    ds.save_as(patient / "RTSTRUCT.dcm")
    return plan_argv(patient, tmp / "out"), 1, ["RTSTRUCT.dcm", "frame of reference"]


def case_empty_target(patient, tmp):
    ds = pydicom.dcmread(patient / "RTSTRUCT.dcm")
    num = {r.ROIName: r.ROINumber for r in ds.StructureSetROISequence}["PTV"]
    for rc in ds.ROIContourSequence:
        if rc.ReferencedROINumber == num:
            del rc.ContourSequence
    ds.save_as(patient / "RTSTRUCT.dcm")
    return plan_argv(patient, tmp / "out"), 1, ["PTV", "empty"]


def case_tiny_structure(patient, tmp):
    ds = pydicom.dcmread(patient / "RTSTRUCT.dcm")
    num = {r.ROIName: r.ROINumber for r in ds.StructureSetROISequence}["Rectum"]
    for rc in ds.ROIContourSequence:
        if rc.ReferencedROINumber == num:
            c = rc.ContourSequence[len(rc.ContourSequence) // 2]
            x, y, z = (float(v) for v in c.ContourData[:3])
            c.ContourData = [x, y, z, x + 1.0, y, z, x, y + 1.0, z]
            c.NumberOfContourPoints = 3
            rc.ContourSequence = [c]
    ds.save_as(patient / "RTSTRUCT.dcm")
    return plan_argv(patient, tmp / "out"), 1, ["Rectum", ("small", "empty")]


def case_structure_not_in_structure_set(patient, tmp):
    p = edit_protocol(patient, 'structure = "Rectum"', 'structure = "Rectum_PRV"')
    return plan_argv(patient, tmp / "out", protocol=p), 1, ["protocol.toml", "Rectum_PRV"]


def case_protocol_unknown_metric(patient, tmp):
    p = edit_protocol(patient, 'metric = "D95%"', 'metric = "D95x"')
    return plan_argv(patient, tmp / "out", protocol=p), 1, ["protocol.toml", "line", "D95x"]


def case_protocol_unknown_key(patient, tmp):
    p = edit_protocol(patient, "priority = 1", 'priority = 1\ncolour = "red"')
    return plan_argv(patient, tmp / "out", protocol=p), 1, ["protocol.toml", "line", "colour"]


def case_protocol_negative_dose(patient, tmp):
    p = edit_protocol(patient, "dose_gy = 60.0", "dose_gy = -60.0")
    return plan_argv(patient, tmp / "out", protocol=p), 1, ["protocol.toml", "line", "dose_gy"]


def case_bad_machine_file(patient, tmp):
    import json

    from art.dose.machine import DEFAULT_MACHINE

    data = json.loads(Path(DEFAULT_MACHINE).read_text())
    data["sad_mm"] = -1000
    bad = tmp / "machine.json"
    bad.write_text(json.dumps(data))
    return plan_argv(patient, tmp / "out", extra=["--machine", str(bad)]), 1, ["machine.json", "sad_mm"]


def case_out_is_a_file(patient, tmp):
    (tmp / "blocker").write_text("x")
    return plan_argv(patient, tmp / "blocker" / "out"), 1, ["blocker"]


def case_cbct_other_frame_of_reference(patient, tmp):
    ref = make_reference(patient, tmp)
    edit_all(patient / "CBCT_01", lambda ds: setattr(ds, "FrameOfReferenceUID", "2.25.777"))
    return replan_argv(ref, patient / "CBCT_01", tmp / "out"), 1, ["CBCT_01", "frame of reference"]


def case_cbct_not_overlapping(patient, tmp):
    ref = make_reference(patient, tmp)

    def move(ds):
        ds.ImagePositionPatient = [float(v) + 2000.0 for v in ds.ImagePositionPatient]

    edit_all(patient / "CBCT_01", move)
    return replan_argv(ref, patient / "CBCT_01", tmp / "out"), 1, ["CBCT_01", "overlap"]


def case_reference_without_plan(patient, tmp):
    ref = make_reference(patient, tmp)
    (ref / "RTPLAN.dcm").unlink()
    return replan_argv(ref, patient / "CBCT_01", tmp / "out"), 1, ["reference", "RTPLAN"]


def _plan_for_dose(patient, tmp, edit):
    ref = make_reference(patient, tmp)
    ds = pydicom.dcmread(ref / "RTPLAN.dcm")
    edit(ds)
    ds.save_as(ref / "RTPLAN.dcm")
    return ["dose", "--ct", str(ref / "CT"), "--plan", str(ref / "RTPLAN.dcm"), "--out", str(tmp / "out")]


def case_rtplan_non_monotonic_meterset(patient, tmp):
    def edit(ds):
        cps = ds.BeamSequence[0].ControlPointSequence
        cps[-1].CumulativeMetersetWeight = 0.5
        cps[0].CumulativeMetersetWeight = 0.8

    return _plan_for_dose(patient, tmp, edit), 1, ["RTPLAN.dcm", "meterset"]


def case_rtplan_leaves_beyond_opposite(patient, tmp):
    def edit(ds):
        for item in ds.BeamSequence[0].ControlPointSequence[0].BeamLimitingDevicePositionSequence:
            if item.RTBeamLimitingDeviceType == "MLCX":
                pos = [float(v) for v in item.LeafJawPositions]
                n = len(pos) // 2
                pos[0], pos[n] = 30.0, -30.0  # bank A beyond bank B on pair 1
                item.LeafJawPositions = pos

    return _plan_for_dose(patient, tmp, edit), 1, ["RTPLAN.dcm", "leaf"]


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_corpus(name, patient, tmp_path, capsys):
    argv, code, words = CASES[name](patient, tmp_path)
    out = Path(argv[argv.index("--out") + 1])
    capsys.readouterr()
    assert run(argv) == code
    err = capsys.readouterr().err.strip()
    assert err, "no message"
    last = err.splitlines()[-1]
    assert last.startswith("art: error:"), err
    for w in words:
        alternatives = w if isinstance(w, tuple) else (w,)
        assert any(a.lower() in last.lower() for a in alternatives), f"{w!r} not in message: {last}"
    assert "ART^Phantom" not in err and "Phantom" not in err  # never the patient's name
    assert not out.exists() or not any(out.iterdir())
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")] if out.parent.is_dir() else []
    assert leftovers == []


def test_disk_full_during_write_leaves_nothing(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing a result folder: exit 1, a one-line message, nothing in --out."""
    import art.io.series_write as series  # where the CT slices are saved

    real = series.save_dataset
    calls = {"n": 0}

    def full(ds, path):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(ds, path)

    monkeypatch.setattr(series, "save_dataset", full)
    out = tmp_path / "out"
    assert run(["phantom", "--seed", "2", "--fractions", "0", "--spacing", "5,4,4", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert not out.exists()
    assert [p for p in tmp_path.iterdir()] == []
