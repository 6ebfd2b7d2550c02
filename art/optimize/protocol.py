"""Treatment protocols: prescription, beam set-up and priority-ordered clinical goals.

A protocol is a TOML file (see ``DESIGN.md``, "Protocol file")::

    name = "Prostate 60 Gy in 20"

    [prescription]
    target = "PTV"          # structure name
    dose_gy = 60.0          # total dose over the course, Gy
    fractions = 20

    [beams]
    energy = "6X"
    gantry_angles = [0, 51, 103, 154, 206, 257, 309]
    isocenter = "PTV"       # a structure's centroid, or [x, y, z] in mm (LPS)
    bixel_mm = 5.0          # optional, default 5.0
    # optional extensions: collimator_angles = [...], couch_angles = [...]
    # (one per gantry angle, degrees IEC 61217; default 0)

    [dose]                  # optional table
    grid_mm = 3.0           # optional, default 3.0

    [[goals]]
    structure = "PTV"
    metric = "D95%"
    at_least = 57.0
    priority = 1

Every problem is a :class:`~art.errors.ProtocolError` whose message names the
file and the line (``protocol.toml: line 12: ...``) and whose ``line``
attribute holds the line number (1-based). ``tomllib`` reports no line numbers
for valid TOML, so this module scans the text itself to find where each table
and key is written.

Metric grammar (case-insensitive letters, normalised on output; value unit in brackets):

* ``D<x>%``: minimum dose to the hottest x % of the volume, 0 <= x <= 100 (Gy)
* ``D<x>cc``: minimum dose to the hottest x cc, x > 0 (Gy)
* ``Dmean``: mean dose (Gy)
* ``Dmax``: ``D0.03cc``, the near-maximum (Gy)
* ``Dmin``: the dose to the coldest 0.03 cc, the near-minimum (Gy)
* ``V<x>Gy``: percent of the volume receiving at least x Gy, x > 0 (%)
* ``V<x>Gy[cc]``: the same in cc (cc)

``x`` is a decimal number (``D0.03cc``, ``V47.5Gy``); no exponents.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from art.errors import ProtocolError

__all__ = [
    "Metric",
    "Goal",
    "Prescription",
    "BeamSetup",
    "Protocol",
    "parse_metric",
    "parse_protocol",
    "load_protocol",
    "format_number",
]

DEFAULT_BIXEL_MM = 5.0
DEFAULT_GRID_MM = 3.0
MAX_GRID_MM = 10.0
MAX_BIXEL_MM = 50.0
NEAR_POINT_CC = 0.03  # volume of the near-maximum / near-minimum (ICRU 83 style)


# --------------------------------------------------------------------------- metrics
def format_number(x: float) -> str:
    """Shortest positional decimal text of ``x`` that reads back to the same float.

    ``60.0 -> "60"``, ``0.03 -> "0.03"``, ``1e-5 -> "0.00001"`` (never an exponent).
    """
    return np.format_float_positional(float(x), trim="-")


_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_RE_D = re.compile(rf"^D{_NUM}(%|CC)$")
_RE_V = re.compile(rf"^V{_NUM}GY(\[CC\]|\[%\])?$")


@dataclass(frozen=True)
class Metric:
    """A dose-volume metric.

    Parameters
    ----------
    kind : {"D", "V", "mean", "max", "min"}
        ``"D"``: dose to the hottest ``parameter`` (``unit`` ``"%"`` or ``"cc"``);
        ``"V"``: volume receiving at least ``parameter`` Gy;
        ``"mean"``: mean dose; ``"max"``: ``D0.03cc``; ``"min"``: dose to the
        coldest 0.03 cc.
    parameter : float or None
        x in ``D<x>%``, ``D<x>cc`` (the volume) or ``V<x>Gy`` (the dose, Gy);
        0.03 (cc) for ``max``/``min``; None for ``mean``.
    unit : {"%", "cc", "Gy"} or None
        Unit of ``parameter``.
    output_unit : {"Gy", "%", "cc"}
        Unit of the metric's value (and of a goal's bounds).
    """

    kind: str
    parameter: float | None
    unit: str | None
    output_unit: str

    @property
    def text(self) -> str:
        """Canonical text, e.g. ``"D95%"``, ``"D2cc"``, ``"Dmax"``, ``"V50Gy[cc]"``."""
        if self.kind == "mean":
            return "Dmean"
        if self.kind == "max":
            return "Dmax"
        if self.kind == "min":
            return "Dmin"
        assert self.parameter is not None
        if self.kind == "D":
            return f"D{format_number(self.parameter)}{self.unit}"
        return f"V{format_number(self.parameter)}Gy" + ("[cc]" if self.output_unit == "cc" else "")

    @property
    def is_dose(self) -> bool:
        """True when the value is a dose (Gy), False for volume metrics."""
        return self.output_unit == "Gy"

    def __str__(self) -> str:
        return self.text


def parse_metric(text: str) -> Metric:
    """Parse a metric such as ``"D95%"``, ``"D2cc"``, ``"Dmean"``, ``"V50Gy[cc]"``.

    Parameters
    ----------
    text : str
        The metric; letters are case-insensitive, surrounding blanks ignored.

    Returns
    -------
    Metric

    Raises
    ------
    ProtocolError
        For unknown syntax or an impossible parameter (D% outside 0–100,
        a zero or negative cc volume or dose level).
    """
    if not isinstance(text, str):
        raise ProtocolError(f"metric must be a string, got {type(text).__name__}")
    t = text.strip().upper()
    if t == "DMEAN":
        return Metric("mean", None, None, "Gy")
    if t == "DMAX":
        return Metric("max", NEAR_POINT_CC, "cc", "Gy")
    if t == "DMIN":
        return Metric("min", NEAR_POINT_CC, "cc", "Gy")
    m = _RE_D.match(t)
    if m:
        x = float(m.group(1))
        if m.group(2) == "%":
            if not 0.0 <= x <= 100.0:
                raise ProtocolError(f"metric {text!r}: the percentage must lie in 0–100, got {format_number(x)}")
            return Metric("D", x, "%", "Gy")
        if x <= 0.0:
            raise ProtocolError(f"metric {text!r}: the volume in cc must be positive")
        return Metric("D", x, "cc", "Gy")
    m = _RE_V.match(t)
    if m:
        x = float(m.group(1))
        if x <= 0.0:
            raise ProtocolError(f"metric {text!r}: the dose level must be positive")
        return Metric("V", x, "Gy", "cc" if m.group(2) == "[CC]" else "%")
    raise ProtocolError(
        f"unknown metric {text!r}; expected D<x>%, D<x>cc, Dmean, Dmax, Dmin, V<x>Gy or V<x>Gy[cc]"
    )


# --------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class Goal:
    """One clinical goal.

    Parameters
    ----------
    structure : str
        Structure name as written in the protocol.
    metric : Metric
    at_least, at_most : float or None
        Bounds in ``metric.output_unit`` (Gy, % or cc); at least one is set.
    priority : int
        1 = most important; goals of equal priority are weighed together.
    stretch : float or None
        A harder value to aim for once the goal is met (on the side of the
        single bound: >= ``at_least`` or <= ``at_most``).
    line : int or None
        Line of the ``[[goals]]`` table in the protocol file (for messages).
    """

    structure: str
    metric: Metric
    at_least: float | None = None
    at_most: float | None = None
    priority: int = 1
    stretch: float | None = None
    line: int | None = field(default=None, compare=False)

    @property
    def unit(self) -> str:
        return self.metric.output_unit

    def describe(self) -> str:
        """The goal in words, e.g. ``"≥ 57 Gy"``, ``"≤ 20 %"``, ``"≥ 57 Gy and ≤ 63 Gy"``."""
        u = self.unit
        parts = []
        if self.at_least is not None:
            parts.append(f"≥ {format_number(self.at_least)} {u}")
        if self.at_most is not None:
            parts.append(f"≤ {format_number(self.at_most)} {u}")
        return " and ".join(parts)

    def to_dict(self) -> dict:
        """JSON-friendly description."""
        d: dict[str, Any] = {"structure": self.structure, "metric": self.metric.text}
        if self.at_least is not None:
            d["at_least"] = self.at_least
        if self.at_most is not None:
            d["at_most"] = self.at_most
        d["priority"] = self.priority
        if self.stretch is not None:
            d["stretch"] = self.stretch
        return d


@dataclass(frozen=True)
class Prescription:
    """The prescription: target structure, total dose (Gy) and number of fractions."""

    target: str
    dose_gy: float
    fractions: int

    @property
    def dose_per_fraction_gy(self) -> float:
        return self.dose_gy / self.fractions


@dataclass(frozen=True)
class BeamSetup:
    """Static beams sharing one isocentre.

    Parameters
    ----------
    energy : str
        Nominal energy, e.g. ``"6X"`` (checked against machine data elsewhere).
    gantry_angles : tuple of float
        Degrees, IEC 61217, in [0, 360).
    isocenter : str or (x, y, z) floats
        A structure name (its centroid) or an LPS point in mm.
    bixel_mm : float
        Beamlet size at the isocentre plane, mm.
    collimator_angles, couch_angles : tuple of float
        Degrees per beam (same length as ``gantry_angles``), default 0.
    """

    energy: str
    gantry_angles: tuple[float, ...]
    isocenter: str | tuple[float, float, float]
    bixel_mm: float = DEFAULT_BIXEL_MM
    collimator_angles: tuple[float, ...] = ()
    couch_angles: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.gantry_angles)
        if not self.collimator_angles:
            object.__setattr__(self, "collimator_angles", (0.0,) * n)
        if not self.couch_angles:
            object.__setattr__(self, "couch_angles", (0.0,) * n)

    @property
    def isocenter_structure(self) -> str | None:
        """The structure whose centroid is the isocentre, or None for an explicit point."""
        return self.isocenter if isinstance(self.isocenter, str) else None

    @property
    def n_beams(self) -> int:
        return len(self.gantry_angles)


@dataclass(frozen=True)
class Protocol:
    """A parsed, validated protocol.

    Attributes
    ----------
    name : str
    prescription : Prescription
    beams : BeamSetup
    dose_grid_mm : float
        Dose grid spacing, mm (isotropic).
    goals : tuple of Goal
        In file order.
    source : str
        File name (or ``"<string>"``) used in messages.
    """

    name: str
    prescription: Prescription
    beams: BeamSetup
    dose_grid_mm: float
    goals: tuple[Goal, ...]
    source: str = field(default="<string>", compare=False)
    _lines: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def structure_names(self) -> list[str]:
        """Every structure the protocol names (target, isocentre structure, goals), first use order."""
        out: list[str] = []
        for n in [self.prescription.target, self.beams.isocenter_structure, *(g.structure for g in self.goals)]:
            if n is not None and n not in out:
                out.append(n)
        return out

    def goals_by_priority(self) -> dict[int, list[Goal]]:
        """Goals grouped by priority, ascending (1 first)."""
        out: dict[int, list[Goal]] = {}
        for g in sorted(self.goals, key=lambda g: g.priority):
            out.setdefault(g.priority, []).append(g)
        return out

    def check_structures(self, names: Iterable[str]) -> None:
        """Check that every structure the protocol names exists.

        Matching is exact first, then case-insensitive (as
        :meth:`art.structures.StructureSet.find`).

        Parameters
        ----------
        names : iterable of str
            The available structure names (e.g. ``StructureSet.names``).

        Raises
        ------
        ProtocolError
            Naming the line of the first unknown structure (all unknown ones are
            listed in the message).
        """
        available = list(names)
        lower = {n.lower() for n in available}

        def known(n: str) -> bool:
            return n in available or n.lower() in lower

        problems: list[tuple[int, str]] = []
        if not known(self.prescription.target):
            problems.append((self._lines.get(("prescription", "target"), 1), f"prescription target {self.prescription.target!r}"))
        iso = self.beams.isocenter_structure
        if iso is not None and not known(iso):
            problems.append((self._lines.get(("beams", "isocenter"), 1), f"isocenter structure {iso!r}"))
        for i, g in enumerate(self.goals):
            if not known(g.structure):
                line = self._lines.get(("goals", i, "structure"), g.line or 1)
                problems.append((line, f"goal {i + 1} structure {g.structure!r}"))
        if problems:
            first = problems[0][0]
            listed = "; ".join(f"line {ln}: {what}" for ln, what in problems)
            avail = ", ".join(repr(n) for n in available) or "none"
            raise _error(self.source, first, f"unknown structure(s): {listed} (available: {avail})")

    def to_dict(self) -> dict:
        """JSON-friendly description (for ``summary.json``)."""
        b = self.beams
        return {
            "name": self.name,
            "prescription": {
                "target": self.prescription.target,
                "dose_gy": self.prescription.dose_gy,
                "fractions": self.prescription.fractions,
            },
            "beams": {
                "energy": b.energy,
                "gantry_angles": list(b.gantry_angles),
                "collimator_angles": list(b.collimator_angles),
                "couch_angles": list(b.couch_angles),
                "isocenter": b.isocenter if isinstance(b.isocenter, str) else list(b.isocenter),
                "bixel_mm": b.bixel_mm,
            },
            "dose": {"grid_mm": self.dose_grid_mm},
            "goals": [g.to_dict() for g in self.goals],
        }

    def to_toml(self) -> str:
        """The protocol as TOML text that :func:`parse_protocol` reads back to an equal protocol."""
        b = self.beams

        def num(x: float) -> str:
            s = format_number(x)
            return s if ("." in s) else s + ".0"

        def arr(xs: Sequence[float]) -> str:
            return "[" + ", ".join(format_number(x) for x in xs) + "]"

        lines = [f"name = {_toml_str(self.name)}", "", "[prescription]"]
        lines += [
            f"target = {_toml_str(self.prescription.target)}",
            f"dose_gy = {num(self.prescription.dose_gy)}",
            f"fractions = {self.prescription.fractions}",
            "",
            "[beams]",
            f"energy = {_toml_str(b.energy)}",
            f"gantry_angles = {arr(b.gantry_angles)}",
        ]
        if any(a != 0 for a in b.collimator_angles):
            lines.append(f"collimator_angles = {arr(b.collimator_angles)}")
        if any(a != 0 for a in b.couch_angles):
            lines.append(f"couch_angles = {arr(b.couch_angles)}")
        iso = _toml_str(b.isocenter) if isinstance(b.isocenter, str) else "[" + ", ".join(num(v) for v in b.isocenter) + "]"
        lines += [f"isocenter = {iso}", f"bixel_mm = {num(b.bixel_mm)}", "", "[dose]", f"grid_mm = {num(self.dose_grid_mm)}"]
        for g in self.goals:
            lines += ["", "[[goals]]", f"structure = {_toml_str(g.structure)}", f"metric = {_toml_str(g.metric.text)}"]
            if g.at_least is not None:
                lines.append(f"at_least = {num(g.at_least)}")
            if g.at_most is not None:
                lines.append(f"at_most = {num(g.at_most)}")
            if g.stretch is not None:
                lines.append(f"stretch = {num(g.stretch)}")
            lines.append(f"priority = {g.priority}")
        return "\n".join(lines) + "\n"


def _toml_str(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    out = "".join(c if (c >= " " and c != "\x7f") else f"\\u{ord(c):04x}" for c in out)
    return f'"{out}"'


# --------------------------------------------------------------------------- line finding
def _error(source: str, line: int | None, message: str) -> ProtocolError:
    text = f"line {line}: {message}" if line is not None else message
    err = ProtocolError(text, path=source)
    err.line = line  # type: ignore[attr-defined]
    return err


_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_RE_KEYLINE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_RE_ARRAY_TABLE = re.compile(rf"^\s*\[\[\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]")
_RE_TABLE = re.compile(rf"^\s*\[\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]")


def _split_key(key: str) -> list[str]:
    parts = re.findall(_KEY_PART, key)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _locate(text: str) -> dict[tuple, int]:
    """Map key paths to 1-based line numbers.

    Paths: ``("prescription",)`` a table header, ``("prescription", "dose_gy")``
    a key, ``("goals", 0)`` the first ``[[goals]]`` header,
    ``("goals", 0, "metric")`` a key in it. Lines inside multi-line strings are
    skipped. Only the first occurrence of a path is kept.
    """
    where: dict[tuple, int] = {}
    table: tuple = ()
    counts: dict[tuple, int] = {}
    in_ml: str | None = None
    depth = 0  # open brackets/braces of a value continuing over lines
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw
        if in_ml is not None:
            if line.count(in_ml) % 2 == 1:
                in_ml = None
            continue
        if depth > 0:
            depth = max(0, depth + _bracket_balance(line))
            continue
        m = _RE_ARRAY_TABLE.match(line)
        if m:
            name = tuple(_split_key(m.group(1)))
            idx = counts.get(name, 0)
            counts[name] = idx + 1
            table = (*name, idx)
            where.setdefault(table, n)
        else:
            m = _RE_TABLE.match(line)
            if m and not _RE_KEYLINE.match(line):
                table = tuple(_split_key(m.group(1)))
                where.setdefault(table, n)
            else:
                m = _RE_KEYLINE.match(line)
                if m:
                    path = (*table, *_split_key(m.group(1)))
                    for k in range(len(table) + 1, len(path) + 1):
                        where.setdefault(path[:k], n)
                    depth = max(0, _bracket_balance(line[m.end():]))
        for q in ('"""', "'''"):
            if line.count(q) % 2 == 1:
                in_ml = q
                break
    return where


