"""Dose of a given plan (MLC segments or beamlet fluence), same pencil-beam engine.

Each beam's segments are turned into one fluence map on a fine BEV grid at the
isocentre plane (``fluence_mm``): the exact open area of every pixel between the
leaves and inside the jaws, plus MLC transmission (inside the jaws, behind the
leaves), weighted by the segment's MU and the head-scatter factor of its jaw
setting, and by the machine's off-axis fluence ratio at the pixel's radius
(:func:`beam_fluence`). The map is then integrated through the same separable
pencil-beam kernel as the influence matrix (the broad scatter components on a 4×
coarser copy of the map); the machine's off-axis softening is a per-voxel depth
factor (:func:`art.dose.engine.softening_factor`). Transmission through the jaws
is neglected. Each beam is computed with its own machine (:func:`art.dose.library.resolve_machines`).
"""

from __future__ import annotations

import numpy as np

from art.dose._setup import equivalent_square, plan_position, prepare
from art.dose.beam_geometry import BeamFrame
from art.dose.engine import beam_points, kernel_terms, softening_factor
from art.dose.kernel import fit_kernel
from art.dose.library import MachineLibrary, resolve_machines
from art.dose.machine import HUTable, Machine
from art.errors import InputError
from art.geometry import Grid, Volume
from art.plan import Beam, Plan, Segment
from art.structures import StructureSet


def _overlap(lo: np.ndarray, hi: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Length of [lo_i, hi_i] ∩ [a_k, b_k], shape (len(lo), len(a))."""
    return np.clip(np.minimum(hi[:, None], b[None, :]) - np.maximum(lo[:, None], a[None, :]), 0.0, None)


def segment_fluence(segments: list[Segment], machine: Machine, *, fluence_mm: float = 1.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MU-weighted fluence map of MLC segments at the isocentre plane.

    Parameters
    ----------
    segments : list of Segment
        Leaf positions (2, n_pairs) must match the machine's MLC.
    machine : Machine
    fluence_mm : float, keyword-only
        Pixel size; pixel edges lie on multiples of it.

    Returns
    -------
    fluence : (ny, nx) float64
        Σ MU · S_c(jaws) · (open fraction + MLC transmission × covered fraction inside the jaws).
    x_edges, y_edges : (nx + 1,), (ny + 1,) mm
    """
    if not segments:
        raise InputError("segment_fluence needs at least one segment")
    h = float(fluence_mm)
    bnd = machine.mlc.boundaries_mm
    jaws = np.array([s.jaws for s in segments], dtype=np.float64)
    x_lo, x_hi = jaws[:, 0].min(), jaws[:, 1].max()
    y_lo, y_hi = max(jaws[:, 2].min(), bnd[0]), min(jaws[:, 3].max(), bnd[-1])
    ex = np.arange(np.floor(x_lo / h), np.ceil(x_hi / h) + 1) * h
    ey = np.arange(np.floor(y_lo / h), np.ceil(y_hi / h) + 1) * h
    if ex.size < 2 or ey.size < 2:
        raise InputError("segment jaws leave no open area inside the MLC")
    area = h * h
    flu = np.zeros((ey.size - 1, ex.size - 1))
    t = machine.mlc.transmission
    for n, s in enumerate(segments):
        lp = s.leaf_positions
        if lp.shape[1] != machine.mlc.n_pairs:
            raise InputError(f"segment {n}: {lp.shape[1]} leaf pairs, machine {machine.name!r} has {machine.mlc.n_pairs}")
        if s.mu <= 0:
            continue
        x1, x2, y1, y2 = s.jaws
        sc = float(machine.head_scatter(equivalent_square(x2 - x1, y2 - y1)))
        # each leaf pair k: open rectangle [max(x1, l_k), min(x2, r_k)] x ([b_k, b_k+1] ∩ [y1, y2])
        pair_lo = np.clip(bnd[:-1], y1, y2)
        pair_hi = np.clip(bnd[1:], y1, y2)
        oy = _overlap(ey[:-1], ey[1:], pair_lo, pair_hi)  # (ny, np)
        ox = _overlap(ex[:-1], ex[1:], np.maximum(lp[0], x1), np.minimum(lp[1], x2))  # (nx, np)
        open_frac = (oy @ ox.T) / area
        jaw_frac = np.outer(_overlap(ey[:-1], ey[1:], np.array([y1]), np.array([y2]))[:, 0], _overlap(ex[:-1], ex[1:], np.array([x1]), np.array([x2]))[:, 0]) / area
        flu += s.mu * sc * (open_frac + t * np.clip(jaw_frac - open_frac, 0.0, None))
    return flu, ex, ey


def _coarsen(flu: np.ndarray, ex: np.ndarray, ey: np.ndarray, f: int):
    ny, nx = flu.shape
    py, px = (-ny) % f, (-nx) % f
    if py or px:
        flu = np.pad(flu, ((0, py), (0, px)))
        hx, hy = ex[1] - ex[0], ey[1] - ey[0]
        ex = np.concatenate([ex, ex[-1] + hx * np.arange(1, px + 1)])
        ey = np.concatenate([ey, ey[-1] + hy * np.arange(1, py + 1)])
    c = flu.reshape(flu.shape[0] // f, f, flu.shape[1] // f, f).mean(axis=(1, 3))
    return c, ex[::f], ey[::f]


def off_axis_fluence(flu: np.ndarray, ex: np.ndarray, ey: np.ndarray, machine: Machine) -> np.ndarray:
    """A fluence map (ny, nx) on pixel edges ``ex``, ``ey`` (mm, isocentre plane) times the machine's
    off-axis fluence ratio at each pixel centre's radius (the map itself when the profile is flat)."""
    if not machine.has_off_axis_fluence:
        return flu
    cx, cy = 0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1])
    return flu * machine.off_axis_ratio(np.hypot(cx[None, :], cy[:, None]))


