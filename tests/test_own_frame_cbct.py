"""A CBCT in its own frame of reference, linked by the imaging system's REG, re-plans like one in the CT's frame
(issue 16, item 6). Slow: two full ``art replan`` runs on a coarse phantom.

The phantom's CBCT (which shares the planning CT's frame) is rewritten into a new frame
of reference with its patient coordinates shifted by a known offset, and a REG written by
an independent writer (tests/independent_reg.py) links it to the planning CT. The adapted
result must be the same anatomy-relative result as the shared-frame run, and every daily
object must state the CBCT's own frame; REG and DREG must link the two frames correctly.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pydicom
import pytest

from art_cli.app import run
from tests.independent_reg import rewrite_in_own_frame, translation, write_reg

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

OFFSET = np.array([-40.0, 25.0, 310.0])  # own-frame point = shared-frame point + OFFSET


def _call(argv):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = run(argv)
    return code, err.getvalue()


def _reference(patient, root):
    from art.dose import load_machine
    from art.io import read_image_series
    from art.io.rtplan import write_rtplan
    from art.plan import Beam, Plan, Segment
    from art.protocol import load_protocol

    ref = root / "reference"
    ref.mkdir()
    shutil.copytree(patient / "CT", ref / "CT")
    shutil.copy2(patient / "RTSTRUCT.dcm", ref / "RTSTRUCT.dcm")
    proto = (patient / "protocol.toml").read_text().replace("grid_mm = 3.0", "grid_mm = 5.0")
    (ref / "protocol.toml").write_text(proto)
    machine, ct = load_machine(), read_image_series(ref / "CT")
    n = machine.mlc.n_pairs
    seg = Segment(np.vstack([np.full(n, -40.0), np.full(n, 40.0)]), (-40.0, 40.0, -40.0, 40.0), 100.0)
    iso = tuple(ct.grid.index_to_lps(np.array([[s / 2 for s in ct.grid.shape]], float))[0])
    angles = load_protocol(ref / "protocol.toml").beams.gantry_angles  # the protocol's beams: the adapted plan is warm-started from them
    beams = [Beam(f"B{k}", float(a), isocenter_lps=iso, segments=[seg]) for k, a in enumerate(angles, start=1)]
    write_rtplan(Plan(beams, fractions=20, machine_name=machine.name), ct, ref / "RTSTRUCT.dcm", ref / "RTPLAN.dcm", machine=machine,
                 label="REF", prescription_gy=60.0, target_name="PTV")  # fmt: skip
    return ref, ct


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from art_phantoms.write import write_phantom

    root = tmp_path_factory.mktemp("own_frame")
    patient = root / "patient"
    write_phantom(patient, seed=2, fractions=1, spacing=(5.0, 4.0, 4.0))
    ref, ct = _reference(patient, root)
    own = root / "CBCT_OWN"
    own_for = rewrite_in_own_frame(patient / "CBCT_01", own, offset_mm=OFFSET)
    reg = write_reg(root / "IGRT_REG.dcm", registered_for=ct.frame_of_reference_uid, patient_id=ct.patient.id,
                    items=[{"frame": own_for, "matrix": translation(-OFFSET)}])  # fmt: skip
    out = {}
    for name, cbct, extra in (("shared", patient / "CBCT_01", []), ("own", own, ["--registration", str(reg)])):
        code, err = _call(["replan", "--reference", str(ref), "--cbct", str(cbct), "--out", str(root / name), "--final-grid-mm", "4", *extra])
        assert code in (0, 3), err[-2000:]
        out[name] = root / name
    return {**out, "own_for": own_for, "ct_for": ct.frame_of_reference_uid, "cbct_shared": patient / "CBCT_01", "cbct_own": own}


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


def test_same_adapted_result_as_in_one_frame(runs):
    """Today's anatomy, registration and dose are the same; so is the adapted plan, within the optimiser's play.

    The scheduled plan (the reference segments and MU on today's anatomy) has no optimiser between
    the registration and its goals: its goals must agree to 2 % (seen: 1e-3 Gy). The adapted plan is
    re-optimised, and the optimiser's seeded voxel subsample is not a continuous function of its
    input: the ~1e-5 mm differences that coordinates 315 mm apart bring into the registration give
    another subsample and another point of a flat optimum (seen: rectum V50Gy 6.9 vs 9.2 %, both
    met; gamma 3 %/3 mm 99.4 %, 2 %/2 mm 94.7 %). So it is held to the same verdict for every goal,
    priority-1 values within 2 %, and a gamma 3 %/3 mm pass rate of the two adapted doses ≥ 95 %.
    """
    from art.evaluate.gamma import gamma_index
    from art.geometry import Volume
    from art.io.rtdose import read_rtdose

    a, b = _summary(runs["shared"]), _summary(runs["own"])
    assert np.allclose(a["registration"]["couch_shift_mm"], b["registration"]["couch_shift_mm"], atol=0.5)
    assert np.allclose(a["registration"]["rotation_deg"], b["registration"]["rotation_deg"], atol=0.2)
    assert b["registration"]["frame_link"]["file"] == "IGRT_REG.dcm" and a["registration"]["frame_link"] is None
    for plan in ("scheduled", "adapted"):
        for ga, gb in zip(a["plans"][plan]["goals"], b["plans"][plan]["goals"]):
            what = (plan, ga["structure"], ga["metric"], ga["value"], gb["value"])
            assert (ga["structure"], ga["metric"]) == (gb["structure"], gb["metric"]) and ga["met"] == gb["met"], what
            if plan == "scheduled" or ga["priority"] == 1:
                assert abs(ga["value"] - gb["value"]) <= max(0.02 * abs(ga["value"]), 0.3), what
    # the adapted doses, on grids that differ by the offset
    da, db = read_rtdose(runs["shared"] / "RTDOSE.dcm"), read_rtdose(runs["own"] / "RTDOSE.dcm")
    assert np.allclose(np.asarray(db.grid.origin), np.asarray(da.grid.origin) + OFFSET, atol=1e-3)
    assert da.shape == db.shape
    g = gamma_index(da, Volume(db.array, da.grid), dose_percent=3.0, distance_mm=3.0, threshold_percent=10.0)
    assert g.pass_rate >= 95.0, g.pass_rate


def test_daily_objects_are_in_the_cbct_frame_and_link_it_to_the_ct(runs):
    from tests.io.test_dreg_direction import StandardReader

    out, own_for, ct_for = runs["own"], runs["own_for"], runs["ct_for"]
    for name in ("RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm"):
        assert pydicom.dcmread(out / name, stop_before_pixels=True).FrameOfReferenceUID == own_for, name
    iso = [np.array(pydicom.dcmread(runs[k] / "RTPLAN.dcm").BeamSequence[0].ControlPointSequence[0].IsocenterPosition, float)
           for k in ("shared", "own")]  # fmt: skip
    assert np.allclose(iso[1], iso[0] + OFFSET, atol=0.5)
    # REG: registered = planning CT; the CBCT's item (its own frame) maps CBCT points to CT points
    reg = pydicom.dcmread(out / "REG.dcm")
    assert reg.FrameOfReferenceUID == ct_for
    item = [it for it in reg.RegistrationSequence if it.FrameOfReferenceUID == own_for]
    assert len(item) == 1
    m_own = np.array(item[0].MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix, float).reshape(4, 4)
    shared = pydicom.dcmread(runs["shared"] / "REG.dcm").RegistrationSequence[1]
    m_shared = np.array(shared.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix, float).reshape(4, 4)
    y = np.array([10.0, -20.0, 5.0, 1.0])  # a shared-frame CBCT point and its own-frame twin land on the same CT point
    assert np.allclose(m_own @ (y + np.append(OFFSET, 0.0)), m_shared @ y, atol=0.5)
    # DREG: registered = the CBCT's own frame, source = the CT; the same CT points as in one frame
    ra, rb = StandardReader(runs["shared"] / "DREG.dcm"), StandardReader(out / "DREG.dcm")
    assert (rb.registered_for, rb.source_for) == (own_for, ct_for)
    g = np.array([[0.0, 0.0, 0.0], [15.0, -10.0, 20.0], [-25.0, 5.0, -15.0]]) + ra.start + 40.0
    assert np.abs(rb.to_source(g + OFFSET) - ra.to_source(g)).max() <= 0.5
