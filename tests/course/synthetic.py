"""Small synthetic courses written by art's own writers: a reference folder and ``art replan``-shaped fractions.

No re-plan and no registration runs: each fraction's dose and deformation are given as
functions of position, so that what the course must accumulate is known analytically.

* :func:`write_reference` — ``root/reference``: a 4 mm planning CT (water cylinder, air
  outside), RTSTRUCT (BODY, PTV, CTV, Rectum), an RTPLAN of one open beam and a protocol;
* :func:`write_fraction` — a folder with ``sCT/``, ``RTSTRUCT.dcm``, ``RTPLAN.dcm``,
  ``RTDOSE.dcm`` (course dose = per-fraction dose × 20), ``REG.dcm``, ``DREG.dcm`` and
  ``summary.json`` (kind ``adaptive``): today's point ``p`` is the planning point
  ``p + displacement(p)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

PATIENT_ID = "COURSE-TEST-1"
FRACTIONS = 20
PROTOCOL = """name = "Course test 60 Gy in 20"

[prescription]
target = "PTV"
dose_gy = 60.0
fractions = 20

[beams]
energy = "6X"
gantry_angles = [0]
isocenter = "PTV"
bixel_mm = 5.0

[dose]
grid_mm = 4.0

[[goals]]
structure = "PTV"
metric = "D95%"
at_least = 57.0
priority = 1

[[goals]]
structure = "CTV"
metric = "Dmean"
at_least = 59.0
priority = 1

[[goals]]
structure = "Rectum"
metric = "V50Gy"
at_most = 20.0
priority = 2

