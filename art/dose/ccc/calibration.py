"""Absolute calibration of the collapsed-cone engine, and its water-phantom calculations.

The engine uses the pencil beam's MU definition: ``machine.dose_per_mu_gy`` Gy per MU at
``calib_depth_mm`` in water for a ``calib_field_mm`` square field at ``calib_ssd_mm``. The
engine computes that set-up itself, in a water phantom on the dose grid's voxel size, and the
ratio is the Gy per TERMA unit of the machine: discretisation effects of the grid largely
cancel. The factor is cached per (machine file digest, ccc model, voxel size, fluence pixel); the
shipped machines' factors on the usual grids are shipped (:mod:`art.dose.ccc.calibration_table`).
"""

from __future__ import annotations

import functools
from types import ModuleType

import numpy as np

from art.dose.ccc.core import box_dose, source_for, transport_box
from art.dose.ccc.model import CCCModel
from art.dose.machine import Machine
from art.geometry import Grid, Volume
from art.plan import Beam, Segment


def open_field_beam(machine: Machine, field_mm: float, *, mu: float = 1.0, isocenter_lps=(0.0, 0.0, 0.0), gantry_deg: float = 0.0,
                    field_y_mm: float | None = None) -> Beam:  # fmt: skip
    """A beam of one open rectangular segment (jaws ``field_mm`` × ``field_y_mm``, MLC retracted)."""
    fy = field_mm if field_y_mm is None else field_y_mm
    lp = np.zeros((2, machine.mlc.n_pairs))
    lp[0], lp[1] = machine.mlc.position_limits_mm
    seg = Segment(lp, (-field_mm / 2, field_mm / 2, -fy / 2, fy / 2), float(mu))
    return Beam("CAL", float(gantry_deg), isocenter_lps=np.asarray(isocenter_lps, dtype=np.float64), sad_mm=machine.sad_mm, segments=[seg])


