"""art.report: the physicist QA report (one self-contained HTML file; PDF when Chromium is installed).

Typical use::

    from art.report import adaptive_report_model, write_report, write_pdf
    model = adaptive_report_model(sct, structures, scheduled_dose, adapted_dose,
                                  scheduled_goals, adapted_goals, ...)
    write_report(model, out / "report.html")

matplotlib is imported only when a figure is drawn.
"""

from art.report.build import adaptive_report_model, dvh_curves, plan_report_model, recommend
from art.report.html import render_report, write_report
from art.report.model import ReportFigure, ReportModel, goal_row
from art.report.pdf import find_chromium, write_pdf

__all__ = [
    "ReportModel",
    "ReportFigure",
    "goal_row",
    "render_report",
    "write_report",
    "write_pdf",
    "find_chromium",
    "plan_report_model",
    "adaptive_report_model",
    "dvh_curves",
    "recommend",
]
