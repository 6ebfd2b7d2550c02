"""RT Plan attributes that must say something true (issue 16, item 4).

BeamType follows the control points (DYNAMIC when jaws or leaves change between them);
BeamDose is a dose computed by the engine at a stated point (a COORDINATES dose reference),
never a share of the prescription; the control points carry CumulativeDoseReferenceCoefficient;
DeliveryMaximumDose only when one is given. Checked with dciodvfy, art's attribute check and
art's reader (also for other systems' STATIC and DYNAMIC step-and-shoot beams).
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from art.dose import dose, load_machine
from art.errors import InputError
from art.geometry import Grid, Volume
from art.io import PatientInfo, write_image_series, write_rtstruct
from art.io.rtplan import BeamDoseReference, read_rtplan, write_rtplan
from art.io.validate import check_rtplan_attributes, run_dciodvfy
from art.plan import Beam, Plan, Segment
from art.results import beam_dose_reference, dose_reference_point
from art.structures import Structure, StructureSet

MACHINE = load_machine()
N = MACHINE.mlc.n_pairs
BND = MACHINE.mlc.boundaries_mm
ISO = (2.0, -3.0, 4.0)


def segment(x1, x2, mu, *, y=(-30.0, 30.0)):
    """Leaves open over x1..x2 (mm at the isocentre) for the pairs inside y, closed at x1 elsewhere."""
    lp = np.zeros((2, N))
    centres = 0.5 * (BND[:-1] + BND[1:])
    inside = (centres > y[0]) & (centres < y[1])
    lp[0] = x1
    lp[1] = np.where(inside, x2, x1)
    return Segment(lp, (x1 - 5.0, x2 + 5.0, y[0], y[1]), mu)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A water cylinder with a cubic PTV about the isocentre; beams of one and of several apertures."""
    tmp = tmp_path_factory.mktemp("rtplan_semantics")
    g = Grid((30, 48, 48), (4.0, 4.0, 4.0), (-94.0, -94.0, -58.0))
    z, y, x = np.indices(g.shape)
    body = (y - 23.5) ** 2 + (x - 23.5) ** 2 < 21**2
    ct = np.where(body, 0.0, -1000.0).astype(np.float32)
    image = write_image_series(Volume(ct, g), tmp / "ct", patient=PatientInfo(name="Test^Semantics", id="P2"))
    ptv = np.zeros(g.shape, bool)
    ptv[12:19, 20:28, 20:28] = True
    ss = StructureSet(g, [Structure("BODY", body, g, roi_type="EXTERNAL"), Structure("PTV", ptv, g, roi_type="PTV")])
    write_rtstruct(ss, image, tmp / "RS.dcm")
    plan = Plan(
        [
            # three apertures: the first two cover the isocentre, the third (x in 20..40 mm) does not
            Beam("G0", 0.0, isocenter_lps=ISO, segments=[segment(-25, 25, 60.0), segment(-10, 10, 30.0), segment(20, 40, 25.0)]),
            Beam("G90", 90.0, isocenter_lps=ISO, segments=[segment(-20, 20, 80.0)]),  # one aperture
            Beam("G270", 270.0, isocenter_lps=ISO, segments=[segment(-20, 20, 40.0), segment(-20, 20, 35.0)]),  # the same aperture twice
        ],
        fractions=20,
        machine_name=MACHINE.name,
    )
    ref = beam_dose_reference(image.volume, plan, MACHINE, ss, "PTV")
    path = tmp / "RP.dcm"
    write_rtplan(plan, image, tmp / "RS.dcm", path, machine=MACHINE, label="semantics", prescription_gy=60.0, target_name="PTV", dose_reference=ref)
    return {"tmp": tmp, "image": image, "plan": plan, "structures": ss, "ref": ref, "path": path, "ds": pydicom.dcmread(path)}


def pt_description(ds):
    return ds.DoseReferenceSequence[1].DoseReferenceDescription


def test_beam_type_follows_the_apertures(case):
    assert [b.BeamType for b in case["ds"].BeamSequence] == ["DYNAMIC", "STATIC", "STATIC"]