_RE_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')


def _bracket_balance(line: str) -> int:
    """Opened minus closed brackets and braces on a line, ignoring strings and comments."""
    code = _RE_STRINGS.sub("", line).split("#", 1)[0]
    return code.count("[") + code.count("{") - code.count("]") - code.count("}")


class _Ctx:
    def __init__(self, source: str, where: dict[tuple, int]):
        self.source = source
        self.where = where

    def line(self, path: tuple) -> int:
        p = tuple(path)
        while p:
            if p in self.where:
                return self.where[p]
            p = p[:-1]
        return 1

    def fail(self, path: tuple, message: str) -> ProtocolError:
        return _error(self.source, self.line(path), message)


def _where_name(path: tuple) -> str:
    if not path:
        return "top level"
    if path[0] == "goals" and len(path) >= 2 and isinstance(path[1], int):
        return f"[[goals]] #{path[1] + 1}"
    return "[" + ".".join(str(p) for p in path) + "]"


# --------------------------------------------------------------------------- value checks
def _check_keys(ctx: _Ctx, table: dict, path: tuple, allowed: Sequence[str], required: Sequence[str]) -> None:
    for k in table:
        if k not in allowed:
            raise ctx.fail((*path, k), f"unknown key {k!r} in {_where_name(path)}; allowed: {', '.join(allowed)}")
    for k in required:
        if k not in table:
            raise ctx.fail(path, f"{_where_name(path)} lacks the required key {k!r}")


