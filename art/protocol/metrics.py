"""Dose-volume metrics of clinical goals: the grammar, :class:`Metric` and number formatting.

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

import re
from dataclasses import dataclass

import numpy as np

from art.errors import ProtocolError

__all__ = ["NEAR_POINT_CC", "Metric", "parse_metric", "format_number"]

NEAR_POINT_CC = 0.03  # volume of the near-maximum / near-minimum (ICRU 83 style)


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
