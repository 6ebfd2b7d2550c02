"""The independent dose check of a plan: its segments recomputed by a second algorithm and compared to the evaluated dose.

Every report (``art plan``, ``art replan``) carries one. The plan's MLC segments and MU are
recomputed by the **check engine** — by default the other algorithm than the one that
computed the evaluated (final, exported) dose (:func:`art.dose.engines.default_check_engine`:
collapsed-cone convolution/superposition checks a pencil-beam dose, the pencil beam checks a
collapsed-cone one) — on the same export grid, inside the same BODY/EXTERNAL, with 1 mm
fluence pixels (``CHECK_FLUENCE_MM``), and compared to the evaluated dose by

* gamma 3 %/2 mm (global, of the check dose's maximum; voxels of the body where the check dose
  is at least 10 % of it): :func:`art.evaluate.gamma.gamma_index` with the check dose as reference;
* dose-difference statistics, ΔD = check − evaluated in % of the prescription (course dose),
  over the body voxels more than ``SKIN_MM`` (10 mm) inside the body surface where the evaluated
  dose is above ``REGION_PERCENT`` (10 %) of the prescription: mean ΔD, mean |ΔD|, 95th percentile
  of |ΔD| and max |ΔD|. The build-up layer under the skin is left out of these statistics (not of
  the gamma): there the pencil beam's tabulated build-up and the collapsed cone's electron
  transport and contamination model differ by up to ~8 % in the first 4 mm voxel, by construction.

A check by the same algorithm (asked for with ``--check-engine``, or where the other engine is
not installed) checks the sequencing, the MU and the dose grid, not the beam model: the
summary and the report say which it was (:attr:`DoseCheck.label`).

Units: dose in Gy (course), lengths in mm, differences in % of the prescription.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from art.dose.engines import ENGINE_LABELS, engine_name
from art.geometry import Volume
from art.plan import Plan
from art.structures import StructureSet

__all__ = ["DoseCheck", "check_plan", "staged_check", "checked_engines", "dose_difference", "check_label", "CHECK_FLUENCE_MM", "REGION_PERCENT", "SKIN_MM", "GAMMA_CRITERIA"]

#: Fluence pixel size (mm, at the isocentre plane) of the check dose (the final dose uses the engine's default, 1.25 mm).
CHECK_FLUENCE_MM = 1.0

#: The dose-difference statistics are taken where the evaluated dose is above this percent of the prescription.
REGION_PERCENT = 10.0

#: Depth (mm) under the body surface left out of the dose-difference statistics (the build-up layer).
SKIN_MM = 10.0

#: Gamma criteria of the check: ΔD (% of the check dose's maximum), Δd (mm), low-dose threshold (% of that maximum).
GAMMA_CRITERIA = {"dose_percent": 3.0, "distance_mm": 2.0, "threshold_percent": 10.0}


def check_label(engine: str, final_engine: str) -> str:
    """``"second algorithm (collapsed-cone convolution/superposition)"`` or ``"same algorithm (pencil beam)"``."""
    e = engine_name(engine, parameter="check engine")
    kind = "same algorithm" if e == engine_name(final_engine, parameter="final engine") else "second algorithm"
    return f"{kind} ({ENGINE_LABELS[e]})"


@dataclass(frozen=True)
class DoseCheck:
    """The independent check of one plan (see the module docstring).

    Attributes
    ----------
    engine, final_engine : str
        The check engine and the engine of the evaluated dose (:data:`art.dose.engines.ENGINES`).
    dose : Volume
        The check dose (course, Gy, float32) on the evaluated dose's grid.
    gamma : GammaResult
        Gamma of the evaluated dose against the check dose (the check dose is the reference).
    difference : dict
        :func:`dose_difference`: ``mean_percent``, ``mean_abs_percent``, ``p95_abs_percent``,
        ``max_abs_percent`` (of the prescription) and ``n_voxels``.
    prescription_gy : float
        The course prescription the differences are relative to.
    fallback : str or None
        Why the same algorithm checked when no check engine was asked for: the other algorithm ``"is not
        installed"`` or ``"cannot compute this plan (…)"`` (e.g. a machine file without its beam model);
        None when the check engine is the one chosen.
    """

    engine: str
    final_engine: str
    dose: Volume
    gamma: Any
    difference: dict
    prescription_gy: float
    fallback: str | None = None

    @property
    def second_algorithm(self) -> bool:
        """True when the check engine is another algorithm than the one of the evaluated dose."""
        return self.engine != self.final_engine

    @property
    def label(self) -> str:
        """:func:`check_label` of the two engines."""
        return check_label(self.engine, self.final_engine)

    @property
    def warning(self) -> str | None:
        """A sentence for the report's warnings when the second algorithm was not available (else None)."""
        if self.fallback is None:
            return None
        from art.dose.engines import other_engine

        other = other_engine(self.final_engine)
        return (f"independent check by the same algorithm ({ENGINE_LABELS[self.engine]}): the {ENGINE_LABELS[other]} engine "
                f"{self.fallback}, so the check does not test the beam model")  # fmt: skip

    def record(self) -> dict:
        """summary.json's ``independent_check``."""
        d = self.difference
        return {
            "check": self.label, "algorithm": "second" if self.second_algorithm else "same",
            "engine": self.engine, "engine_name": ENGINE_LABELS[self.engine],
            "evaluated_dose_engine": self.final_engine, "evaluated_dose_engine_name": ENGINE_LABELS[self.final_engine],
            "gamma_3pct_2mm_pass_percent": round(float(self.gamma.pass_rate), 2), "gamma_voxels_evaluated": int(self.gamma.n_evaluated),
            "gamma_criteria": "3 %/2 mm, global (maximum of the check dose), 10 % threshold, inside the body",
            "dose_difference_percent_of_prescription": {k: _rounded(d[k]) for k in ("mean_percent", "mean_abs_percent", "p95_abs_percent", "max_abs_percent")},
            "dose_difference_voxels": int(d["n_voxels"]),
            "dose_difference_region": f"inside the body, more than {SKIN_MM:g} mm under its surface, where the evaluated dose is above "
                                      f"{REGION_PERCENT:g} % of the prescription "
                                      f"({self.prescription_gy:g} Gy); difference = check - evaluated",
            "grid_spacing_mm": [round(float(v), 4) for v in self.dose.grid.spacing], "grid_shape_zyx": list(self.dose.grid.shape),
            "fluence_mm": CHECK_FLUENCE_MM,
            "method": f"the plan's segments and MU recomputed by the {ENGINE_LABELS[self.engine]} engine on the export grid of the "
                      f"evaluated dose ({ENGINE_LABELS[self.final_engine]}), {CHECK_FLUENCE_MM:g} mm fluence pixels",
            "warning": self.warning,
        }  # fmt: skip

    def table(self) -> dict:
        """The report's table of the check (plain numbers and text)."""
        d = self.difference
        sp = self.dose.grid.spacing
        return {
            "check": f"{self.label}", "evaluated dose computed by": f"{ENGINE_LABELS[self.final_engine]} ({self.final_engine})",
            "check dose computed by": f"{ENGINE_LABELS[self.engine]} ({self.engine}), {CHECK_FLUENCE_MM:g} mm fluence pixels, "
                                      f"on the evaluated dose's {sp[2]:g} × {sp[1]:g} × {sp[0]:g} mm grid",
            "gamma 3 %/2 mm pass rate (%)": round(float(self.gamma.pass_rate), 2),
            "gamma voxels evaluated": int(self.gamma.n_evaluated),
            f"mean ΔD (% of {self.prescription_gy:g} Gy)": _rounded(d["mean_percent"]),
            "mean |ΔD| (%)": _rounded(d["mean_abs_percent"]), "95th percentile |ΔD| (%)": _rounded(d["p95_abs_percent"]),
            "max |ΔD| (%)": _rounded(d["max_abs_percent"]),
            "ΔD region": f"body deeper than {SKIN_MM:g} mm, evaluated dose > {REGION_PERCENT:g} % of the prescription ({int(d['n_voxels'])} voxels); ΔD = check − evaluated",
        }  # fmt: skip


