"""dciodvfy wrapper and the RT Plan attribute check: both must catch broken files."""

from __future__ import annotations

import shutil

import pydicom
import pytest
from pydicom.data import get_testdata_file

import art.io.validate as validate
from art.errors import ArtError
from art.io.validate import check_rtplan_attributes, run_dciodvfy

needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")


@needs_dciodvfy
def test_dciodvfy_reports_a_missing_type_1_attribute(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"), force=True)
    del ds.BeamSequence[0].ControlPointSequence[0].NominalBeamEnergy  # type 1C on the first control point
    del ds.RTPlanLabel  # type 1
    ds.save_as(tmp_path / "broken.dcm")
    errors = run_dciodvfy(tmp_path / "broken.dcm")
    assert any("RTPlanLabel" in e or "RT Plan Label" in e for e in errors), errors


def test_missing_dciodvfy_skips_or_raises(tmp_path, monkeypatch):
    f = tmp_path / "a.dcm"
    f.write_bytes(b"x")
    monkeypatch.setattr(validate.shutil, "which", lambda name: None)
    assert run_dciodvfy(f) is None
    with pytest.raises(ArtError, match="dicom3tools"):
        run_dciodvfy(f, required=True)


def test_attribute_check_flags_a_foreign_open_field_plan():
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"), force=True)
    problems = check_rtplan_attributes(ds)
    text = "\n".join(problems)
    assert "FrameOfReferenceUID missing" in text
    assert "lacks MLCX" in text and "lacks ASYMX" in text
    assert not any("BeamMeterset" in p for p in problems)  # present in that file


def test_attribute_check_flags_each_defect():
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"), force=True)
    base = set(check_rtplan_attributes(ds))
    ds.RTPlanLabel = "a_label_of_20_chars_"
    del ds.FractionGroupSequence[0].ReferencedBeamSequence[0].BeamMeterset
    ds.BeamSequence[0].ControlPointSequence[1].CumulativeMetersetWeight = "0.0"
    ds.BeamSequence[0].FinalCumulativeMetersetWeight = "2.0"
    ds.ApprovalStatus = ""
    new = "\n".join(set(check_rtplan_attributes(ds)) - base)
    for needle in ("RTPlanLabel", "BeamMeterset", "FinalCumulativeMetersetWeight", "ApprovalStatus"):
        assert needle in new, needle
