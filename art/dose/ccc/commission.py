"""Commissioning: fit a machine file's ``ccc`` section to its own beam data, and write it.

Run once per machine file (10–20 minutes on two cores)::

    python -m art.dose.ccc.commission art/dose/data/generic_6x.json [--dry-run] [--output-correction | --depth-correction]

What is fitted, in the engine itself (water phantoms on a 2.5 mm grid, SSD of the PDD table):

1. the spectrum: the opentps 6 MV spectrum tilted by ``(E / 2 MeV)^α`` (for nominal energies
   above 6 MV extended to the nominal energy with the extrapolated kernels, and a second
   parameter, the weight ``β`` of the bins above 6 MeV), together with the electron
   contamination (fraction f, depth λ), to the central-axis PDDs of several square fields at
   once (:data:`FIT_FIELDS`: 5×5, 10×10 and 20×20 cm², from the calibration depth d_max to 250,
   300 and 250 mm, the 10×10 weighted twice; least squares on the relative differences at the
   table's depths). Each field's dose is linear in the spectrum's fluence once the energy
   groups' kernels are fixed, so the fit runs on per-energy central-axis doses
   (:mod:`art.dose.ccc.field_basis`: one transport per energy and field, the energy groups'
   kernels of the file's current spectrum), and the section records the engine's own PDDs of
   the fitted model;
2. the source size ``source_sigma_mm`` to the 80–20 % penumbrae of the ``profile`` section
   (1.25 mm grid);
3. the depth correction (``depth_correction``): for each square field of the PDD table, factors on
   the TERMA at the table's depths from d_max (1) to 300 mm that make the engine's central-axis PDD
   the table's (:func:`fit_depth_correction`, a fixed point of :data:`DEPTH_STEPS` steps, 2.5 mm
   grid): the kernels' field-size dependence at depth is not the machine's (the spectrum fit leaves
   the small fields above, the large fields below the table, by 1–9 %);
4. the output correction (``output_correction``): for each square field s of the
   ``output_factors`` table, the table's dose per MU (``dose_per_mu_gy`` × S_cp(s)) at the
   calibration depth and SSD over the engine's (calibrated, 2.5 mm grid), exactly 1 at the
   calibration field. ``--output-correction`` runs only this step on a commissioned file (seconds
   to minutes; the other steps take much longer), ``--depth-correction`` steps 3 and 4 (about
   10 minutes).

The machine file is rewritten with its ``ccc`` section replaced (everything else is kept
byte for byte as ``json.dumps(data, indent=1)`` writes it, the format of the shipped files),
including a ``commissioning`` record of the fit and its residuals.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from art.dose.ccc.calibration import central_axis, computed_factor, open_field_beam, water_dose, water_grid
from art.dose.ccc.core import FINE_ANGLE_DEG, FINE_REACH, REACH
from art.dose.ccc.directions import lattice_vectors
from art.dose.ccc.kernels import GROUP_EDGES_MEV, SCALES_MM, load_tables, reference_spectrum
from art.dose.ccc.transport import MEDIUM_DENSITY
from art.dose.ccc.model import CCCModel, ccc_model, spectrum_model
from art.dose.machine import Machine, load_machine
from art.errors import MachineDataError

PDD_GRID_MM = 2.5
PENUMBRA_GRID_MM = 1.25
PDD_MAX_DEPTH_MM = 300.0
LAMBDAS_MM = (4.0, 5.0, 6.0, 7.0, 8.0, 9.5, 11.0, 13.0, 15.0, 17.5, 20.0)
#: the square fields whose central-axis PDDs the spectrum is fitted to: (side at the PDD table's SSD in
#: mm, the deepest depth scored in mm, the weight of the field's mean square difference)
FIT_FIELDS = ((50.0, 250.0, 1.0), (100.0, 300.0, 2.0), (200.0, 250.0, 1.0))
#: fixed-point steps of the depth correction (each one engine dose per field of the PDD table)
DEPTH_STEPS = 3


def nominal_mv(machine: Machine) -> float:
    """The nominal energy (MV) from the machine's energy label ("6X" → 6, "10FFF" → 10)."""
    m = re.match(r"\s*(\d+(?:\.\d+)?)", machine.energy)
    if m is None:
        raise MachineDataError(f"field 'energy': cannot read a nominal energy from {machine.energy!r}", path=machine.source)
    return float(m.group(1))