def _table(ctx: _Ctx, doc: dict, key: str, *, required: bool) -> dict | None:
    if key not in doc:
        if required:
            raise ctx.fail((), f"missing [{key}] table")
        return None
    v = doc[key]
    if not isinstance(v, dict):
        raise ctx.fail((key,), f"{key!r} must be a table ([{key}]), got {_tname(v)}")
    return v


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}.get(
        type(v), type(v).__name__
    )


def _string(ctx: _Ctx, v: Any, path: tuple) -> str:
    if not isinstance(v, str):
        raise ctx.fail(path, f"{path[-1]!r} must be a string, got {_tname(v)}")
    if not v.strip():
        raise ctx.fail(path, f"{path[-1]!r} must not be empty")
    return v


def _number(ctx: _Ctx, v: Any, path: tuple) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ctx.fail(path, f"{path[-1]!r} must be a number, got {_tname(v)}")
    x = float(v)
    if not math.isfinite(x):
        raise ctx.fail(path, f"{path[-1]!r} must be finite, got {v}")
    return x


def _integer(ctx: _Ctx, v: Any, path: tuple) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ctx.fail(path, f"{path[-1]!r} must be an integer, got {_tname(v)}")
    return int(v)


def _angles(ctx: _Ctx, v: Any, path: tuple, *, lo: float, hi: float) -> tuple[float, ...]:
    if not isinstance(v, list) or not v:
        raise ctx.fail(path, f"{path[-1]!r} must be a non-empty array of angles in degrees")
    out = []
    for a in v:
        x = _number(ctx, a, path)
        if not lo <= x < hi:
            raise ctx.fail(path, f"{path[-1]!r}: angle {format_number(x)} lies outside [{format_number(lo)}, {format_number(hi)})")
        out.append(x)
    return tuple(out)


