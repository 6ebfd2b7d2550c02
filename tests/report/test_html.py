"""The HTML report: goal rows, pass/fail classes, escaping, no network, atomic write."""

from __future__ import annotations

import base64
import re

import pytest

from art.errors import InputError
from art.report import ReportFigure, ReportModel, render_report, write_report
from art.report import html as report_html

from .conftest import png_pixels


def _png(value: float) -> bytes:
    from art.report.figures import mu_bar_figure

    return mu_bar_figure({"G0": value}, figsize=(2, 2), dpi=30)


SCHEDULED = [
    {"structure": "PTV", "metric": "D95%", "goal": "≥ 57 Gy", "value": 55.25, "met": False, "priority": 1, "unit": "Gy"},
    {"structure": "PTV", "metric": "D2%", "goal": "≤ 63 Gy", "value": 62.0, "met": True, "priority": 1, "unit": "Gy"},
    {"structure": "Rectum", "metric": "V50Gy", "goal": "≤ 20 %", "value": 24.5, "met": False, "priority": 2, "unit": "%"},
    {"structure": "Bladder", "metric": "Dmean", "goal": "≤ 30 Gy", "value": 21.0, "met": True, "priority": 3, "unit": "Gy"},
]
ADAPTED = [
    dict(SCHEDULED[0], value=57.0, met=True),
    dict(SCHEDULED[1], value=62.5, met=True),
    dict(SCHEDULED[2], value=18.25, met=True),
    dict(SCHEDULED[3], value=33.0, met=False),
]


def _model(**kw) -> ReportModel:
    base = dict(
        title="Daily adaptive re-plan",
        goals={"scheduled": SCHEDULED, "adapted": ADAPTED},
        figures={"MU": ReportFigure(_png(10.0), "caption one"), "MU again": ReportFigure(_png(20.0), "caption two")},
        registration={"couch_shift_mm": (1.0, -2.5, 0.25), "jacobian_min": 0.61, "jacobian_max": 1.42, "folded_voxels": 0},
        contour_qa=[
            {"structure": "Rectum", "dice_ai_vs_propagated": 0.86, "confidence": 0.93, "flagged": False},
            {"structure": "Bladder", "dice_ai_vs_propagated": 0.52, "confidence": 0.41, "flagged": True},
        ],
        mu_per_beam={"scheduled": {"G0": 101.5, "G51": 80.0}, "adapted": {"G0": 99.0, "G51": 85.25}},
        segments_per_beam={"scheduled": {"G0": 7, "G51": 5}, "adapted": {"G0": 8, "G51": 6}},
        timings={"registration": 12.5, "optimisation": 30.0},
        warnings=["rectal gas near the PTV"],
        provenance={"version": "0.1.0", "inputs": {"ct": "a" * 64}, "parameters": {"seed": 3}},
        recommendation="Adapted plan recommended.",
    )
    base.update(kw)
    return ReportModel(**base)


def test_every_goal_row_with_pass_fail_classes():
    page = render_report(_model())
    rows = re.findall(r'<tr class="goal[^"]*">(.*?)</tr>', page, flags=re.S)
    assert len(rows) == len(SCHEDULED)
    for row, s, a in zip(rows, SCHEDULED, ADAPTED):
        assert f"<td>{s['structure']}</td>" in row and f"<td>{s['metric']}</td>" in row
        assert s["goal"] in row
        classes = re.findall(r'<td class="num (pass|fail)">', row)
        assert classes == ["pass" if s["met"] else "fail", "pass" if a["met"] else "fail"]
    # values with their units, side by side
    assert "55.25 Gy" in rows[0] and "57 Gy" in rows[0]
    assert "24.5 %" in rows[2] and "18.25 %" in rows[2]
    goals = re.search(r'<table class="goals">.*?</table>', page, flags=re.S).group(0)
    assert goals.count('<td class="num fail">') == sum(not r["met"] for r in SCHEDULED + ADAPTED)
    assert goals.count('<td class="num pass">') == sum(r["met"] for r in SCHEDULED + ADAPTED)
    assert ".fail" in page and ".pass" in page  # the classes are styled


