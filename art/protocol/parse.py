"""Treatment protocols: prescription, beam set-up and priority-ordered clinical goals.

A protocol is a TOML file (docs/protocol.md)::

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

The metric grammar is :mod:`art.protocol.metrics`.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Sequence

from art.errors import ProtocolError
from art.protocol.goals import (
    DEFAULT_BIXEL_MM,
    DEFAULT_GRID_MM,
    MAX_BIXEL_MM,
    MAX_GRID_MM,
    BeamSetup,
    Goal,
    Prescription,
    Protocol,
    line_error,
)
from art.protocol.metrics import Metric, format_number, parse_metric

__all__ = ["parse_protocol", "load_protocol"]


# --------------------------------------------------------------------------- line finding
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
        return line_error(self.source, self.line(path), message)


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
        raise line_error(source, line, f"invalid TOML: {msg}") from None
    ctx = _Ctx(source, _locate(text))
    _check_keys(ctx, doc, (), _TOP, ("name",))
    name = _string(ctx, doc["name"], ("name",))
    prescription = _parse_prescription(ctx, doc)
    beams = _parse_beams(ctx, doc)
    grid_mm = _parse_dose(ctx, doc)
    goals = _parse_goals(ctx, doc)
    return Protocol(name, prescription, beams, grid_mm, goals, source, dict(ctx.where))


def _parse_prescription(ctx: _Ctx, doc: dict) -> Prescription:
    """The ``[prescription]`` table: target, total dose (Gy, > 0) and fractions (>= 1)."""
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
    return Prescription(target, dose_gy, fractions)


def _parse_beams(ctx: _Ctx, doc: dict) -> BeamSetup:
    """The ``[beams]`` table: energy, angles (degrees; no two beams identical), isocentre and bixel size (mm)."""
    b = _table(ctx, doc, "beams", required=True)
    assert b is not None
    _check_keys(ctx, b, ("beams",), _BEAMS, _BEAMS_REQUIRED)
    energy = _string(ctx, b["energy"], ("beams", "energy")).strip()
    gantry = _angles(ctx, b["gantry_angles"], ("beams", "gantry_angles"), lo=0.0, hi=360.0)
    coll, couch = _beam_angles(ctx, b, len(gantry))
    seen: dict[tuple, int] = {}
    for i, beam in enumerate(zip(gantry, coll, couch)):
        if beam in seen:
            raise ctx.fail(
                ("beams", "gantry_angles"),
                f"beams {seen[beam] + 1} and {i + 1} are identical (gantry {format_number(beam[0])}, "
                f"collimator {format_number(beam[1])}, couch {format_number(beam[2])})",
            )
        seen[beam] = i
    isocenter = _isocenter(ctx, b["isocenter"])
    bixel = DEFAULT_BIXEL_MM
    if "bixel_mm" in b:
        bixel = _number(ctx, b["bixel_mm"], ("beams", "bixel_mm"))
        if not 0 < bixel <= MAX_BIXEL_MM:
            raise ctx.fail(("beams", "bixel_mm"), f"'bixel_mm' must lie in (0, {format_number(MAX_BIXEL_MM)}] mm, got {format_number(bixel)}")
    return BeamSetup(energy, gantry, isocenter, bixel, coll, couch)


def _beam_angles(ctx: _Ctx, b: dict, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Collimator and couch angles (degrees), one per gantry angle (``n``); 0 where not given."""
    extra: dict[str, tuple[float, ...]] = {}
    for key in ("collimator_angles", "couch_angles"):
        if key in b:
            vals = _angles(ctx, b[key], ("beams", key), lo=0.0, hi=360.0)
            if len(vals) != n:
                raise ctx.fail(("beams", key), f"{key!r} needs one angle per gantry angle ({n}), got {len(vals)}")
            extra[key] = vals
    return extra.get("collimator_angles", (0.0,) * n), extra.get("couch_angles", (0.0,) * n)


def _isocenter(ctx: _Ctx, iso_v: Any) -> str | tuple[float, float, float]:
    """The isocentre: a structure name, or a point [x, y, z] in mm (LPS)."""
    iso_path = ("beams", "isocenter")
    if isinstance(iso_v, str):
        return _string(ctx, iso_v, iso_path)
    if isinstance(iso_v, list):
        if len(iso_v) != 3:
            raise ctx.fail(iso_path, f"'isocenter' as a point needs three numbers [x, y, z] in mm, got {len(iso_v)}")
        return tuple(_number(ctx, v, iso_path) for v in iso_v)  # type: ignore[return-value]
    raise ctx.fail(iso_path, f"'isocenter' must be a structure name or [x, y, z] in mm, got {_tname(iso_v)}")


def _parse_dose(ctx: _Ctx, doc: dict) -> float:
    """The optional ``[dose]`` table: the dose grid spacing (mm)."""
    grid_mm = DEFAULT_GRID_MM
    d = _table(ctx, doc, "dose", required=False)
    if d is not None:
        _check_keys(ctx, d, ("dose",), _DOSE, ())
        if "grid_mm" in d:
            grid_mm = _number(ctx, d["grid_mm"], ("dose", "grid_mm"))
            if not 0 < grid_mm <= MAX_GRID_MM:
                raise ctx.fail(("dose", "grid_mm"), f"'grid_mm' must lie in (0, {format_number(MAX_GRID_MM)}] mm, got {format_number(grid_mm)}")
    return grid_mm


def _parse_goals(ctx: _Ctx, doc: dict) -> tuple[Goal, ...]:
    """The ``[[goals]]`` array: at least one goal, none repeated."""
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
    return tuple(goals)


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
        raise line_error(str(p), line, "the protocol is not UTF-8 text") from None
    return parse_protocol(text, source=str(p))