def beam_fluence(beam: Beam, machine: Machine, *, fluence_mm: float = 1.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fluence map of a beam (what the dose engines integrate): from its segments if any
    (:func:`segment_fluence`), else from its beamlet fluence (MU-equivalent per bixel, upsampled to
    ``fluence_mm``; S_c of the fluence grid's bounding box applied); both times the machine's off-axis
    fluence ratio at each pixel's radius (:func:`off_axis_fluence`).

    Returns
    -------
    fluence : (ny, nx) float64 ; x_edges, y_edges : (nx + 1,), (ny + 1,) mm at the isocentre plane
    """
    flu, ex, ey = _open_fluence(beam, machine, fluence_mm=fluence_mm)
    return off_axis_fluence(flu, ex, ey, machine), ex, ey


def _open_fluence(beam: Beam, machine: Machine, *, fluence_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`beam_fluence` without the off-axis ratio."""
    if beam.segments:
        return segment_fluence(beam.segments, machine, fluence_mm=fluence_mm)
    if beam.fluence is not None:
        ex = np.asarray(beam.fluence_grid["x_edges_mm"], dtype=np.float64)
        ey = np.asarray(beam.fluence_grid["y_edges_mm"], dtype=np.float64)
        sc = float(machine.head_scatter(equivalent_square(ex[-1] - ex[0], ey[-1] - ey[0])))
        flu = np.asarray(beam.fluence, dtype=np.float64) * sc
        hx, hy = np.diff(ex), np.diff(ey)
        regular = np.allclose(hx, hx[0]) and np.allclose(hy, hy[0]) and abs(hx[0] - hy[0]) < 1e-9
        f = int(round(hx[0] / float(fluence_mm))) if regular else 1
        if f > 1:  # piecewise-constant upsampling (exact) so that the primary is sampled finely
            flu = np.repeat(np.repeat(flu, f, axis=0), f, axis=1)
            ex = ex[0] + (hx[0] / f) * np.arange(flu.shape[1] + 1)
            ey = ey[0] + (hy[0] / f) * np.arange(flu.shape[0] + 1)
        return flu, ex, ey
    raise InputError(f"beam {beam.name!r} has neither segments nor a fluence")


def _pixel_kernel(sigma: float, h: float) -> np.ndarray:
    """Integrals of N(0, σ) over pixels of size h centred at m h, m = -M..M."""
    from scipy.special import erf

    m = int(np.ceil(5.0 * sigma / h)) + 1
    edges = (np.arange(-m, m + 2) - 0.5) * h
    c = erf(edges / (sigma * np.sqrt(2.0)))
    return 0.5 * (c[1:] - c[:-1])


def _convolved_stack(flu: np.ndarray, ex: np.ndarray, ey: np.ndarray, sig_min: float, sig_max: float, *, ratio: float = 1.06):
    """The fluence convolved with pixel-integrated Gaussians for log-spaced widths.

    Returns the stack (L, ny', nx') (fluence padded by 5 σ_max), the pixel-centre
    positions of its first pixel (x0, y0), the pixel size and the widths."""
    from scipy.ndimage import convolve1d

    h = float(ex[1] - ex[0])
    sig_min = max(sig_min, 0.05)
    n_lev = max(2, int(np.ceil(np.log(max(sig_max, sig_min * 1.0001) / sig_min) / np.log(ratio))) + 1)
    levels = sig_min * ratio ** np.arange(n_lev)
    pad = int(np.ceil(5.0 * levels[-1] / h)) + 2
    f = np.pad(flu.astype(np.float32), pad)
    stack = np.empty((n_lev,) + f.shape, np.float32)
    for i, s in enumerate(levels):
        k = _pixel_kernel(float(s), h).astype(np.float32)
        stack[i] = convolve1d(convolve1d(f, k, axis=0, mode="constant"), k, axis=1, mode="constant")
    x0 = ex[0] + 0.5 * h - pad * h
    y0 = ey[0] + 0.5 * h - pad * h
    return stack, x0, y0, h, levels


def _sample_stack(stack, x0, y0, h, levels, u, v, sig) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    ratio = levels[1] / levels[0]
    lev = np.log(np.clip(sig, levels[0], levels[-1]) / levels[0]) / np.log(ratio)
    coords = np.stack([lev, (v - y0) / h, (u - x0) / h]).astype(np.float32)
    return map_coordinates(stack, coords, order=1, mode="constant", cval=0.0, prefilter=False)


def beam_dose_at(density: Volume, beam: Beam, machine: Machine, points_lps: np.ndarray, *, fluence_mm: float = 1.25, patient_position: str = "HFS",
                 geometry_key: bytes | None = None) -> np.ndarray:  # fmt: skip
    """Per-fraction dose (Gy) of one beam at LPS points (n, 3).

    The fluence map is convolved with pixel-integrated Gaussians for a ladder of
    widths (ratio 1.06) and each point interpolates bilinearly in position and
    linearly in width; the primary uses the fine map, the scatter components a 5 mm copy.
    ``geometry_key`` (:func:`art.dose.engine.geometry_key` of ``density`` and ``points_lps``): the
    beam's radiological depths are kept for, and taken from, an earlier call with the same geometry.
    """
    kernel = fit_kernel(machine)
    flu, ex, ey = beam_fluence(beam, machine, fluence_mm=fluence_mm)
    frame = BeamFrame.of(beam, patient_position=patient_position)
    u, v, z = frame.to_bev(points_lps)
    ok = np.flatnonzero(np.isfinite(u) & (z > 0))
    out = np.zeros(points_lps.shape[0], np.float32)
    if ok.size == 0 or not np.any(flu > 0):
        return out
    pts = beam_points(density, frame, points_lps[ok], geometry_key=geometry_key)
    amp, sig = kernel_terms(kernel, pts)
    soft = softening_factor(machine, pts)
    if soft is not None:
        amp = amp * soft[:, None]
    h = float(ex[1] - ex[0])
    f = max(1, int(round(5.0 / h)))
    coarse = _coarsen(flu, ex, ey, f) if f > 1 else (flu, ex, ey)
    d = np.zeros(ok.size, np.float32)
    for i in range(amp.shape[1]):
        fl, gx, gy = (flu, ex, ey) if i == 0 else coarse
        s = sig[:, i]
        st = _convolved_stack(fl, gx, gy, float(s.min()), float(s.max()))
        d += amp[:, i] * _sample_stack(*st, pts.u, pts.v, s)
    out[ok] = d
    return out


def _beam_doses(setup, beams: list[Beam], machines: list[Machine], *, fluence_mm: float, patient_position: str):
    """Per-fraction dose of each beam (with its machine) at the setup's points, in beam order.

    Beams are computed on up to ``min(2, beams, CPUs)`` threads (the heavy parts, SciPy's
    ``map_coordinates`` and ``convolve1d``, release the GIL), BLAS single-threaded meanwhile,
    as the influence-matrix build does (:mod:`art.blas`); each beam's result is the
    same whatever the number of threads.
    """
    import os

    from art.blas import single_threaded_blas

    from art.dose.engine import geometry_key

    key = geometry_key(setup.density, setup.points)  # the beams' ray traces are kept for a recomputation on this geometry

    def one(bm: tuple[Beam, Machine]) -> np.ndarray:
        return beam_dose_at(setup.density, bm[0], bm[1], setup.points, fluence_mm=fluence_mm, patient_position=patient_position, geometry_key=key)

    pairs = list(zip(beams, machines))
    workers = min(2, len(beams), os.cpu_count() or 1)
    if workers <= 1:
        return [one(p) for p in pairs]
    from concurrent.futures import ThreadPoolExecutor

    with single_threaded_blas(), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, pairs))


