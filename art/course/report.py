"""The course report: one self-contained HTML page of the dose accumulated over the fractions so far.

The page is built from the course's ``summary.json`` dict (see ``art course``) plus the DVH
arrays, in the style of the QA report (:mod:`art.report.html`: same CSS, escaping and
embedded PNG figures; no scripts, no external resources). It carries no patient name or
ID: the model holds none, and each fraction's folder is shown by its last component only.

Sections: header (fractions delivered of planned, method, projection basis), a flag box
when the projection misses a priority-1 goal, method and uncertainty, the cumulative goal
table, the projection table, cumulative vs planned DVHs, a per-fraction trend of each
priority-1 goal, the organ-volume and target-centroid-shift trends, the per-fraction
table, warnings and provenance.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from art._version import __version__
from art.errors import InputError
from art.evaluate.goals import metric_label
from art.report.html import _CSS, _cell, _e, _figure, _fmt, _is_num, _kv_table, _provenance, _section, _table, _write_atomic
from art.report.model import ReportFigure

__all__ = ["write_course_report", "render_course_report", "priority1_misses"]

_COURSE_CSS = """
.flag-box { border: 2px solid var(--fail); border-left-width: 8px; background: var(--fail-bg); color: #5a0b0e;
            padding: 10px 14px; margin: 12px 0; }
