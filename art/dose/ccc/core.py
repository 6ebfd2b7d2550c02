"""The collapsed-cone calculation on a prepared density: sources of all beams → transport.

Shared by the public :func:`art.dose.ccc.dose`, the water-phantom calibration and the
commissioning fit. Everything here works on densities (no HU): ``density_ct`` (on the CT
grid, for the radiological depths) and ``rho`` (on the dose grid, for the transport).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from art.backend import to_backend, to_numpy
from art.dose.beam_geometry import BeamFrame
from art.dose.ccc.directions import cone_fractions, physical_vectors, transport_vectors
from art.dose.ccc.kernels import SCALES_MM, GroupedKernel, PolyKernel, group_kernels
from art.dose.ccc.model import CCCModel
from art.dose.ccc.terma import beam_terma
from art.dose.ccc.transport import MEDIUM_DENSITY
from art.dose.machine import Machine
from art.geometry import Grid, Volume
from art.plan import Beam

#: density (relative to water) below which a dose-grid voxel counts as vacuum for the transport box
#: (the transport's entry correction takes the medium from the same density)
MATERIAL_DENSITY = MEDIUM_DENSITY
#: the transport directions: primitive vectors of {−REACH..REACH}³ (2: 98 directions, 3: 290) …
REACH = 3
#: … plus those of {−FINE_REACH..FINE_REACH}³ within FINE_ANGLE_DEG of each beam's direction (0: none):
#: 4 more for a beam along a grid axis, 4–11 for others; they narrow the forward cones, which otherwise
#: carry a small field's forward scatter along its central axis (3×3 cm² PDD +4 % at 27.5 cm against the
#: exact superposition of the same kernel; 0.5 % with them, benchmarks/ccc_smallfield.py)
FINE_REACH = 5
FINE_ANGLE_DEG = 12.0


@dataclass(frozen=True)
class BeamSource:
    """One beam with its machine, collapsed-cone model, kernels and calibration (Gy per TERMA unit).

    ``grouped``: the spectrum split into energy groups, each with its own kernel (hardening with
    depth); the transport sees one source per (beam, group).
    """

    beam: Beam
    machine: Machine
    model: CCCModel
    grouped: GroupedKernel
    factor: float = 1.0

    @property
    def kernel(self) -> PolyKernel:
        """The whole spectrum's polyenergetic kernel."""
        return self.grouped.kernel


def source_for(beam: Beam, machine: Machine, model: CCCModel, factor: float = 1.0) -> BeamSource:
    """A :class:`BeamSource` (the model's group kernels fitted once per spectrum)."""
    return BeamSource(beam, machine, model, group_kernels(model.energies_mev, model.fluence), float(factor))


def transport_box(rho: np.ndarray, keep: np.ndarray | None = None) -> tuple[slice, slice, slice]:
    """The bounding box (slices of the dose grid) of the voxels with material or to be kept.

    Flux that leaves this box crosses only vacuum-like voxels and can never come back (the box
    is convex), so the transport inside it loses nothing.
    """
    mask = rho >= MATERIAL_DENSITY
    if keep is not None:
        mask = mask | keep
    if not mask.any():
        return tuple(slice(0, 1) for _ in range(3))
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def directions_for(sources: list[BeamSource], grid: Grid, patient_position: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The transport directions of these beams on this grid (:func:`transport_vectors` with
    REACH, FINE_REACH, FINE_ANGLE_DEG), their lengths (M,) in mm, and the cone weights c_mpj
    (M, P, J), float32, of the P sources: each beam's energy groups in turn (beam 0's groups, then beam 1's, …)."""
    dirs = [BeamFrame.of(s.beam, patient_position=patient_position).direction for s in sources]
    vectors = transport_vectors(dirs, grid.spacing, grid.direction_matrix, reach=REACH, fine_reach=FINE_REACH, fine_angle_deg=FINE_ANGLE_DEG)
    w = []
    for s, d in zip(sources, dirs):
        frac = cone_fractions(s.kernel.angle_edges_deg, d, grid.spacing, grid.direction_matrix, vectors=vectors)
        w += [frac @ k.amplitudes for k in s.grouped.kernels]
    lengths = np.linalg.norm(physical_vectors(grid.spacing, grid.direction_matrix, vectors=vectors), axis=1)
    return vectors, lengths, np.stack(w, axis=1).astype(np.float32)


def box_dose(sources: list[BeamSource], density_ct: Volume, grid: Grid, rho: np.ndarray, box: tuple[slice, slice, slice], *,
             patient_position: str, fluence_mm: float = 1.25, xp: ModuleType = np, workers: int | None = None) -> np.ndarray:  # fmt: skip
    """Dose (Gy per fraction, once calibrated) of the beams inside the transport box.

    Parameters
    ----------
    sources : list of BeamSource
    density_ct : Volume
        Density on the CT grid (radiological depths).
    grid : Grid
        The dose grid; ``rho`` (its shape) the density on it.
    box : slices
        The transport box (:func:`transport_box`).
    patient_position : str, keyword-only
    fluence_mm : float, keyword-only
    xp : module, keyword-only
        NumPy or CuPy for the transport.
    workers : int, keyword-only
        Transport threads (NumPy); default min(2, CPUs).

    Returns
    -------
    (nz, ny, nx) float32 NumPy array: the dose in the box.
    """
    from art.dose.ccc.transport import transport

    sub = grid.crop(box)
    rho_box = np.ascontiguousarray(rho[box], dtype=np.float32)
    kji = np.indices(sub.shape).reshape(3, -1).T.astype(np.float64)
    points = sub.index_to_lps(kji)
    voxel_mm = float(np.mean(grid.spacing))
    first = np.cumsum([0] + [len(s.grouped.kernels) for s in sources])  # each beam's first source (group)
    terma = np.empty((int(first[-1]),) + sub.shape, np.float32)
    direct = np.zeros(sub.shape, np.float32)

    def one(s: BeamSource) -> tuple[np.ndarray, np.ndarray]:
        return beam_terma(s.beam, s.machine, s.model, s.grouped, density_ct, points, fluence_mm=fluence_mm, voxel_mm=voxel_mm,
                          patient_position=patient_position)  # fmt: skip

    from art.blas import single_threaded_blas
    from art.threads import parallel

    # the beams' TERMA on two threads (NumPy/SciPy release the GIL), summed in beam order: the same arrays
    with single_threaded_blas():
        for b, (s, (t, c)) in enumerate(zip(sources, parallel(one, sources, most=2))):
            terma[first[b] : first[b + 1]] = (t * np.float32(s.factor)).reshape((-1,) + sub.shape)
            direct += (c * np.float32(s.factor)).reshape(sub.shape)
    points = None  # noqa: F841 - freed before the transport
    vectors, lengths, weights = directions_for(sources, grid, patient_position)
    a = 1.0 / np.asarray(SCALES_MM)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    d = transport(to_backend(terma, xp), to_backend(rho_box, xp), weights, a, vectors, lengths, workers=workers)
    return np.asarray(to_numpy(d), dtype=np.float32) + direct