def dose(
    ct: Volume,
    plan: Plan,
    machine: Machine | list[Machine] | MachineLibrary | None = None,
    *,
    dose_grid_mm: float | None = 3.0,
    structures: StructureSet | None = None,
    body: str | None = None,
    fluence_mm: float = 1.25,
    hu_table: HUTable | None = None,
    patient_position: str | None = None,
    per_fraction: bool = False,
    dose_grid: Grid | None = None,
) -> Volume:
    """Dose of a plan on the CT: total over the course (Gy) = per-fraction dose × ``plan.fractions``.

    Parameters
    ----------
    ct : Volume
        CT in HU.
    plan : Plan
        Beams with MLC segments (MU per fraction) or beamlet fluences.
    machine : Machine, list of Machine, MachineLibrary or None
        The machine of every beam (its energy, SAD and MLC checked against each beam), one per beam,
        or a library choosing each beam's by energy, TreatmentMachineName and leaf boundaries
        (:func:`art.dose.library.resolve_machines`); default: the shipped library
        (:func:`art.dose.library.load_library`), whose 6X machine is :func:`load_machine` ().
    dose_grid_mm : float or None, keyword-only
        Isotropic dose-grid spacing (``Grid.with_spacing`` of the CT grid); None = the CT grid.
        Use :func:`art.geometry.resample` to bring the result to the CT grid.
        Ignored when ``dose_grid`` is given.
    structures : StructureSet, optional, keyword-only
        When given, dose is computed inside its BODY/EXTERNAL structure (or ``body``)
        only (0 elsewhere); otherwise on every voxel.
    fluence_mm : float, keyword-only
        Fluence pixel size at the isocentre plane, mm.
    patient_position : {"HFS", "FFS", "HFP", "FFP"} or None, keyword-only
        How the patient lies on the couch; None (default): ``plan.patient_position``.
        A position other than the plan's is refused.
    per_fraction : bool, keyword-only
        Return the dose of one fraction instead of the course.
    dose_grid : Grid, optional, keyword-only
        The dose grid itself (any grid in the CT's frame, e.g. the export grid of
        :meth:`art.geometry.Grid.covering`); overrides ``dose_grid_mm``.

    Returns
    -------
    Volume
        float32 dose in Gy on the dose grid.
    """
    patient_position = plan_position(plan, patient_position)
    machines = resolve_machines(plan, machine)
    setup = prepare(ct, structures, dose_grid_mm=dose_grid_mm, voxels="body" if structures is not None else "all", body=body, hu_table=hu_table,
                    dose_grid=dose_grid)  # fmt: skip
    total = np.zeros(setup.voxel_indices.size, np.float64)
    for m in machines:
        fit_kernel(m)  # fitted once (cached) before the workers share it
    for beam_dose in _beam_doses(setup, plan.beams, machines, fluence_mm=fluence_mm, patient_position=patient_position):
        total += beam_dose  # in beam order: the sum does not depend on the number of workers
    if not per_fraction:
        total *= plan.fractions
    out = np.zeros(setup.dose_grid.size, np.float32)
    out[setup.voxel_indices] = total
    return Volume(out.reshape(setup.dose_grid.shape), setup.dose_grid)


