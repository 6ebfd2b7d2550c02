"""The clinical protocol's data model: goals, prescription, beam set-up, and the protocol itself.

Plain frozen dataclasses, written back to TOML by :meth:`Protocol.to_toml`; reading
and validating a protocol file is :mod:`art.protocol.parse`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from art.errors import ProtocolError
from art.protocol.metrics import Metric, format_number

__all__ = ["line_error", "Goal", "Prescription", "BeamSetup", "Protocol", "DEFAULT_BIXEL_MM", "DEFAULT_GRID_MM", "MAX_BIXEL_MM", "MAX_GRID_MM"]

DEFAULT_BIXEL_MM = 5.0
DEFAULT_GRID_MM = 3.0
MAX_GRID_MM = 10.0
MAX_BIXEL_MM = 50.0


def line_error(source: str, line: int | None, message: str) -> ProtocolError:
    """A :class:`ProtocolError` naming ``source`` and ``line`` (also kept as its ``line`` attribute)."""
    text = f"line {line}: {message}" if line is not None else message
    err = ProtocolError(text, path=source)
    err.line = line  # type: ignore[attr-defined]
    return err


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
            raise line_error(self.source, first, f"unknown structure(s): {listed} (available: {avail})")

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
