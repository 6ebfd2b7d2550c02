"""Collapsed-cone convolution/superposition (CCC) photon dose engine — a second, independent algorithm.

Public API
----------
dose(ct, plan, machine=None, *, dose_grid_mm=3.0, structures=None, body=None, hu_table=None,
     patient_position=None, per_fraction=False, dose_grid=None, fluence_mm=1.25, backend=None) -> Volume
ccc_model(machine) -> CCCModel          the machine file's validated ``ccc`` section
poly_kernel(energies_mev, fluence) -> PolyKernel
group_kernels(energies_mev, fluence, *, edges_mev=None) -> GroupedKernel   the spectrum's energy groups (hardening)

Pieces: :mod:`~art.dose.ccc.kernels` (tables, polyenergetic kernel, exponential fit, energy groups),
:mod:`~art.dose.ccc.directions` (98 lattice cones and their kernel weights),
:mod:`~art.dose.ccc.terma` (per-beam TERMA), :mod:`~art.dose.ccc.transport` (the recurrence
along the cone lines, NumPy/CuPy), :mod:`~art.dose.ccc.core` (sources → transport),
:mod:`~art.dose.ccc.calibration` (MU calibration in water), :mod:`~art.dose.ccc.engine`
(the public entry) and :mod:`~art.dose.ccc.commission` (fitting a machine's ``ccc`` section).
Kernel data: opentps-core 2.0.0 (Apache-2.0, OpenTPS consortium; see NOTICE).
"""

from art.dose.ccc.engine import dose
from art.dose.ccc.kernels import GroupedKernel, PolyKernel, group_kernels, poly_kernel
from art.dose.ccc.model import CCCModel, ccc_model

__all__ = ["dose", "ccc_model", "CCCModel", "poly_kernel", "PolyKernel", "group_kernels", "GroupedKernel"]
