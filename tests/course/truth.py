"""The truth check of the course (issue 20, item 4): art's registrations vs the phantom's true deformations.

A course of a digital patient (``art phantom``: ``truth/fraction_NN/daily_to_planning.mha`` on the
CBCT grid, today's point ``y`` being the planning point ``y + d(y)`` — the convention of
``DREG.dcm``) is accumulated twice on the planning CT with the same daily doses: once through
each fraction's ``DREG.dcm`` (art's deformable registration), once through the true field. The
two cumulative doses are compared by gamma 3 %/2 mm (global, of the prescription over the
fractions delivered) within the planning BODY above 10 % of it, and goal by goal (both scaled to
the full course, × N/n, so that every goal reads as in the protocol).

Used by tests/course/test_course_truth.py (slow) and benchmarks/bench_course.py. :func:`build_course`
makes such a course: the phantom and its reference (tests/node/replan_case.py) and one
``art replan`` per CBCT (about 2–3 minutes each on 2 cores).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

#: Gamma criteria of the truth check: 3 % of the delivered prescription, 2 mm, above 10 % of it.
GAMMA = {"dose_percent": 3.0, "distance_mm": 2.0, "threshold_percent": 10.0}

#: Target of the truth check's gamma pass rate (percent).
TARGET_PASS_PERCENT = 95.0


def build_course(root: Path, *, fractions: int, seed: int = 3, log=print) -> dict:
    """``root/patient`` (phantom with ``fractions`` CBCTs and their truth), ``root/reference`` (planned) and ``root/dayK``.

    Returns ``{"patient", "reference", "days": [Path, ...], "replan_s": [s, ...]}``.
    """
    from art.jobs import replan_job
    from tests.node.replan_case import make_case

    root = Path(root)
    t = time.perf_counter()
    case = make_case(root, seed=seed, fractions=fractions, optimise=True)
    log(f"reference planned in {time.perf_counter() - t:.0f} s")
    days, times = [], []
    for k, cbct in enumerate(case["cbcts"], start=1):
        t = time.perf_counter()
        replan_job(case["reference"], cbct, root / f"day{k}", show=False, final_grid_mm=4.0)
        times.append(time.perf_counter() - t)
        days.append(root / f"day{k}")
        log(f"fraction {k} re-planned in {times[-1]:.0f} s")
    return {"patient": case["patient"], "reference": case["reference"], "days": days, "replan_s": times}


def existing_course(root: Path) -> dict | None:
    """A course built before by :func:`build_course` in ``root`` (None when incomplete)."""
    root = Path(root)
    days = sorted((p for p in root.glob("day*") if (p / "summary.json").is_file()), key=lambda p: int(p.name[3:]))
    if not (root / "reference" / "protocol.toml").is_file() or not (root / "patient" / "truth").is_dir() or not days:
        return None
    return {"patient": root / "patient", "reference": root / "reference", "days": days, "replan_s": []}


def truth_fraction(fraction, patient: Path, truth_index: int):
    """``fraction`` with its deformation replaced by the phantom's true ``daily_to_planning`` of fraction ``truth_index``."""
    from art.io.registration import DeformableRegistration
    from art_phantoms.write import _read_vector_field

    d2p, grid = _read_vector_field(Path(patient) / "truth" / f"fraction_{truth_index:02d}" / "daily_to_planning.mha")
    dreg = fraction.deformation
    true = DeformableRegistration(displacement=d2p, grid=grid, pre_matrix=np.eye(4), post_matrix=np.eye(4),
                                  frame_of_reference_uid=dreg.frame_of_reference_uid,
                                  source_frame_of_reference_uid=dreg.source_frame_of_reference_uid)  # fmt: skip
    return dataclasses.replace(fraction, deformation=true)


def _goal_differences(art_dose, true_dose, reference, scale: float) -> list[dict]:
    """Goal values of both cumulative doses × ``scale`` (the full course) and their difference (Gy, or percentage points / cc)."""
    from art.final_dose import evaluate, evaluation_structures
    from art.geometry import Volume

    structures = evaluation_structures(reference.structures)
    a, t = (evaluate(Volume(d.array * np.float32(scale), d.grid), structures, reference.protocol) for d in (art_dose, true_dose))
    return [{"structure": x.structure, "metric": x.metric, "unit": x.unit, "priority": int(x.priority), "art": round(float(x.value), 4),
             "truth": round(float(y.value), 4), "difference": round(float(x.value - y.value), 4)} for x, y in zip(a, t)]  # fmt: skip


def truth_check(reference, fractions: list, patient: Path, truth_indices: list[int], *, method: str = "pull", grid_mm: float = 2.5) -> dict:
    """Accumulate through art's and through the true deformations; gamma and goal differences (module docstring).

    Returns
    -------
    dict
        ``gamma_pass_percent``, ``gamma_voxels``, ``norm_dose_gy``, ``goals`` (per goal: art, truth,
        difference, on the cumulative doses × N/n: the full course if every fraction were like the mean so far),
        ``max_abs_difference_gy`` (Gy goals), ``time_s``.
    """
    from art.course.accumulate import accumulate
    from art.evaluate.gamma import gamma_index
    from art.geometry import resample_mask

    t0 = time.perf_counter()
    art = accumulate(reference, fractions, method=method, grid_mm=grid_mm, other_method=False)
    true = accumulate(reference, [truth_fraction(f, patient, k) for f, k in zip(fractions, truth_indices)], method=method,
                      grid_mm=grid_mm, other_method=False)  # fmt: skip
    rx = reference.protocol.prescription
    norm = float(rx.dose_gy) * len(fractions) / int(rx.fractions)
    body = resample_mask(reference.structures.external().volume, art.grid).array
    g = gamma_index(true.dose, art.dose, mask=body, norm_dose_gy=norm, **GAMMA)
    goals = _goal_differences(art.dose, true.dose, reference, int(rx.fractions) / len(fractions))
    gy = [abs(r["difference"]) for r in goals if r["unit"] == "Gy"]
    return {"method": method, "fractions": len(fractions), "gamma": dict(GAMMA, global_norm=True), "norm_dose_gy": round(norm, 4),
            "gamma_pass_percent": round(float(g.pass_rate), 3), "gamma_voxels": int(g.n_evaluated), "goals": goals,
            "max_abs_difference_gy": round(max(gy), 4) if gy else None, "residuals_mm": [round(r, 4) for r in art.residuals_mm],
            "true_residuals_mm": [round(r, 4) for r in true.residuals_mm], "time_s": round(time.perf_counter() - t0, 2)}  # fmt: skip
