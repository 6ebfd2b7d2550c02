"""Reference folders for the node's tests, with the keys a registry needs (built on tests/node/replan_case.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from tests.node.replan_case import make_case


def _with_ids(case: dict) -> dict:
    ds = pydicom.dcmread(next(iter(sorted((case["reference"] / "CT").iterdir()))), stop_before_pixels=True)
    return {**case, "frame": str(ds.FrameOfReferenceUID), "patient_id": str(ds.PatientID)}


def quick_reference(root: Path, *, seed: int = 1, fractions: int = 1) -> dict:
    """A coarse phantom and a reference whose RTPLAN is ONE open beam, not the protocol's (seconds to build).

    Enough for everything that reads, checks and registers a reference; a re-plan against it
    fails (art replan refuses a plan whose beams are not the protocol's). Returns
    ``{"patient", "reference", "cbcts", "frame", "patient_id"}``.
    """
    from art.dose import load_machine
    from art.io import read_image_series
    from art.io.rtplan import write_rtplan
    from art.plan import Beam, Plan, Segment

    case = make_case(root, seed=seed, fractions=fractions)
    ref = case["reference"]
    machine, ct = load_machine(), read_image_series(ref / "CT")
    n = machine.mlc.n_pairs
    seg = Segment(np.vstack([np.full(n, -20.0), np.full(n, 20.0)]), (-20.0, 20.0, -20.0, 20.0), 100.0)
    iso = tuple(ct.grid.index_to_lps(np.array([[s / 2 for s in ct.grid.shape]], float))[0])
    plan = Plan([Beam("B1", 0.0, isocenter_lps=iso, segments=[seg])], fractions=20, machine_name=machine.name)
    write_rtplan(plan, ct, ref / "RTSTRUCT.dcm", ref / "RTPLAN.dcm", machine=machine, label="REF", prescription_gy=60.0, target_name="PTV")
    return _with_ids(case)


def planned_reference(root: Path, *, seed: int = 3, fractions: int = 1) -> dict:
    """A coarse phantom (5×4×4 mm) planned by ``art plan`` on a 5 mm grid (final dose 4 mm): a reference a re-plan adapts.

    About 20 s on 2 cores; a re-plan of one of its CBCTs 1–2 minutes.
    """
    return _with_ids(make_case(root, seed=seed, fractions=fractions, optimise=True))
