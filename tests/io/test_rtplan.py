"""RT Plan: export content, dciodvfy, round trip (plan and dose), foreign and malformed plans."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from art.dose import dose, load_machine
from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io import PatientInfo, write_image_series, write_rtstruct
from art.io.rtplan import read_rtplan, write_rtplan
from art.io.validate import check_rtplan_attributes, run_dciodvfy
from art.plan import Beam, Plan, Segment
from art.structures import Structure, StructureSet

MACHINE = load_machine()
N = MACHINE.mlc.n_pairs
BND = MACHINE.mlc.boundaries_mm


def segment(x1, x2, mu, *, y=(-30.0, 30.0), jaws=None):
    """Leaves open over x1..x2 for pairs inside y, closed (at x1) elsewhere."""
    lp = np.zeros((2, N))
    centres = 0.5 * (BND[:-1] + BND[1:])
    inside = (centres > y[0]) & (centres < y[1])
    lp[0] = x1
    lp[1] = np.where(inside, x2, x1)
    return Segment(lp, jaws or (x1 - 5.0, x2 + 5.0, y[0], y[1]), mu)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rtplan")
    g = Grid((24, 40, 40), (4.0, 4.0, 4.0), (-78.0, -78.0, -46.0))
    z, y, x = np.indices(g.shape)
    ct = np.full(g.shape, -1000.0, np.float32)
    body = (y - 19.5) ** 2 + (x - 19.5) ** 2 < 17**2
    ct[body] = 0.0
    image = write_image_series(Volume(ct, g), tmp / "ct", patient=PatientInfo(name="Test^Plan", id="P1"))
    ptv = np.zeros(g.shape, bool)
    ptv[10:14, 17:23, 17:23] = True
    ss = StructureSet(g, [Structure("BODY", body, g, roi_type="EXTERNAL"), Structure("PTV", ptv, g, roi_type="PTV")])
    write_rtstruct(ss, image, tmp / "RS.dcm")
    iso = (1.0 / 3.0, -2.0 / 7.0, 3.1)  # awkward numbers: DS formatting
    plan = Plan(
        [
            Beam("G0", 0.0, isocenter_lps=iso, segments=[segment(-25, 25, 100.0 / 3.0), segment(-10, 12.5, 21.7, y=(-15, 10))]),
            Beam("G120", 120.0, collimator_deg=350.0, isocenter_lps=iso, segments=[segment(-20, 18, 40.0), segment(-5, 5, 0.0)]),
        ],
        fractions=20,
        machine_name=MACHINE.name,
        label="roundtrip",
    )
    path = tmp / "RP.dcm"
    ds = write_rtplan(plan, image, tmp / "RS.dcm", path, machine=MACHINE, label="roundtrip", prescription_gy=60.0, target_name="PTV")
    return {"tmp": tmp, "image": image, "plan": plan, "path": path, "ds": ds, "structures": ss}


def test_written_plan_has_what_treatment_systems_need(case):
    ds = pydicom.dcmread(case["path"])
    image = case["image"]
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.5"
    assert ds.StudyInstanceUID == image.study_instance_uid
    assert ds.FrameOfReferenceUID == image.frame_of_reference_uid
    assert ds.PatientID == "P1" and ds.SeriesInstanceUID != image.series_instance_uid
    assert ds.RTPlanGeometry == "PATIENT" and ds.ApprovalStatus == "UNAPPROVED"
    rs = pydicom.dcmread(case["tmp"] / "RS.dcm")
    assert ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    dr = ds.DoseReferenceSequence[0]
    assert dr.DoseReferenceStructureType == "VOLUME" and float(dr.TargetPrescriptionDose) == 60.0
    ptv_number = [int(r.ROINumber) for r in rs.StructureSetROISequence if r.ROIName == "PTV"][0]
    assert int(dr.ReferencedROINumber) == ptv_number
    fg = ds.FractionGroupSequence[0]
    assert int(fg.NumberOfFractionsPlanned) == 20
    mus = [float(rb.BeamMeterset) for rb in fg.ReferencedBeamSequence]
    assert mus == pytest.approx([100.0 / 3.0 + 21.7, 40.0], rel=1e-12)
    # no dose point given: no BeamDose (not a prescription share that would pass for a dose), no DeliveryMaximumDose
    assert all("BeamDose" not in rb for rb in fg.ReferencedBeamSequence)
    assert len(ds.DoseReferenceSequence) == 1 and "DeliveryMaximumDose" not in dr
    # two different apertures: DYNAMIC; one aperture (the 0-MU segment left out): STATIC
    assert [b.BeamType for b in ds.BeamSequence] == ["DYNAMIC", "STATIC"]
    b = ds.BeamSequence[1]
    assert b.TreatmentMachineName == MACHINE.name and float(b.SourceAxisDistance) == MACHINE.sad_mm
    kinds = [d.RTBeamLimitingDeviceType for d in b.BeamLimitingDeviceSequence]
    assert kinds == ["ASYMX", "ASYMY", "MLCX"]
    assert np.allclose([float(v) for v in b.BeamLimitingDeviceSequence[2].LeafPositionBoundaries], BND)
    # the 0-MU segment is left out: one segment, two control points
    assert int(b.NumberOfControlPoints) == 2 and len(b.ControlPointSequence) == 2
    cp0, cp1 = b.ControlPointSequence
    assert float(cp0.GantryAngle) == 120.0 and float(cp0.BeamLimitingDeviceAngle) == 350.0
    assert cp0.GantryRotationDirection == "NONE" and float(cp0.NominalBeamEnergy) == 6.0
    assert float(cp1.CumulativeMetersetWeight) == float(b.FinalCumulativeMetersetWeight) == 1.0
    w = [float(cp.CumulativeMetersetWeight) for cp in ds.BeamSequence[0].ControlPointSequence]
    assert w == sorted(w) and w[0] == 0.0 and w[1] == w[2]
    assert w[1] == pytest.approx((100.0 / 3.0) / (100.0 / 3.0 + 21.7), rel=1e-9)
    assert check_rtplan_attributes(ds) == []


def test_ds_values_fit_16_characters(case):
    raw = case["path"].read_bytes()
    ds = pydicom.dcmread(case["path"])

    def walk(d):
        for e in d:
            if e.VR == "SQ":
                for it in e.value:
                    yield from walk(it)
            elif e.VR == "DS" and e.value is not None:
                vals = e.value if e.VM > 1 else [e.value]
                yield from (v.original_string or str(v) for v in vals)

    lengths = [len(s) for s in walk(ds)]
    assert lengths and max(lengths) <= 16
    assert b"0.3333333333333" in raw  # the isocentre kept as many digits as fit


def test_dciodvfy_accepts_rtplan(case):
    errors = run_dciodvfy(case["path"])
    if errors is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    assert errors == []


def test_read_back_gives_the_same_plan(case):
    plan = case["plan"]
    back = read_rtplan(case["path"], machine=MACHINE)
    assert back.fractions == 20 and back.label == "roundtrip"
    assert back.frame_of_reference_uid == case["image"].frame_of_reference_uid
    assert back.patient_position == "HFS" and back.prescription == {"target": "PTV", "dose_gy": 60.0}
    assert [b.name for b in back.beams] == ["G0", "G120"]
    for b0, b1 in zip(plan.beams, back.beams):
        assert (b1.gantry_deg, b1.collimator_deg, b1.couch_deg, b1.energy) == (b0.gantry_deg, b0.collimator_deg, b0.couch_deg, "6X")
        assert np.allclose(b1.isocenter_lps, b0.isocenter_lps, atol=1e-12)
        segs0 = [s for s in b0.segments if s.mu > 0]
        assert len(b1.segments) == len(segs0)
        for s0, s1 in zip(segs0, b1.segments):
            assert s1.mu == pytest.approx(s0.mu, rel=1e-9)
            assert np.array_equal(s1.leaf_positions, s0.leaf_positions)
            assert s1.jaws == s0.jaws


def test_round_trip_dose_agrees_within_0p1_percent(case):
    ct = case["image"].volume
    d0 = dose(ct, case["plan"], MACHINE, dose_grid_mm=4.0)
    d1 = dose(ct, read_rtplan(case["path"], machine=MACHINE), MACHINE, dose_grid_mm=4.0)
    top = float(d0.array.max())
    assert top > 1.0  # a real dose, Gy
    assert float(np.abs(d1.array - d0.array).max()) <= 1e-3 * top


def _edit(case, tmp_path, fn, name="edited.dcm"):
    ds = pydicom.dcmread(case["path"])
    fn(ds)
    p = tmp_path / name
    ds.save_as(p, enforce_file_format=True)
    return p


def test_non_monotonic_weights_are_refused(case, tmp_path):
    def f(ds):
        ds.BeamSequence[0].ControlPointSequence[2].CumulativeMetersetWeight = "0.1"

    p = _edit(case, tmp_path, f)
    with pytest.raises(DicomError, match=r"G0.*decreases") as exc:
        read_rtplan(p, machine=MACHINE)
    assert str(p) in str(exc.value)


def test_leaf_beyond_opposite_leaf_is_refused(case, tmp_path):
    def f(ds):
        cp = ds.BeamSequence[1].ControlPointSequence[0]
        mlc = cp.BeamLimitingDevicePositionSequence[2]
        v = [float(x) for x in mlc.LeafJawPositions]
        v[30] = v[30 + N] + 5.0
        mlc.LeafJawPositions = [str(x) for x in v]

    p = _edit(case, tmp_path, f)
    with pytest.raises(DicomError, match=r"G120.*leaf pair 31.*beyond"):
        read_rtplan(p, machine=MACHINE)


def test_static_beam_with_moving_leaves_is_refused_and_arcs_too(case, tmp_path):
    def moving(ds):
        mlc = ds.BeamSequence[1].ControlPointSequence[1].BeamLimitingDevicePositionSequence[2]
        v = [float(x) for x in mlc.LeafJawPositions]
        v[N + 30] += 3.0
        mlc.LeafJawPositions = [str(x) for x in v]

    p = _edit(case, tmp_path, moving, "moving.dcm")
    assert pydicom.dcmread(p).BeamSequence[1].BeamType == "STATIC"
    with pytest.raises(DicomError, match="move while the beam is on.*STATIC"):
        read_rtplan(p, machine=MACHINE)

    def arc(ds):
        ds.BeamSequence[1].BeamType = "DYNAMIC"
        ds.BeamSequence[1].ControlPointSequence[1].GantryAngle = "130"

    p = _edit(case, tmp_path, arc, "arc.dcm")
    with pytest.raises(DicomError, match="G120.*gantry angle moves.*arcs"):
        read_rtplan(p, machine=MACHINE)


def test_sliding_window_dynamic_beam_is_discretised_exactly(case, tmp_path):
    """A 10 mm window sweeping 30 mm: the point x=0 sees one third of the MU, x=-15 one sixth."""

    def f(ds):
        b = ds.BeamSequence[1]
        b.BeamType = "DYNAMIC"
        cp0, cp1 = b.ControlPointSequence
        for cp, (a, c) in ((cp0, (-20.0, -10.0)), (cp1, (10.0, 20.0))):
            mlc = cp.BeamLimitingDevicePositionSequence[2]
            mlc.LeafJawPositions = [str(a)] * N + [str(c)] * N
            cp.BeamLimitingDevicePositionSequence[0].LeafJawPositions = ["-30", "30"]

    p = _edit(case, tmp_path, f)
    beam = read_rtplan(p, machine=MACHINE).beams[1]
    mu = 40.0
    assert beam.total_mu == pytest.approx(mu, rel=1e-12)
    assert len(beam.segments) == 30  # 30 mm of travel, at most 1 mm per segment

    def exposure(x):
        return sum(s.mu for s in beam.segments if s.leaf_positions[0, 30] < x < s.leaf_positions[1, 30])

    assert exposure(0.0) == pytest.approx(mu / 3.0, rel=0.04)
    assert exposure(-15.0) == pytest.approx(mu / 6.0, rel=0.1)
    assert exposure(25.0) == 0.0


def test_asymy_only_machine_reads(case, tmp_path):
    def f(ds):
        for b in ds.BeamSequence:
            b.BeamLimitingDeviceSequence = pydicom.Sequence([d for d in b.BeamLimitingDeviceSequence if d.RTBeamLimitingDeviceType != "ASYMX"])
            for cp in b.ControlPointSequence:
                cp.BeamLimitingDevicePositionSequence = pydicom.Sequence(
                    [d for d in cp.BeamLimitingDevicePositionSequence if d.RTBeamLimitingDeviceType != "ASYMX"]
                )

    p = _edit(case, tmp_path, f)
    back = read_rtplan(p, machine=MACHINE)
    s0 = [s for s in case["plan"].beams[0].segments if s.mu > 0][0]
    s1 = back.beams[0].segments[0]
    assert np.array_equal(s1.leaf_positions, s0.leaf_positions)
    x1, x2, y1, y2 = s1.jaws
    assert (y1, y2) == s0.jaws[2:] and x1 < s0.leaf_positions[0].min() and x2 > s0.leaf_positions[1].max()


def test_plan_for_another_mlc_is_refused_with_the_machine(case, tmp_path):
    def f(ds):
        dev = ds.BeamSequence[0].BeamLimitingDeviceSequence[2]
        dev.LeafPositionBoundaries = [f"{v * 1.1:.3f}" for v in BND]

    p = _edit(case, tmp_path, f)
    with pytest.raises(DicomError, match="G0.*not the machine model"):
        read_rtplan(p, machine=MACHINE)
    assert len(read_rtplan(p).beams) == 2  # without a machine the plan is read as it is


def test_pydicom_rtplan_open_field():
    path = get_testdata_file("rtplan.dcm")
    with pytest.raises(DicomError, match="Field 1.*no MLC"):
        read_rtplan(path)
    plan = read_rtplan(path, machine=MACHINE)
    assert plan.fractions == 30 and plan.machine_name == "unit001"
    (b,) = plan.beams
    assert b.name == "Field 1" and b.energy == "6X" and b.gantry_deg == 0.0
    assert b.total_mu == pytest.approx(116.0036697)
    assert np.allclose(b.isocenter_lps, [235.711172833292, 244.135437110782, -724.97815409918])
    (s,) = b.segments
    assert s.jaws == (-100.0, 100.0, -100.0, 100.0)
    assert np.all(s.leaf_positions[0] == -100.0) and np.all(s.leaf_positions[1] == 100.0)
    assert plan.frame_of_reference_uid == ""  # none in the file
    assert plan.prescription["dose_gy"] == pytest.approx(30.826203)


def test_writer_validates_inputs(case, tmp_path):
    image = case["image"]
    with pytest.raises(InputError, match="label"):
        write_rtplan(case["plan"], image, case["tmp"] / "RS.dcm", tmp_path / "x.dcm", machine=MACHINE, label="a" * 17)
    bad = copy.deepcopy(case["plan"])
    bad.beams[0].segments = [Segment(np.zeros((2, 10)), (-1, 1, -1, 1), 5.0)]
    with pytest.raises(InputError, match="leaf pairs"):
        write_rtplan(bad, image, case["tmp"] / "RS.dcm", tmp_path / "x.dcm", machine=MACHINE)
    bad.beams[0].segments = []
    with pytest.raises(InputError, match="no segment"):
        write_rtplan(bad, image, case["tmp"] / "RS.dcm", tmp_path / "x.dcm", machine=MACHINE)
    assert not (tmp_path / "x.dcm").exists()
