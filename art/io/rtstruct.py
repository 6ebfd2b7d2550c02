"""RT Structure Set (RTSTRUCT): closed planar contours <-> boolean masks on an image grid.

The public entry of the RTSTRUCT code (re-exported by :mod:`art.io`):

* :func:`read_rtstruct`, :func:`rasterise_contours` — reading, documented in
  :mod:`art.io.rtstruct_read`;
* :func:`write_rtstruct`, :func:`structures_to_dataset` — writing (polygons
  as given, masks traced), documented in :mod:`art.io.rtstruct_write`;
* :func:`mask_to_contours` — the sub-voxel tracing of a mask slice, documented
  in :mod:`art.io.rtstruct_trace`.
"""

from __future__ import annotations

from art.io.rtstruct_read import DEFAULT_COLORS, rasterise_contours, read_rtstruct
from art.io.rtstruct_trace import mask_to_contours
from art.io.rtstruct_write import STUDY_COMPONENT_SOP_CLASS, structures_to_dataset, write_rtstruct

__all__ = [
    "read_rtstruct",
    "write_rtstruct",
    "structures_to_dataset",
    "rasterise_contours",
    "mask_to_contours",
    "DEFAULT_COLORS",
    "STUDY_COMPONENT_SOP_CLASS",
]
