"""art.delivery: leaf sequencing (fluence → step-and-shoot MLC segments with MU), segment-weight
refinement and deliverability checks.

Public API
----------
sequence_beam, sequence_plan, segments_to_fluence, resample_to_leaves
check_plan, assert_deliverable
refine_segment_weights, segment_beamlet_matrix
"""

from art.delivery.checks import assert_deliverable, check_plan
from art.delivery.refine import refine_segment_weights, segment_beamlet_matrix
from art.delivery.sequencing import resample_to_leaves, segments_to_fluence, sequence_beam, sequence_plan

__all__ = [
    "assert_deliverable",
    "check_plan",
    "refine_segment_weights",
    "segment_beamlet_matrix",
    "resample_to_leaves",
    "segments_to_fluence",
    "sequence_beam",
    "sequence_plan",
]
