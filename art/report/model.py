"""The content of a QA report, independent of how it is rendered.

One :class:`ReportModel` serves both ``art plan`` (one plan, label
``"reference"``) and ``art replan`` (labels ``"scheduled"`` and ``"adapted"``):
every section is optional and is left out of the report when empty.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Mapping

from art._version import __version__
from art.errors import InputError

__all__ = ["ReportFigure", "ReportModel", "goal_row"]

_GOAL_KEYS = ("structure", "metric", "goal", "value", "met", "priority")


@dataclass(frozen=True)
class ReportFigure:
    """One figure: PNG bytes and a caption.

    Parameters
    ----------
    png : bytes
        A PNG file (embedded as base64 in the HTML).
    caption : str
        Plain text (escaped when rendered).
    """

    png: bytes
    caption: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.png, (bytes, bytearray)) or not bytes(self.png[:8]) == b"\x89PNG\r\n\x1a\n":
            raise InputError("a report figure must be PNG bytes")


def goal_row(result: Any) -> dict[str, Any]:
    """A goal-table row from a :class:`art.evaluate.GoalResult` or a dict.

    Parameters
    ----------
    result : GoalResult or mapping
        Needs ``structure``, ``metric``, ``goal``, ``value`` and ``met``;
        ``priority`` (default None) and ``unit`` (default ``""``) are optional;
        other keys are kept.

    Returns
    -------
    dict
        With at least the keys structure, metric, goal, value, met, priority, unit.
    """
    d = result.to_dict() if hasattr(result, "to_dict") else result
    if not isinstance(d, Mapping):
        raise InputError(f"a goal row must be a GoalResult or a mapping, got {type(result).__name__}")
    missing = [k for k in ("structure", "metric", "goal", "value", "met") if k not in d]
    if missing:
        raise InputError(f"goal row lacks {', '.join(missing)}: {dict(d)!r}")
    out = dict(d)
    out.setdefault("priority", None)
    out.setdefault("unit", "")
    out["met"] = bool(out["met"])
    return out


@dataclass
class ReportModel:
    """Everything a QA report shows. All sections but the title are optional.

    Attributes
    ----------
    title : str
        Report title, e.g. ``"Daily adaptive re-plan"``.
    identifiers : dict str -> str
        Patient / plan identifiers exactly as the caller gives them (e.g.
        ``{"Plan": "Prostate 60 Gy in 20", "Fraction": "3"}``). Nothing is
        added: a patient name or ID appears only if the caller puts it here.
    software_version : str
        Defaults to ``art.__version__``.
    created_utc : str
        ISO time stamp (default: now, UTC).
    provenance : dict
        Typically :func:`art.provenance.provenance` output: ``inputs`` (name →
        SHA-256) and ``parameters`` are shown as tables, other keys as values.
    recommendation : str or None
        Decision-support text (which plan and why).
    goals : dict label -> list of rows
        Goal results per plan label, in protocol order; each row a dict (see
        :func:`goal_row`) with structure, metric, goal, value, met, priority
        (and optionally unit). Several labels are shown side by side, rows
        matched on (structure, metric, goal).
    figures : dict name -> ReportFigure
        In display order; name is the figure's heading.
    registration : dict or None
        Registration QA values, e.g. ``couch_shift_mm`` (x, y, z),
        ``jacobian_min``, ``jacobian_max``, ``folded_voxels``, ``tre_mm``.
    contour_qa : list of dict
        One row per structure, e.g. ``{"structure", "dice_ai_vs_propagated",
        "confidence", "flagged"}``; a true ``flagged`` highlights the row.
    mu_per_beam : dict label -> dict beam -> MU
        MU per fraction.
    segments_per_beam : dict label -> dict beam -> int
        Number of MLC segments.
    timings : dict stage -> seconds
    warnings : list of str
    evaluation : str or None
        How the goals and DVHs were computed (the dose engine, the dose grid, the structure
        sampling), shown above the goal table.
    independent_check : dict or None
        The independent dose check as shown (e.g. :meth:`art.independent_check.DoseCheck.table`):
        which algorithm checked the evaluated dose, gamma pass rate, dose-difference statistics.
    """

    title: str
    identifiers: dict[str, str] = field(default_factory=dict)
    software_version: str = __version__
    created_utc: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
    provenance: dict[str, Any] = field(default_factory=dict)
    recommendation: str | None = None
    goals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: dict[str, ReportFigure] = field(default_factory=dict)
    registration: dict[str, Any] | None = None
    contour_qa: list[dict[str, Any]] = field(default_factory=list)
    mu_per_beam: dict[str, dict[str, float]] = field(default_factory=dict)
    segments_per_beam: dict[str, dict[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    evaluation: str | None = None
    independent_check: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.title, str) or not self.title.strip():
            raise InputError("report title must be a non-empty string")
        if not isinstance(self.goals, Mapping):
            raise InputError("goals must be a mapping plan label -> list of goal rows")
        self.goals = {str(label): [goal_row(r) for r in rows] for label, rows in self.goals.items()}
        for name, f in self.figures.items():
            if not isinstance(f, ReportFigure):
                raise InputError(f"figure {name!r} must be a ReportFigure (PNG bytes and caption)")
        self.identifiers = {str(k): str(v) for k, v in (self.identifiers or {}).items()}
        self.warnings = [str(w) for w in self.warnings]

    def add_figure(self, name: str, png: bytes, caption: str = "") -> None:
        """Append a figure (replaces one of the same name)."""
        self.figures[name] = ReportFigure(png, caption)
