"""``art.dose.ccc.dose``: the dose of a plan by collapsed-cone convolution/superposition."""

from __future__ import annotations

import numpy as np

from art.backend import backend_name, get_namespace
from art.dose._setup import body_structure, plan_position, prepare
from art.dose.ccc.calibration import calibration_factor
from art.dose.ccc.core import box_dose, source_for, transport_box
from art.dose.ccc.model import ccc_model
from art.dose.library import MachineLibrary, resolve_machines
from art.dose.machine import HUTable, Machine, load_hu_table
from art.errors import GeometryError, InputError
from art.geometry import Grid, Volume, resample, resample_mask
from art.plan import Plan
from art.structures import StructureSet


def check_hu_range(ct: Volume, table: HUTable, structures: StructureSet | None, body: str | None) -> None:
    """Refuse CT numbers above the calibration table's last point inside the calculation region
    (the BODY when structures are given, else the whole CT); those below the first point
    (air, padding) are clamped silently by :func:`art.dose.machine.hu_to_density`."""
    hu = np.asarray(ct.array)
    ext = body_structure(structures, body)
    region = "the whole CT"
    if ext is not None:
        mask = ext.volume.array if ext.grid.same_as(ct.grid) else resample_mask(ext.volume, ct.grid, mode="nearest").array
        hu = hu[np.asarray(mask, dtype=bool)]
        region = f"the {ext.name} structure"
    hi = float(table.hu[-1])
    if hu.size and float(hu.max()) > hi:
        n = int(np.count_nonzero(hu > hi))
        raise InputError(f"the CT has {n} voxel(s) in {region} with HU up to {float(hu.max()):.0f}, above the CT calibration table's "
                         f"range [{float(table.hu[0]):.0f}, {hi:.0f}] HU: extend the table (hu_table) or check the CT "
                         f"(metal? a wrong rescale?)", path=table.source or None)  # fmt: skip


def check_dose_grid(grid: Grid, ct_grid: Grid) -> None:
    """Refuse a dose grid reaching more than one dose voxel beyond the CT's outer voxel edges."""
    corners = ct_grid.lps_to_index(grid.corners_lps())  # (8, 3) in (k, j, i) order
    ratio = np.asarray(grid.spacing) / np.asarray(ct_grid.spacing)
    lo = -0.5 - ratio
    hi = np.asarray(ct_grid.shape) - 0.5 + ratio
    out = (corners < lo) | (corners > hi)
    if out.any():
        over = np.maximum(lo - corners, corners - hi).max(axis=0) * np.asarray(ct_grid.spacing)
        raise GeometryError(f"the dose grid lies outside the CT (by up to {float(over.max()):.1f} mm): the collapsed-cone "
                            f"engine needs the CT around every dose voxel")  # fmt: skip


def density_on_grid(density: Volume, grid: Grid) -> np.ndarray:
    """The density averaged over each dose voxel (a box filter of the voxel size on the CT,
    then trilinear sampling at the voxel centres; 0 outside the CT), float32."""
    from scipy import ndimage

    size = [max(1, int(round(g / c))) for g, c in zip(grid.spacing, density.grid.spacing)]
    arr = np.asarray(density.array, np.float32)
    if max(size) > 1:
        arr = ndimage.uniform_filter(arr, size=size, mode="nearest")
    return np.asarray(resample(Volume(arr, density.grid), grid, order=1, fill_value=0.0).array, np.float32)


def dose(ct: Volume, plan: Plan, machine: Machine | list[Machine] | MachineLibrary | None = None, *, dose_grid_mm: float | None = 3.0, structures: StructureSet | None = None,
         body: str | None = None, hu_table: HUTable | None = None, patient_position: str | None = None, per_fraction: bool = False,
         dose_grid: Grid | None = None, fluence_mm: float = 1.25, backend: str | None = None) -> Volume:  # fmt: skip
    """Dose of a plan on the CT by collapsed-cone convolution/superposition: course total (Gy).

    The same inputs and meaning as :func:`art.dose.calc.dose` (the pencil beam), plus ``backend``.

    Parameters
    ----------
    ct : Volume
        CT in HU.
    plan : Plan
        Beams with MLC segments (MU per fraction) or beamlet fluences.
    machine : Machine, list of Machine, MachineLibrary or None
        One machine for all beams, one per beam, or a library choosing each beam's
        (:func:`art.dose.library.resolve_machines`); default: the shipped library. Each machine
        needs a ``ccc`` section (:mod:`art.dose.ccc.model`); beams of different machines (6X and
        10X) are transported together (the kernels share their exponents).
    dose_grid_mm : float or None, keyword-only
        Isotropic dose-grid spacing; None = the CT grid. Ignored when ``dose_grid`` is given.
    structures : StructureSet, optional, keyword-only
        When given, dose inside its BODY/EXTERNAL (or ``body``) only, 0 elsewhere.
    body : str, optional, keyword-only
    hu_table : HUTable, optional, keyword-only
        CT calibration (default :func:`art.dose.load_hu_table` ()); CT numbers above its last
        point inside the calculation region are refused.
    patient_position : str or None, keyword-only
        None = ``plan.patient_position``; another one is refused.
    per_fraction : bool, keyword-only
        Return one fraction's dose instead of the course.
    dose_grid : Grid, optional, keyword-only
        The dose grid itself (in the CT's frame, within the CT).
    fluence_mm : float, keyword-only
        Fluence pixel size at the isocentre plane, mm.
    backend : {"numpy", "cupy"} or None, keyword-only
        Array backend of the transport; None: :func:`art.backend.backend_name`.

    Returns
    -------
    Volume
        float32 dose in Gy on the dose grid.
    """
    patient_position = plan_position(plan, patient_position)
    xp = get_namespace(backend or backend_name())
    machines = resolve_machines(plan, machine)
    models = [ccc_model(m) for m in machines]
    table = hu_table if hu_table is not None else load_hu_table()
    setup = prepare(ct, structures, dose_grid_mm=dose_grid_mm, voxels="body" if structures is not None else "all", body=body,
                    hu_table=table, dose_grid=dose_grid)  # fmt: skip
    check_hu_range(ct, table, structures, body)
    grid = setup.dose_grid
    check_dose_grid(grid, ct.grid)
    rho = density_on_grid(setup.density, grid)
    keep = np.zeros(grid.size, bool)
    keep[setup.voxel_indices] = True
    keep = keep.reshape(grid.shape)
    box = transport_box(rho, keep)
    sources = [source_for(b, m, mod, calibration_factor(m, mod, grid.spacing, fluence_mm=fluence_mm, xp=xp))
               for b, m, mod in zip(plan.beams, machines, models)]  # fmt: skip
    out = np.zeros(grid.shape, np.float32)
    out[box] = box_dose(sources, setup.density, grid, rho, box, patient_position=patient_position, fluence_mm=fluence_mm, xp=xp)
    out[~keep] = 0.0
    if not per_fraction:
        out *= np.float32(plan.fractions)
    return Volume(out, grid)
