"""Synthetic fluence-map-optimisation problems for tests and benchmarks.

This is *not* a dose engine (see :mod:`art.dose`): it builds a small,
physically plausible dose-influence matrix analytically so that the optimiser
can be tested and timed without CT data. Beams are parallel, coplanar (axial
plane), with an exponential depth attenuation and an error-function lateral
profile, so that a uniform fluence over a field gives a flat lateral profile.

Two geometries, both on a water cylinder (the "body"):

``"prostate"``
    a spherical PTV at the centre, a rectum (cylinder along z) posterior that
    overlaps the PTV margin and a bladder (sphere) anterior.
``"cshape"``
    the AAPM TG-119 C-shape: a C-shaped PTV wrapped around a cylindrical core
    OAR.

Coordinates: LPS mm, arrays (z, y, x); +y is posterior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.special import erf

from art.errors import InputError
from art.geometry import Grid
from art.optimize.voxels import StructureVoxels

__all__ = ["SyntheticCase", "synthetic_case"]


@dataclass
class SyntheticCase:
    """A synthetic FMO problem.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, float32, shape (n_voxels, n_beamlets)
        Gy per unit beamlet weight (arbitrary but consistent scale).
    structures : dict of str to StructureVoxels
        Rows of ``matrix`` in each structure (``"PTV"``, OARs, ``"Body"``).
    grid : Grid
        The dose grid.
    voxel_indices : ndarray of int64, shape (n_voxels,)
        Flat index into ``grid`` of each row.
    masks : dict of str to ndarray of bool, shape grid.shape
    distance_to_target_mm : ndarray of float32, shape (n_voxels,)
        Distance of each row's voxel to the nearest PTV voxel (0 inside).
    beamlet_neighbours : ndarray of int64, shape (n_pairs, 2)
        Pairs of beamlets adjacent in the same beam (same row or column).
    beamlet_beam : ndarray of int64, shape (n_beamlets,)
        Beam index of each beamlet.
    """

    matrix: sparse.csr_matrix
    structures: dict[str, StructureVoxels]
    grid: Grid
    voxel_indices: np.ndarray
    masks: dict[str, np.ndarray]
    distance_to_target_mm: np.ndarray
    beamlet_neighbours: np.ndarray
    beamlet_beam: np.ndarray


def synthetic_case(
    kind: str = "prostate",
    *,
    n_beams: int = 7,
    grid_mm: float = 4.0,
    bixel_mm: float = 6.0,
    body_radius_mm: float = 70.0,
    length_mm: float = 60.0,
    mu_per_mm: float = 0.005,
    sigma_mm: float = 3.0,
    threshold: float = 1e-3,
    gy_per_weight: float = 1.0,
    rectum_y_mm: float = 32.0,
) -> SyntheticCase:
    """Build a synthetic FMO problem.

    Parameters
    ----------
    kind : {"prostate", "cshape"}
        The geometry (see the module docstring).
    n_beams : int, keyword-only
        Equally spaced coplanar beams, first at gantry 0.
    grid_mm : float, keyword-only
        Isotropic dose-grid spacing, mm.
    bixel_mm : float, keyword-only
        Beamlet size, mm (square).
    body_radius_mm, length_mm : float, keyword-only
        The water cylinder (axis along z).
    mu_per_mm : float, keyword-only
        Depth attenuation, 1/mm.
    sigma_mm : float, keyword-only
        Lateral penumbra (Gaussian sigma), mm.
    threshold : float, keyword-only
        Matrix entries below ``threshold * gy_per_weight`` are dropped.
    gy_per_weight : float, keyword-only
        Dose on the axis at zero depth of a broad uniform field of unit weight, Gy.
    rectum_y_mm : float, keyword-only
        Posterior offset of the rectum's axis ("prostate"); the rectum (radius
        11 mm) overlaps the PTV (radius 25 mm) when this is below 36 mm.

    Returns
    -------
    SyntheticCase
    """
    if kind not in ("prostate", "cshape"):
        raise InputError(f"kind must be 'prostate' or 'cshape', got {kind!r}")
    grid, (z, y, x) = _grid(grid_mm, body_radius_mm, length_mm)
    masks = _masks(kind, z, y, x, body_radius_mm, rectum_y_mm)
    flat = np.flatnonzero(masks["Body"].ravel())
    px, py, pz = x.ravel()[flat], y.ravel()[flat], z.ravel()[flat]
    ptv_flat = masks["PTV"].ravel()[flat]
    beam = _BeamModel(bixel_mm=bixel_mm, body_radius_mm=body_radius_mm, mu_per_mm=mu_per_mm, sigma_mm=sigma_mm, threshold=threshold)
    matrix, pairs, beam_of = _influence(px, py, pz, ptv_flat, n_beams, beam, gy_per_weight)
    vv = grid.voxel_volume_cc
    structures = {
        name: StructureVoxels(
            rows=np.flatnonzero(m.ravel()[flat]), roi_type="PTV" if name == "PTV" else ("EXTERNAL" if name == "Body" else "ORGAN"), voxel_volume_cc=vv
        )
        for name, m in masks.items()
    }
    dist = ndimage.distance_transform_edt(~masks["PTV"], sampling=(grid_mm,) * 3).astype(np.float32)
    return SyntheticCase(
        matrix=matrix,
        structures=structures,
        grid=grid,
        voxel_indices=flat.astype(np.int64),
        masks=masks,
        distance_to_target_mm=dist.ravel()[flat],
        beamlet_neighbours=np.concatenate(pairs).astype(np.int64),
        beamlet_beam=np.concatenate(beam_of).astype(np.int64),
    )


@dataclass(frozen=True)
class _BeamModel:
    """The analytic beam (see :func:`synthetic_case` for the parameters): bixel size, body radius (mm), attenuation (1/mm), penumbra sigma (mm), relative cut-off."""

    bixel_mm: float
    body_radius_mm: float
    mu_per_mm: float
    sigma_mm: float
    threshold: float


def _grid(grid_mm: float, body_radius_mm: float, length_mm: float) -> tuple[Grid, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The dose grid around the water cylinder and its voxel centres.

    Returns
    -------
    grid : Grid
        Isotropic ``grid_mm`` spacing, centred on the origin.
    zyx : tuple of 3 ndarrays of float64, shape grid.shape
        z, y and x of each voxel centre, mm.
    """
    n = int(np.ceil(2 * body_radius_mm / grid_mm)) + 1
    nz = int(np.ceil(length_mm / grid_mm)) + 1
    c = (n - 1) / 2 * grid_mm
    cz = (nz - 1) / 2 * grid_mm
    grid = Grid(shape=(nz, n, n), spacing=(grid_mm,) * 3, origin=(-c, -c, -cz))
    z, y, x = np.meshgrid(
        np.arange(nz) * grid_mm - cz, np.arange(n) * grid_mm - c, np.arange(n) * grid_mm - c, indexing="ij"
    )
    return grid, (z, y, x)


