"""One treatment fraction of the digital pelvis: the variation of the day, its anatomy and its CBCT.

The daily variation model is described in :mod:`art_phantoms.pelvis`;
:func:`make_fraction` (public there and in :mod:`art_phantoms`) draws the
variation of the day from its own seed, deforms the planning anatomy
(:mod:`art_phantoms.daily_field`), adds the rigid set-up error,
re-synthesises the anatomy on the CBCT grid and degrades it into a CBCT
(:mod:`art_phantoms.cbct`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from art.errors import InputError
from art.geometry import Grid, Volume
from art.structures import StructureSet

from .cases import DailyCase, DailyTruth, PlanningCase
from .cbct import CbctArtefacts, apply_artefacts, cbct_grid
from .checks import _check_seed, _jsonify, _number, _triple
from .daily_field import _Deformation, _deformation
from .deformation import (
    grid_points,
    rigid_apply,
    rigid_inverse_apply,
    rotation_matrix,
    sample_field,
)
from .render import GAS, _label_points, _render, _structure_set
from .sampling import _sample_gas

__all__ = ["make_fraction"]


def make_fraction(
    case: PlanningCase,
    *,
    fraction: int,
    seed: int | None = None,
    bladder_filling: float | None = None,
    rectal_gas: bool | None = None,
    rectal_filling: float | None = None,
    prostate_shift_mm: Sequence[float] | None = None,
    prostate_rotation_deg: float | None = None,
    setup_shift_mm: Sequence[float] | None = None,
    setup_rotation_deg: Sequence[float] | None = None,
    artefacts: CbctArtefacts | None = None,
) -> DailyCase:
    """Simulate one treatment fraction: the anatomy of the day and its CBCT.

    Parameters
    ----------
    case : PlanningCase
        From :func:`make_pelvis`.
    fraction : int, keyword-only
        Fraction number (>= 0).
    seed : int or None, keyword-only
        Seed of the day; None derives it from ``(case.seed, fraction)``.
    bladder_filling : float or None, keyword-only
        Relative bladder volume change (-0.2 = 20 % smaller, 0.6 = 60 % larger);
        sampled from N(0.1, 0.25) clipped to [-0.2, 0.6] when None.
    rectal_gas : bool or None, keyword-only
        Gas pockets in the rectum of the day (streak sources in the CBCT);
        drawn with probability 0.3 when None.
    rectal_filling : float or None, keyword-only
        Relative change of the rectal radius near the prostate; sampled from
        U(-0.1, 0.25) (+0.15 with gas) when None.
    prostate_shift_mm : (x, y, z) or None, keyword-only
        Prostate translation in LPS mm; sampled (sd 0.7 / 2.5 / 2 mm LR/AP/SI,
        plus an anterior push from rectal filling and a posterior-inferior one
        from bladder filling; at most 5 mm anterior, 6 mm otherwise) when None.
    prostate_rotation_deg : float or None, keyword-only
        Prostate rotation about the left-right axis through its centre (right
        hand about +x: positive turns posterior towards superior); sampled
        N(0, 3) clipped to +-8 degrees when None.
    setup_shift_mm : (x, y, z) or None, keyword-only
        Rigid set-up translation, LPS mm; N(0, 3 mm) per axis when None.
    setup_rotation_deg : (rx, ry, rz) or None, keyword-only
        Rigid set-up rotation about LPS x, y, z through the isocentre
        (``R = Rz Ry Rx``); N(0, 0.4) clipped to +-1 degree when None.
    artefacts : CbctArtefacts or None, keyword-only
        CBCT degradations and geometry; defaults to ``CbctArtefacts()``.

    Returns
    -------
    DailyCase
        The CBCT and the truth (daily CT and masks on the CBCT grid, the
        deformation both ways, set-up error, parameters).

    Notes
    -----
    The CBCT grid is axial, centred on the planned isocentre (the planning
    PTV centroid, ``case.params["isocenter_mm"]``), ``fov_diameter_mm`` wide
    and ``length_mm`` long, in the planning frame of reference: the anatomy
    appears displaced by the deformation and the set-up error.

    The daily CT re-synthesises the analytic anatomy at ``y + d(y)`` (no
    resampling blur), with the gas of the day in the rectal lumen and fresh CT
    noise. The daily masks are the same analytic shapes at ``y + d(y)``, i.e.
    the planning shapes warped exactly; the daily PTV is the planning PTV
    pulled through ``daily_to_planning`` (linear interpolation, >= 0.5) and
    cut to the daily body.
    """
    fraction, day_seed, artefacts = _check_fraction_args(case, fraction, seed, artefacts)
    requested = dict(bladder_filling=bladder_filling, rectal_gas=rectal_gas, rectal_filling=rectal_filling, prostate_shift_mm=prostate_shift_mm)
    requested.update(prostate_rotation_deg=prostate_rotation_deg, setup_shift_mm=setup_shift_mm, setup_rotation_deg=setup_rotation_deg)
    return _simulate_fraction(case, fraction, day_seed, artefacts, requested)


def _fraction_seed(case_seed: int, fraction: int) -> int:
    """The seed of a fraction's day, derived from the patient's seed and the fraction number."""
    return int(np.random.SeedSequence([int(case_seed), int(fraction) & 0xFFFFFFFF, 0x5EED]).generate_state(1)[0])


def _check_fraction_args(case: Any, fraction: Any, seed: Any, artefacts: Any) -> tuple[int, int, CbctArtefacts]:
    """Check :func:`make_fraction`'s case, fraction, seed and artefacts; return the fraction, the seed of the day and the artefacts."""
    if not isinstance(case, PlanningCase):
        raise InputError(f"case must be a PlanningCase, got {type(case).__name__}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, np.integer)) or fraction < 0:
        raise InputError(f"fraction must be a non-negative integer, got {fraction!r}")
    if "anatomy" not in case.params:
        raise InputError("case.params lacks 'anatomy': make the case with make_pelvis")
    fraction = int(fraction)
    day_seed = _fraction_seed(case.seed, fraction) if seed is None else _check_seed(seed, "seed")
    if artefacts is None:
        artefacts = CbctArtefacts()
    elif not isinstance(artefacts, CbctArtefacts):
        raise InputError(f"artefacts must be a CbctArtefacts, got {type(artefacts).__name__}")
    return fraction, day_seed, artefacts


@dataclass(frozen=True)
class _DayDraws:
    """The random variation of the day, drawn whether requested values replace it or not.

    ``fill``: bladder filling; ``gas``: rectal gas; ``rect``: rectal filling
    before the gas push; ``shift``: random part of the prostate shift (LPS mm,
    shape (3,)); ``rot``: prostate rotation (deg); ``setup``: set-up shift
    (LPS mm, (3,)); ``setup_rot``: set-up rotation (deg about x, y, z, (3,)).
    """

    fill: float
    gas: bool
    rect: float
    shift: np.ndarray
    rot: float
    setup: np.ndarray
    setup_rot: np.ndarray


@dataclass(frozen=True)
class _Day:
    """The variation of the day as simulated.

    ``fill``: relative bladder volume change; ``gas_on``: gas in the rectum;
    ``rect``: relative rectal radius change; ``shift``: prostate translation
    (LPS mm, shape (3,)); ``angle``: prostate rotation about +x (deg);
    ``setup``: set-up translation (LPS mm, (3,)); ``setup_rot``: set-up
    rotation about LPS x, y, z (deg, (3,)).
    """

    fill: float
    gas_on: bool
    rect: float
    shift: np.ndarray
    angle: float
    setup: np.ndarray
    setup_rot: np.ndarray


def _draw_day(rng: np.random.Generator) -> _DayDraws:
    """Sample everything in a fixed order (the order is the day: do not change it)."""
    s_fill = float(np.clip(rng.normal(0.1, 0.25), -0.2, 0.6))
    s_gas = bool(rng.random() < 0.3)
    s_rect = float(rng.uniform(-0.1, 0.2))
    s_shift = rng.normal(0.0, [0.7, 2.5, 2.0])
    s_rot = float(np.clip(rng.normal(0.0, 2.5), -6.0, 6.0))
    s_setup = np.clip(rng.normal(0.0, 3.0, 3), -9.0, 9.0)
    s_setup_rot = np.clip(rng.normal(0.0, 0.4, 3), -1.0, 1.0)
    return _DayDraws(fill=s_fill, gas=s_gas, rect=s_rect, shift=s_shift, rot=s_rot, setup=s_setup, setup_rot=s_setup_rot)


def _requested_day(
    s: _DayDraws,
    *,
    bladder_filling: float | None,
    rectal_gas: bool | None,
    rectal_filling: float | None,
    prostate_shift_mm: Sequence[float] | None,
    prostate_rotation_deg: float | None,
    setup_shift_mm: Sequence[float] | None,
    setup_rotation_deg: Sequence[float] | None,
) -> _Day:
    """The day with the requested values (checked) in place of the drawn ones; see :func:`make_fraction` for the arguments."""
    fill = s.fill if bladder_filling is None else _number(bladder_filling, "bladder_filling", -0.8, 3.0)
    gas_on = s.gas if rectal_gas is None else bool(rectal_gas)
    if rectal_filling is None:
        rect = s.rect + (0.1 if gas_on else 0.0)
    else:
        rect = _number(rectal_filling, "rectal_filling", -0.5, 1.0)
    if prostate_shift_mm is None:
        shift = np.clip(s.shift + np.array([0.0, -4.0 * rect + 1.0 * fill, -1.5 * fill]), [-3.0, -5.0, -6.0], [3.0, 6.0, 6.0])
    else:
        shift = np.asarray(_triple(prostate_shift_mm, "prostate_shift_mm"))
        if np.linalg.norm(shift) > 20.0:
            raise InputError(f"prostate_shift_mm must be at most 20 mm long, got {tuple(shift)}")
    angle = s.rot if prostate_rotation_deg is None else _number(prostate_rotation_deg, "prostate_rotation_deg", -20.0, 20.0)
    setup = s.setup if setup_shift_mm is None else np.asarray(_triple(setup_shift_mm, "setup_shift_mm"))
    setup_rot = s.setup_rot if setup_rotation_deg is None else np.asarray(_triple(setup_rotation_deg, "setup_rotation_deg"))
    if np.any(np.abs(setup_rot) > 10.0):
        raise InputError(f"setup_rotation_deg must be within +-10 degrees, got {tuple(setup_rot)}")
    return _Day(fill=fill, gas_on=gas_on, rect=rect, shift=shift, angle=angle, setup=setup, setup_rot=setup_rot)


def _planning_to_daily(pg: Grid, deform: _Deformation, day: _Day, iso: np.ndarray) -> np.ndarray:
    """Displacement planning grid -> daily, ``s(phi(x)) - x``: LPS mm, float32, shape ``pg.shape + (3,)``."""
    rs = rotation_matrix(day.setup_rot)
    px, py, pz = grid_points(pg)
    f = sample_field(deform.fwd, deform.work, px, py, pz)
    qx, qy, qz = rigid_apply(px + f[..., 0], py + f[..., 1], pz + f[..., 2], rs, day.setup, iso)
    return np.stack([qx - px, qy - py, qz - pz], axis=-1).astype(np.float32)


def _daily_to_planning(cg: Grid, deform: _Deformation, day: _Day, iso: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where each CBCT voxel ``y`` shows the planning tissue, ``P = phi^-1(s^-1(y))``.

    Returns the displacement ``P - y`` (LPS mm, float32, ``cg.shape + (3,)``)
    and ``Px, Py, Pz`` (LPS mm, float64, ``cg.shape`` each).
    """
    rs = rotation_matrix(day.setup_rot)
    yx, yy, yz = grid_points(cg)
    qx, qy, qz = rigid_inverse_apply(yx, yy, yz, rs, day.setup, iso)
    b = sample_field(deform.inv, deform.work, qx, qy, qz)
    Px, Py, Pz = qx + b[..., 0], qy + b[..., 1], qz + b[..., 2]
    d2p = np.stack([Px - yx, Py - yy, Pz - yz], axis=-1).astype(np.float32)
    return d2p, Px, Py, Pz


def _daily_ptv(case: PlanningCase, cg: Grid, Px: np.ndarray, Py: np.ndarray, Pz: np.ndarray) -> np.ndarray:
    """The planning PTV pulled to the CBCT grid (linear interpolation at ``P``, LPS mm, >= 0.5): bool, ``cg.shape``."""
    pg = case.ct.grid
    ptv_plan = case.structures["PTV"].mask.astype(np.float32)
    kji = pg.lps_to_index(np.stack([Px.ravel(), Py.ravel(), Pz.ravel()], axis=-1))
    return ndimage.map_coordinates(ptv_plan, kji.T, order=1, mode="constant", cval=0.0, prefilter=False).reshape(cg.shape) >= 0.5


def _daily_anatomy(case: PlanningCase, gas: list, cg: Grid, deform: _Deformation, day: _Day, iso: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, StructureSet]:
    """The anatomy of the day on the CBCT grid, re-synthesised at the deformed positions.

    Returns the displacement daily -> planning (LPS mm, float32, ``cg.shape +
    (3,)``), the tissue labels (uint8, flat), the daily CT (HU, float32,
    ``cg.shape``, CT noise from ``rng``) and the daily structures.
    """
    p = case.params["anatomy"]
    d2p, Px, Py, Pz = _daily_to_planning(cg, deform, day, iso)
    lab, fh_l, fh_r = _label_points(p, Px, Py, Pz, gas)
    daily = _render(p, lab, cg, rng)
    ptv_day = _daily_ptv(case, cg, Px, Py, Pz)
    del Px, Py, Pz
    structures = _structure_set(cg, lab, fh_l, fh_r, ptv_day)
    return d2p, lab, daily, structures


def _fraction_params(fraction: int, day_seed: int, day: _Day, gas: list, iso: np.ndarray, deform: _Deformation, artefacts: CbctArtefacts, info: dict, cbct_seed: int, structures: StructureSet) -> dict:
    """The parameters of the day recorded in the truth (not yet JSON-friendly)."""
    return {
        "fraction": fraction,
        "seed": day_seed,
        "bladder_filling": day.fill,
        "bladder_volume_ratio_achieved": deform.achieved,
        "rectal_gas": day.gas_on,
        "gas": gas,
        "rectal_filling": day.rect,
        "prostate_shift_mm": day.shift,
        "prostate_rotation_deg": day.angle,
        "prostate_rotation_axis": "LR (+x), about the prostate centre",
        "setup_shift_mm": day.setup,
        "setup_rotation_deg": day.setup_rot,
        "setup_rotation_convention": "R = Rz Ry Rx about LPS axes through isocenter_mm; p -> R (p - iso) + iso + t",
        "isocenter_mm": iso,
        "jacobian_min": deform.jac_min,
        "work_grid": deform.work.to_dict(),
        "artefacts": artefacts.to_dict(),
        "artefacts_applied": info,
        "cbct_seed": cbct_seed,
        "volumes_cc": {s.name: s.volume_cc for s in structures},
    }


def _simulate_fraction(case: PlanningCase, fraction: int, day_seed: int, artefacts: CbctArtefacts, requested: dict) -> DailyCase:
    """:func:`make_fraction` after the argument checks: variation, deformation, anatomy, CBCT, truth.

    Four independent random streams are spawned from ``day_seed``: the
    variation of the day, the gas pockets, the CT noise and the CBCT artefacts.
    """
    p = case.params["anatomy"]
    ss_var, ss_gas, ss_ct, ss_cbct = np.random.SeedSequence(day_seed).spawn(4)
    # sample everything in a fixed order, then apply the requested values
    day = _requested_day(_draw_day(np.random.default_rng(ss_var)), **requested)
    gas = _sample_gas(np.random.default_rng(ss_gas), p) if day.gas_on else []
    deform = _deformation(p, case.ct.grid.spacing, fill=day.fill, rect=day.rect, shift=day.shift, angle=day.angle)
    iso = np.asarray(case.params["isocenter_mm"], dtype=np.float64)
    p2d = _planning_to_daily(case.ct.grid, deform, day, iso)
    spacing = artefacts.spacing if artefacts.spacing is not None else case.ct.grid.spacing
    cg = cbct_grid(iso, spacing, fov_diameter_mm=artefacts.fov_diameter_mm, length_mm=artefacts.length_mm)
    d2p, lab, daily, structures = _daily_anatomy(case, gas, cg, deform, day, iso, np.random.default_rng(ss_ct))
    cbct_seed = int(ss_cbct.generate_state(1)[0])
    cbct, info = apply_artefacts(daily, cg, artefacts=artefacts, isocenter_mm=iso, seed=cbct_seed, gas_mask=(lab == GAS).reshape(cg.shape))
    params = _fraction_params(fraction, day_seed, day, gas, iso, deform, artefacts, info, cbct_seed, structures)
    truth = DailyTruth(
        daily_ct=Volume(daily, cg),
        structures=structures,
        daily_to_planning=d2p,
        planning_to_daily=p2d,
        setup_shift_mm=tuple(float(v) for v in day.setup),
        params=_jsonify(params),
    )
    return DailyCase(fraction=fraction, cbct=Volume(cbct, cg), truth=truth)
