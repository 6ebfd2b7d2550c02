"""``art check``: any RT Dose + RTSTRUCT (+ protocol) evaluated on the polygons; tables, JSON, exit codes, refusals.

The RT Dose holds an analytic linear field (60 Gy at the sphere's centre,
0.5 Gy/mm along x), so a sphere's mean and median are its centre dose and its
near-maximum follows from the cap geometry; files are art's own (``write_rtdose``,
``write_rtstruct``) or another system's RTSTRUCT written here with pydicom.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from art.geometry import Grid, Volume
from art.io import PatientInfo, write_image_series, write_rtstruct
from art.io.rtdose import write_rtdose
from art.io.uids import new_uid
from art.structures import Structure, StructureSet
from art_cli.app import run

CENTRE = (2.0, -3.0, 1.25)  # LPS mm, the sphere's centre
R = 20.0  # mm: 33.5 cc


def dose_at(x, y, z):
    return 60.0 + 0.5 * (x - CENTRE[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_check")
    ct_grid = Grid((28, 40, 40), (2.5, 2.0, 2.0), (-40.0, -42.0, -32.5))
    image = write_image_series(Volume(np.zeros(ct_grid.shape, np.float32), ct_grid), tmp / "ct", patient=PatientInfo(name="K^Q", id="K1"))
    dose_grid = Grid((24, 30, 30), (2.5, 2.5, 2.5), (-34.3, -38.1, -27.4))  # inside the CT, off its planes
    x, y, z = dose_grid.lps_coordinates(np.float64)
    write_rtdose(Volume(dose_at(x, y, z).astype(np.float32), dose_grid), image, tmp / "RD.dcm", plan_ds_or_uid=new_uid())
    # art's own RTSTRUCT: masks on the CT, written as traced contours
    cx, cy, cz = ct_grid.lps_coordinates(np.float64)
    ptv = (cx - CENTRE[0]) ** 2 + (cy - CENTRE[1]) ** 2 + (cz - CENTRE[2]) ** 2 <= R * R
    write_rtstruct(StructureSet(ct_grid, [Structure("PTV", ptv, ct_grid, roi_type="PTV")]), image, tmp / "RS_art.dcm")
    planes = np.arange(CENTRE[2] - 18.75, CENTRE[2] + 19.0, 2.5)
    sphere = [circle(math.sqrt(R * R - (zp - CENTRE[2]) ** 2), zp) for zp in planes]
    body = [circle(60.0, zp) for zp in planes]  # wider than the dose grid
    bowtie = [np.array([[0, 0, zp], [10, 10, zp], [10, 0, zp], [0, 6, zp]], float) for zp in planes[:3]]
    rois = [("PTV", "PTV", sphere), ("BODY", "EXTERNAL", body), ("Marker", "MARKER", "point")]
    foreign_rtstruct(tmp / "RS_foreign.dcm", image.frame_of_reference_uid, rois)
    foreign_rtstruct(tmp / "RS_bowtie.dcm", image.frame_of_reference_uid, [("PTV", "PTV", sphere), ("Cord", "ORGAN", bowtie)])
    foreign_rtstruct(tmp / "RS_otherFoR.dcm", new_uid(), [("PTV", "PTV", sphere)])
    return tmp


def circle(r, z, n=120):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([CENTRE[0] + r * np.cos(t), CENTRE[1] + r * np.sin(t), np.full(n, z)])


def foreign_rtstruct(path, frame_uid, rois):
    """An RTSTRUCT as another planning system writes it: polygons straight from this test, pydicom only."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = new_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "RTSTRUCT"
    ds.StructureSetLabel = "OtherTPS"
    ref = Dataset()
    ref.FrameOfReferenceUID = frame_uid
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ssroi, contours, obs = [], [], []
    for n, (name, kind, polys) in enumerate(rois, start=1):
        a = Dataset()
        a.ROINumber, a.ROIName, a.ReferencedFrameOfReferenceUID = n, name, frame_uid
        ssroi.append(a)
        c = Dataset()
        c.ReferencedROINumber, c.ROIDisplayColor = n, [255, 0, 0]
        items = []
        for p in ([np.array([[0.0, 0.0, 0.0]])] if isinstance(polys, str) else polys):
            it = Dataset()
            it.ContourGeometricType = "POINT" if isinstance(polys, str) else "CLOSED_PLANAR"
            it.NumberOfContourPoints = len(p)
            it.ContourData = [f"{v:.4f}" for v in np.asarray(p).reshape(-1)]
            items.append(it)
        c.ContourSequence = Sequence(items)
        contours.append(c)
        o = Dataset()
        o.ObservationNumber, o.ReferencedROINumber, o.RTROIInterpretedType = n, n, kind
        obs.append(o)
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = Sequence(ssroi), Sequence(contours), Sequence(obs)
    ds.save_as(str(path), enforce_file_format=True)


