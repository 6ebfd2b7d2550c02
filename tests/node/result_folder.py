"""A small folder shaped like a finished ``art replan`` result, written in about a second by art's own writers.

The real objects of the real writers, on a tiny grid (no dose computation, no
registration): ``sCT/`` (a CT series in the CBCT's frame), ``RTSTRUCT.dcm`` (on the
CBCT), ``RTPLAN.dcm`` and ``RTDOSE.dcm`` (on the sCT), ``REG.dcm`` (planning CT ↔ CBCT),
``DREG.dcm`` (CBCT ← planning CT), ``report.html`` and ``summary.json``. The planning CT
and the CBCT are written next to it (``planning_ct/``, ``cbct/``): what the node receives
or holds, not what it sends.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_result_folder(root: Path) -> Path:
    """Write ``root/result`` (plus ``root/planning_ct`` and ``root/cbct``); returns the result folder."""
    from art.dose import load_machine
    from art.geometry import Grid, Volume
    from art.io import PatientInfo, write_image_series, write_rtstruct
    from art.io.registration import write_deformable_registration, write_spatial_registration
    from art.io.rtdose import write_rtdose
    from art.io.rtplan import write_rtplan
    from art.plan import Beam, Plan, Segment
    from art.structures import Structure, StructureSet

    root = Path(root)
    out = root / "result"
    out.mkdir(parents=True)
    patient = PatientInfo(name="Node^Test", id="NODE1")
    g = Grid((6, 24, 24), (4.0, 4.0, 4.0), (-46.0, -46.0, -10.0))
    z, y, x = np.indices(g.shape)
    body = (y - 11.5) ** 2 + (x - 11.5) ** 2 < 10**2
    hu = np.where(body, 0.0, -1000.0).astype(np.float32)
    planning = write_image_series(Volume(hu, g), root / "planning_ct", patient=patient)
    cbct = write_image_series(Volume(hu, g), root / "cbct", patient=patient, study_instance_uid=planning.study_instance_uid,
                              is_cbct=True, series_number=2)  # fmt: skip
    sct = write_image_series(Volume(hu, g), out / "sCT", patient=patient, study_instance_uid=planning.study_instance_uid,
                             frame_of_reference_uid=cbct.frame_of_reference_uid, series_number=3,
                             series_description="sCT: planning CT deformed to CBCT")  # fmt: skip
    ptv = np.zeros(g.shape, bool)
    ptv[2:4, 9:14, 9:14] = True
    ss = StructureSet(g, [Structure("BODY", body, g, roi_type="EXTERNAL"), Structure("PTV", ptv, g, roi_type="PTV")])
    write_rtstruct(ss, cbct, out / "RTSTRUCT.dcm")
    machine = load_machine()
    n, bnd = machine.mlc.n_pairs, machine.mlc.boundaries_mm
    centres = 0.5 * (bnd[:-1] + bnd[1:])
    lp = np.zeros((2, n))
    lp[0] = -10.0
    lp[1] = np.where(np.abs(centres) < 10.0, 10.0, -10.0)
    plan = Plan([Beam("G0", 0.0, isocenter_lps=(0.0, 0.0, 0.0), segments=[Segment(lp, (-15.0, 15.0, -10.0, 10.0), 50.0)])],
                fractions=20, machine_name=machine.name, label="adapted")  # fmt: skip
    rp = write_rtplan(plan, sct, out / "RTSTRUCT.dcm", out / "RTPLAN.dcm", machine=machine, label="adapted",
                      prescription_gy=60.0, target_name="PTV")  # fmt: skip
    dose = np.where(ptv, 60.0, 5.0).astype(np.float32)
    write_rtdose(Volume(dose, g), sct, out / "RTDOSE.dcm", plan_ds_or_uid=rp)
    write_spatial_registration(np.eye(4), planning, cbct, out / "REG.dcm")
    write_deformable_registration(np.zeros((*g.shape, 3), np.float32), g, out / "DREG.dcm", registered=cbct, source=planning)
    (out / "report.html").write_text("<html>report</html>")
    (out / "summary.json").write_text(json.dumps({"status": "done"}))
    return out