def water_grid(spacing, *, half_width_mm: float, depth_mm: float) -> Grid:
    """An axis-aligned grid for a water phantom whose surface is the plane y = 0 (a voxel face),
    water for 0 < y < depth; voxel centres on x = 0 and z = 0 (the central axis)."""
    dz, dy, dx = (float(s) for s in spacing)
    nx = 2 * int(np.ceil(half_width_mm / dx)) + 1
    nz = 2 * int(np.ceil(half_width_mm / dz)) + 1
    ny = int(np.ceil(depth_mm / dy))
    return Grid((nz, ny, nx), (dz, dy, dx), (-(nx // 2) * dx, 0.5 * dy, -(nz // 2) * dz))


#: voxels of air put in front of a phantom's surface for the radiological depths (:func:`phantom_density`)
AIR_VOXELS = 2
#: the air's density (the default CT calibration's at −1000 HU)
AIR_DENSITY = 0.001


def phantom_density(rho: np.ndarray, grid: Grid) -> Volume:
    """The density of a :func:`water_grid` phantom for the radiological depths, with ``AIR_VOXELS`` slices
    of air in front of its surface (y < 0), as a CT has around a patient.

    The ray trace samples the density trilinearly and takes the medium outside the volume as vacuum, so
    on the bare phantom grid the half voxel in front of the first voxel centres would count as vacuum:
    the depths would be about 0.6 mm (2.5 mm voxels) shallower than in a CT of the same phantom, and the
    calibration (the electron contamination, exp(−d/λ), most) not that of the patients' CTs.
    """
    dz, dy, dx = (float(s) for s in grid.spacing)
    nz, ny, nx = grid.shape
    padded = np.full((nz, ny + AIR_VOXELS, nx), AIR_DENSITY, np.float32)
    padded[:, AIR_VOXELS:] = rho
    ox, oy, oz = (float(v) for v in grid.origin)
    return Volume(padded, Grid((nz, ny + AIR_VOXELS, nx), (dz, dy, dx), (ox, oy - AIR_VOXELS * dy, oz)))


def water_dose(machine: Machine, model: CCCModel, beam: Beam, grid: Grid, *, factor: float = 1.0, fluence_mm: float = 1.25,
               xp: ModuleType = np, rho: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Dose of one beam (gantry 0, HFS: travelling along +y) in the water phantom on ``grid``.

    ``rho``: the phantom's density (default water everywhere); the radiological depths with air in
    front of the surface (:func:`phantom_density`); returns (nz, ny, nx) float32.
    """
    if rho is None:
        rho = np.ones(grid.shape, np.float32)
    density = phantom_density(rho, grid)
    box = transport_box(rho)
    out = np.zeros(grid.shape, np.float32)
    out[box] = box_dose([source_for(beam, machine, model, factor)], density, grid, rho, box, patient_position="HFS", fluence_mm=fluence_mm, xp=xp)
    return out


def central_axis(dose: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Depths (mm, voxel centres) and the dose on the central axis of a :func:`water_grid` phantom."""
    nz, ny, nx = grid.shape
    return grid.origin[1] + grid.spacing[1] * np.arange(ny), dose[nz // 2, :, nx // 2].astype(np.float64)


def calibration_factor(machine: Machine, model: CCCModel, spacing, *, fluence_mm: float = 1.25, xp: ModuleType = np) -> float:
    """Gy per TERMA unit of a machine on a dose grid of voxel size ``spacing`` (dz, dy, dx) mm.

    The shipped machines' factors on the usual grids come from the shipped table
    (:mod:`art.dose.ccc.calibration_table`: the engine's own value, stored under the machine file's,
    the model's and the engine's digests); any other is computed (:func:`computed_factor`, cached).
    """
    sp = tuple(round(float(s), 6) for s in spacing)
    from art.dose.ccc.calibration_table import lookup

    shipped = lookup(machine, model, sp, round(float(fluence_mm), 6))
    if shipped is not None:
        return shipped
    return computed_factor(machine, model, sp, fluence_mm=fluence_mm, xp=xp)


def computed_factor(machine: Machine, model: CCCModel, spacing, *, fluence_mm: float = 1.25, xp: ModuleType = np) -> float:
    """:func:`calibration_factor` computed by the engine in its water phantom (never from the table; cached per
    process, also under the engine's digest: a change of its numerics at run time, e.g. its energy groups, recomputes)."""
    from art.dose.ccc.calibration_table import engine_digest

    sp = tuple(round(float(s), 6) for s in spacing)
    return _factor(machine.digest, machine.source, model.key(), sp, round(float(fluence_mm), 6), xp.__name__, engine_digest(),
                   _Ref(machine, model, xp))  # fmt: skip


class _Ref:
    """Carries the unhashable objects into the cache (compared by the other keys only)."""

    def __init__(self, machine, model, xp):
        self.machine, self.model, self.xp = machine, model, xp

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other) -> bool:
        return isinstance(other, _Ref)


@functools.lru_cache(maxsize=32)
def _factor(digest, source, model_key, spacing, fluence_mm, xp_name, engine, ref: _Ref) -> float:  # noqa: ARG001 - the keys
    m, model = ref.machine, ref.model
    field = m.calib_field_mm
    iso_depth = m.sad_mm - m.calib_ssd_mm  # the isocentre below the surface
    beam = open_field_beam(m, field * m.sad_mm / m.calib_ssd_mm, mu=1.0, isocenter_lps=(0.0, iso_depth, 0.0))
    grid = water_grid(spacing, half_width_mm=0.5 * field + 25.0, depth_mm=max(300.0, 4.0 * m.calib_depth_mm))
    dose = water_dose(m, model, beam, grid, fluence_mm=fluence_mm, xp=ref.xp)
    depths, cax = central_axis(dose, grid)
    at = float(np.interp(m.calib_depth_mm, depths, cax))
    if not at > 0:
        raise RuntimeError("the calibration field gave no dose on the central axis")
    return m.dose_per_mu_gy / at
