"""Photon dose calculation: beam model, geometry, ray tracing, pencil-beam kernel,
dose-influence matrix and plan recalculation.

Public API
----------
load_machine, Machine, load_hu_table, hu_to_density
load_library, MachineLibrary, load_mlc, resolve_machines
influence_matrix, InfluenceMatrix
dose, segment_fluence
BeamFrame, bev_to_lps_matrix
radiological_depth
fit_kernel, PencilKernel
"""

from art.dose.beam_geometry import BeamFrame, bev_to_lps_matrix
from art.dose.calc import beam_fluence, dose, segment_fluence
from art.dose.influence import InfluenceMatrix, influence_matrix
from art.dose.influence_beam import select_bixels
from art.dose.kernel import PencilKernel, fit_kernel
from art.dose.library import MachineLibrary, load_library, load_mlc, resolve_machines
from art.dose.machine import HUTable, Machine, hu_to_density, load_hu_table, load_machine
from art.dose.raytrace import radiological_depth

__all__ = [
    "BeamFrame",
    "bev_to_lps_matrix",
    "beam_fluence",
    "dose",
    "segment_fluence",
    "InfluenceMatrix",
    "influence_matrix",
    "select_bixels",
    "PencilKernel",
    "fit_kernel",
    "HUTable",
    "Machine",
    "hu_to_density",
    "load_hu_table",
    "load_machine",
    "MachineLibrary",
    "load_library",
    "load_mlc",
    "resolve_machines",
    "radiological_depth",
]
