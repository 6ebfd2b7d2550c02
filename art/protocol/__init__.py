"""art.protocol: the clinical protocol (prescription, beams, priority-ordered goals, metrics).

A low-level domain package used by :mod:`art.optimize`, :mod:`art.evaluate`,
:mod:`art.report` and the pipeline alike; it imports none of them.

* :mod:`art.protocol.metrics`: the metric grammar (``D95%``, ``V50Gy``, ``Dmax`` …), :class:`Metric`
* :mod:`art.protocol.goals`: :class:`Goal`, :class:`Prescription`, :class:`BeamSetup`, :class:`Protocol`
* :mod:`art.protocol.parse`: reading and validating a protocol TOML file (errors name file and line)
"""

from art.protocol.goals import BeamSetup, Goal, Prescription, Protocol
from art.protocol.metrics import NEAR_POINT_CC, Metric, format_number, parse_metric
from art.protocol.parse import load_protocol, parse_protocol

__all__ = [
    "BeamSetup",
    "Goal",
    "Metric",
    "NEAR_POINT_CC",
    "Prescription",
    "Protocol",
    "format_number",
    "load_protocol",
    "parse_metric",
    "parse_protocol",
]
