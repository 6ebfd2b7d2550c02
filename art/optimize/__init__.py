"""art.optimize: treatment protocols (clinical goals), objectives, the optimisation problem.

``from art.optimize import load_protocol`` stays light (no cvxpy import).
"""

from art.optimize.protocol import (
    BeamSetup,
    Goal,
    Metric,
    Prescription,
    Protocol,
    load_protocol,
    parse_metric,
    parse_protocol,
)

__all__ = [
    "BeamSetup",
    "Goal",
    "Metric",
    "Prescription",
    "Protocol",
    "load_protocol",
    "parse_metric",
    "parse_protocol",
]