def spectrum(alpha: float, beta: float = 0.0, *, nominal: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """The tilted spectrum: (energies MeV, relative fluence normalised to sum 1).

    Energies up to 6 MeV carry the opentps 6 MV fluence × ``(E / 2)^α``; for ``nominal`` above 6,
    the extrapolated energies up to ``nominal`` get ``β`` × the 6 MeV bin × ``(E / 6)^α``.
    """
    e, f = reference_spectrum()
    f = f * (e / 2.0) ** alpha
    t = load_tables()
    hi = t.energies_mev[(t.energies_mev > 6.0 + 1e-6) & (t.energies_mev <= nominal + 1e-6)]
    if hi.size:
        e = np.concatenate([e, hi])
        f = np.concatenate([f, beta * f[-1] * (hi / 6.0) ** alpha])
    return e, f / f.sum()


def _pdd_phantom(machine: Machine, field: float, spacing: float, depth: float):
    iso = machine.sad_mm - machine.pdd_ssd_mm
    beam = open_field_beam(machine, field * machine.sad_mm / machine.pdd_ssd_mm, mu=100.0, isocenter_lps=(0.0, iso, 0.0))
    half = 0.5 * field * (1.0 + depth / machine.pdd_ssd_mm) + 15.0
    return beam, water_grid((spacing,) * 3, half_width_mm=half, depth_mm=depth)


def pdd_errors(machine: Machine, field: float, depths, dose, *, smooth: bool = False, max_depth_mm: float = PDD_MAX_DEPTH_MM) -> tuple[np.ndarray, np.ndarray]:
    """Relative differences (%) model/table of the PDD at the table's depths from d_max to ``max_depth_mm``.

    ``smooth``: the model's central axis averaged over three voxels first (¼, ½, ¼; the fit before the
    multi-field commissioning did, against the lattice's two-voxel ripple near the surface). The fit
    does not: it lowered the peak at d_max, the normalisation, by ~0.8 % (every deeper difference
    raised by as much against the unsmoothed dose the engine gives), and the table's depths (multiples
    of 2.5 mm, voxel faces of the 2.5 mm grid) interpolate between two voxels, which averages the ripple.
    """
    d = _smooth(dose) if smooth else dose
    at = machine.pdd_depth_mm[(machine.pdd_depth_mm >= machine.calib_depth_mm) & (machine.pdd_depth_mm <= max_depth_mm + 1e-9)]
    model = np.interp(at, depths, d) / np.interp(machine.calib_depth_mm, depths, d) * 100.0
    return at, (model / machine.pdd(at, field) - 1.0) * 100.0


def _smooth(d: np.ndarray) -> np.ndarray:
    out = d.copy()
    out[1:-1] = 0.25 * d[:-2] + 0.5 * d[1:-1] + 0.25 * d[2:]
    return out


def _params(x, nominal: float) -> dict:
    """The spectrum's parameters from the fit's vector (α, and β above 6 MV)."""
    return {"alpha": float(x[0]), "beta": float(x[1]) if nominal > 6.0 + 1e-6 else 0.0}


def _residuals(machine: Machine, bases: dict, fields, params: dict, fraction: float, lam: float, nominal: float) -> np.ndarray:
    e, f = spectrum(params["alpha"], params["beta"], nominal=nominal)
    out = []
    for side, deepest, weight in fields:
        b = bases[side]
        err = pdd_errors(machine, side, b.depths_mm, b.dose(f, fraction, lam), max_depth_mm=deepest)[1]
        out.append(err * np.sqrt(weight / err.size))
    return np.concatenate(out)


def fit_parameters(machine: Machine, bases: dict, *, fields=FIT_FIELDS, lambdas=LAMBDAS_MM) -> dict:
    """Least squares of the fields' PDD differences (% of the table, each field's mean square × its
    weight) over the spectrum's parameters and the contamination fraction, for each contamination
    depth λ; the best λ's. ``bases``: side → :class:`~art.dose.ccc.field_basis.FieldBasis` of the
    spectrum energies. Returns {"alpha", "beta", "fraction", "depth_mm", "cost"} (cost: the
    weighted mean square, %²)."""
    from scipy.optimize import least_squares

    nominal = nominal_mv(machine)
    lo, hi, x0 = [-1.0], [3.0], [0.0]
    if nominal > 6.0 + 1e-6:
        lo, hi, x0 = lo + [0.0], hi + [5.0], x0 + [1.0]
    best = None
    for lam in lambdas:
        def res(x, lam=lam):
            return _residuals(machine, bases, fields, _params(x[:-1], nominal), x[-1], lam, nominal)

        r = least_squares(res, x0 + [0.05], bounds=(lo + [0.0], hi + [0.5]), x_scale=0.1, diff_step=1e-4)
        cost = float(np.sum(r.fun**2) / sum(w for _, _, w in fields))
        if best is None or cost < best["cost"]:
            best = {**_params(r.x[:-1], nominal), "fraction": float(r.x[-1]), "depth_mm": float(lam), "cost": cost}
    return best


def fit_spectrum(machine: Machine, *, spacing: float = PDD_GRID_MM, fields=FIT_FIELDS, passes: int = 1, progress=print) -> dict:
    """Fit the spectrum (tilt α, β above 6 MeV) and the electron contamination to the central-axis PDDs
    of several square fields at once (:data:`FIT_FIELDS`, :func:`fit_parameters`), with each field's
    per-energy depth doses (:func:`~art.dose.ccc.field_basis.field_basis`, one transport per energy).

    The energy groups' kernels of these bases are those of the machine's current spectrum (its ``ccc``
    section, else the untilted one); each further pass (``passes`` > 1) recomputes them with the
    kernels of the spectrum just fitted. One pass is enough in practice: the kernels move little with
    the spectrum (6X, α 0.13 → 0.17: the engine's PDDs with the fitted spectrum within 0.02 % of the
    bases'). Returns {"alpha", "beta", "fraction", "depth_mm", "rms_percent"} (rms: the fields'
    differences, weighted)."""
    from art.dose.ccc.field_basis import field_basis

    nominal = nominal_mv(machine)
    energies, kf = spectrum(0.0, 1.0, nominal=nominal)
    if machine.ccc is not None and "spectrum" in machine.ccc:
        old = dict(zip(np.round(machine.ccc["spectrum"]["energies_mev"], 3), machine.ccc["spectrum"]["fluence"]))
        kf = np.array([old.get(round(float(v), 3), 0.0) for v in energies]) if any(old.values()) else kf
    fit = {}
    for p in range(passes):
        bases = {}
        for side, _, _ in fields:
            progress(f"  pass {p + 1}: the {side:g} mm field's depth doses per energy ({energies.size} transports)")
            bases[side] = field_basis(machine, side, energies, kf, spacing=spacing, lambdas=LAMBDAS_MM)
        fit = fit_parameters(machine, bases, fields=fields)
        kf = spectrum(fit["alpha"], fit["beta"], nominal=nominal)[1]
        progress(f"  pass {p + 1}: alpha {fit['alpha']:+.3f} beta {fit['beta']:.3f}, contamination "
                 f"{fit['fraction']:.3f} (lambda {fit['depth_mm']:g} mm): weighted PDD rms {np.sqrt(fit['cost']):.2f} %")  # fmt: skip
    return {**{k: v for k, v in fit.items() if k != "cost"}, "rms_percent": float(np.sqrt(fit["cost"]))}


def penumbra_80_20(profile: np.ndarray, x: np.ndarray, centre: float) -> float:
    """Mean 80–20 % width (mm) of the two edges of a profile normalised to its ``centre`` value."""
    p = profile / centre
    widths = []
    for side in (x >= 0, x <= 0):
        xs, ps = np.abs(x[side]), p[side]
        order = np.argsort(xs)
        xs, ps = xs[order], ps[order]
        far = xs > xs[np.argmax(ps < 0.9)] - 1e-9  # beyond the shoulder: p decreases with |x|
        x80 = np.interp(-0.8, -ps[far], xs[far])
        x20 = np.interp(-0.2, -ps[far], xs[far])
        widths.append(x20 - x80)
    return float(np.mean(widths))


def model_penumbrae(machine: Machine, model: CCCModel, *, spacing: float = PENUMBRA_GRID_MM) -> np.ndarray:
    """80–20 % penumbrae (mm) of the ``profile`` field at the ``profile`` depths (crossline, through
    the central axis), computed by the engine at the PDD table's SSD; the profile divided by the
    machine's off-axis fluence ratio first (the edge's own width, as the pencil beam's fit takes it)."""
    field = machine.penumbra_field_mm
    beam, grid = _pdd_phantom(machine, field, spacing, float(machine.penumbra_depth_mm.max()) + 40.0)
    dose = water_dose(machine, model, beam, grid)
    nz, ny, nx = grid.shape
    ys = grid.origin[1] + spacing * np.arange(ny)
    x = grid.origin[0] + spacing * np.arange(nx)
    out = []
    for d in machine.penumbra_depth_mm:
        j = int(np.clip(np.searchsorted(ys, d) - 1, 0, ny - 2))
        t = (d - ys[j]) / spacing
        row = (1 - t) * dose[nz // 2, j, :] + t * dose[nz // 2, j + 1, :]
        row = row / machine.off_axis_ratio(x * machine.sad_mm / (machine.pdd_ssd_mm + d))
        out.append(penumbra_80_20(row.astype(np.float64), x, float(row[nx // 2])))
    return np.asarray(out)


#: the source σ's search (:func:`fit_source_sigma`): the penumbrae at the start and ± this (mm)
SIGMA_STEP_MM = 0.3


def fit_source_sigma(machine: Machine, model: CCCModel, *, start: float = 1.5, progress=print) -> tuple[float, np.ndarray]:
    """The source σ (mm, isocentre plane) whose penumbrae best match the machine's (least squares);
    returns (σ, the penumbrae it gives).

    Each depth's penumbra is taken as quadratic in σ through its values at ``start`` (the file's σ
    when re-commissioning) and ± :data:`SIGMA_STEP_MM`; the σ minimising the squared differences
    (within [0, 4] mm) is searched again around itself while it lies more than one step from the
    three, and the penumbrae are computed there (4–7 engine runs on the 1.25 mm grid instead of a
    dozen for a bracketing search).
    """
    target = machine.penumbra_mm
    cache: dict = {}

    def pens(sigma: float) -> np.ndarray:
        key = round(float(np.clip(sigma, 0.0, 4.0)), 3)
        if key not in cache:
            cache[key] = model_penumbrae(machine, CCCModel(**{**model.__dict__, "source_sigma_mm": key}))
            progress(f"  source sigma {key:.3f} mm: penumbrae {np.round(cache[key], 2).tolist()} (target {target.tolist()})")
        return cache[key]

    centre = float(np.clip(start, SIGMA_STEP_MM, 4.0 - SIGMA_STEP_MM))
    for _ in range(3):
        xs = centre + SIGMA_STEP_MM * np.array([-1.0, 0.0, 1.0])
        coef = np.polyfit(xs, np.array([pens(x) for x in xs]), 2)  # (3, n_depths)
        grid = np.linspace(0.0, 4.0, 4001)
        cost = np.sum((coef[0] * grid[:, None] ** 2 + coef[1] * grid[:, None] + coef[2] - target) ** 2, axis=1)
        best = float(grid[np.argmin(cost)])
        if abs(best - centre) <= 2.0 * SIGMA_STEP_MM:
            break
        centre = float(np.clip(best, SIGMA_STEP_MM, 4.0 - SIGMA_STEP_MM))
    key = round(best, 3)
    return key, pens(key)


def square_field_output(machine: Machine, model: CCCModel, field_mm: float, *, spacing: float = PDD_GRID_MM, fluence_mm: float = 1.25) -> float:
    """The engine's dose per MU (Gy) at the calibration depth on the central axis of a square field
    (side ``field_mm`` at the isocentre plane) at the calibration SSD in water: the calibration's
    own set-up (:func:`art.dose.ccc.calibration.computed_factor`) on a ``spacing`` grid."""
    m = machine
    cal = computed_factor(m, model, (spacing,) * 3, fluence_mm=fluence_mm)
    beam = open_field_beam(m, field_mm, mu=1.0, isocenter_lps=(0.0, m.sad_mm - m.calib_ssd_mm, 0.0))
    grid = water_grid((spacing,) * 3, half_width_mm=0.5 * field_mm + 25.0, depth_mm=max(300.0, 4.0 * m.calib_depth_mm))
    depths, cax = central_axis(water_dose(m, model, beam, grid, factor=cal, fluence_mm=fluence_mm), grid)
    return float(np.interp(m.calib_depth_mm, depths, cax))


def fit_output_correction(machine: Machine, model: CCCModel, *, spacing: float = PDD_GRID_MM, progress=print) -> tuple[dict, dict]:
    """The ``output_correction`` table of a model: for each field size s of the machine's output
    factor table (at the calibration SSD; side s·SAD/SSD at the isocentre plane), the table's dose
    per MU ``dose_per_mu_gy · S_cp(s)`` over the engine's without correction; 1 at the calibration field.

    Returns (the section's ``output_correction``, a record of the fit for ``commissioning``).
    """
    m = machine
    plain = CCCModel(**{**model.__dict__, "output_field_mm": np.zeros(0), "output_factor": np.zeros(0)})
    scale = m.sad_mm / m.calib_ssd_mm
    sizes = np.union1d(m.of_field_mm, [m.calib_field_mm])
    fields, factors, ratios = [], [], []
    for s in sizes:
        engine = square_field_output(m, plain, float(s) * scale, spacing=spacing)
        table = m.dose_per_mu_gy * float(m.output_factor(s))
        k = 1.0 if abs(s - m.calib_field_mm) < 1e-9 else table / engine
        progress(f"  {s:g} mm: engine {engine / m.dose_per_mu_gy:.4f}, table {table / m.dose_per_mu_gy:.4f} (x dose/MU): factor {k:.4f}")
        fields.append(round(float(s) * scale, 3))
        factors.append(round(float(k), 4))
        ratios.append(round(engine / table, 4))
    record = {"field_sizes_mm": fields, "engine_over_table": ratios, "grid_mm": spacing,
              "depth_mm": m.calib_depth_mm, "ssd_mm": m.calib_ssd_mm}  # fmt: skip
    return {"field_sizes_mm": fields, "factor": factors}, record


def fit_depth_correction(machine: Machine, model: CCCModel, *, steps: int = DEPTH_STEPS, spacing: float = PDD_GRID_MM,
                         deepest: float = PDD_MAX_DEPTH_MM, fields=None, progress=print) -> tuple[dict, dict]:  # fmt: skip
    """The ``depth_correction`` table of a model: for each field of the PDD table, factors at the table's
    depths from the calibration depth (factor 1) to ``deepest`` that make the engine's central-axis PDD
    (the fit's phantom, :func:`engine_pdd_errors`) the table's.

    A fixed point: the factors start at 1 and are divided, ``steps`` times, by the engine's PDD over the
    table's at each depth (the correction multiplies the TERMA, which the kernels spread over a few
    millimetres; where the dose is not made by the TERMA at its own depth, near d_max, each step
    closes part of the gap). ``fields``: the square fields (sides at the PDD table's SSD, mm; default the
    table's). Returns (the section's ``depth_correction``, a record of the fit: the PDD
    differences before and after, per field).
    """
    m = machine
    scale = m.sad_mm / m.pdd_ssd_mm
    depths = m.pdd_depth_mm[(m.pdd_depth_mm >= m.calib_depth_mm) & (m.pdd_depth_mm <= deepest + 1e-9)]
    sides = m.pdd_field_mm if fields is None else np.asarray(fields, dtype=np.float64)
    rows, records = [], []
    for side in sides:
        row, history = np.ones(depths.size), []
        for step in range(steps + 1):
            trial = CCCModel(**{**model.__dict__, "depth_field_mm": np.array([side * scale]), "depth_mm": depths, "depth_factor": row[None, :]})
            at, err = engine_pdd_errors(m, trial, float(side), deepest=deepest, spacing=spacing)
            history.append(err)
            if step < steps:
                row = np.clip(row / (1.0 + err / 100.0), 0.5, 1.5)
                row[np.abs(at - m.calib_depth_mm) < 1e-9] = 1.0
        progress(f"  {side:g} mm: PDD max |difference| {np.abs(history[0]).max():.2f} % -> {np.abs(history[-1]).max():.2f} %, "
                 f"factors {row.min():.3f}-{row.max():.3f}")  # fmt: skip
        rows.append([round(float(v), 4) for v in row])
        records.append({"field_mm": float(side), "max_abs_percent_before": round(float(np.abs(history[0]).max()), 2),
                       "max_abs_percent_after": round(float(np.abs(history[-1]).max()), 2),
                       "difference_percent_after": [round(float(v), 2) for v in history[-1]]})  # fmt: skip
    table = {"field_sizes_mm": [round(float(s) * scale, 3) for s in sides], "depths_mm": [float(v) for v in depths], "factor": rows}
    record = {"by": "art.dose.ccc.commission.fit_depth_correction", "steps": steps, "grid_mm": spacing, "ssd_mm": m.pdd_ssd_mm,
              "note": "PDD differences (% of the table, from d_max) of the engine in the fit's phantom before (the model without a depth "
                      "correction, as pdd_fields) and after (with it)",
              "depths_mm": [float(v) for v in depths], "fields": records}  # fmt: skip
    return table, record


def commission_output_correction(path, *, write: bool = True, depth: bool = False, progress=print) -> dict:
    """Fit only the output correction of an already commissioned machine file ``path`` (``depth``: the
    depth correction first, then the output correction; its other ``ccc`` values kept) and (``write``)
    rewrite the file. Returns the new ``ccc`` section."""
    p = Path(path)
    machine = load_machine(p)
    model = ccc_model(machine)
    section = dict(machine.ccc)
    if depth:
        progress(f"{p.name}: fitting the depth correction to the PDD table")
        model, section = _with_depth_correction(machine, model, section, progress)
    progress(f"{p.name}: fitting the output correction to the output factor table")
    table, record = fit_output_correction(machine, model, progress=progress)
    section["output_correction"] = table
    section["commissioning"] = {**section.get("commissioning", {}), "output_correction": record}
    if write:
        write_section(p, section)
        progress(f"{p.name}: ccc section written (a shipped machine: regenerate its calibration factors with python -m art.dose.ccc.calibration_table)")
    return section


def _with_depth_correction(machine: Machine, model: CCCModel, section: dict, progress) -> tuple[CCCModel, dict]:
    """The model and section with a freshly fitted depth correction (and its record)."""
    table, record = fit_depth_correction(machine, model, progress=progress)
    model = CCCModel(**{**model.__dict__, "depth_field_mm": np.asarray(table["field_sizes_mm"]), "depth_mm": np.asarray(table["depths_mm"]),
                        "depth_factor": np.asarray(table["factor"])})  # fmt: skip
    section = {**section, "depth_correction": table, "commissioning": {**section.get("commissioning", {}), "depth_correction": record}}
    return model, section


def commission(path, *, write: bool = True, progress=print) -> dict:
    """Fit the ``ccc`` section of the machine file ``path`` and (``write``) rewrite the file with it.

    Returns the section. The file must otherwise be a valid machine file (its ``ccc`` section,
    if any, is ignored and replaced).
    """
    p = Path(path)
    machine = load_machine(p)
    sides = ", ".join(f"{side:g}" for side, _, _ in FIT_FIELDS)
    progress(f"{p.name}: fitting the spectrum and electron contamination to the PDDs of the {sides} mm fields")
    fit = fit_spectrum(machine, progress=progress)
    e, f = spectrum(fit["alpha"], fit["beta"], nominal=nominal_mv(machine))
    model = spectrum_model(e, f, contamination=(fit["fraction"], fit["depth_mm"]))
    progress(f"{p.name}: fitting the source size to the penumbrae")
    start = float(machine.ccc.get("source_sigma_mm", 1.5)) if machine.ccc is not None else 1.5
    sigma, pens = fit_source_sigma(machine, model, start=start, progress=progress)
    model = CCCModel(**{**model.__dict__, "source_sigma_mm": sigma})
    section = _section(machine, model, fit, pens)
    progress(f"{p.name}: fitting the depth correction to the PDD table")
    model, section = _with_depth_correction(machine, model, section, progress)
    progress(f"{p.name}: fitting the output correction to the output factor table")
    table, record = fit_output_correction(machine, model, progress=progress)
    section = {**{k: v for k, v in section.items() if k != "commissioning"}, "output_correction": table,
               "commissioning": {**section["commissioning"], "output_correction": record}}  # fmt: skip
    if write:
        write_section(p, section)
        progress(f"{p.name}: ccc section written (a shipped machine: regenerate its calibration factors with python -m art.dose.ccc.calibration_table)")
    return section


def engine_pdd_errors(machine: Machine, model: CCCModel, side: float, *, deepest: float = PDD_MAX_DEPTH_MM, spacing: float = PDD_GRID_MM):
    """The engine's central-axis PDD differences (%, :func:`pdd_errors`) of a square field (side at the
    PDD table's SSD) in the fit's water phantom (:func:`~art.dose.ccc.field_basis.fit_phantom`)."""
    from art.dose.ccc.field_basis import fit_phantom

    beam, grid = fit_phantom(machine, side, spacing=spacing, depth_mm=PDD_MAX_DEPTH_MM + 120.0)
    depths, dose = central_axis(water_dose(machine, model, beam, grid), grid)
    return pdd_errors(machine, side, depths, dose, max_depth_mm=deepest)


def _section(machine: Machine, model: CCCModel, fit: dict, pens: np.ndarray, *, fields=FIT_FIELDS) -> dict:
    pdds = []
    for side, deepest, weight in fields:
        at, err = engine_pdd_errors(machine, model, side, deepest=deepest)
        pdds.append({"field_mm": side, "weight": weight, "depths_mm": at.tolist(), "difference_percent": [round(float(v), 2) for v in err],
                     "max_abs_percent": round(float(np.abs(err).max()), 2), "rms_percent": round(float(np.sqrt(np.mean(err**2))), 2)})
    return {
        "spectrum": {"energies_mev": [round(float(v), 4) for v in model.energies_mev], "fluence": [float(f"{v:.5g}") for v in model.fluence]},
        "source_sigma_mm": round(model.source_sigma_mm, 3),
        "electron_contamination": {"fraction": round(model.contamination_fraction, 4), "depth_mm": model.contamination_depth_mm},
        "commissioning": {
            "by": "python -m art.dose.ccc.commission (art.dose.ccc.commission.commission)",
            "kernels": "opentps-core 2.0.0 Kernels_6MV (Apache-2.0, OpenTPS consortium)",
            "engine": {"lattice_directions": int(lattice_vectors(REACH).shape[0]), "fine_reach": FINE_REACH, "fine_angle_deg": FINE_ANGLE_DEG,
                       "kernel_scales_mm": list(SCALES_MM), "energy_group_edges_mev": list(GROUP_EDGES_MEV),
                       "entry_correction_medium_density": MEDIUM_DENSITY},
            "spectrum_model": "opentps 6 MV spectrum x (E / 2 MeV)^alpha (bins above 6 MeV: beta x the 6 MeV bin x (E / 6)^alpha)",
            "alpha": round(fit["alpha"], 4), "beta": round(fit["beta"], 4),
            "pdd_fit": "least squares of the fields' PDD differences from d_max (% of the table; each field's mean square x its weight), "
                       "the model's central axis unsmoothed; the differences below computed by the engine with the final model",
            "pdd_grid_mm": PDD_GRID_MM, "pdd_fields": pdds,
            "penumbra_grid_mm": PENUMBRA_GRID_MM, "penumbra_depths_mm": machine.penumbra_depth_mm.tolist(),
            "penumbra_mm": [round(float(v), 2) for v in pens], "penumbra_table_mm": machine.penumbra_mm.tolist(),
        },
    }  # fmt: skip


def write_section(path, section: dict) -> None:
    """Replace the ``ccc`` section of a JSON machine file (the rest rewritten as ``json.dumps(…, indent=1)``)."""
    p = Path(path)
    if p.suffix.lower() != ".json":
        raise MachineDataError("only JSON machine files can be rewritten; copy the printed section into the file", path=p)
    data = json.loads(p.read_text(encoding="utf-8"))
    data["ccc"] = section
    p.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``python -m art.dose.ccc.commission MACHINE_FILE [--dry-run] [--output-correction]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m art.dose.ccc.commission", description=__doc__.split("\n\n")[0])
    ap.add_argument("machine_file")
    ap.add_argument("--dry-run", action="store_true", help="print the section, do not rewrite the file")
    ap.add_argument("--output-correction", action="store_true",
                    help="fit only the output correction of an already commissioned file (the other ccc values kept)")
    ap.add_argument("--depth-correction", action="store_true",
                    help="fit only the depth correction, then the output correction, of an already commissioned file")
    args = ap.parse_args(argv)
    if args.output_correction or args.depth_correction:
        section = commission_output_correction(args.machine_file, write=not args.dry_run, depth=args.depth_correction)
    else:
        section = commission(args.machine_file, write=not args.dry_run)
    print(json.dumps(section, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