PROTOCOL = """name = "Check test"
[prescription]
target = "PTV"
dose_gy = 60.0
fractions = 20
[beams]
energy = "6X"
gantry_angles = [0, 120, 240]
isocenter = "PTV"
[[goals]]
structure = "PTV"
metric = "Dmean"
at_least = {p1}
priority = 1
[[goals]]
structure = "PTV"
metric = "Dmax"
at_most = 65.0
priority = 2
"""


def args(files, rs, *extra):
    return ["check", "--dose", str(files / "RD.dcm"), "--structures", str(files / rs), *extra]


def test_goal_table_of_another_systems_rtstruct(files, tmp_path, capsys):
    (tmp_path / "p.toml").write_text(PROTOCOL.format(p1=59.9))
    before = sorted(p.name for p in files.iterdir())
    assert run(args(files, "RS_foreign.dcm", "--protocol", str(tmp_path / "p.toml"), "--json")) == 0
    res = json.loads(capsys.readouterr().out)
    dmean, dmax = res["goals"]
    assert dmean["metric"] == "Dmean" and abs(dmean["value"] - 60.0) <= 0.05 and dmean["met"]  # the centre dose
    # near-max: the hottest 0.03 cc is a cap ~0.8 mm deep at x = R: 60 + 0.5 * (R - 0.8) ≈ 69.6 Gy (1 % of 60 Gy)
    assert dmax["label"] == "Dmax (D0.03cc)" and abs(dmax["value"] - 69.6) <= 0.6 and not dmax["met"]
    assert res["priority1_met"] and sorted(p.name for p in files.iterdir()) == before  # nothing written
    assert run(args(files, "RS_foreign.dcm", "--protocol", str(tmp_path / "p.toml"))) == 0
    out = capsys.readouterr().out
    assert "Dmax (D0.03cc)" in out and "NOT MET" in out and "K^Q" not in out and "K1" not in out


def test_priority1_goal_missed_exits_3(files, tmp_path, capsys):
    (tmp_path / "p.toml").write_text(PROTOCOL.format(p1=60.5))
    assert run(args(files, "RS_foreign.dcm", "--protocol", str(tmp_path / "p.toml"))) == 3
    captured = capsys.readouterr()
    assert "PTV Dmean" in captured.err and "NOT MET" in captured.out


def test_per_structure_table_of_arts_own_files_is_the_polygon_path(files, capsys):
    from art.evaluate import evaluate_goals
    from art.io import read_rtdose, read_rtstruct
    from art.protocol import Goal, parse_metric

    assert run(args(files, "RS_art.dcm", "--json")) == 0
    row = json.loads(capsys.readouterr().out)["structures"][0]
    assert row["structure"] == "PTV" and row["volume_cc"] == pytest.approx(4 / 3 * math.pi * R**3 / 1000, rel=0.03)
    assert abs(row["Dmean"] - 60.0) <= 0.15 and row["Dmin"] < row["D98%"] < row["D50%"] < row["D2%"] < row["Dmax"]
    dose = read_rtdose(files / "RD.dcm")
    ss = read_rtstruct(files / "RS_art.dcm", dose.grid)
    same = evaluate_goals(dose, ss, [Goal("PTV", parse_metric(m), at_least=0.0) for m in ("D95%", "Dmax")], mode="polygons")
    assert [row["D95%"], row["Dmax"]] == [round(r.value, 4) for r in same]
    assert run(args(files, "RS_art.dcm")) == 0
    assert "Dmax (D0.03cc) Gy" in capsys.readouterr().out


def test_structure_outside_the_dose_grid_exits_1_naming_it(files, capsys):
    assert run(args(files, "RS_foreign.dcm")) == 1
    err = capsys.readouterr().err
    assert "'BODY'" in err and "outside the dose grid" in err and err.count("\n") == 1
    assert run(args(files, "RS_foreign.dcm", "--structure", "PTV", "--json")) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["structure"] for r in res["structures"]] == ["PTV"]


def test_bad_contours_wrong_frame_and_missing_polygons_exit_1(files, tmp_path, capsys):
    assert run(args(files, "RS_bowtie.dcm")) == 1
    err = capsys.readouterr().err
    assert "'Cord'" in err and "self-intersecting" in err
    assert run(args(files, "RS_otherFoR.dcm")) == 1
    err = capsys.readouterr().err
    assert "frame of reference" in err and "RS_otherFoR.dcm" in err
    assert run(args(files, "RS_foreign.dcm", "--structure", "Marker")) == 1
    assert "'Marker' has no closed planar contours" in capsys.readouterr().err
    (tmp_path / "p.toml").write_text(PROTOCOL.format(p1=50).replace('structure = "PTV"\nmetric = "Dmax"', 'structure = "Marker"\nmetric = "Dmax"'))
    assert run(args(files, "RS_foreign.dcm", "--protocol", str(tmp_path / "p.toml"))) == 1
    assert "'Marker'" in capsys.readouterr().err
