"""Render a :class:`~art.report.model.ReportModel` as one self-contained HTML file.

The page has inline CSS, figures as ``data:image/png;base64`` images, no
scripts and no external resources, so it opens offline and can be archived as
one file. All text from the model is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from art.evaluate.goals import metric_label
from art.errors import InputError
from art.report.model import ReportModel

__all__ = ["render_report", "write_report"]

_CSS = """
:root { --pass: #1e7b34; --pass-bg: #e3f4e6; --fail: #a4161a; --fail-bg: #fbe3e4; --muted: #666; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; font-size: 14px; color: #222;
       margin: 0 auto; max-width: 1180px; padding: 16px 24px 48px; background: #fff; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 2px solid #d0d7de; }
h3 { font-size: 15px; margin: 16px 0 6px; }
nav { font-size: 13px; margin: 8px 0 12px; }
nav a { margin-right: 12px; color: #0b5cad; text-decoration: none; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pass { background: var(--pass-bg); color: var(--pass); font-weight: 600; }
td.fail { background: var(--fail-bg); color: var(--fail); font-weight: 600; }
td.na { color: var(--muted); }
tr.flag td { background: #fff4d6; }
tr.total td { font-weight: 600; border-top: 2px solid #999; }
.meta td:first-child { color: var(--muted); }
.recommendation { border-left: 6px solid #0b5cad; background: #eef5fc; padding: 10px 14px; margin: 12px 0;
                  white-space: pre-wrap; }
.warnings { border-left: 6px solid #c77c02; background: #fff4d6; padding: 8px 14px 8px 30px; margin: 12px 0; }
figure { margin: 10px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e1e4e8; }
figcaption { font-size: 13px; color: #444; margin-top: 4px; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; white-space: pre-wrap; word-break: break-all; }
code { font-size: 12px; word-break: break-all; }
footer { margin-top: 32px; font-size: 12px; color: var(--muted); }
@media print { body { max-width: none; padding: 0; } h2 { page-break-after: avoid; } figure { page-break-inside: avoid; }
               nav { display: none; } }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """Plain-text rendering of a value (not yet escaped)."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    if isinstance(value, Mapping):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _cell(value: Any, cls: str | None = None) -> str:
    c = cls or ("num" if _is_num(value) else None)
    return f'<td class="{c}">{_e(_fmt(value))}</td>' if c else f"<td>{_e(_fmt(value))}</td>"


def _table(header: Sequence[str], rows: Iterable[str], *, cls: str | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"


def _kv_table(d: Mapping[str, Any], *, cls: str | None = "meta") -> str:
    rows = [f"<tr><td>{_e(str(k).replace('_', ' '))}</td>{_cell(v)}</tr>" for k, v in d.items()]
    return _table(["", ""], rows, cls=cls).replace("<thead><tr><th></th><th></th></tr></thead>", "")


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>{body}</section>'


# ---------------------------------------------------------------- goal table
def _value_text(row: Mapping[str, Any]) -> str:
    unit = row.get("unit") or ""
    v = row.get("value")
    text = _fmt(float(v)) if _is_num(v) else _fmt(v)
    return f"{text} {unit}".strip()


def _goal_table(goals: Mapping[str, list[dict[str, Any]]]) -> str:
    labels = list(goals)
    keyed: dict[tuple, dict[str, dict[str, Any]]] = {}
    order: list[tuple] = []
    for label in labels:
        seen: dict[tuple, int] = {}
        for row in goals[label]:
            base = (str(row["structure"]), str(row["metric"]), str(row["goal"]))
            n = seen.get(base, 0)
            seen[base] = n + 1
            key = base + (n,)
            if key not in keyed:
                keyed[key] = {}
                order.append(key)
            keyed[key][label] = row
    header = ["priority", "structure", "metric", "goal"]
    for label in labels:
        header += [f"{label}: value", f"{label}: result"]
    rows = []
    for key in order:
        per = keyed[key]
        any_row = next(iter(per.values()))
        cells = [_cell(any_row.get("priority")), _cell(key[0]), _cell(metric_label(key[1])), _cell(key[2])]
        failed = False
        for label in labels:
            r = per.get(label)
            if r is None:
                cells += ['<td class="na">—</td>', '<td class="na">—</td>']
                continue
            ok = bool(r["met"])
            failed |= not ok
            cls = "pass" if ok else "fail"
            cells.append(f'<td class="num {cls}">{_e(_value_text(r))}</td>')
            cells.append(f'<td class="{cls}">{"✓ met" if ok else "✗ not met"}</td>')
        rows.append(f'<tr class="goal{" goal-failed" if failed else ""}">' + "".join(cells) + "</tr>")
    return _table(header, rows, cls="goals")


def _priority_summary(goals: Mapping[str, list[dict[str, Any]]]) -> str:
    prios = sorted({r.get("priority") for rows in goals.values() for r in rows}, key=lambda p: (p is None, p if p is not None else 0))
    if not prios:
        return ""
    rows = []
    for p in prios:
        cells = [_cell(p)]
        for label, rs in goals.items():
            sel = [r for r in rs if r.get("priority") == p]
            met = sum(bool(r["met"]) for r in sel)
            cls = "pass" if sel and met == len(sel) else ("fail" if sel else "na")
            cells.append(f'<td class="num {cls}">{met} / {len(sel)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<h3>Goals met by priority</h3>" + _table(["priority"] + [f"{label}" for label in goals], rows, cls="priorities")


# ---------------------------------------------------------------- other tables
def _beam_table(mu: Mapping[str, Mapping[str, float]], segments: Mapping[str, Mapping[str, int]]) -> str:
    labels = list(dict.fromkeys(list(mu) + list(segments)))
    beams: list[str] = []
    for d in list(mu.values()) + list(segments.values()):
        for b in d:
            if str(b) not in beams:
                beams.append(str(b))
    header = ["beam"]
    for label in labels:
        if label in mu:
            header.append(f"{label}: MU per fraction")
        if label in segments:
            header.append(f"{label}: segments")
    rows = []
    for b in beams:
        cells = [_cell(b)]
        for label in labels:
            if label in mu:
                m = {str(k): v for k, v in mu[label].items()}
                cells.append(_cell(float(m[b])) if b in m else '<td class="na">—</td>')
            if label in segments:
                s = {str(k): v for k, v in segments[label].items()}
                cells.append(_cell(int(s[b])) if b in s else '<td class="na">—</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cells = [_cell("total")]
    for label in labels:
        if label in mu:
            cells.append(_cell(float(sum(float(v) for v in mu[label].values()))))
        if label in segments:
            cells.append(_cell(int(sum(int(v) for v in segments[label].values()))))
    rows.append('<tr class="total">' + "".join(cells) + "</tr>")
    return _table(header, rows, cls="beams")


def _timings_table(timings: Mapping[str, float]) -> str:
    rows = [f"<tr>{_cell(k)}{_cell(float(v))}</tr>" for k, v in timings.items()]
    total = sum(float(v) for v in timings.values())
    rows.append(f'<tr class="total">{_cell("total")}{_cell(total)}</tr>')
    return _table(["stage", "time (s)"], rows, cls="timings")


def _rows_table(rows: list[Mapping[str, Any]], *, flag_key: str = "flagged") -> str:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(str(k))
    body = []
    for r in rows:
        cls = ' class="flag"' if bool(r.get(flag_key)) else ""
        body.append(f"<tr{cls}>" + "".join(_cell(r.get(c)) for c in cols) + "</tr>")
    return _table([c.replace("_", " ") for c in cols], body, cls="contours")


def _provenance(prov: Mapping[str, Any]) -> str:
    parts = []
    simple = {k: v for k, v in prov.items() if k not in ("inputs", "parameters")}
    if simple:
        parts.append(_kv_table(simple))
    inputs = prov.get("inputs") or {}
    if inputs:
        rows = [f"<tr><td>{_e(k)}</td><td><code>{_e(_fmt(v))}</code></td></tr>" for k, v in inputs.items()]
        parts.append("<h3>Inputs (SHA-256)</h3>" + _table(["input", "hash"], rows, cls="inputs"))
    params = prov.get("parameters") or {}
    if params:
        parts.append("<h3>Parameters</h3><pre>" + _e(json.dumps(params, indent=2, default=str, ensure_ascii=False)) + "</pre>")
    return "".join(parts)


def _figure(name: str, fig: Any) -> str:
    b64 = base64.b64encode(bytes(fig.png)).decode("ascii")
    cap = f"<figcaption>{_e(fig.caption)}</figcaption>" if fig.caption else ""
    return f'<figure><h3>{_e(name)}</h3><img alt="{_e(name)}" src="data:image/png;base64,{b64}">{cap}</figure>'


# ---------------------------------------------------------------- public
def render_report(model: ReportModel) -> str:
    """The report as one self-contained HTML document.

    Parameters
    ----------
    model : ReportModel
        Empty sections are left out.

    Returns
    -------
    str
        HTML5 text (UTF-8 when written); no scripts, no external resources.
    """
    if not isinstance(model, ReportModel):
        raise InputError(f"model must be a ReportModel, got {type(model).__name__}")
    sections: list[tuple[str, str, str]] = []  # anchor, title, body
    if model.recommendation:
        sections.append(("recommendation", "Recommendation", f'<div class="recommendation">{_e(model.recommendation)}</div>'))
    if model.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in model.warnings)
        sections.append(("warnings", "Warnings", f'<ul class="warnings">{items}</ul>'))
    if model.goals:
        how = f'<p class="evaluation">{_e(model.evaluation)}</p>' if model.evaluation else ""
        sections.append(("goals", "Clinical goals", how + _goal_table(model.goals) + _priority_summary(model.goals)))
    if model.independent_check:
        sections.append(("independent-check", "Independent dose check", _kv_table(model.independent_check)))
    if model.figures:
        sections.append(("figures", "Figures", "".join(_figure(n, f) for n, f in model.figures.items())))
    if model.registration:
        sections.append(("registration", "Registration QA", _kv_table(model.registration)))
    if model.contour_qa:
        sections.append(("contours", "Contour QA", _rows_table(model.contour_qa)))
    if model.mu_per_beam or model.segments_per_beam:
        sections.append(("beams", "Monitor units and segments", _beam_table(model.mu_per_beam, model.segments_per_beam)))
    if model.timings:
        sections.append(("timings", "Time per stage", _timings_table(model.timings)))
    if model.provenance:
        sections.append(("provenance", "Provenance", _provenance(model.provenance)))

    meta = dict(model.identifiers)
    meta["software"] = f"art {model.software_version}"
    meta["created (UTC)"] = model.created_utc
    nav = "".join(f'<a href="#{_e(a)}">{_e(t)}</a>' for a, t, _ in sections)
    body = "".join(_section(a, t, b) for a, t, b in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(model.title)}</title><style>{_CSS}</style></head>"
        f"<body><header><h1>{_e(model.title)}</h1>{_kv_table(meta)}<nav>{nav}</nav></header>"
        f"<main>{body}</main>"
        f"<footer>Generated by art {_e(model.software_version)}. For physicist review: every value here must be "
        "checked against the clinical system before treatment.</footer>"
        "</body></html>\n"
    )


def write_report(model: ReportModel, path: str | Path) -> Path:
    """Render and write the report atomically (temporary file, then rename).

    Parameters
    ----------
    model : ReportModel
    path : str or Path
        Destination ``.html`` file; its folder must exist. An existing file is
        replaced only once the new one is completely written.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError("the report's folder does not exist", path=path.parent)
    return _write_atomic(path, render_report(model))


def _write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in its folder, then rename; returns ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
