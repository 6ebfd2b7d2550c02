"""Reference folders for the node's tests (coarse digital patients, built fast)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def quick_reference(root: Path, *, seed: int = 1, fractions: int = 1) -> dict:
    """A coarse phantom and a reference folder whose RTPLAN is one open beam (no optimisation; seconds).

    Enough for everything that reads and checks a reference; not for a re-plan (its beams
    are not the protocol's). Returns ``{"patient", "reference", "frame", "patient_id"}``.
    """
    import pydicom

    from art.dose import load_machine
    from art.io import read_image_series
    from art.io.rtplan import write_rtplan
    from art.plan import Beam, Plan, Segment
    from art_phantoms.write import write_phantom

    patient, ref = root / "patient", root / "reference"
    write_phantom(patient, seed=seed, fractions=fractions, spacing=(5.0, 4.0, 4.0))
    ref.mkdir(parents=True)
    shutil.copytree(patient / "CT", ref / "CT")
    shutil.copy2(patient / "RTSTRUCT.dcm", ref / "RTSTRUCT.dcm")
    shutil.copy2(patient / "protocol.toml", ref / "protocol.toml")
    machine, ct = load_machine(), read_image_series(ref / "CT")
    n = machine.mlc.n_pairs
    seg = Segment(np.vstack([np.full(n, -20.0), np.full(n, 20.0)]), (-20.0, 20.0, -20.0, 20.0), 100.0)
    iso = tuple(ct.grid.index_to_lps(np.array([[s / 2 for s in ct.grid.shape]], float))[0])
    plan = Plan([Beam("B1", 0.0, isocenter_lps=iso, segments=[seg])], fractions=20, machine_name=machine.name)
    write_rtplan(plan, ct, ref / "RTSTRUCT.dcm", ref / "RTPLAN.dcm", machine=machine, label="REF", prescription_gy=60.0, target_name="PTV")
    pid = str(pydicom.dcmread(next((ref / "CT").iterdir()), stop_before_pixels=True).PatientID)
    return {"patient": patient, "reference": ref, "frame": ct.frame_of_reference_uid, "patient_id": pid}


def planned_reference(root: Path, *, seed: int = 3, fractions: int = 1) -> dict:
    """A coarse phantom (5×4×4 mm) planned by ``art plan`` on a 5 mm grid (final dose 4 mm): a reference a re-plan can adapt.

    About 20 s on 2 cores; a re-plan of its CBCT about 1.5 min. Returns the keys of
    :func:`quick_reference`.
    """
    import pydicom

    from art.jobs import plan_job
    from art_phantoms.write import write_phantom

    patient, ref = root / "patient", root / "reference"
    write_phantom(patient, seed=seed, fractions=fractions, spacing=(5.0, 4.0, 4.0))
    proto = patient / "protocol.toml"
    proto.write_text(proto.read_text().replace("grid_mm = 3.0", "grid_mm = 5.0"))
    plan_job(patient / "CT", patient / "RTSTRUCT.dcm", proto, root / "plan", show=False, final_grid_mm=4.0)
    ref.mkdir(parents=True)
    shutil.copytree(patient / "CT", ref / "CT")
    shutil.copy2(proto, ref / "protocol.toml")
    shutil.copy2(root / "plan" / "RTPLAN.dcm", ref / "RTPLAN.dcm")
    shutil.copy2(root / "plan" / "RTSTRUCT.dcm", ref / "RTSTRUCT.dcm")
    ds = pydicom.dcmread(next((ref / "CT").iterdir()), stop_before_pixels=True)
    return {"patient": patient, "reference": ref, "frame": str(ds.FrameOfReferenceUID), "patient_id": str(ds.PatientID)}