def _rounded(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 3)


def body_mask(structures: StructureSet, grid: Any) -> np.ndarray:
    """The BODY/EXTERNAL on ``grid`` as the dose engine takes it (occupancy ≥ 0.25); every voxel without one."""
    from art.geometry import resample_mask

    ext = structures.external() if structures is not None else None
    if ext is None:
        return np.ones(grid.shape, dtype=bool)
    return resample_mask(ext.volume, grid, mode="fraction").array >= 0.25


def inner_body(mask: np.ndarray, spacing: Any, *, skin_mm: float = SKIN_MM) -> np.ndarray:
    """The voxels of ``mask`` (z, y, x) more than ``skin_mm`` (mm) from its outside (``spacing`` (dz, dy, dx) mm).

    A mask touching the grid's edge is taken to continue beyond it (the grid's edge is not a surface)."""
    from scipy.ndimage import distance_transform_edt

    padded = np.pad(mask, 1, mode="edge")
    depth = distance_transform_edt(padded, sampling=[float(v) for v in spacing])[1:-1, 1:-1, 1:-1]
    return mask & (depth > skin_mm)


def dose_difference(check: Volume, evaluated: Volume, mask: np.ndarray, *, prescription_gy: float,
                    region_percent: float = REGION_PERCENT) -> dict:  # fmt: skip
    """Statistics of ΔD = ``check`` − ``evaluated`` in % of ``prescription_gy`` where ``mask`` and ``evaluated`` > ``region_percent`` %.

    Parameters
    ----------
    check, evaluated : Volume
        Course doses (Gy) on the same grid.
    mask : ndarray of bool, (z, y, x)
        The body on that grid.
    prescription_gy : float, keyword-only
        Course prescription (Gy), > 0.
    region_percent : float, keyword-only
        Only voxels where the evaluated dose is above this percent of the prescription.

    Returns
    -------
    dict
        ``mean_percent`` (signed), ``mean_abs_percent``, ``p95_abs_percent``, ``max_abs_percent`` (NaN
        when the region is empty) and ``n_voxels``.
    """
    from art.errors import InputError

    if not check.grid.same_as(evaluated.grid):
        raise InputError("the check dose and the evaluated dose must be on the same grid")
    rx = float(prescription_gy)
    if not np.isfinite(rx) or rx <= 0:
        raise InputError(f"prescription_gy must be a positive number, got {prescription_gy!r}")
    ev = np.asarray(evaluated.array, np.float64)
    sel = np.asarray(mask, bool) & (ev > region_percent / 100.0 * rx)
    diff = 100.0 * (np.asarray(check.array, np.float64)[sel] - ev[sel]) / rx
    if diff.size == 0:
        nan = float("nan")
        return {"mean_percent": nan, "mean_abs_percent": nan, "p95_abs_percent": nan, "max_abs_percent": nan, "n_voxels": 0}
    a = np.abs(diff)
    return {"mean_percent": float(diff.mean()), "mean_abs_percent": float(a.mean()), "p95_abs_percent": float(np.percentile(a, 95)),
            "max_abs_percent": float(a.max()), "n_voxels": int(diff.size)}  # fmt: skip


