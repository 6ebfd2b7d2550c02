"""Deliverability checks of a sequenced plan against the machine model.

A plan that fails any check must not be exported (issue 9): call
:func:`assert_deliverable` before writing an RT Plan.
"""

from __future__ import annotations

import numpy as np

from art.dose.machine import Machine, MLCGeometry, load_machine
from art.errors import InputError
from art.plan import Beam, Plan, Segment

_TOL = 1e-6  # mm / MU slack for floating-point round-off


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def check_plan(plan: Plan, machine: Machine | None = None) -> list[str]:
    """All the reasons a plan cannot be delivered as it stands on ``machine``.

    Checks, per beam: it has segments; machine name, energy and SAD match; beam MU is
    positive, finite and at most ``machine.max_mu_per_beam``. Per segment: finite MU of at
    least ``machine.min_mu_per_segment``; leaf positions of shape (2, n_pairs), finite, within
    the leaf position limits; bank X1 not beyond bank X2 and every pair at least the minimum
    gap apart; no interdigitation (a leaf passing the opposite leaf of a neighbouring pair)
    when the machine forbids it; each bank within the maximum leaf span; jaws finite, ordered
    and within the jaw limits; some opening between the leaves inside the jaws.

    Parameters
    ----------
    plan : Plan
        Segments with MU per fraction, leaf and jaw positions in mm at the isocentre plane.
    machine : Machine, optional
        Default :func:`art.dose.load_machine` ().

    Returns
    -------
    list of str
        One line per problem, naming the beam, segment (from 1) and leaf pair (from 1);
        empty when the plan is deliverable.
    """
    if not isinstance(plan, Plan):
        return [f"not a Plan: {type(plan).__name__}"]
    machine = load_machine() if machine is None else machine
    problems: list[str] = []
    if plan.machine_name != machine.name:
        problems.append(f"plan is for machine {plan.machine_name!r}, not {machine.name!r}")
    for b in plan.beams:
        problems += _beam_problems(b, machine)
    return problems


def _beam_problems(b: Beam, machine: Machine) -> list[str]:
    """The problems of one beam: no segments (nothing else checked then), energy, SAD, total
    MU, then each segment's (:func:`_segment_problems`, numbered from 1)."""
    where = f"beam {b.name!r}"
    if not b.segments:
        return [f"{where}: no segments (sequence the fluence first)"]
    problems: list[str] = []
    if b.energy != machine.energy:
        problems.append(f"{where}: energy {b.energy!r} is not the machine's {machine.energy!r}")
    if abs(b.sad_mm - machine.sad_mm) > 1e-3:
        problems.append(f"{where}: SAD {_fmt(b.sad_mm)} mm is not the machine's {_fmt(machine.sad_mm)} mm")
    mus = np.array([float(s.mu) for s in b.segments])
    total = float(np.sum(mus))
    if not np.isfinite(total) or total <= 0:
        problems.append(f"{where}: total MU {_fmt(total)} is not a positive number")
    elif total > machine.max_mu_per_beam + _TOL:
        problems.append(f"{where}: {_fmt(total)} MU exceeds the machine maximum of {_fmt(machine.max_mu_per_beam)} MU per beam")
    for n, s in enumerate(b.segments, start=1):
        problems += _segment_problems(f"{where} segment {n}", s, machine)
    return problems


def _segment_problems(ws: str, s: Segment, machine: Machine) -> list[str]:
    """The problems of one segment (``ws`` names it): MU, then the leaves (stopping at a wrong
    shape or non-finite positions), then the jaws (stopping when they are not four finite,
    ordered numbers)."""
    mlc = machine.mlc
    problems: list[str] = []
    if not np.isfinite(s.mu):
        problems.append(f"{ws}: MU is not finite")
    elif s.mu < machine.min_mu_per_segment - _TOL:
        problems.append(f"{ws}: {_fmt(s.mu)} MU is below the minimum of {_fmt(machine.min_mu_per_segment)} MU per segment")
    lp = np.asarray(s.leaf_positions, dtype=np.float64)
    if lp.shape != (2, mlc.n_pairs):
        return problems + [f"{ws}: leaf positions have shape {lp.shape}, the machine's MLC needs (2, {mlc.n_pairs})"]
    if not np.all(np.isfinite(lp)):
        return problems + [f"{ws}: leaf positions are not all finite"]
    problems += _leaf_problems(ws, lp, mlc)
    try:
        x1, x2, y1, y2 = (float(v) for v in s.jaws)
    except (TypeError, ValueError):
        return problems + [f"{ws}: jaws are not four numbers"]
    if not all(np.isfinite([x1, x2, y1, y2])) or x1 >= x2 or y1 >= y2:
        return problems + [f"{ws}: jaws ({x1}, {x2}, {y1}, {y2}) are not finite and ordered"]
    return problems + _jaw_problems(ws, lp, (x1, x2, y1, y2), machine)


