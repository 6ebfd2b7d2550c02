"""The course on the planning CT: each fraction's dose mapped back through its deformation and summed; goals, projection.

Accumulation (:func:`accumulate`, :func:`add_fraction`)
--------------------------------------------------------
The target grid is the planning CT's export grid (:func:`art.final_dose.final_grid`,
``grid_mm``, default 2.5 mm). Each fraction's dose (Gy, one fraction, on its own dose grid in
today's frame) is brought onto it through that day's deformation ``φ(p) = p + u(p)`` (today →
planning CT, ``DREG.dcm``) by one of two methods of :mod:`art.course.warp`:

* ``"pull"`` (default): ``D(x) = D_day(φ⁻¹(x))``, the dose of the tissue that sits at ``x`` on
  the planning CT (:func:`~art.course.warp.pull_dose`);
* ``"energy"``: the energy deposited in each daily voxel carried to where its tissue lies on the
  planning CT and divided by the planning CT's mass there (:func:`~art.course.warp.accumulate_energy`).

The method not chosen is computed too: the relative difference of the two cumulative integral
doses within the planning CT (``Σ D ρ dV``, :func:`~art.course.warp.integral_dose_j`) is the
course's uncertainty figure, ``integral_difference_percent`` = 100 (other − chosen) / chosen.

Goals (:func:`course_goals`)
----------------------------
Every goal is evaluated from the reference's planning structures (their RTSTRUCT polygons,
:func:`art.final_dose.evaluate`). With ``n`` fractions delivered of ``N`` planned:

* per fraction: the goals of that fraction's mapped dose × ``N`` (as if every fraction were that one);
* cumulative: the goals of the cumulative dose scaled to the delivered share: a goal in Gy
  compares the cumulative value with ``goal × n/N`` (``scaled_goal``); a goal in % or cc
  (``V<x>Gy``) is evaluated at the dose level ``x × n/N`` against the goal itself. Both are the
  goal evaluated on ``cumulative × N/n``, so ``met`` is exact. ``planned`` is the reference
  plan's value over ``n`` fractions (its dose computed on the same grid);
* projection: the cumulative dose plus ``N − n`` more fractions like the mean so far
  (``"mean"``: ``cumulative × N/n``) or like the last one (``"last"``); ``priority1_met``.

Units: Gy, mm, LPS, arrays (z, y, x).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from art.errors import InputError
from art.geometry import Grid, Volume

__all__ = ["Course", "METHODS", "PROJECTIONS", "accumulate", "add_fraction", "map_fraction", "target_grid_density",
           "planned_dose", "course_goals", "fraction_record", "dvh_curves"]  # fmt: skip

#: Accumulation methods (the first is the default).
METHODS = ("pull", "energy")

#: Projection bases: the remaining fractions like the mean so far, or like the last.
PROJECTIONS = ("mean", "last")


@dataclass
class Course:
    """The accumulated course (see the module docstring).

    Attributes
    ----------
    reference : art.reference.Reference
    fractions : list of Fraction
        In the order given.
    method : {"pull", "energy"}
    dose : Volume
        Cumulative dose of the fractions, Gy, float32, on the planning CT's export grid.
    per_fraction : list of Volume
        Each fraction's dose mapped onto that grid by ``method`` (Gy, one fraction).
    other_method_dose : Volume or None
        The cumulative dose by the other method.
    integral_difference_percent : float
        100 × (integral dose by the other method − by ``method``) / by ``method``, within the
        planning CT (NaN when there is no other method or no dose).
    density : Volume
        Relative electron density of the planning CT on the grid (the energy method's mass).
    other_per_fraction : list of Volume
        Each fraction by the other method.
    residuals_mm : list of float
        Per fraction: how far the inverted deformation is from inverting it exactly (max where the dose reaches, mm).
    """

    reference: Any
    fractions: list
    method: str
    dose: Volume
    per_fraction: list
    other_method_dose: Volume | None
    integral_difference_percent: float
    density: Volume | None = None
    other_per_fraction: list = field(default_factory=list)
    residuals_mm: list = field(default_factory=list)

    @property
    def grid(self) -> Grid:
        """The planning CT's export grid the course is on."""
        return self.dose.grid

    @property
    def other_method(self) -> str | None:
        """The method computed for the uncertainty figure (None when not computed)."""
        return None if self.other_method_dose is None else next(m for m in METHODS if m != self.method)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return method


def target_grid_density(reference: Any, grid_mm: float) -> tuple[Grid, Volume]:
    """The planning CT's export grid (:func:`art.final_dose.final_grid`) and the CT's relative electron density on it."""
    from art.course.warp import density_volume
    from art.final_dose import final_grid

    grid = final_grid(reference.ct.grid, grid_mm)
    return grid, density_volume(reference.ct.volume, grid)


def map_fraction(fraction: Any, grid: Grid, density: Volume, methods: tuple[str, ...]) -> tuple[dict[str, Volume], float]:
    """One fraction's dose on the planning CT's ``grid`` by each of ``methods``; and the inversion residual.

    Parameters
    ----------
    fraction : Fraction
    grid : Grid
        The planning CT's export grid.
    density : Volume
        The planning CT's relative electron density on ``grid`` (energy method).
    methods : tuple of {"pull", "energy"}

    Returns
    -------
    doses : dict of str to Volume
        Gy (one fraction), float32, on ``grid``, by method.
    residual_mm : float
        ``max |φ(x + v(x)) − x|`` of the inverted deformation (mm) over the planning voxels the
        day's dose can reach (:func:`art.course.warp.pull_dose`'s report); NaN without the pull.
    """
    from art.course import warp

    u, u_grid = np.asarray(fraction.deformation.displacement), fraction.deformation.grid
    out, residual = {}, float("nan")
    for method in methods:
        if _check_method(method) == "pull":
            out[method], report = warp.pull_dose(fraction.dose, u, u_grid, grid, return_report=True)
            residual = float(report.max_residual_mm)
        else:
            out[method] = warp.accumulate_energy(fraction.dose, fraction.density, u, u_grid, grid, density)
    return out, residual


def _integral_difference(a: Volume | None, b: Volume | None, density: Volume) -> float:
    """100 (b − a) / a of the integral doses (J) within the density's grid; NaN without both or without dose."""
    if a is None or b is None:
        return float("nan")
    from art.course.warp import integral_dose_j

    ea = integral_dose_j(a, density)
    return float("nan") if ea <= 0 else 100.0 * (integral_dose_j(b, density) - ea) / ea


def add_fraction(course: Course, fraction: Any) -> Course:
    """The course with one more fraction: only that fraction is mapped (both methods when the course has the other).

    Returns a new :class:`Course`; ``course`` is not changed.
    """
    grid, density = course.grid, course.density
    methods = (course.method,) if course.other_method is None else (course.method, course.other_method)
    mapped, residual = map_fraction(fraction, grid, density, methods)
    dose = Volume((course.dose.array + mapped[course.method].array).astype(np.float32), grid)
    other, other_list = course.other_method_dose, list(course.other_per_fraction)
    if other is not None:
        other_list.append(mapped[course.other_method])
        other = Volume((other.array + other_list[-1].array).astype(np.float32), grid)
    return dataclasses.replace(
        course, fractions=[*course.fractions, fraction], dose=dose, per_fraction=[*course.per_fraction, mapped[course.method]],
        other_method_dose=other, other_per_fraction=other_list, residuals_mm=[*course.residuals_mm, residual],
        integral_difference_percent=_integral_difference(dose, other, density),
    )  # fmt: skip


def accumulate(reference: Any, fractions: list, *, method: str = "pull", grid_mm: float = 2.5, other_method: bool = True) -> Course:
    """Map every fraction's dose onto the planning CT and sum them.

    Parameters
    ----------
    reference : art.reference.Reference
    fractions : list of Fraction
        :func:`art.course.fraction.read_fraction` results, in treatment order (may be empty).
    method : {"pull", "energy"}, keyword-only
        The accumulation method (module docstring).
    grid_mm : float, keyword-only
        Spacing of the planning CT's export grid (mm, isotropic; :func:`art.final_dose.final_grid`).
    other_method : bool, keyword-only
        Also accumulate by the other method, for ``integral_difference_percent``.

    Returns
    -------
    Course
    """
    _check_method(method)
    grid, density = target_grid_density(reference, grid_mm)
    zero = Volume(np.zeros(grid.shape, np.float32), grid)
    course = Course(reference=reference, fractions=[], method=method, dose=zero, per_fraction=[],
                    other_method_dose=zero if other_method else None, integral_difference_percent=float("nan"), density=density)  # fmt: skip
    for f in fractions:
        course = add_fraction(course, f)
    return course


def planned_dose(reference: Any, grid: Grid, *, machine: Any = None, engine: str = "pb") -> Volume:
    """The reference plan's dose on the planning CT on ``grid``, over the protocol's number of fractions (Gy).

    Computed by :func:`art.final_dose.final_dose` (dose engine ``engine``, inside the BODY) for the plan's
    own fractions and scaled to the protocol's prescription fractions when the two differ.
    """
    from art.dose import load_machine
    from art.final_dose import final_dose

    dose = final_dose(reference.ct.volume, reference.plan, load_machine() if machine is None else machine, reference.structures, grid,
                      engine=engine)  # fmt: skip
    n_protocol, n_plan = int(reference.protocol.prescription.fractions), int(reference.plan.fractions)
    return dose if n_protocol == n_plan else Volume((dose.array * np.float32(n_protocol / n_plan)).astype(np.float32), grid)


def _evaluate(dose_arr: np.ndarray, grid: Grid, structures: Any, protocol: Any) -> list:
    from art.final_dose import evaluate

    return evaluate(Volume(np.asarray(dose_arr, np.float32), grid), structures, protocol)


def _rows(goals: list, scale_gy: float = 1.0) -> list[dict]:
    """Goal rows (:func:`art.summary.goal_table`) with Gy values × ``scale_gy``."""
    from art.summary import goal_table

    rows = goal_table(goals)
    for r in rows:
        if r["unit"] == "Gy" and np.isfinite(r["value"]):
            r["value"] = float(r["value"]) * scale_gy
    return rows


def _missed_text(row: dict) -> str:
    """``"PTV D95% 56.1 Gy (≥ 57 Gy)"``."""
    return f"{row['structure']} {row['metric']} {row['value']:.1f} {row['unit']} ({row['goal']})"


def _scaled_goal(row: dict, share: float) -> str:
    """The goal of a row at the delivered share (Gy bounds × share; % and cc goals as they are)."""
    from art.protocol import format_number

    if row["unit"] != "Gy":
        return row["goal"]
    parts = [f"≥ {format_number(round(row['at_least'] * share, 3))} Gy"] if row["at_least"] is not None else []
    parts += [f"≤ {format_number(round(row['at_most'] * share, 3))} Gy"] if row["at_most"] is not None else []
    return " and ".join(parts)


def _structures(reference: Any) -> Any:
    from art.final_dose import evaluation_structures

    return evaluation_structures(reference.structures)


def course_goals(course: Course, *, fractions_planned: int, projection: str = "mean", planned: Volume | None = None) -> dict:
    """Goals per fraction, cumulative and projected (module docstring).

    Parameters
    ----------
    course : Course
        With at least one fraction.
    fractions_planned : int, keyword-only
        ``N``: the prescription's number of fractions.
    projection : {"mean", "last"}, keyword-only
    planned : Volume, optional, keyword-only
        The reference plan's dose over ``fractions_planned`` fractions on the course grid
        (:func:`planned_dose`); without it the cumulative rows carry no ``planned`` value.

    Returns
    -------
    dict
        ``{"fractions": [goal rows per fraction], "cumulative": {"goals"}, "projection":
        {"goals", "priority1_met", "missed_priority1"}}``.
    """
    if projection not in PROJECTIONS:
        raise InputError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    n, big_n = len(course.fractions), int(fractions_planned)
    if n < 1 or big_n < 1:
        raise InputError(f"need at least one fraction delivered and planned (delivered {n}, planned {big_n})")
    structures, protocol, grid = _structures(course.reference), course.reference.protocol, course.grid
    per = [_rows(_evaluate(d.array * big_n, grid, structures, protocol)) for d in course.per_fraction]
    share = n / big_n
    cum = _rows(_evaluate(course.dose.array / share, grid, structures, protocol), share)
    plan_rows = _rows(_evaluate(planned.array, grid, structures, protocol), share) if planned is not None else [None] * len(cum)
    for r, p in zip(cum, plan_rows):
        r["scaled_goal"] = _scaled_goal(r, share)
        r["planned"] = None if p is None else p["value"]
    left = max(big_n - n, 0)
    if projection == "mean" and n <= big_n:
        proj = [{**r, "value": r["value"] / share if r["unit"] == "Gy" else r["value"]} for r in cum]
        for r in proj:
            r.pop("scaled_goal"), r.pop("planned")
    else:
        base = course.dose.array + (left * course.per_fraction[-1].array if projection == "last" else left / n * course.dose.array)
        proj = _rows(_evaluate(base, grid, structures, protocol))
    missed = [_missed_text(r) for r in proj if int(r["priority"]) == 1 and not r["met"]]
    return {"fractions": per, "cumulative": {"goals": cum},
            "projection": {"goals": proj, "priority1_met": not missed, "missed_priority1": missed}}  # fmt: skip


def _target(structures: Any) -> Any:
    """The structure whose centroid is tracked: CTV, else PTV, else the first non-empty target (None when none)."""
    from art.structures import TARGET_TYPES

    for name in ("CTV", "PTV"):
        s = structures.find(name)
        if s is not None and not s.is_empty:
            return s
    return next((s for s in structures if s.roi_type.upper() in TARGET_TYPES and not s.is_empty), None)


def fraction_record(fraction: Any, reference: Any) -> dict:
    """The longitudinal record of one fraction: organ volumes (cc) and the target's centroid shift.

    ``target_centroid_shift_mm``: today's target centroid mapped by the rigid registration
    (today → planning CT LPS, the set-up corrected) minus the planning target's centroid,
    LPS mm — how far the target moved relative to the rigid alignment. ``volumes_cc``: every
    daily structure except the BODY/EXTERNAL.
    """
    vols = {s.name: round(float(s.volume_cc), 2) for s in fraction.structures_daily if s.roi_type.upper() != "EXTERNAL"}
    today = _target(fraction.structures_daily)
    shift, name = None, None
    if today is not None:
        planning = reference.structures.find(today.name)
        if planning is not None and not planning.is_empty:
            m = np.asarray(fraction.rigid_cbct_to_ct, dtype=np.float64)
            c = m[:3, :3] @ np.asarray(today.centroid_lps(), dtype=np.float64) + m[:3, 3]
            shift, name = [round(float(v), 2) for v in c - np.asarray(planning.centroid_lps(), dtype=np.float64)], today.name
    return {"volumes_cc": vols, "target": name, "target_centroid_shift_mm": shift}


def dvh_curves(course: Course, planned: Volume | None, *, bin_width_gy: float = 0.1) -> dict:
    """Cumulative vs planned DVHs of the protocol's structures on a common dose axis (report model ``dvh``).

    ``planned_percent`` is the reference plan's dose over the fractions delivered (``planned``, its
    dose over the protocol's N fractions (:func:`planned_dose`), × n/N). Returns ``{structure: {"dose_gy", "cumulative_percent",
    "planned_percent"}}`` (``planned_percent`` empty without ``planned``).
    """
    from art.evaluate.dvh import dvh

    structures, protocol = _structures(course.reference), course.reference.protocol
    n, big_n = len(course.fractions), int(course.reference.protocol.prescription.fractions)
    plan_now = None if planned is None else Volume(planned.array * np.float32(n / big_n), planned.grid)
    top = float(max(course.dose.array.max(initial=0.0), 0.0 if plan_now is None else plan_now.array.max(initial=0.0))) + bin_width_gy
    out = {}
    for name in dict.fromkeys(g.structure for g in protocol.goals):
        s = structures.find(name)
        if s is None or s.is_empty:
            continue
        c = dvh(course.dose, s, bin_width_gy=bin_width_gy, max_dose_gy=top, name=name, mode="polygons")
        p = dvh(plan_now, s, bin_width_gy=bin_width_gy, max_dose_gy=top, name=name, mode="polygons") if plan_now is not None else None
        out[name] = {"dose_gy": [round(float(v), 3) for v in c.dose_gy], "cumulative_percent": [round(float(v), 3) for v in c.volume_pct],
                     "planned_percent": [] if p is None else [round(float(v), 3) for v in p.volume_pct]}  # fmt: skip
    return out