def check_plan(ct: Volume, plan: Plan, machine: Any, structures: StructureSet, evaluated: Volume, *, prescription_gy: float,
               final_engine: str = "pb", engine: str | None = None) -> DoseCheck:  # fmt: skip
    """The independent check of a plan whose evaluated (final) dose is ``evaluated`` (see the module docstring).

    Parameters
    ----------
    ct : Volume
        The image the evaluated dose was computed on (HU).
    plan : Plan
        The plan as exported (segments, MU per fraction, fractions).
    machine : Machine
        The machine of the evaluated dose.
    structures : StructureSet
        The structures the evaluated dose was computed with (its BODY/EXTERNAL bounds both doses).
    evaluated : Volume
        The evaluated (final, exported) course dose, Gy, on the export grid.
    prescription_gy : float, keyword-only
        Course prescription (Gy): the dose differences are in % of it.
    final_engine : str, keyword-only
        The engine that computed ``evaluated``.
    engine : str, optional, keyword-only
        The check engine (default: :func:`art.dose.engines.default_check_engine` of ``final_engine``).

    Returns
    -------
    DoseCheck

    Notes
    -----
    With no ``engine`` asked for, the other algorithm checks; where it is not installed, or refuses
    the plan's machine (:class:`~art.errors.MachineDataError`, e.g. a machine file without the
    collapsed-cone beam model), the same algorithm checks and :attr:`DoseCheck.warning` says why.
    An engine asked for by name that fails raises.
    """
    from art.dose.engines import default_check_engine, get_engine, other_engine
    from art.errors import MachineDataError
    from art.evaluate.gamma import gamma_index

    final_engine = engine_name(final_engine, parameter="final engine")
    chosen = default_check_engine(final_engine) if engine is None else engine_name(engine, parameter="check engine")
    fallback = "is not installed" if engine is None and chosen != other_engine(final_engine) else None

    def compute(name: str) -> Volume:
        return get_engine(name, parameter="check engine")(ct, plan, machine, dose_grid=evaluated.grid, structures=structures,
                                                          fluence_mm=CHECK_FLUENCE_MM)  # fmt: skip

    try:
        dose = compute(chosen)
    except MachineDataError as exc:
        if engine is not None or chosen == final_engine:
            raise
        chosen, fallback = final_engine, f"cannot compute this plan ({exc})"
        dose = compute(chosen)
    mask = body_mask(structures, evaluated.grid)
    gamma = gamma_index(dose, evaluated, mask=mask, **GAMMA_CRITERIA)
    diff = dose_difference(dose, evaluated, inner_body(mask, evaluated.grid.spacing), prescription_gy=prescription_gy)
    return DoseCheck(engine=chosen, final_engine=final_engine, dose=dose, gamma=gamma, difference=diff,
                     prescription_gy=float(prescription_gy), fallback=fallback)  # fmt: skip


