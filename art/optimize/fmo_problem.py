"""The down-sampled, scaled problem both optimisation methods of :mod:`art.optimize.fmo` work on.

:func:`sampled_problem` turns the checked inputs into a :class:`SampledProblem`:

1. every bound of every goal becomes a surrogate
   (:func:`art.optimize.objectives.goal_surrogates`), its level moved by the
   goal margin towards the inside of the goal;
2. the matrix rows are down-sampled (:func:`art.optimize.voxels.sample_voxels`):
   target voxels, voxels near a target and the voxels of small goal structures
   are all kept, the rest (OARs, normal tissue) is a seeded random subsample;
3. the sampled matrix is scaled, ``x = w / c``, so that ``B @ x`` is the
   course dose in units of the prescription dose and unit ``x`` gives about
   the prescription dose in the target.

:meth:`SampledProblem.slacks` evaluates the surrogates on the sampled dose
(numpy, either method).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import sparse

from art.errors import InputError
from art.optimize.fmo_checks import _find, _find_key
from art.optimize.objectives import Surrogate, goal_surrogates, surrogate_slack, surrogate_value
from art.optimize.voxels import StructureVoxels, VoxelSample, sample_voxels
from art.protocol import Goal, Prescription

__all__ = ["SampledProblem", "sampled_problem"]


@dataclass(frozen=True)
class SampledProblem:
    """The optimisation problem on the sampled rows, in prescription units.

    Attributes
    ----------
    goals : list of Goal
        The clinical goals, in the order given.
    prescription : Prescription
    rx : float
        Prescription dose, Gy.
    surr : list of Surrogate
        The goals' surrogates, levels (Gy) shifted by the goal margin.
    priorities : list of int
        Distinct goal priorities, ascending.
    stretch_idx : list of int
        Indices into ``surr`` of the stretch surrogates.
    rows : ndarray of int64, shape (m,)
        Rows of the full matrix kept by the down-sampling, ascending.
    scale : ndarray of float64, shape (m,)
        Volume each kept row stands for (1 / sampling probability).
    structures : dict of str to StructureVoxels
        The structures re-indexed to the kept rows (0..m-1).
    b_mat : csr_matrix of float64, shape (m, n_beamlets)
        Course dose in units of the prescription dose per unit scaled weight ``x``.
    c : float
        Beamlet weight per unit ``x`` (``w = c * x``).
    dist : ndarray of float64, shape (n_voxels,), or None
        Distance of each full-matrix row to the nearest target, mm.
    nt_rows_full : ndarray of int64 or None
        Full-matrix rows of the normal tissue (outside every target; None without ``dist``).
    """

    goals: list[Goal]
    prescription: Prescription
    rx: float
    surr: list[Surrogate]
    priorities: list[int]
    stretch_idx: list[int]
    rows: np.ndarray
    scale: np.ndarray
    structures: dict[str, StructureVoxels]
    b_mat: sparse.csr_matrix
    c: float
    dist: np.ndarray | None
    nt_rows_full: np.ndarray | None

    def slacks(self, xv: np.ndarray) -> np.ndarray:
        """Slack of each surrogate (Gy, >= 0) for scaled weights ``xv`` of shape (n_beamlets,), shape (len(surr),)."""
        dose = self.rx * (self.b_mat @ xv)
        out = np.zeros(len(self.surr))
        for k, s in enumerate(self.surr):
            sv = _find(self.structures, s.structure)
            if sv.rows.size:
                out[k] = surrogate_slack(s, surrogate_value(s, dose[sv.rows], sv.weight_array()))
        return out


def sampled_problem(
    a: sparse.csr_matrix,
    svs: dict[str, StructureVoxels],
    goals: list[Goal],
    prescription: Prescription,
    dist: np.ndarray | None,
    *,
    fractions: int,
    goal_margin: float,
    max_voxels: int | None,
    keep_near_target_mm: float,
    seed: int,
) -> SampledProblem:
    """Surrogates, down-sampled rows and scaled matrix of a checked problem.

    Parameters
    ----------
    a : csr_matrix, shape (n_voxels, n_beamlets)
        Dose per unit weight, Gy (per fraction when ``fractions`` > 1).
    svs : dict of str to StructureVoxels
        Checked structures (rows of ``a``).
    goals : list of Goal
    prescription : Prescription
    dist : ndarray of float64, shape (n_voxels,), or None
        Distance of each row to the nearest target, mm.
    fractions : int, keyword-only
        The course dose is ``fractions * a @ w``.
    goal_margin : float, keyword-only
        Fraction of the prescription dose the surrogates aim beyond each bound.
    max_voxels, keep_near_target_mm, seed : keyword-only
        Down-sampling (see :func:`~art.optimize.voxels.sample_voxels`).

    Returns
    -------
    SampledProblem
    """
    rx = float(prescription.dose_gy)
    surr = _shifted_surrogates(goals, svs, goal_margin, rx)
    nt_rows_full = _normal_tissue_rows(svs, prescription, dist)
    sample = _sample(svs, goals, prescription, a.shape[0], dist, nt_rows_full, max_voxels=max_voxels, keep_near_target_mm=keep_near_target_mm, seed=seed)
    b_mat, c = _scaled_matrix(a, sample, fractions, prescription, rx)
    return SampledProblem(
        goals=goals,
        prescription=prescription,
        rx=rx,
        surr=surr,
        priorities=sorted({g.priority for g in goals}),
        stretch_idx=[k for k, s in enumerate(surr) if s.stretch],
        rows=sample.rows,
        scale=sample.scale,
        structures=sample.structures,
        b_mat=b_mat,
        c=c,
        dist=dist,
        nt_rows_full=nt_rows_full,
    )


def _shifted_surrogates(goals: list[Goal], svs: Mapping[str, StructureVoxels], goal_margin: float, rx: float) -> list[Surrogate]:
    """The surrogates of every goal, in goal order, each level moved ``goal_margin * rx`` Gy inside the goal (not below 0 Gy)."""
    surr: list[Surrogate] = []
    for i, g in enumerate(goals):
        for sg in goal_surrogates(g, i, _find(svs, g.structure)):
            shift = goal_margin * rx * (-1.0 if sg.sense == "upper" else 1.0)
            surr.append(dataclasses.replace(sg, level_gy=max(sg.level_gy + shift, 0.0)))
    return surr


def _normal_tissue_rows(svs: Mapping[str, StructureVoxels], prescription: Prescription, dist: np.ndarray | None) -> np.ndarray | None:
    """Full-matrix rows with a positive distance to the targets that are in no target (None without ``dist``)."""
    target_rows_full = np.unique(np.concatenate([sv.rows for sv in svs.values() if sv.is_target] + [_find(svs, prescription.target).rows]))
    nt_rows_full = None
    if dist is not None:
        nt_rows_full = np.flatnonzero(dist > 0)
        nt_rows_full = np.setdiff1d(nt_rows_full, target_rows_full, assume_unique=True)
    return nt_rows_full


def _sample(
    svs: dict[str, StructureVoxels],
    goals: list[Goal],
    prescription: Prescription,
    n_vox: int,
    dist: np.ndarray | None,
    nt_rows_full: np.ndarray | None,
    *,
    max_voxels: int | None,
    keep_near_target_mm: float,
    seed: int,
) -> VoxelSample:
    """Down-sample the rows of the structures the optimisation uses (goal structures, targets, OARs) and the normal tissue.

    Every row of a goal structure of at most ``max_voxels // 2`` rows is kept.
    """
    goal_names = {_find_key(svs, g.structure) for g in goals}
    used = {k: v for k, v in svs.items() if k in goal_names or v.is_target or v.roi_type in ("ORGAN", "AVOIDANCE")}
    used[_find_key(svs, prescription.target)] = _find(svs, prescription.target)
    # every voxel of a structure a goal is set on, unless it is large (then its rows are sampled,
    # and the hot or cold tail that matters lies near a target, where every voxel is kept anyway)
    keep_all = [k for k in used if k in goal_names and (max_voxels is None or used[k].rows.size <= max_voxels // 2)]
    return sample_voxels(
        used, n_vox, max_voxels=max_voxels, distance_to_target_mm=dist, keep_near_target_mm=keep_near_target_mm,
        extra_rows=nt_rows_full, keep_structures=keep_all, seed=seed,
    )


def _scaled_matrix(a: sparse.csr_matrix, sample: VoxelSample, fractions: int, prescription: Prescription, rx: float) -> tuple[sparse.csr_matrix, float]:
    """The sampled matrix in prescription units per unit scaled weight.

    Returns
    -------
    b_mat : csr_matrix of float64, shape (m, n_beamlets)
        ``fractions * a[rows] * c / rx``.
    c : float
        ``rx`` over the mean target dose of unit weights (course, Gy): unit
        ``x`` gives about the prescription dose in the target.
    """
    rows = sample.rows
    sub = a[rows].astype(np.float64)
    if fractions != 1:
        sub = sub * float(fractions)  # course dose per unit weight
    svs_s = sample.structures

    # scale: x = w / c, with unit x giving about the prescription dose in the target
    t_rows = _find(svs_s, prescription.target).rows
    mean_unit = float(np.asarray(sub[t_rows].sum(axis=1)).mean())
    if not mean_unit > 0:
        raise InputError(f"the prescription target {prescription.target!r} receives no dose from any beamlet")
    c = rx / mean_unit
    b_mat = (sub * (c / rx)).tocsr()  # dose in units of the prescription per unit x
    return b_mat, c
