"""Foreign RT Plans computed by ``art dose`` / :func:`art.recalculate.recalculate` with the machine library:
mixed 6X/10X with a sliding-window beam (60-pair MLC), an Agility-like plan (ASYMY + 80-pair MLCX),
a 6FFF plan; an unknown energy refused, then computed with ``--machine FILE``.

The plans are built here with pydicom as another planning system would write them.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from art.dose import dose, load_library, load_machine, load_mlc
from art.dose.machine import DATA_DIR
from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io import PatientInfo, write_image_series, write_rtstruct
from art.io.rtdose import read_rtdose
from art.io.rtplan import RT_PLAN_STORAGE, read_rtplan
from art.io.uids import new_uid
from art.plan import Plan
from art.recalculate import recalculate
from art.structures import Structure, StructureSet
from art_cli.app import run

SIX = load_machine()
TENX = load_machine(DATA_DIR / "generic_10x.json")
FFF = load_machine(DATA_DIR / "generic_6fff.json")
AGILITY = load_mlc(DATA_DIR / "mlc_agility80.json")
MIL_BND = SIX.mlc.boundaries_mm
AGI_BND = AGILITY.boundaries_mm


def _ds(**kw) -> Dataset:
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _leaves(bnd, x1, x2, y=(-30.0, 30.0)):
    """Leaves open over x1..x2 for the pairs inside y, closed at x1 elsewhere (DICOM order: bank X1 then X2)."""
    c = 0.5 * (bnd[:-1] + bnd[1:])
    inside = (c > y[0]) & (c < y[1])
    return [f"{v:g}" for v in np.concatenate([np.full(c.size, x1), np.where(inside, x2, x1)])]


def _beam(number, name, mv, gantry, cps, *, bnd=MIL_BND, jaws=("ASYMX", "ASYMY"), fff=False, dynamic=False, mu=80.0, tmn="TrueBeam1"):
    """A BeamSequence item; ``cps``: per control point (weight, x jaws or None, y jaws or None, (x1, x2) leaf opening)."""
    item = _ds(BeamNumber=number, BeamName=name, BeamType="DYNAMIC" if dynamic else "STATIC", RadiationType="PHOTON",
               TreatmentMachineName=tmn, SourceAxisDistance="1000", TreatmentDeliveryType="TREATMENT", ReferencedPatientSetupNumber=1,
               NumberOfWedges=0, NumberOfCompensators=0, NumberOfBoli=0, NumberOfBlocks=0, PrimaryDosimeterUnit="MU",
               FinalCumulativeMetersetWeight="1", NumberOfControlPoints=len(cps))  # fmt: skip
    if fff:
        item.PrimaryFluenceModeSequence = [_ds(FluenceMode="NON_STANDARD", FluenceModeID="FFF")]
    devs = [_ds(RTBeamLimitingDeviceType=j, NumberOfLeafJawPairs=1) for j in jaws]
    devs.append(_ds(RTBeamLimitingDeviceType="MLCX", NumberOfLeafJawPairs=bnd.size - 1, LeafPositionBoundaries=[f"{v:g}" for v in bnd]))
    item.BeamLimitingDeviceSequence = devs
    seq = []
    for i, (w, x, y, (x1, x2)) in enumerate(cps):
        cp = _ds(ControlPointIndex=i, CumulativeMetersetWeight=f"{w:g}")
        pos = []
        if x is not None and "ASYMX" in jaws:
            pos.append(_ds(RTBeamLimitingDeviceType="ASYMX", LeafJawPositions=[f"{v:g}" for v in x]))
        if y is not None:
            pos.append(_ds(RTBeamLimitingDeviceType="ASYMY", LeafJawPositions=[f"{v:g}" for v in y]))
        pos.append(_ds(RTBeamLimitingDeviceType="MLCX", LeafJawPositions=_leaves(bnd, x1, x2)))
        cp.BeamLimitingDevicePositionSequence = pos
        if i == 0:
            cp.NominalBeamEnergy = f"{mv:g}"
            cp.GantryAngle, cp.BeamLimitingDeviceAngle, cp.PatientSupportAngle = f"{gantry:g}", "0", "0"
            cp.IsocenterPosition = ["0", "0", "0"]
            cp.DoseRateSet = "600"
        seq.append(cp)
    item.ControlPointSequence = seq
    return item, mu


def _static(x=(-30.0, 30.0), y=(-30.0, 30.0), opening=(-25.0, 25.0)):
    return [(0.0, x, y, opening), (1.0, None, None, opening)]


def write_plan(path, image, beams, *, label="foreign") -> None:
    """An RT Plan as another planning system writes it (one fraction group, HFS setup)."""
    ds = _ds(SOPClassUID=RT_PLAN_STORAGE, SOPInstanceUID=new_uid(), Modality="RTPLAN", RTPlanLabel=label,
             FrameOfReferenceUID=image.frame_of_reference_uid, StudyInstanceUID=image.study_instance_uid, SeriesInstanceUID=new_uid(),
             PatientID="FOREIGN1", PatientName="Foreign^Plan")  # fmt: skip
    ds.PatientSetupSequence = [_ds(PatientSetupNumber=1, PatientPosition="HFS")]
    ds.BeamSequence = [b for b, _ in beams]
    refs = [_ds(ReferencedBeamNumber=b.BeamNumber, BeamMeterset=f"{mu:g}") for b, mu in beams]
    ds.FractionGroupSequence = [_ds(FractionGroupNumber=1, NumberOfFractionsPlanned=5, NumberOfBeams=len(beams), ReferencedBeamSequence=refs)]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RT_PLAN_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("foreign")
    g = Grid((16, 30, 30), (5.0, 5.0, 5.0), (-72.5, -72.5, -37.5))
    z, y, x = np.indices(g.shape)
    body = (y - 14.5) ** 2 + (x - 14.5) ** 2 < 13**2
    image = write_image_series(Volume(np.where(body, 0.0, -1000.0).astype(np.float32), g), tmp / "ct", patient=PatientInfo(name="F^P", id="F1"))
    ptv = np.zeros(g.shape, bool)
    ptv[6:10, 12:18, 12:18] = True
    ss = StructureSet(g, [Structure("BODY", body, g, roi_type="EXTERNAL"), Structure("PTV", ptv, g, roi_type="PTV")])
    write_rtstruct(ss, image, tmp / "RS.dcm")
    sweep = [(0.0, (-35.0, 35.0), (-30.0, 30.0), (-30.0, -20.0)), (1.0, None, None, (20.0, 30.0))]
    plans = {
        "mixed": [_beam(1, "6X-A", 6, 0, _static()), _beam(2, "6X-SW", 6, 90, sweep, dynamic=True, mu=150.0),
                  _beam(3, "10X-A", 10, 180, _static()), _beam(4, "10X-B", 10, 270, _static(opening=(-15.0, 20.0)))],
        "agility": [_beam(k + 1, f"AG{k}", 6, g_, _static(x=None), bnd=AGI_BND, jaws=("ASYMY",), tmn="Agility") for k, g_ in enumerate((0, 120, 240))],
        "fff": [_beam(1, "F0", 6, 0, _static(), fff=True, tmn="TrueBeam1"), _beam(2, "F180", 6, 180, _static(), fff=True)],
        "15x": [_beam(1, "B1", 6, 0, _static()), _beam(2, "B2", 15, 180, _static())],
    }  # fmt: skip
    for key, beams in plans.items():
        write_plan(tmp / f"RP_{key}.dcm", image, beams)
    return {"tmp": tmp, "image": image, "structures": ss}


def _args(case, key, out, *extra):
    t = case["tmp"]
    return ["dose", "--ct", str(t / "ct"), "--plan", str(t / f"RP_{key}.dcm"), "--structures", str(t / "RS.dcm"), "--out", str(out), *extra]


def _engine_dose(case, plan, machines):
    """The plan's course dose, beam by beam with the machine given for it (an independent path to the engine)."""
    total = None
    for b, m in zip(plan.beams, machines):
        d = dose(case["image"].volume, Plan([b], plan.fractions, "x", patient_position=plan.patient_position), m, structures=case["structures"])
        total = d.array if total is None else total + d.array
    return total