.flag-box strong { color: var(--fail); }
.flag-box ul { margin: 6px 0 0; }
.method { border-left: 6px solid #0b5cad; background: #eef5fc; padding: 10px 14px; margin: 12px 0; }
"""

#: How each accumulation method maps a fraction's dose onto the planning CT (shown in the method section).
METHOD_TEXT = {
    "pull": (
        "Dose warping by pulling: each fraction's dose is read at the deformed position of every planning-CT voxel, "
        "D(x) = D_day(φ⁻¹(x)), with trilinear interpolation, through the inverse of that day's deformable "
        "registration; dose outside the daily dose grid counts as 0."
    ),
    "energy": (
        "Energy/mass-conserving accumulation: the energy D·ρ·dV of each daily voxel is deposited at its deformed "
        "position on the planning CT and divided by the planning CT's mass there (densities from the CT calibration)."
    ),
}


def _unit_text(value: Any, unit: str) -> str:
    """A value with its unit (``"56.1 Gy"``); text as given; None as a dash."""
    if value is None:
        return "—"
    if _is_num(value):
        return f"{_fmt(float(value))} {unit}".strip()
    return _fmt(value)


def _folder_name(folder: Any) -> str:
    """The last component of a fraction folder (a full path may name the patient)."""
    return str(folder or "").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _result_cells(met: Any) -> tuple[str, str]:
    """The CSS class and the result cell of a goal row (``met`` None: not evaluated)."""
    if met is None:
        return "na", '<td class="na">—</td>'
    cls = "pass" if bool(met) else "fail"
    return cls, f'<td class="{cls}">{"✓ met" if met else "✗ not met"}</td>'


def _goal_keys(rows: Sequence[Mapping[str, Any]]) -> list[tuple]:
    """One key per row, (structure, metric, goal, occurrence), to match rows of several tables."""
    seen: dict[tuple, int] = {}
    keys = []
    for r in rows:
        base = (str(r.get("structure")), str(r.get("metric")), str(r.get("goal")))
        keys.append(base + (seen.get(base, 0),))
        seen[base] = seen.get(base, 0) + 1
    return keys


def _check_model(model: Any) -> dict[str, Any]:
    """The validated parts of a course model: fractions, cumulative and projection rows, n and N."""
    if not isinstance(model, Mapping):
        raise InputError(f"model must be the course summary (a mapping), got {type(model).__name__}")
    for key in ("fractions", "cumulative", "projection", "fractions_planned"):
        if key not in model:
            raise InputError(f"the course model lacks {key!r}")
    fractions = model["fractions"]
    if not isinstance(fractions, Sequence) or not fractions or not all(isinstance(f, Mapping) for f in fractions):
        raise InputError("model['fractions'] must be a non-empty list of fraction records")
    out: dict[str, Any] = {"fractions": list(fractions)}
    for key in ("cumulative", "projection"):
        part = model[key]
        rows = part.get("goals") if isinstance(part, Mapping) else None
        if not isinstance(rows, Sequence) or not all(isinstance(r, Mapping) for r in rows):
            raise InputError(f"model[{key!r}]['goals'] must be a list of goal rows")
        for r in rows:
            missing = [k for k in ("structure", "metric", "goal", "value", "met") if k not in r]
            if missing:
                raise InputError(f"a goal row of model[{key!r}] lacks {', '.join(missing)}: {dict(r)!r}")
        out[key] = list(rows)
    try:
        n_planned = int(model["fractions_planned"])
        n_done = int(model.get("fractions_delivered", len(fractions)))
    except (TypeError, ValueError) as exc:
        raise InputError("model['fractions_planned'] and ['fractions_delivered'] must be whole numbers") from exc
    if n_planned < 1 or n_done < 1:
        raise InputError(f"fractions planned ({n_planned}) and delivered ({n_done}) must be at least 1")
    out["n"], out["N"] = n_done, n_planned
    return out


# ---------------------------------------------------------------- flag and method
def priority1_misses(projection: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """Whether the projection meets every priority-1 goal, and the missed goals in words.

    Parameters
    ----------
    projection : mapping
        ``model["projection"]``: ``goals`` rows, optionally ``priority1_met`` and
        ``missed_priority1`` (given values take precedence over the rows).

    Returns
    -------
    met : bool
    missed : list of str
        E.g. ``["PTV D95% 56.1 Gy (≥ 57 Gy)"]``; empty when ``met``.
    """
    rows = [r for r in projection.get("goals", []) if r.get("priority") == 1]
    met = projection.get("priority1_met")
    met = all(bool(r["met"]) for r in rows) if met is None else bool(met)
    missed = [str(m) for m in projection.get("missed_priority1") or []]
    if not missed and not met:
        missed = [
            f"{r['structure']} {r['metric']} {_unit_text(r['value'], r.get('unit') or '')} ({r['goal']})"
            for r in rows
            if not r["met"]
        ]
    return met, ([] if met else missed)


def _flag_box(projection: Mapping[str, Any], n_planned: int) -> str:
    met, missed = priority1_misses(projection)
    if met:
        return ""
    items = "".join(f"<li>{_e(m)}</li>" for m in missed) or "<li>(the summary names no goal)</li>"
    return (
        f'<div class="flag-box" id="flag"><strong>⚠ Projection misses priority-1 goal(s)</strong>: if the remaining '
        f"fractions are delivered like those so far, the course of {n_planned} fractions will not meet:<ul>{items}</ul></div>"
    )


def _method_section(model: Mapping[str, Any], parts: Mapping[str, Any]) -> str:
    method = str(model.get("method", "—"))
    other = model.get("other_method")
    basis = str(model.get("projection_basis", "mean"))
    text = METHOD_TEXT.get(method, f"Accumulation method {method!r}.")
    unc = model.get("uncertainty") or {}
    diff = unc.get("integral_dose_difference_percent")
    between = unc.get("between") or [method, other]
    if _is_num(diff):
        u = (f"The integral dose (Σ D·ρ·dV) of the cumulative dose differs by {_fmt(float(diff))} % between the "
             f"{' and '.join(str(b) for b in between if b)} methods: an estimate of the dose-warping uncertainty.")  # fmt: skip
    else:
        u = "No second accumulation method was run: the dose-warping uncertainty is not estimated."
    how = {"mean": "the mean of the fractions so far", "last": "the last fraction"}.get(basis, repr(basis))
    remaining = max(parts["N"] - parts["n"], 0)
    proj = (f"Projection: the cumulative dose plus {remaining} remaining fraction(s) delivered as {how}. "
            f"Goals of the cumulative table are scaled by {parts['n']}/{parts['N']} (fractions delivered / planned).")  # fmt: skip
    facts = {"method": method, "other method": other or "—", "projection basis": basis,
             "integral dose difference": _unit_text(diff, "%") if _is_num(diff) else "—"}  # fmt: skip
    return f'<div class="method"><p>{_e(text)}</p><p>{_e(u)}</p><p>{_e(proj)}</p></div>' + _kv_table(facts)


# ---------------------------------------------------------------- tables
def _goal_cells(r: Mapping[str, Any]) -> list[str]:
    return [_cell(r.get("priority")), _cell(str(r["structure"])), _cell(metric_label(str(r["metric"]))), _cell(str(r["goal"]))]


def _cumulative_table(rows: Sequence[Mapping[str, Any]], n: int, n_planned: int) -> str:
    header = ["priority", "structure", "metric", "goal (course)", f"cumulative ({n} fx)", f"scaled goal (× {n}/{n_planned})",
              f"planned ({n} fx)", "result"]  # fmt: skip
    body = []
    for r in rows:
        unit = str(r.get("unit") or "")
        cls, result = _result_cells(r.get("met"))
        cells = _goal_cells(r) + [
            f'<td class="num {cls}">{_e(_unit_text(r["value"], unit))}</td>',
            f'<td class="num">{_e(_unit_text(r.get("scaled_goal"), unit))}</td>',
            f'<td class="num">{_e(_unit_text(r.get("planned"), unit))}</td>',
            result,
        ]
        body.append(f'<tr class="goal{" goal-failed" if cls == "fail" else ""}">' + "".join(cells) + "</tr>")
    return _table(header, body, cls="goals cumulative")


def _projection_table(rows: Sequence[Mapping[str, Any]], cumulative: Sequence[Mapping[str, Any]], n_planned: int) -> str:
    so_far = dict(zip(_goal_keys(cumulative), cumulative))
    header = ["priority", "structure", "metric", "goal", "cumulative so far", f"projected ({n_planned} fx)", "result"]
    body = []
    for key, r in zip(_goal_keys(rows), rows):
        unit = str(r.get("unit") or "")
        cls, result = _result_cells(r.get("met"))
        now = so_far.get(key, {}).get("value")
        cells = _goal_cells(r) + [
            f'<td class="num">{_e(_unit_text(now, unit))}</td>',
            f'<td class="num {cls}">{_e(_unit_text(r["value"], unit))}</td>',
            result,
        ]
        p1 = " p1-missed" if cls == "fail" and r.get("priority") == 1 else ""
        body.append(f'<tr class="goal{" goal-failed" if cls == "fail" else ""}{p1}">' + "".join(cells) + "</tr>")
    return _table(header, body, cls="goals projection")


def _shift(f: Mapping[str, Any]) -> list[float] | None:
    s = f.get("target_centroid_shift_mm")
    if s is None or len(s) != 3 or not all(_is_num(v) for v in s):
        return None
    return [float(v) for v in s]


def _fractions_table(fractions: Sequence[Mapping[str, Any]]) -> str:
    organs = list(dict.fromkeys(k for f in fractions for k in (f.get("volumes_cc") or {})))
    header = ["fraction", "folder", "delivered plan"] + [f"{o} volume" for o in organs]
    header += ["centroid shift x (L)", "y (P)", "z (S)", "|shift|", "dose-warp residual"]
    body = []
    for f in fractions:
        vols = f.get("volumes_cc") or {}
        s = _shift(f)
        cells = [_cell(f.get("index")), _cell(_folder_name(f.get("folder"))), _cell(f.get("delivered_plan"))]
        cells += [f'<td class="num">{_e(_unit_text(vols.get(o), "cc"))}</td>' for o in organs]
        comps = s + [float(np.linalg.norm(s))] if s is not None else [None] * 4
        cells += [f'<td class="num">{_e(_unit_text(v, "mm"))}</td>' for v in comps]
        cells.append(f'<td class="num">{_e(_unit_text(f.get("dose_warp_residual_mm"), "mm"))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = "<p>Centroid shift: the daily target centroid mapped onto the planning CT minus the planned centroid (LPS mm).</p>"
    return _table(header, body, cls="fractions") + note


# ---------------------------------------------------------------- figures
def _dvh_figure(dvh: Any, n: int) -> ReportFigure | None:
    from art.report.figures import dvh_figure

    if not isinstance(dvh, Mapping) or not dvh:
        return None
    curves: dict[str, dict[str, Any]] = {"cumulative": {}, "planned": {}}
    for name, c in dvh.items():
        if not isinstance(c, Mapping) or "dose_gy" not in c:
            raise InputError(f"model['dvh'][{name!r}] must hold dose_gy, cumulative_percent and planned_percent")
        if c.get("cumulative_percent") is not None:
            curves["cumulative"][str(name)] = (c["dose_gy"], c["cumulative_percent"])
        if c.get("planned_percent") is not None:
            curves["planned"][str(name)] = (c["dose_gy"], c["planned_percent"])
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    png = dvh_figure(curves, styles={"cumulative": "-", "planned": "--"}, title=f"Cumulative vs planned after {n} fraction(s)")
    return ReportFigure(png, f"Cumulative DVH of the accumulated dose on the planning CT after {n} fraction(s) (solid) "
                             f"and the reference plan's DVH for {n} fraction(s) (dashed: planned dose × {n}).")  # fmt: skip


def _goal_lines(row: Mapping[str, Any], projected: Mapping[str, Any] | None) -> dict[str, float]:
    unit = str(row.get("unit") or "")
    lines: dict[str, float] = {}
    for key, sign in (("at_least", "≥"), ("at_most", "≤")):
        if _is_num(row.get(key)):
            lines[f"goal {sign} {_fmt(float(row[key]))} {unit}".strip()] = float(row[key])
    if projected is not None and _is_num(projected.get("value")):
        lines[f"projected {_unit_text(projected['value'], unit)}"] = float(projected["value"])
    return lines


def _goal_trends(parts: Mapping[str, Any]) -> list[tuple[str, ReportFigure]]:
    """One trend figure per priority-1 goal: each fraction's value × N against the goal line."""
    from art.report.figures import trend_figure

    fractions, n_planned = parts["fractions"], parts["N"]
    x = [int(f.get("index", i + 1)) for i, f in enumerate(fractions)]
    per_fraction = [dict(zip(_goal_keys(f.get("goals") or []), f.get("goals") or [])) for f in fractions]
    projected = dict(zip(_goal_keys(parts["projection"]), parts["projection"]))
    out = []
    for key, row in zip(_goal_keys(parts["cumulative"]), parts["cumulative"]):
        if row.get("priority") != 1:
            continue
        unit = str(row.get("unit") or "")
        rows = [pf.get(key) for pf in per_fraction]
        values = [r.get("value") if r is not None else None for r in rows]
        missed = [r is not None and not bool(r.get("met", True)) for r in rows]
        name = f"{row['structure']} {metric_label(str(row['metric']))} ({row['goal']})"
        label = f"fraction × {n_planned}"
        png = trend_figure(x, {label: values}, ylabel=f"{row['metric']} ({unit})" if unit else str(row["metric"]),
                           lines=_goal_lines(row, projected.get(key)), flagged={label: missed}, title=name)  # fmt: skip
        cap = (f"{name}: each fraction's accumulated dose × {n_planned}, as if every fraction were like it; dashed: the "
               "course goal; dotted: the projected course value; red rings: fractions missing the goal.")  # fmt: skip
        out.append((f"Trend: {name}", ReportFigure(png, cap)))
    return out


def _anatomy_trends(fractions: Sequence[Mapping[str, Any]]) -> list[tuple[str, ReportFigure]]:
    """The organ-volume trend (cc) and the target-centroid-shift trend (mm, LPS), where the fractions give them."""
    from art.report.figures import trend_figure

    x = [int(f.get("index", i + 1)) for i, f in enumerate(fractions)]
    out = []
    organs = list(dict.fromkeys(k for f in fractions for k in (f.get("volumes_cc") or {})))
    if organs:
        series = {o: [(f.get("volumes_cc") or {}).get(o) for f in fractions] for o in organs}
        png = trend_figure(x, series, ylabel="volume (cc)", title="Organ volumes per fraction")
        out.append(("Organ volumes", ReportFigure(png, "Volume (cc) of each organ in the daily structures, per fraction.")))
    shifts = [_shift(f) for f in fractions]
    if any(s is not None for s in shifts):
        comp = lambda i: [s[i] if s is not None else None for s in shifts]  # noqa: E731
        series = {"x (+left)": comp(0), "y (+posterior)": comp(1), "z (+superior)": comp(2),
                  "|shift|": [float(np.linalg.norm(s)) if s is not None else None for s in shifts]}  # fmt: skip
        png = trend_figure(x, series, ylabel="centroid shift (mm)", title="Target centroid shift per fraction")
        cap = "Daily target centroid mapped onto the planning CT minus the planned centroid, per LPS component and its length (mm)."
        out.append(("Target centroid shift", ReportFigure(png, cap)))
    return out


# ---------------------------------------------------------------- page
def _sections(model: Mapping[str, Any], parts: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    n, n_planned = parts["n"], parts["N"]
    sections = [("method", "Method and uncertainty", _method_section(model, parts))]
    if model.get("warnings"):
        items = "".join(f"<li>{_e(w)}</li>" for w in model["warnings"])
        sections.append(("warnings", "Warnings", f'<ul class="warnings">{items}</ul>'))
    sections.append(("cumulative", f"Cumulative goals after {n} of {n_planned} fractions",
                     _cumulative_table(parts["cumulative"], n, n_planned)))  # fmt: skip
    sections.append(("projection", f"Projection to {n_planned} fractions", _projection_table(parts["projection"], parts["cumulative"], n_planned)))
    dvh = _dvh_figure(model.get("dvh"), n)
    body = _figure("Cumulative vs planned DVH", dvh) if dvh is not None else "<p>No DVH in the course summary.</p>"
    sections.append(("dvh", "Dose-volume histograms", body))
    trends = _goal_trends(parts)
    body = "".join(_figure(name, fig) for name, fig in trends) or "<p>No priority-1 goal.</p>"
    sections.append(("goal-trends", "Priority-1 goals per fraction", body))
    anatomy = _anatomy_trends(parts["fractions"])
    body = "".join(_figure(name, fig) for name, fig in anatomy) or "<p>No organ volumes or centroid shifts in the summary.</p>"
    sections.append(("anatomy-trends", "Anatomy per fraction", body))
    sections.append(("fractions", "Fractions", _fractions_table(parts["fractions"])))
    if model.get("provenance"):
        sections.append(("provenance", "Provenance", _provenance(model["provenance"])))
    return sections


def render_course_report(model: Mapping[str, Any]) -> str:
    """The course report as one self-contained HTML document.

    Parameters
    ----------
    model : mapping
        The course summary (``summary.json`` of ``art course``: ``fractions``,
        ``fractions_planned``, ``fractions_delivered``, ``method``, ``other_method``,
        ``projection_basis``, ``cumulative``, ``projection``, ``uncertainty``,
        ``warnings``, ``provenance``) plus ``dvh``: structure -> ``{"dose_gy",
        "cumulative_percent", "planned_percent"}`` (Gy; percent of the structure's
        volume; planned = the reference plan's dose × fractions delivered).
        Goal values are in each row's ``unit`` (Gy, %, cc).

    Returns
    -------
    str
        HTML5 text; no scripts, no external resources, no patient name or ID.
    """
    parts = _check_model(model)
    sections = _sections(model, parts)
    title = "Course dose accumulation"
    meta = {
        "fractions delivered": f"{parts['n']} of {parts['N']}",
        "accumulation": str(model.get("method", "—")),
        "projection basis": str(model.get("projection_basis", "mean")),
        "software": f"art {__version__}",
        "created (UTC)": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    flag = _flag_box(model["projection"], parts["N"])
    nav = "".join(f'<a href="#{_e(a)}">{_e(t)}</a>' for a, t, _ in sections)
    body = "".join(_section(a, t, b) for a, t, b in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}{_COURSE_CSS}</style></head>"
        f"<body><header><h1>{_e(title)}</h1>{_kv_table(meta)}<nav>{nav}</nav></header>"
        f"<main>{flag}{body}</main>"
        f"<footer>Generated by art {_e(__version__)}. For physicist review: accumulated dose depends on the deformable "
        "registrations; check the trends and the uncertainty before acting on it.</footer>"
        "</body></html>\n"
    )


def write_course_report(path: str | Path, model: Mapping[str, Any]) -> Path:
    """Render the course report and write it atomically (temporary file, then rename).

    Parameters
    ----------
    path : str or Path
        Destination ``.html`` file; its folder must exist.
    model : mapping
        See :func:`render_course_report`.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError("the course report's folder does not exist", path=path.parent)
    return _write_atomic(path, render_course_report(model))
