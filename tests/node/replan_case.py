"""Small real re-plan inputs for the node tests and benchmarks/bench_batch.py.

A digital patient (:func:`art_phantoms.write.write_phantom`) and its reference folder with a
simple plan written without optimisation (one open field, as tests/cli/test_cli_replan.py's
``case``), or — ``optimise=True`` — planned by :func:`art.jobs.plan_job`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: Coarse planning CT voxels (mm, z y x): a re-plan in about a minute.
COARSE_SPACING = (5.0, 4.0, 4.0)


def simple_plan(ref: Path) -> None:
    """An RTPLAN of the protocol's beams, each one open 80 × 80 mm field at the CT's centre, 100 MU, in ``ref``
    (holding CT/, RTSTRUCT.dcm and protocol.toml); the adapted plan is warm-started from these beams."""
    import numpy as np

    from art.dose import load_machine
    from art.io import read_image_series
    from art.io.rtplan import write_rtplan
    from art.plan import Beam, Plan, Segment
    from art.protocol import load_protocol

    machine, ct = load_machine(), read_image_series(ref / "CT")
    n = machine.mlc.n_pairs
    seg = Segment(np.vstack([np.full(n, -40.0), np.full(n, 40.0)]), (-40.0, 40.0, -40.0, 40.0), 100.0)
    iso = tuple(ct.grid.index_to_lps(np.array([[s / 2 for s in ct.grid.shape]], float))[0])
    angles = load_protocol(ref / "protocol.toml").beams.gantry_angles
    beams = [Beam(f"B{k}", float(a), isocenter_lps=iso, segments=[seg]) for k, a in enumerate(angles, start=1)]
    write_rtplan(Plan(beams, fractions=20, machine_name=machine.name), ct, ref / "RTSTRUCT.dcm", ref / "RTPLAN.dcm", machine=machine,
                 label="REF", prescription_gy=60.0, target_name="PTV")  # fmt: skip


def make_case(root: Path, *, seed: int = 1, fractions: int = 1, spacing=COARSE_SPACING, optimise: bool = False,
              coarse_dose_grid: bool = True) -> dict:  # fmt: skip
    """``root/patient`` (the phantom with ``fractions`` CBCTs) and ``root/reference`` (CT, RTSTRUCT, RTPLAN, protocol.toml).

    ``coarse_dose_grid``: the protocol computes dose on a 5 mm grid (else the phantom's 3 mm), and the
    reference plan's final dose is on a 4 mm grid.

    Returns ``{"patient": Path, "reference": Path, "cbcts": [Path, ...]}``.
    """
    from art_phantoms.write import write_phantom

    root = Path(root)
    patient, ref = root / "patient", root / "reference"
    write_phantom(patient, seed=seed, fractions=fractions, spacing=tuple(spacing))
    proto = patient / "protocol.toml"
    if coarse_dose_grid:
        proto.write_text(proto.read_text(encoding="utf-8").replace("grid_mm = 3.0", "grid_mm = 5.0"), encoding="utf-8")
    if optimise:
        from art.jobs import plan_job

        plan_job(patient / "CT", patient / "RTSTRUCT.dcm", proto, ref, show=False, final_grid_mm=4.0 if coarse_dose_grid else None)
    else:
        ref.mkdir(parents=True)
        shutil.copy2(patient / "RTSTRUCT.dcm", ref / "RTSTRUCT.dcm")
    shutil.copytree(patient / "CT", ref / "CT")
    shutil.copy2(proto, ref / "protocol.toml")
    if not optimise:
        simple_plan(ref)
    cbcts = sorted(p for p in patient.iterdir() if p.is_dir() and p.name.startswith("CBCT"))
    return {"patient": patient, "reference": ref, "cbcts": cbcts}