[[goals]]
structure = "BODY"
metric = "Dmax"
at_most = 64.8
priority = 2
"""


def planning_grid():
    """The planning CT grid: 10 × 32 × 32 voxels of 4 mm, centred on the origin (LPS)."""
    from art.geometry import Grid

    return Grid((10, 32, 32), (4.0, 4.0, 4.0), (-62.0, -62.0, -18.0))


def _points(grid) -> np.ndarray:
    return grid.index_to_lps(np.indices(grid.shape).reshape(3, -1).T.astype(np.float64))


def _anatomy(p: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of BODY, PTV, CTV and Rectum at LPS points ``p`` (n, 3) of the planning anatomy."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    return {
        "BODY": x**2 + y**2 < 50.0**2,
        "PTV": x**2 + y**2 + z**2 < 16.0**2,
        "CTV": x**2 + y**2 + z**2 < 10.0**2,
        "Rectum": x**2 + (y - 32.0) ** 2 + z**2 < 9.0**2,
    }


def _structure_set(grid, where: np.ndarray):
    from art.structures import Structure, StructureSet

    types = {"BODY": "EXTERNAL", "PTV": "PTV", "CTV": "CTV", "Rectum": "ORGAN"}
    masks = _anatomy(where)
    return StructureSet(grid, [Structure(n, m.reshape(grid.shape), grid, roi_type=types[n]) for n, m in masks.items()])


def _hu(where: np.ndarray, shape) -> np.ndarray:
    return np.where(_anatomy(where)["BODY"], 0.0, -1000.0).reshape(shape).astype(np.float32)


def _open_beam_plan(iso):
    from art.dose import load_machine
    from art.plan import Beam, Plan, Segment

    machine = load_machine()
    n = machine.mlc.n_pairs
    seg = Segment(np.vstack([np.full(n, -20.0), np.full(n, 20.0)]), (-20.0, 20.0, -20.0, 20.0), 100.0)
    return Plan([Beam("B1", 0.0, isocenter_lps=tuple(iso), segments=[seg])], fractions=FRACTIONS, machine_name=machine.name), machine


def write_reference(root: Path, *, patient_id: str = PATIENT_ID, name: str = "reference") -> Path:
    """``root/name``: CT/, RTSTRUCT.dcm, RTPLAN.dcm (one open 40 mm beam at the origin, 100 MU × 20), protocol.toml."""
    from art.geometry import Volume
    from art.io import PatientInfo, write_image_series, write_rtstruct
    from art.io.rtplan import write_rtplan

    ref = Path(root) / name
    g = planning_grid()
    pts = _points(g)
    ct = write_image_series(Volume(_hu(pts, g.shape), g), ref / "CT", patient=PatientInfo(name="Course^Test", id=patient_id))
    write_rtstruct(_structure_set(g, pts), ct, ref / "RTSTRUCT.dcm")
    plan, machine = _open_beam_plan((0.0, 0.0, 0.0))
    write_rtplan(plan, ct, ref / "RTSTRUCT.dcm", ref / "RTPLAN.dcm", machine=machine, label="REF", prescription_gy=60.0, target_name="PTV")
    (ref / "protocol.toml").write_text(PROTOCOL, encoding="utf-8")
    return ref


def write_fraction(root: Path, name: str, reference: Path, *, dose: Callable, displacement: Callable | None = None,
                   recommended: str = "adapted", cbct_id: str | None = None, patient_id: str | None = None,
                   source=None, rigid_mm=(0.0, 0.0, 0.0)) -> Path:  # fmt: skip
    """``root/name``: one fraction shaped like an ``art replan`` result (module docstring).

    Parameters
    ----------
    dose : callable
        ``dose(points (n, 3) LPS mm) -> (n,)``: the delivered dose of one fraction (Gy) at today's points.
    displacement : callable, optional
        ``displacement(points) -> (n, 3)``: today's ``p`` is the planning point ``p + d(p)`` (default 0).
    recommended : str
        ``summary.json``'s ``recommendation.plan``.
    cbct_id : str, optional
        The provenance hash of the CBCT (default: derived from ``name``).
    patient_id : str, optional
        Another patient's ID for today's objects (default: the reference's).
    source : ImageSeries, optional
        The deformation's source image (default: the reference CT).
    rigid_mm : 3 floats
        The rigid registration written (``REG.dcm``, summary): today's ``p`` → planning ``p + rigid_mm``.
    """
    from art.geometry import Volume
    from art.io import PatientInfo, read_image_series, write_image_series, write_rtstruct
    from art.io.registration import write_deformable_registration, write_spatial_registration
    from art.io.rtdose import write_rtdose
    from art.io.rtplan import write_rtplan

    out = Path(root) / name
    planning = read_image_series(reference / "CT")
    patient = planning.patient if patient_id is None else PatientInfo(name="Other^Patient", id=patient_id)
    g = planning_grid()
    pts = _points(g)
    disp = (lambda p: np.zeros_like(p)) if displacement is None else displacement
    where = pts + disp(pts)  # the planning tissue at today's voxels
    cbct = write_image_series(Volume(_hu(where, g.shape), g), Path(root) / f"{name}_cbct", patient=patient,
                              frame_of_reference_uid=planning.frame_of_reference_uid, is_cbct=True, series_number=2)  # fmt: skip
    sct = write_image_series(Volume(_hu(where, g.shape), g), out / "sCT", patient=patient, frame_of_reference_uid=planning.frame_of_reference_uid,
                             study_instance_uid=cbct.study_instance_uid, series_number=3, series_description="sCT")  # fmt: skip
    write_rtstruct(_structure_set(g, where), sct, out / "RTSTRUCT.dcm", label="daily")
    plan, machine = _open_beam_plan((0.0, 0.0, 0.0))
    rp = write_rtplan(plan, sct, out / "RTSTRUCT.dcm", out / "RTPLAN.dcm", machine=machine, label="ADAPTED", prescription_gy=60.0, target_name="PTV")
    dg = g.pad((3, 6, 6))  # the daily dose grid: beyond the planning CT by 12 mm (z) and 24 mm (x, y)
    per_fraction = np.asarray(dose(_points(dg)), dtype=np.float64).reshape(dg.shape)
    write_rtdose(Volume((per_fraction * FRACTIONS).astype(np.float32), dg), sct, out / "RTDOSE.dcm", plan_ds_or_uid=rp)
    rigid = np.eye(4)
    rigid[:3, 3] = rigid_mm
    write_spatial_registration(rigid, planning, cbct, out / "REG.dcm")
    write_deformable_registration(disp(pts).reshape(*g.shape, 3), g, out / "DREG.dcm", registered=cbct, source=source or planning)
    summary = {"kind": "adaptive", "recommendation": {"plan": recommended, "reason": "test"},
               "provenance": {"inputs": {"cbct": cbct_id or f"cbct-{name}", "plan": "reference-plan"}},
               "registration": {"matrix_cbct_to_ct": rigid.tolist(), "deformable_quality": {"folded_voxels_cbct": 0}}}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return out


def shift(t_mm) -> Callable:
    """A rigid translation: today's ``p`` is the planning point ``p + t``."""
    t = np.asarray(t_mm, dtype=np.float64)
    return lambda p: np.broadcast_to(t, p.shape).copy()


def wave(amplitude_mm: float = 5.0, wavelength_mm: float = 80.0) -> Callable:
    """A smooth invertible deformation: ``d = A (sin(k y), sin(k z), sin(k x))``, ``A k < 1``."""
    k = 2.0 * np.pi / wavelength_mm

    def d(p: np.ndarray) -> np.ndarray:
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        return amplitude_mm * np.stack([np.sin(k * y), np.sin(k * z), np.sin(k * x)], axis=1)

    return d