def _leaf_problems(ws: str, lp: np.ndarray, mlc: MLCGeometry) -> list[str]:
    """Leaf positions ``lp`` (2, n_pairs) mm, finite: leaf limits, bank X1 beyond X2, minimum
    gap, interdigitation (when the MLC forbids it), maximum leaf span (leaf pairs named from 1)."""
    lo, hi = mlc.position_limits_mm
    g = mlc.min_gap_mm
    problems: list[str] = []
    out = np.flatnonzero((lp < lo - _TOL).any(axis=0) | (lp > hi + _TOL).any(axis=0))
    if out.size:
        problems.append(f"{ws}: leaf pairs {(out + 1).tolist()} outside the leaf limits {_fmt(lo)} to {_fmt(hi)} mm")
    crossed = np.flatnonzero(lp[0] > lp[1] + _TOL)
    if crossed.size:
        problems.append(f"{ws}: leaf pairs {(crossed + 1).tolist()} have bank X1 beyond bank X2 (overlapping leaves)")
    narrow = np.flatnonzero((lp[1] - lp[0] < g - _TOL) & (lp[0] <= lp[1] + _TOL))
    if narrow.size:
        problems.append(f"{ws}: leaf pairs {(narrow + 1).tolist()} closer than the minimum gap of {_fmt(g)} mm")
    if not mlc.interdigitation:
        bad = np.flatnonzero((lp[0, :-1] > lp[1, 1:] + _TOL) | (lp[0, 1:] > lp[1, :-1] + _TOL))
        if bad.size:
            problems.append(f"{ws}: interdigitation between leaf pairs {[(int(k) + 1, int(k) + 2) for k in bad]} (the machine forbids it)")
    span = float(max(np.ptp(lp[0]), np.ptp(lp[1])))
    if span > mlc.max_leaf_span_mm + _TOL:
        problems.append(f"{ws}: leaf span {_fmt(span)} mm exceeds the maximum of {_fmt(mlc.max_leaf_span_mm)} mm")
    return problems


def _jaw_problems(ws: str, lp: np.ndarray, jaws: tuple[float, float, float, float], machine: Machine) -> list[str]:
    """Jaws (x1, x2, y1, y2) mm, finite and ordered: X and Y jaw limits, and some opening
    between the leaves ``lp`` (2, n_pairs) mm inside the jaws."""
    x1, x2, y1, y2 = jaws
    jx, jy = machine.jaw_x_limits_mm, machine.jaw_y_limits_mm
    bnd = machine.mlc.boundaries_mm
    problems: list[str] = []
    if x1 < jx[0] - _TOL or x2 > jx[1] + _TOL:
        problems.append(f"{ws}: X jaws {_fmt(x1)}, {_fmt(x2)} mm outside the limits {_fmt(jx[0])} to {_fmt(jx[1])} mm")
    if y1 < jy[0] - _TOL or y2 > jy[1] + _TOL:
        problems.append(f"{ws}: Y jaws {_fmt(y1)}, {_fmt(y2)} mm outside the limits {_fmt(jy[0])} to {_fmt(jy[1])} mm")
    # open area between the leaves inside the jaws
    h = np.clip(np.minimum(bnd[1:], y2) - np.maximum(bnd[:-1], y1), 0, None)
    w = np.clip(np.minimum(lp[1], x2) - np.maximum(lp[0], x1), 0, None)
    if float(h @ w) <= 0:
        problems.append(f"{ws}: no opening between the leaves inside the jaws")
    return problems


def assert_deliverable(plan: Plan, machine: Machine | None = None) -> None:
    """Raise unless :func:`check_plan` finds no problem.

    Raises
    ------
    InputError
        Listing every problem (one per line after the first).
    """
    problems = check_plan(plan, machine)
    if problems:
        name = getattr(machine, "name", None) or "the default machine"
        raise InputError(f"plan is not deliverable on {name} ({len(problems)} problem(s)):\n  " + "\n  ".join(problems))