def _masks(kind: str, z: np.ndarray, y: np.ndarray, x: np.ndarray, body_radius_mm: float, rectum_y_mm: float) -> dict[str, np.ndarray]:
    """Structure masks of the geometry ``kind`` (bool, shape of ``x``): ``"PTV"``, the OARs, then ``"Body"``."""
    body = x**2 + y**2 <= body_radius_mm**2
    masks: dict[str, np.ndarray] = {}
    if kind == "prostate":
        ptv = x**2 + y**2 + z**2 <= 25.0**2
        rectum = (x**2 + (y - rectum_y_mm) ** 2 <= 11.0**2) & (np.abs(z) <= 30)
        bladder = x**2 + (y + 40.0) ** 2 + z**2 <= 22.0**2
        masks = {"PTV": ptv & body, "Rectum": rectum & body, "Bladder": bladder & body & ~ptv}
    else:
        r = np.hypot(x, y)
        core = (r <= 10.0) & (np.abs(z) <= 25)
        theta = np.degrees(np.arctan2(y, x))
        ptv = (r >= 15.0) & (r <= 37.0) & ~((np.abs(theta) < 45.0) & (x > 0)) & (np.abs(z) <= 20)
        masks = {"PTV": ptv & body, "Core": core & body}
    masks["Body"] = body
    return masks