def checked_engines(final_engine: str, check_engine: str | None, *, machine: Any = None) -> tuple[str, str | None]:
    """The final and check engines' registry names (the check's None kept: the default), checked before any work.

    InputError listing the engines for an unknown name, or saying that a named engine is not installed;
    with ``machine`` (a Machine or a list), MachineDataError when an engine named cannot use it
    (:func:`art.dose.engines.check_machine`; a default check engine falls back instead, see :func:`check_plan`).
    """
    from art.dose.engines import check_machine, get_engine

    get_engine(final_engine, parameter="final_engine")
    if check_engine is not None:
        get_engine(check_engine, parameter="check_engine")
    check_machine(final_engine, machine)
    if check_engine is not None:
        check_machine(check_engine, machine)
    return engine_name(final_engine), None if check_engine is None else engine_name(check_engine)


def staged_check(ct: Volume, result: Any, structures: StructureSet, protocol: Any, machine: Any, *, engine: str | None, stages: Any) -> DoseCheck:
    """:func:`check_plan` of a :class:`~art.workflow.PlanResult` (its plan, final dose and engine) as the stage ``independent check``.

    ``structures`` are those the final dose was computed with; the prescription is the protocol's.
    """
    with stages.stage("independent check"):
        check = check_plan(ct, result.plan, machine, structures, result.dose, prescription_gy=float(protocol.prescription.dose_gy),
                           final_engine=result.engine, engine=engine)  # fmt: skip
        p95 = check.difference["p95_abs_percent"]
        stages.note(f"{check.label}: gamma 3 %/2 mm pass rate {check.gamma.pass_rate:.1f} %, 95th percentile |ΔD| {p95:.2f} % of the prescription")
    return check