# --------------------------------------------------------------------------- parsing
_TOP = ("name", "prescription", "beams", "dose", "goals")
_PRESCRIPTION = ("target", "dose_gy", "fractions")
_BEAMS = ("energy", "gantry_angles", "isocenter", "bixel_mm", "collimator_angles", "couch_angles")
_BEAMS_REQUIRED = ("energy", "gantry_angles", "isocenter")
_DOSE = ("grid_mm",)
_GOAL = ("structure", "metric", "at_least", "at_most", "priority", "stretch")
_GOAL_REQUIRED = ("structure", "metric", "priority")

_RE_TOML_LINE = re.compile(r"at line (\d+)")


def parse_protocol(text: str, *, source: str = "<string>") -> Protocol:
    """Parse and validate protocol TOML text.

    Parameters
    ----------
    text : str
        The TOML document.
    source : str, keyword-only
        Name used in error messages (the file path).

    Returns
    -------
    Protocol

    Raises
    ------
    ProtocolError
        For TOML syntax errors, unknown keys (at any level), missing required
        keys, wrong types, unknown metrics and impossible values; the message
        names ``source`` and the line, and ``error.line`` holds the number.
    """
    if not isinstance(text, str):
        raise ProtocolError(f"protocol text must be a string, got {type(text).__name__}", path=source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _RE_TOML_LINE.search(msg)
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))
        raise _error(source, line, f"invalid TOML: {msg}") from None
    ctx = _Ctx(source, _locate(text))

    _check_keys(ctx, doc, (), _TOP, ("name",))
    name = _string(ctx, doc["name"], ("name",))

    # [prescription]
    p = _table(ctx, doc, "prescription", required=True)
    assert p is not None
    _check_keys(ctx, p, ("prescription",), _PRESCRIPTION, _PRESCRIPTION)
    target = _string(ctx, p["target"], ("prescription", "target"))
    dose_gy = _number(ctx, p["dose_gy"], ("prescription", "dose_gy"))
    if dose_gy <= 0:
        raise ctx.fail(("prescription", "dose_gy"), f"'dose_gy' must be positive, got {format_number(dose_gy)} Gy")
    fractions = _integer(ctx, p["fractions"], ("prescription", "fractions"))
    if fractions < 1:
        raise ctx.fail(("prescription", "fractions"), f"'fractions' must be at least 1, got {fractions}")
    prescription = Prescription(target, dose_gy, fractions)

    # [beams]
    b = _table(ctx, doc, "beams", required=True)
    assert b is not None
    _check_keys(ctx, b, ("beams",), _BEAMS, _BEAMS_REQUIRED)
    energy = _string(ctx, b["energy"], ("beams", "energy")).strip()
    gantry = _angles(ctx, b["gantry_angles"], ("beams", "gantry_angles"), lo=0.0, hi=360.0)
    n = len(gantry)
    extra: dict[str, tuple[float, ...]] = {}
    for key in ("collimator_angles", "couch_angles"):
        if key in b:
            vals = _angles(ctx, b[key], ("beams", key), lo=0.0, hi=360.0)
            if len(vals) != n:
                raise ctx.fail(("beams", key), f"{key!r} needs one angle per gantry angle ({n}), got {len(vals)}")
            extra[key] = vals
    coll = extra.get("collimator_angles", (0.0,) * n)
    couch = extra.get("couch_angles", (0.0,) * n)
    seen: dict[tuple, int] = {}
    for i, beam in enumerate(zip(gantry, coll, couch)):
        if beam in seen:
            raise ctx.fail(
                ("beams", "gantry_angles"),
                f"beams {seen[beam] + 1} and {i + 1} are identical (gantry {format_number(beam[0])}, "
                f"collimator {format_number(beam[1])}, couch {format_number(beam[2])})",
            )
        seen[beam] = i
    iso_v = b["isocenter"]
    iso_path = ("beams", "isocenter")
    if isinstance(iso_v, str):
        isocenter: str | tuple[float, float, float] = _string(ctx, iso_v, iso_path)
    elif isinstance(iso_v, list):
        if len(iso_v) != 3:
            raise ctx.fail(iso_path, f"'isocenter' as a point needs three numbers [x, y, z] in mm, got {len(iso_v)}")
        isocenter = tuple(_number(ctx, v, iso_path) for v in iso_v)  # type: ignore[assignment]
    else:
        raise ctx.fail(iso_path, f"'isocenter' must be a structure name or [x, y, z] in mm, got {_tname(iso_v)}")
    bixel = DEFAULT_BIXEL_MM
    if "bixel_mm" in b:
        bixel = _number(ctx, b["bixel_mm"], ("beams", "bixel_mm"))
        if not 0 < bixel <= MAX_BIXEL_MM:
            raise ctx.fail(("beams", "bixel_mm"), f"'bixel_mm' must lie in (0, {format_number(MAX_BIXEL_MM)}] mm, got {format_number(bixel)}")
    beams = BeamSetup(energy, gantry, isocenter, bixel, coll, couch)

    # [dose]
    grid_mm = DEFAULT_GRID_MM
    d = _table(ctx, doc, "dose", required=False)
    if d is not None:
        _check_keys(ctx, d, ("dose",), _DOSE, ())
        if "grid_mm" in d:
            grid_mm = _number(ctx, d["grid_mm"], ("dose", "grid_mm"))
            if not 0 < grid_mm <= MAX_GRID_MM:
                raise ctx.fail(("dose", "grid_mm"), f"'grid_mm' must lie in (0, {format_number(MAX_GRID_MM)}] mm, got {format_number(grid_mm)}")

    # [[goals]]
    if "goals" not in doc:
        raise ctx.fail((), "the protocol has no [[goals]]")
    gl = doc["goals"]
    if not isinstance(gl, list) or not all(isinstance(g, dict) for g in gl):
        raise ctx.fail(("goals",), "'goals' must be an array of tables ([[goals]])")
    if not gl:
        raise ctx.fail(("goals",), "the protocol has no goals")
    goals: list[Goal] = []
    first_seen: dict[tuple, int] = {}
    for i, g in enumerate(gl):
        goal = _parse_goal(ctx, g, i)
        key = (goal.structure.lower(), goal.metric, goal.at_least, goal.at_most)
        if key in first_seen:
            j = first_seen[key]
            raise ctx.fail(
                ("goals", i),
                f"[[goals]] #{i + 1} repeats [[goals]] #{j + 1} (line {ctx.line(('goals', j))}): "
                f"{goal.structure} {goal.metric.text} {goal.describe()}",
            )
        first_seen[key] = i
        goals.append(goal)

    return Protocol(name, prescription, beams, grid_mm, tuple(goals), source, dict(ctx.where))