def _check_rtdose(out, ref):
    got = read_rtdose(out / "RTDOSE.dcm").array
    assert np.abs(got - ref).max() <= 2e-3 * float(ref.max())


def test_mixed_energies_with_a_sliding_window_beam(case, tmp_path, capsys):
    out = tmp_path / "mixed"
    assert run(_args(case, "mixed", out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    beams = summary["plan"]["beams"]
    assert [b["energy"] for b in beams] == ["6X", "6X", "10X", "10X"]
    assert [b["machine"]["file"] for b in beams] == ["generic_6x.json"] * 2 + ["generic_10x.json"] * 2
    assert [b["machine"]["sha256"] for b in beams] == [SIX.digest] * 2 + [TENX.digest] * 2
    assert all(b["machine"]["mlc_model"] is None for b in beams)  # the machines' own 60-pair MLC
    assert beams[1]["segments"] >= 40 and beams[1]["mu"] == pytest.approx(150.0)  # 50 mm sweep, <= 1 mm per segment
    assert summary["provenance"]["inputs"]["machine_files"] == {"generic_6x.json": SIX.digest, "generic_10x.json": TENX.digest}
    plan = read_rtplan(case["tmp"] / "RP_mixed.dcm")
    np.testing.assert_allclose(plan.beams[0].leaf_boundaries_mm, MIL_BND)
    ref = _engine_dose(case, plan, [SIX, SIX, TENX, TENX])
    _check_rtdose(out, ref)
    # computed with 6X throughout, the 10X beams would give another dose
    as_six = Plan([dataclasses.replace(b, energy="6X") for b in plan.beams], plan.fractions, "x")
    assert np.abs(_engine_dose(case, as_six, [SIX] * 4) - ref).max() > 0.02 * float(ref.max())


def test_agility_like_plan_asymy_and_80_leaf_pairs(case, tmp_path):
    out = tmp_path / "agility"
    summary = recalculate(case["tmp"] / "ct", case["tmp"] / "RP_agility.dcm", out, structures_path=case["tmp"] / "RS.dcm")
    for b in summary["plan"]["beams"]:
        assert b["machine"]["file"] == "generic_6x.json"
        assert b["machine"]["mlc_model"] == {"name": "Agility80-like", "file": "mlc_agility80.json", "sha256": AGILITY.digest, "n_pairs": 80}
    plan = read_rtplan(case["tmp"] / "RP_agility.dcm")
    s = plan.beams[0].segments[0]
    assert s.leaf_positions.shape == (2, 80) and s.jaws[0] < -25.0 and s.jaws[1] > 25.0  # no X jaws: just outside the leaves
    _check_rtdose(out, _engine_dose(case, plan, [dataclasses.replace(SIX, mlc=AGILITY)] * 3))
    ptv = [r for r in summary["structures"] if r["structure"] == "PTV"][0]
    assert ptv["Dmean"] > 0.8 * summary["dose"]["max_gy"]
    with pytest.raises(DicomError, match="AG0.*not the machine model"):  # one 60-pair machine cannot compute it
        read_rtplan(case["tmp"] / "RP_agility.dcm", machine=SIX)


def test_fff_plan(case, tmp_path):
    out = tmp_path / "fff"
    summary = recalculate(case["tmp"] / "ct", case["tmp"] / "RP_fff.dcm", out)
    assert [b["energy"] for b in summary["plan"]["beams"]] == ["6FFF", "6FFF"]
    assert {b["machine"]["file"] for b in summary["plan"]["beams"]} == {"generic_6fff.json"}
    assert summary["provenance"]["parameters"]["machine"] == "Generic6FFF"
    plan = read_rtplan(case["tmp"] / "RP_fff.dcm")
    g = read_rtdose(out / "RTDOSE.dcm")
    ref = None
    for b in plan.beams:
        d = dose(case["image"].volume, Plan([b], plan.fractions, "x"), FFF).array
        ref = d if ref is None else ref + d
    assert np.abs(g.array - ref).max() <= 2e-3 * float(ref.max())


def test_unknown_energy_is_refused_then_computed_with_machine_option(case, tmp_path, capsys):
    out = tmp_path / "r15"
    assert run(_args(case, "15x", out)) == 1
    err = capsys.readouterr().err
    assert "RP_15x.dcm" in err and "beam 'B2': energy 15X has no machine file in the library (6X, 10X, 6FFF); give one with --machine FILE" in err
    assert not out.exists()
    # --machine adds a 15X file; repeated, a clinic's 6X file replacing the shipped 6X machine
    files = {}
    for fname, source, changes in (("clinic15x.json", "generic_10x.json", {"name": "Clinic15X", "energy": "15X"}),
                                   ("clinic6x.json", "generic_6x.json", {"name": "Clinic6X", "aliases": ["TrueBeam1"]})):  # fmt: skip
        data = json.loads((DATA_DIR / source).read_text())
        data.update(changes)
        files[fname] = tmp_path / fname
        files[fname].write_text(json.dumps(data))
    assert run(_args(case, "15x", out, "--machine", str(files["clinic15x.json"]), "--machine", str(files["clinic6x.json"]))) == 0
    summary = json.loads((out / "summary.json").read_text())
    b1, b2 = summary["plan"]["beams"]
    assert (b1["machine"]["name"], b1["machine"]["file"]) == ("Clinic6X", "clinic6x.json")
    assert (b2["machine"]["name"], b2["machine"]["file"]) == ("Clinic15X", "clinic15x.json")
    assert b2["machine"]["sha256"] == load_machine(files["clinic15x.json"]).digest
    assert summary["provenance"]["inputs"]["machine_files"] == {"clinic6x.json": b1["machine"]["sha256"], "clinic15x.json": b2["machine"]["sha256"]}


def test_read_rtplan_with_a_library(case):
    lib = load_library()
    plan = read_rtplan(case["tmp"] / "RP_agility.dcm", machine=lib)
    np.testing.assert_allclose(plan.beams[0].leaf_boundaries_mm, AGI_BND)
    with pytest.raises(InputError, match="beam 'B2': energy 15X has no machine file"):
        read_rtplan(case["tmp"] / "RP_15x.dcm", machine=lib)
    assert read_rtplan(case["tmp"] / "RP_15x.dcm").beams[1].energy == "15X"  # without a machine: read as it is
    # a plan without an MLC gets the leaves of the library's machine for its energy
    from pydicom.data import get_testdata_file

    open_field = read_rtplan(get_testdata_file("rtplan.dcm"), machine=lib)
    np.testing.assert_array_equal(open_field.beams[0].leaf_boundaries_mm, SIX.mlc.boundaries_mm)