def test_priority_summary_counts():
    page = render_report(_model())
    table = re.search(r'<table class="priorities">.*?</table>', page, flags=re.S).group(0)
    assert '<td class="num fail">1 / 2</td>' in table  # scheduled, priority 1
    assert '<td class="num pass">2 / 2</td>' in table  # adapted, priority 1
    assert '<td class="num fail">0 / 1</td>' in table  # scheduled P2 and adapted P3


def test_one_plan_report_has_one_value_column():
    page = render_report(ReportModel(title="Plan", goals={"reference": SCHEDULED}))
    assert page.count("reference: value") == 1 and "scheduled" not in page
    for absent in ("Registration QA", "Contour QA", "Monitor units", "Warnings", "Figures", "Provenance"):
        assert absent not in page


def test_no_external_resources_and_figures_embedded():
    model = _model()
    page = render_report(model)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", page, flags=re.I)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, flags=re.I)
    assert "@import" not in page and "url(" not in page
    srcs = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(srcs) == len(model.figures)
    for s, fig in zip(srcs, model.figures.values()):
        assert base64.b64decode(s) == fig.png
        assert png_pixels(base64.b64decode(s)).std() > 0
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(h.startswith("#") for h in hrefs)


def test_text_is_escaped():
    evil = '<script>alert("x")</script> & \'q\''
    rows = [dict(SCHEDULED[0], structure=evil)]
    model = ReportModel(
        title=evil,
        identifiers={evil: evil},
        goals={evil: rows},
        figures={evil: ReportFigure(_png(1.0), evil)},
        registration={evil: evil},
        contour_qa=[{"structure": evil, "flagged": True}],
        timings={evil: 1.0},
        warnings=[evil],
        recommendation=evil,
        provenance={"inputs": {evil: evil}, "parameters": {"note": evil}},
    )
    page = render_report(model)
    assert "<script" not in page and "alert(\"x\")" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;" in page
    assert page.count("&lt;script&gt;") >= 10


def test_identifiers_only_as_given():
    page = render_report(_model())
    assert "Patient" not in page and "patient ID" not in page
    page = render_report(_model(identifiers={"Patient ID": "ART-0042"}))
    assert "ART-0042" in page


def test_beam_and_timing_tables_have_totals():
    page = render_report(_model())
    beams = re.search(r'<table class="beams">.*?</table>', page, flags=re.S).group(0)
    assert "181.5" in beams and "184.25" in beams  # MU totals
    assert "<td class=\"num\">12</td>" in beams and "<td class=\"num\">14</td>" in beams  # segment totals
    timings = re.search(r'<table class="timings">.*?</table>', page, flags=re.S).group(0)
    assert "42.5" in timings
    contours = re.search(r'<table class="contours">.*?</table>', page, flags=re.S).group(0)
    assert contours.count('<tr class="flag">') == 1 and "Bladder" in contours.split('<tr class="flag">')[1]


def test_model_validation():
    with pytest.raises(InputError, match="title"):
        ReportModel(title=" ")
    with pytest.raises(InputError, match="lacks"):
        ReportModel(title="t", goals={"a": [{"structure": "PTV"}]})
    with pytest.raises(InputError, match="PNG"):
        ReportFigure(b"GIF89a", "x")
    with pytest.raises(InputError, match="ReportModel"):
        render_report({"title": "t"})  # type: ignore[arg-type]


def test_goal_rows_accept_goal_results():
    from art.evaluate import GoalResult

    gr = GoalResult("PTV", "D95%", "≥ 57 Gy", 57.0, None, None, 58.0, True, None, 1, "Gy")
    page = render_report(ReportModel(title="t", goals={"reference": [gr]}))
    assert '<td class="num pass">58 Gy</td>' in page


def test_write_report_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "report.html"
    write_report(_model(), out)
    first = out.read_text(encoding="utf-8")
    assert first.startswith("<!DOCTYPE html>") and first.endswith("</html>\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report_html.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_report(_model(title="second"), out)
    assert out.read_text(encoding="utf-8") == first  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temp file left
    monkeypatch.undo()
    write_report(_model(title="second"), out)
    assert "<h1>second</h1>" in out.read_text(encoding="utf-8")
    with pytest.raises(InputError):
        write_report(_model(), tmp_path / "missing" / "r.html")