def test_beam_dose_is_the_engines_dose_at_the_stated_point(case):
    ds, plan = case["ds"], case["plan"]
    # the point: the isocentre, inside the PTV
    point, description = dose_reference_point(plan, case["structures"], "PTV")
    np.testing.assert_allclose(point, ISO)
    assert "isocentre" in description and pt_description(ds) == description
    target, pt = ds.DoseReferenceSequence
    assert target.DoseReferenceStructureType == "VOLUME" and float(target.TargetPrescriptionDose) == 60.0
    assert "DeliveryMaximumDose" not in target  # the protocol defines none: not made up
    assert pt.DoseReferenceStructureType == "COORDINATES" and pt.DoseReferenceType == "TARGET"
    np.testing.assert_allclose([float(v) for v in pt.DoseReferencePointCoordinates], ISO, atol=1e-9)
    fg = ds.FractionGroupSequence[0]
    assert [int(r.ReferencedDoseReferenceNumber) for r in fg.ReferencedDoseReferenceSequence] == [1, 2]
    beam_dose = [float(rb.BeamDose) for rb in fg.ReferencedBeamSequence]
    for rb in fg.ReferencedBeamSequence:
        assert rb.ReferencedDoseReferenceUID == pt.DoseReferenceUID
    # independent of the writer: the full engine's dose of each beam alone, interpolated at the point
    for b, bd in zip(plan.beams, beam_dose):
        alone = dose(case["image"].volume, Plan([b], fractions=1, machine_name=MACHINE.name), MACHINE, dose_grid_mm=None, per_fraction=True)
        k = alone.grid.lps_to_index(np.asarray(ISO)[None, :])[0]
        from scipy.ndimage import map_coordinates

        at_point = float(map_coordinates(alone.array, k[:, None], order=1)[0])
        assert bd == pytest.approx(at_point, rel=0.02), b.name
        assert 0.2 < bd < 2.0  # Gy per fraction from 75-90 MU of 6 MV at ~9 cm depth
    # the sum over beams and fractions is the plan's dose at the point, not the prescription
    assert sum(beam_dose) * plan.fractions != pytest.approx(60.0, rel=0.05)


def test_cumulative_dose_reference_coefficients_follow_the_segments_dose(case):
    ds, ref = case["ds"], case["ref"]
    g0 = ds.BeamSequence[0]
    c = [float(cp.ReferencedDoseReferenceSequence[0].CumulativeDoseReferenceCoefficient) for cp in g0.ControlPointSequence]
    assert all(int(cp.ReferencedDoseReferenceSequence[0].ReferencedDoseReferenceNumber) == 2 for cp in g0.ControlPointSequence)
    d = np.asarray(ref.segment_dose_gy["G0"])
    expected = np.cumsum(d) / d.sum()
    assert c[0] == 0.0 and c[-1] == 1.0
    np.testing.assert_allclose(c[1::2], expected, atol=1e-9)  # after each segment
    np.testing.assert_allclose(c[2::2], expected[:-1], atol=1e-9)  # a segment starts where the previous ended
    # the third aperture (20..40 mm) misses the isocentre: it adds little dose there though it has 25 MU
    assert d[2] < 0.1 * d[0] and c[-1] - c[-2] < 0.1
    w = [float(cp.CumulativeMetersetWeight) for cp in g0.ControlPointSequence]
    assert w[-1] - w[-2] == pytest.approx(25.0 / 115.0, rel=1e-9)  # meterset share differs from the dose share


def test_dciodvfy_and_the_attribute_check_accept_it(case):
    assert check_rtplan_attributes(case["ds"]) == []
    errors = run_dciodvfy(case["path"])
    if errors is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    assert errors == []


def test_arts_reader_reads_it_back_and_reads_other_systems_static_and_dynamic_step_and_shoot(case, tmp_path):
    back = read_rtplan(case["path"], machine=MACHINE)
    for b0, b1 in zip(case["plan"].beams, back.beams):
        assert [s.mu for s in b1.segments] == pytest.approx([s.mu for s in b0.segments], rel=1e-9)
        for s0, s1 in zip(b0.segments, b1.segments):
            assert np.array_equal(s0.leaf_positions, s1.leaf_positions) and s0.jaws == s1.jaws
    # another system may call a multi-segment step-and-shoot beam STATIC (leaves move only while the beam is off)
    ds = pydicom.dcmread(case["path"])
    for b in ds.BeamSequence:
        b.BeamType = "STATIC"
    ds.save_as(tmp_path / "static.dcm", enforce_file_format=True)
    static = read_rtplan(tmp_path / "static.dcm", machine=MACHINE)
    assert [len(b.segments) for b in static.beams] == [3, 1, 2]
    assert [s.mu for s in static.beams[0].segments] == pytest.approx([60.0, 30.0, 25.0], rel=1e-9)
    for b in ds.BeamSequence:
        b.BeamType = "DYNAMIC"
    ds.save_as(tmp_path / "dynamic.dcm", enforce_file_format=True)
    assert [len(b.segments) for b in read_rtplan(tmp_path / "dynamic.dcm", machine=MACHINE).beams] == [3, 1, 2]