def _check_goal_value(ctx: _Ctx, metric: Metric, x: float, path: tuple) -> None:
    key = path[-1]
    if metric.output_unit == "Gy" and x <= 0:
        raise ctx.fail(path, f"{key!r} is a dose for {metric.text} and must be positive, got {format_number(x)} Gy")
    if metric.output_unit == "%" and not 0 <= x <= 100:
        raise ctx.fail(path, f"{key!r} is a percentage for {metric.text} and must lie in 0–100, got {format_number(x)}")
    if metric.output_unit == "cc" and x < 0:
        raise ctx.fail(path, f"{key!r} is a volume in cc for {metric.text} and must not be negative, got {format_number(x)}")


def _parse_goal(ctx: _Ctx, g: dict, i: int) -> Goal:
    path = ("goals", i)
    _check_keys(ctx, g, path, _GOAL, _GOAL_REQUIRED)
    structure = _string(ctx, g["structure"], (*path, "structure"))
    mtext = g["metric"]
    if not isinstance(mtext, str):
        raise ctx.fail((*path, "metric"), f"'metric' must be a string, got {_tname(mtext)}")
    try:
        metric = parse_metric(mtext)
    except ProtocolError as exc:
        raise ctx.fail((*path, "metric"), exc.problem) from None
    bounds: dict[str, float | None] = {}
    for k in ("at_least", "at_most", "stretch"):
        if k in g:
            bounds[k] = _number(ctx, g[k], (*path, k))
            _check_goal_value(ctx, metric, bounds[k], (*path, k))  # type: ignore[arg-type]
        else:
            bounds[k] = None
    lo, hi, st = bounds["at_least"], bounds["at_most"], bounds["stretch"]
    if lo is None and hi is None:
        raise ctx.fail(path, f"[[goals]] #{i + 1} needs 'at_least' or 'at_most' (or both)")
    if lo is not None and hi is not None and lo > hi:
        raise ctx.fail((*path, "at_least"), f"'at_least' ({format_number(lo)}) exceeds 'at_most' ({format_number(hi)})")
    if st is not None:
        sp = (*path, "stretch")
        if lo is not None and hi is not None:
            raise ctx.fail(sp, "'stretch' needs a goal with only one bound ('at_least' or 'at_most'), this one has both")
        if lo is not None and st < lo:
            raise ctx.fail(sp, f"'stretch' ({format_number(st)}) must be at least 'at_least' ({format_number(lo)})")
        if hi is not None and st > hi:
            raise ctx.fail(sp, f"'stretch' ({format_number(st)}) must be at most 'at_most' ({format_number(hi)})")
    priority = _integer(ctx, g["priority"], (*path, "priority"))
    if priority < 1:
        raise ctx.fail((*path, "priority"), f"'priority' must be at least 1, got {priority}")
    return Goal(structure, metric, lo, hi, priority, st, ctx.line(path))


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol file.

    Parameters
    ----------
    path : str or Path
        A UTF-8 TOML file.

    Returns
    -------
    Protocol

    Raises
    ------
    ProtocolError
        When the file cannot be read or is invalid (file and line named).
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ProtocolError(f"cannot read the protocol: {exc.strerror or exc}", path=p) from None
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[: exc.start].count(b"\n") + 1
        raise _error(str(p), line, "the protocol is not UTF-8 text") from None
    return parse_protocol(text, source=str(p))