def _influence(
    px: np.ndarray, py: np.ndarray, pz: np.ndarray, ptv_flat: np.ndarray, n_beams: int, beam: _BeamModel, gy_per_weight: float
) -> tuple[sparse.csr_matrix, list[np.ndarray], list[np.ndarray]]:
    """The influence matrix of ``n_beams`` equally spaced beams on the body voxels.

    Parameters
    ----------
    px, py, pz : ndarray of float64, shape (n_voxels,)
        Body voxel centres, mm.
    ptv_flat : ndarray of bool, shape (n_voxels,)
    n_beams : int
    beam : _BeamModel
    gy_per_weight : float
        Gy per unit weight on the axis at zero depth of a broad field.

    Returns
    -------
    matrix : csr_matrix of float32, shape (n_voxels, n_beamlets)
    pairs : list of ndarray of int64, shape (k, 2)
        Neighbouring beamlets, per beam (rows, then columns).
    beam_of : list of ndarray, shape (n_beamlets of the beam,)
        Beam index of each beamlet, per beam.
    """
    rows_all, cols_all, vals_all = [], [], []
    beam_of: list[np.ndarray] = []
    pairs: list[np.ndarray] = []
    n_total = 0
    for b in range(n_beams):
        th = np.radians(360.0 * b / n_beams)
        dvec = np.array([-np.sin(th), np.cos(th)])  # beam direction in (x, y): gantry 0 from anterior (-y)
        uvec = np.array([np.cos(th), np.sin(th)])
        u = px * uvec[0] + py * uvec[1]
        t = px * dvec[0] + py * dvec[1]
        depth = t + np.sqrt(np.maximum(beam.body_radius_mm**2 - u**2, 0.0))
        att = np.exp(-beam.mu_per_mm * np.maximum(depth, 0.0))
        ids, bounds, nb = _beamlet_ids(u, pz, ptv_flat, beam.bixel_mm, n_total)
        beam_of.append(np.full(nb, b))
        pairs.extend(_neighbour_pairs(ids))
        for rows, cols, vals in _beam_entries(u, pz, att, ids, bounds, beam):
            rows_all.append(rows)
            cols_all.append(cols)
            vals_all.append(vals)
        n_total += nb
    matrix = sparse.csr_matrix(
        (np.concatenate(vals_all).astype(np.float32) * np.float32(gy_per_weight), (np.concatenate(rows_all), np.concatenate(cols_all))),
        shape=(px.size, n_total),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    return matrix, pairs, beam_of


def _beamlet_ids(u: np.ndarray, pz: np.ndarray, ptv_flat: np.ndarray, bixel_mm: float, n_total: int) -> tuple[np.ndarray, tuple[int, int, int, int], int]:
    """Beamlets of one beam: those covering the PTV projection, dilated by one bixel.

    Parameters
    ----------
    u, pz : ndarray of float64, shape (n_voxels,)
        Lateral and longitudinal coordinate of each voxel in the beam's eye view, mm.
    ptv_flat : ndarray of bool, shape (n_voxels,)
    bixel_mm : float
    n_total : int
        Beamlets of the earlier beams (the first id).

    Returns
    -------
    ids : ndarray of int64, shape (n_z, n_u)
        Beamlet id (column of the matrix) at each bixel position, -1 where none.
    bounds : (lo_u, hi_u, lo_z, hi_z)
        Bixel index range of ``ids`` (inclusive).
    nb : int
        Number of beamlets of the beam.
    """
    iu_t = np.round(u[ptv_flat] / bixel_mm).astype(int)
    iz_t = np.round(pz[ptv_flat] / bixel_mm).astype(int)
    lo_u, hi_u = iu_t.min() - 1, iu_t.max() + 1
    lo_z, hi_z = iz_t.min() - 1, iz_t.max() + 1
    occ = np.zeros((hi_z - lo_z + 1, hi_u - lo_u + 1), bool)
    occ[iz_t - lo_z, iu_t - lo_u] = True
    occ = ndimage.binary_dilation(occ, structure=np.ones((3, 3), bool))
    ids = -np.ones(occ.shape, np.int64)
    nb = int(occ.sum())
    ids[occ] = n_total + np.arange(nb)
    return ids, (lo_u, hi_u, lo_z, hi_z), nb


def _neighbour_pairs(ids: np.ndarray) -> list[np.ndarray]:
    """Pairs of beamlet ids adjacent in the same row, then in the same column, of ``ids`` (n_z, n_u)."""
    h = (ids[:, :-1] >= 0) & (ids[:, 1:] >= 0)
    v = (ids[:-1, :] >= 0) & (ids[1:, :] >= 0)
    return [np.stack([ids[:, :-1][h], ids[:, 1:][h]], 1), np.stack([ids[:-1, :][v], ids[1:, :][v]], 1)]


def _beam_entries(
    u: np.ndarray, pz: np.ndarray, att: np.ndarray, ids: np.ndarray, bounds: tuple[int, int, int, int], beam: _BeamModel
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Matrix entries of one beam: depth attenuation times the error-function profiles across and along.

    Parameters
    ----------
    u, pz : ndarray of float64, shape (n_voxels,)
        Lateral and longitudinal coordinate of each voxel, mm.
    att : ndarray of float64, shape (n_voxels,)
        Depth attenuation of each voxel.
    ids, bounds
        The beam's beamlets (see :func:`_beamlet_ids`).
    beam : _BeamModel

    Returns
    -------
    list of (rows, cols, values)
        Entries not below ``threshold`` (relative), per bixel offset.
    """
    lo_u, hi_u, lo_z, hi_z = bounds
    bixel_mm, sigma_mm = beam.bixel_mm, beam.sigma_mm
    out = []
    iu0 = np.round(u / bixel_mm).astype(int)
    iz0 = np.round(pz / bixel_mm).astype(int)
    s2 = np.sqrt(2.0) * sigma_mm
    half = bixel_mm / 2
    reach = int(np.ceil((half + 3 * sigma_mm) / bixel_mm))
    for du in range(-reach, reach + 1):
        ju = iu0 + du
        pu = 0.5 * (erf((u - ju * bixel_mm + half) / s2) - erf((u - ju * bixel_mm - half) / s2))
        for dz in range(-reach, reach + 1):
            jz = iz0 + dz
            pzv = 0.5 * (erf((pz - jz * bixel_mm + half) / s2) - erf((pz - jz * bixel_mm - half) / s2))
            val = att * pu * pzv
            ok = (ju >= lo_u) & (ju <= hi_u) & (jz >= lo_z) & (jz <= hi_z) & (val >= beam.threshold)
            idx = np.flatnonzero(ok)
            col = ids[jz[idx] - lo_z, ju[idx] - lo_u]
            keep = col >= 0
            out.append((idx[keep], col[keep], val[idx[keep]]))
    return out