def test_the_attribute_check_flags_a_false_beam_type_and_a_beam_dose_at_no_point(case):
    ds = pydicom.dcmread(case["path"])
    ds.BeamSequence[0].BeamType = "STATIC"  # its apertures change
    ds.BeamSequence[1].BeamType = "DYNAMIC"  # one aperture
    del ds.FractionGroupSequence[0].ReferencedBeamSequence[2].ReferencedDoseReferenceUID
    ds.BeamSequence[2].ControlPointSequence[1].ReferencedDoseReferenceSequence[0].CumulativeDoseReferenceCoefficient = "1.5"
    text = "\n".join(check_rtplan_attributes(ds))
    assert "beam 1 (G0): BeamType STATIC but the jaws or leaves change" in text
    assert "beam 2 (G90): BeamType DYNAMIC but no jaw or leaf changes" in text
    assert "beam 3: BeamDose without a ReferencedDoseReferenceUID" in text
    assert "beam 3 (G270): CumulativeDoseReferenceCoefficient" in text


def test_without_a_dose_point_no_beam_dose_and_delivery_maximum_only_when_given(case, tmp_path):
    p = tmp_path / "plain.dcm"
    ds = write_rtplan(case["plan"], case["image"], case["tmp"] / "RS.dcm", p, machine=MACHINE, prescription_gy=60.0, target_name="PTV",
                      delivery_maximum_gy=66.0)  # fmt: skip
    assert all("BeamDose" not in rb for rb in ds.FractionGroupSequence[0].ReferencedBeamSequence)
    assert all("ReferencedDoseReferenceSequence" not in cp for b in ds.BeamSequence for cp in b.ControlPointSequence)
    assert float(ds.DoseReferenceSequence[0].DeliveryMaximumDose) == 66.0 and len(ds.DoseReferenceSequence) == 1
    assert check_rtplan_attributes(ds) == []


def test_a_dose_reference_that_does_not_fit_the_plan_is_refused(case, tmp_path):
    ref = case["ref"]
    bad = BeamDoseReference(ref.point_lps, {**ref.segment_dose_gy, "G0": [0.5, 0.2]})  # G0 has three segments
    with pytest.raises(InputError, match="G0"):
        write_rtplan(case["plan"], case["image"], case["tmp"] / "RS.dcm", tmp_path / "x.dcm", machine=MACHINE, dose_reference=bad)
    with pytest.raises(InputError, match="point_lps"):
        write_rtplan(case["plan"], case["image"], case["tmp"] / "RS.dcm", tmp_path / "x.dcm", machine=MACHINE,
                     dose_reference=BeamDoseReference((0.0, float("nan"), 0.0), ref.segment_dose_gy))  # fmt: skip
    with pytest.raises(InputError, match="delivery_maximum_gy"):
        write_rtplan(case["plan"], case["image"], case["tmp"] / "RS.dcm", tmp_path / "x.dcm", machine=MACHINE, delivery_maximum_gy=-1.0)
    assert not (tmp_path / "x.dcm").exists()


def test_the_point_is_in_the_target_when_the_isocentre_is_not(case):
    far = Plan([Beam("G0", 0.0, isocenter_lps=(60.0, 0.0, 0.0), segments=[segment(-10, 10, 10.0)])], fractions=1, machine_name=MACHINE.name)
    point, description = dose_reference_point(far, case["structures"], "PTV")
    ptv = case["structures"]["PTV"]
    k = np.round(ptv.grid.lps_to_index(point[None, :])[0]).astype(int)
    assert ptv.mask[tuple(k)] and "PTV" in description
    assert np.linalg.norm(point - ptv.centroid_lps()) <= 4.0  # the voxel nearest the centroid
    assert dose_reference_point(far, case["structures"], "CTV") is None  # no such target: no BeamDose


def test_segment_doses_by_direct_summation_agree_with_the_engine(case):
    """The segments' shares (coefficients) come from direct kernel summation: within 1 % of the engine, segment by segment."""
    import dataclasses

    from art.dose.calc import beam_dose_at, segment_doses_at
    from art.dose.machine import hu_to_density

    density = Volume(hu_to_density(case["image"].volume.array), case["image"].volume.grid)
    b = case["plan"].beams[0]
    direct = segment_doses_at(density, b, MACHINE, np.asarray(ISO))
    engine = np.array([beam_dose_at(density, dataclasses.replace(b, segments=[s]), MACHINE, np.asarray(ISO)[None, :])[0] for s in b.segments])
    np.testing.assert_allclose(direct, engine, atol=0.01 * engine.max())
    np.testing.assert_allclose(case["ref"].segment_dose_gy["G0"], direct / direct.sum() * beam_dose_at(density, b, MACHINE, np.asarray(ISO)[None, :])[0],
                               rtol=1e-6)  # fmt: skip
