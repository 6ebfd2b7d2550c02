"""RT Plan (RTPLAN): photon step-and-shoot IMRT plans, written for treatment systems and read back.

The public entry of the RT Plan code:

* :func:`write_rtplan`, :func:`plan_to_dataset` — writing, documented in
  :mod:`art.io.rtplan_write` (one beam's control points: :mod:`art.io.rtplan_write_beam`),
  with :class:`BeamDoseReference` (the beams' doses at a point, written as BeamDose);
* :func:`read_rtplan` — reading, documented in :mod:`art.io.rtplan_read` (one
  beam's control points: :mod:`art.io.rtplan_read_beam`);
* :data:`RT_PLAN_STORAGE`, :func:`energy_to_dicom`, :func:`energy_from_dicom`
  — shared by both (:mod:`art.io.rtplan_common`).
"""

from __future__ import annotations

from art.io.rtplan_common import RT_PLAN_STORAGE, energy_from_dicom, energy_to_dicom
from art.io.rtplan_read import read_rtplan
from art.io.rtplan_write import BeamDoseReference, plan_to_dataset, write_rtplan

__all__ = ["RT_PLAN_STORAGE", "write_rtplan", "plan_to_dataset", "BeamDoseReference", "read_rtplan", "energy_to_dicom", "energy_from_dicom"]