def segment_doses_at(density: Volume, beam: Beam, machine: Machine, point_lps: np.ndarray, *, fluence_mm: float = 1.25,
                     patient_position: str = "HFS") -> np.ndarray:  # fmt: skip
    """Per-fraction dose (Gy) of each of a beam's segments at one LPS point, by direct kernel summation.

    The same pencil-beam model as :func:`beam_dose_at` (kernel amplitudes and widths at the
    point's radiological depth, off-axis softening, each segment's fluence with head scatter,
    MLC transmission and the off-axis ratio), but each component's Gaussian is integrated exactly over every fluence pixel
    (``amp_i · wyᵀ F wx``, error functions) instead of the width ladder and the coarse scatter
    map: fast for one point (no convolution of whole maps), and within about 1 % of
    :func:`beam_dose_at` segment by segment. Used for the segments' shares of a beam's dose at
    the RT Plan's dose reference point (CumulativeDoseReferenceCoefficient).

    Parameters
    ----------
    density : Volume
        Relative electron density.
    beam : Beam
        With segments (MU per fraction).
    machine : Machine
    point_lps : array, shape (3,)
        The point, LPS mm.
    fluence_mm : float, keyword-only
        Fluence pixel size at the isocentre plane, mm.
    patient_position : str, keyword-only

    Returns
    -------
    ndarray of float64, shape (len(beam.segments),)
        Gy per fraction; 0 for segments of 0 MU and where the point is behind the source.
    """
    from scipy.special import erf

    out = np.zeros(len(beam.segments))
    p = np.asarray(point_lps, dtype=np.float64).reshape(1, 3)
    frame = BeamFrame.of(beam, patient_position=patient_position)
    u, v, z = frame.to_bev(p)
    if not (np.isfinite(u[0]) and z[0] > 0):
        return out
    pts = beam_points(density, frame, p)
    amp, sig = kernel_terms(fit_kernel(machine), pts)
    soft = softening_factor(machine, pts)
    if soft is not None:
        amp = amp * soft[:, None]
    s2 = np.sqrt(2.0) * np.asarray(sig[0], dtype=np.float64)
    for k, s in enumerate(beam.segments):
        if s.mu <= 0:
            continue
        flu, ex, ey = segment_fluence([s], machine, fluence_mm=fluence_mm)
        flu = off_axis_fluence(flu, ex, ey, machine)
        wx = 0.5 * (erf((ex[1:, None] - float(pts.u[0])) / s2) - erf((ex[:-1, None] - float(pts.u[0])) / s2))  # (nx, nc)
        wy = 0.5 * (erf((ey[1:, None] - float(pts.v[0])) / s2) - erf((ey[:-1, None] - float(pts.v[0])) / s2))  # (ny, nc)
        out[k] = float(np.sum(np.asarray(amp[0], dtype=np.float64) * np.einsum("yc,yx,xc->c", wy, flu, wx)))
    return out
