"""The planning pipeline as a sequence of stages (matRad/pyRadPlan style).

:func:`make_plan` (``art plan``)::

    beams → dose influence → optimisation → leaf sequencing → dose of the sequenced plan → evaluation

:func:`adapt` (``art replan``, in :mod:`art.adapt`) adds registration, re-contouring and the
synthetic CT in front and evaluates the scheduled and adapted plans side by side.

Units: dose in Gy (course totals unless named per fraction), MU per fraction, lengths in mm,
LPS patient coordinates, arrays (z, y, x).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from art.errors import InputError, ProtocolError
from art.geometry import Volume
from art.plan import Beam, Plan, check_patient_position
from art.progress import Stages
from art.structures import StructureSet


@dataclass
class PlanResult:
    """Everything a planning run produced.

    Attributes
    ----------
    plan : Plan
        The deliverable plan: beams with MLC segments and MU (per fraction), fluences kept.
    dose : Volume
        The final dose: course dose (Gy) of the sequenced plan computed on the export grid
        (:mod:`art.final_dose`); exported as RT Dose and evaluated for ``goals``.
    fluence_dose : Volume
        Course dose (Gy) of the optimised fluence (before sequencing) on the dose grid.
    goals : list of GoalResult
        The protocol's goals evaluated on ``dose`` from the structures' polygons.
    fluence_goals : list of GoalResult
        The same goals on ``fluence_dose`` (optimisation grid, voxel occupancy): the optimiser's view.
    influence : InfluenceMatrix
        The dose-influence matrix used (per fraction, per unit weight).
    weights : ndarray, shape (n_beamlets,)
        Optimised, normalised beamlet weights (per fraction).
    optimization : OptimizationResult
    sequencing : dict
        Segment counts and MU per beam, MU lost to the minimum-segment rule.
    isocenter_lps : ndarray, shape (3,)
    structures : StructureSet
        The structures as evaluated (and as the RTSTRUCT export draws them): polygons given or traced.
    engine : str
        The dose engine that computed ``dose`` (:data:`art.dose.engines.ENGINES`, e.g. ``"pb"``).
    """

    plan: Plan
    dose: Volume
    fluence_dose: Volume
    goals: list
    fluence_goals: list
    influence: Any
    weights: np.ndarray
    optimization: Any
    sequencing: dict
    isocenter_lps: np.ndarray
    parameters: dict = field(default_factory=dict)
    structures: StructureSet | None = None
    engine: str = "pb"

    @property
    def priority1_met(self) -> bool:
        """True when every priority-1 goal is met on the delivered (sequenced) dose."""
        return all(g.met for g in self.goals if g.priority == 1)


def isocenter_from_protocol(protocol: Any, structures: StructureSet) -> np.ndarray:
    """The protocol's isocentre in LPS mm: a structure's centroid or an explicit point."""
    iso = protocol.beams.isocenter
    if isinstance(iso, str):
        s = structures.find(iso)
        if s is None:
            raise ProtocolError(f"{protocol.source}: isocenter structure {iso!r} is not in the structure set")
        if s.is_empty:
            raise InputError(f"isocenter structure {iso!r} is empty")
        return np.asarray(s.centroid_lps(), dtype=np.float64)
    return np.asarray(iso, dtype=np.float64)


def beams_from_protocol(protocol: Any, structures: StructureSet, *, isocenter_lps: Any = None) -> list[Beam]:
    """Static beams of the protocol (names ``B01`` …, gantry/collimator/couch from the protocol)."""
    iso = isocenter_from_protocol(protocol, structures) if isocenter_lps is None else np.asarray(isocenter_lps, float)
    b = protocol.beams
    return [
        Beam(
            f"B{i + 1:02d} G{int(round(g)) % 360:03d}",
            gantry_deg=float(g),
            collimator_deg=float(c),
            couch_deg=float(t),
            isocenter_lps=tuple(iso),
            energy=b.energy,
        )
        for i, (g, c, t) in enumerate(zip(b.gantry_angles, b.collimator_angles, b.couch_angles))
    ]


#: The optimiser's own figures (``fluence_goals``, on the optimisation grid) weight each dose voxel
#: by the fraction of it inside the structure (:func:`art.evaluate.dvh.occupancy`), as the optimiser
#: sees them. Every reported goal is evaluated on the final dose instead (:mod:`art.final_dose`).
OPTIMISER_EVALUATION_MODE = "occupancy"

#: Leaf sequencing defaults: the Bortfeld sweep with 20 intensity levels (fidelity to the
#: optimised fluence matters more to the goals than the last few segments).
DEFAULT_SEQUENCING = {"method": "sweep", "levels": 20}

#: Structures named by the protocol must be at least this large (cc) to be evaluated reliably.
MIN_STRUCTURE_CC = 0.1


def check_structures(protocol: Any, structures: StructureSet, *, where: str = "structure set") -> None:
    """Every structure the protocol names exists, is not empty and not tiny (clear error otherwise)."""
    for name in protocol.structure_names:
        s = structures.find(name)
        if s is None:
            raise ProtocolError(f"{protocol.source}: structure {name!r} is not in the {where} (has: {', '.join(structures.names)})")
        if s.is_empty:
            raise InputError(f"structure {name!r} in the {where} is empty")
        if s.volume_cc < MIN_STRUCTURE_CC:
            raise InputError(
                f"structure {name!r} in the {where} is too small to plan on ({s.volume_cc:.3f} cc < {MIN_STRUCTURE_CC} cc)"
            )


def beamlet_targets(protocol: Any, structures: StructureSet) -> list[str]:
    """The structures whose projections select the beamlets: the prescription target and every
    other structure a goal asks a minimum dose of (``at_least``), e.g. the lower-dose targets of a
    multi-target plan; a goal that only limits dose never widens the fields."""
    names = [protocol.prescription.target]
    for g in protocol.goals:
        s = structures.find(g.structure)
        if g.at_least is not None and s is not None and s.name not in names and not s.is_empty:
            names.append(s.name)
    return names


def weights_from_segments(plan: Plan, influence: Any, machine: Any) -> np.ndarray:
    """Beamlet weights (per fraction) equivalent to a plan's MLC segments on a matrix's beamlets.

    Beams are matched by order and must have the same gantry angles; each beam's segments
    are turned into a fluence on its bixel grid (:func:`art.delivery.segments_to_fluence`).
    """
    from art.delivery import segments_to_fluence

    if len(plan.beams) != len(influence.beams):
        raise InputError(f"warm start: the plan has {len(plan.beams)} beams, today's matrix {len(influence.beams)}")
    w = np.zeros(influence.n_beamlets, dtype=np.float64)
    b = influence.bixel_mm
    for k, (beam, (m, grid)) in enumerate(zip(plan.beams, influence.fluence_maps(w))):
        if abs((beam.gantry_deg - influence.beams[k].gantry_deg + 180.0) % 360.0 - 180.0) > 0.5:
            raise InputError(f"warm start: beam {beam.name!r} gantry {beam.gantry_deg} differs from today's beam {k + 1}")
        flu = segments_to_fluence(beam.segments, grid, machine)
        cols = influence.columns(k)
        ix = np.round(influence.bev_x_mm[cols] / b - 0.5).astype(int)
        iy = np.round(influence.bev_y_mm[cols] / b - 0.5).astype(int)
        w[cols] = flu[iy - iy.min(), ix - ix.min()]
    return w


def make_plan(
    ct: Volume, structures: StructureSet, protocol: Any, *, machine: Any = None, isocenter_lps: Any = None,
    warm_start: PlanResult | None = None, stages: Stages | None = None, optimizer_options: dict | None = None, final_engine: str = "pb",
    sequencing_options: dict | None = None, final_grid_mm: float | None = None, correction: bool = True, patient_position: str = "HFS",
) -> PlanResult:  # fmt: skip
    """Make a deliverable plan for a CT, its structures and a protocol.

    Parameters
    ----------
    ct : Volume
        CT in HU (planning CT, or today's synthetic CT).
    structures : StructureSet
        Must hold every structure the protocol names, and a BODY/EXTERNAL. Goals are evaluated
        from their polygons (:func:`art.final_dose.evaluation_structures`).
    protocol : Protocol
        Prescription, beams, dose grid (the optimisation grid) and priority-ordered goals.
    machine : Machine, optional, keyword-only
        Default :func:`art.dose.load_machine` ().
    isocenter_lps : (3,) floats, optional, keyword-only
        Overrides the protocol's isocentre (the adapted plan keeps the reference one).
    warm_start : PlanResult or Plan, optional, keyword-only
        A previous result with the same beams (its weights start the optimiser), or a plan
        with MLC segments (e.g. the reference RT Plan): its segments' fluence on today's
        beamlets starts the optimiser.
    stages : Stages, optional, keyword-only
        Timing/progress tracker (default: a silent one).
    optimizer_options, sequencing_options : dict, optional, keyword-only
        Passed to :func:`art.optimize.fmo.optimize_fluence` and :func:`art.delivery.sequence_plan`
        (over the defaults, ``DEFAULT_SEQUENCING``).
    final_grid_mm : float, optional, keyword-only
        Export-grid spacing of the final dose (default :data:`art.final_dose.DEFAULT_FINAL_GRID_MM`).
    correction : bool, keyword-only
        Run the correction stage (segment MU, then the fluence with the shortfalls) when a
        priority-1 goal is missed on the final dose.
    patient_position : {"HFS", "FFS", "HFP", "FFP"}, keyword-only
        The CT's PatientPosition: the beams' geometry in the dose engine, and the plan's.
    final_engine : {"pb", "ccc"}, keyword-only
        The dose engine of the final dose (:data:`art.dose.engines.ENGINES`); the optimiser's matrix is the pencil beam's.

    Returns
    -------
    PlanResult
        ``dose`` is the final dose (export grid), ``goals`` are evaluated on it.
    """
    from art.dose import influence_matrix, load_machine
    from art.final_dose import DEFAULT_FINAL_GRID_MM, final_grid

    stages = stages if stages is not None else Stages(show=False)
    machine = machine if machine is not None else load_machine()
    position, engine = _checked_inputs(protocol, structures, patient_position, warm_start, final_engine, machine)
    grid = final_grid(ct.grid, DEFAULT_FINAL_GRID_MM if final_grid_mm is None else final_grid_mm)
    fractions = int(protocol.prescription.fractions)
    sequencing = {**DEFAULT_SEQUENCING, **(sequencing_options or {})}
    with stages.stage("beams"):
        beams = beams_from_protocol(protocol, structures, isocenter_lps=isocenter_lps)
        iso = _checked_isocentre(beams, structures)
    with stages.stage("dose influence"):
        im = influence_matrix(ct, structures, beams, machine, dose_grid_mm=protocol.dose_grid_mm, bixel_mm=protocol.beams.bixel_mm,
                              target=beamlet_targets(protocol, structures), patient_position=position)  # fmt: skip
        stages.note(f"{im.n_beamlets} beamlets, {im.matrix.shape[0]} voxels, {im.matrix.nnz} non-zeros")
    with stages.stage("optimisation"):
        opt, opts, fallback = _optimise(im, structures, protocol, machine, warm_start=warm_start, options=optimizer_options, stages=stages)
        weights = np.asarray(opt.weights, dtype=np.float64)
        fluence_dose = im.dose(weights, fractions=fractions)
    plan, delivered, goals, seq, weights, fluence_dose, evaluated = _delivered(
        ct, beams, im, weights, fluence_dose, structures, protocol, machine, grid, sequencing, stages, position, engine, correction)  # fmt: skip
    fluence_goals = _optimiser_goals(fluence_dose, structures, protocol)
    parameters = {
        "dose_grid_mm": protocol.dose_grid_mm, "bixel_mm": protocol.beams.bixel_mm, "machine": machine.name, "sequencing": sequencing,
        "final_grid": {"spacing_mm": float(grid.spacing[0]), "shape_zyx": list(grid.shape)}, "final_engine": engine,
        "optimizer": {"method": getattr(opt, "method", None), "seed": int(opts.get("seed", 0)), "warm_start": warm_start is not None, "cold_start_fallback": fallback},
    }  # fmt: skip
    return PlanResult(plan=plan, dose=delivered, fluence_dose=fluence_dose, goals=goals, fluence_goals=fluence_goals, influence=im,
                      weights=weights, optimization=opt, sequencing=seq, isocenter_lps=iso, parameters=parameters,
                      structures=evaluated, engine=engine)  # fmt: skip


def _delivered(ct: Volume, beams: list, im: Any, weights: np.ndarray, fluence_dose: Volume, structures: StructureSet, protocol: Any, machine: Any,
               grid: Any, sequencing: dict, stages: Stages, position: str, engine: str, correction: bool) -> tuple:  # fmt: skip
    """From the optimised weights to the final plan: sequencing, the final dose, its evaluation and the correction stage.

    BLAS runs on one thread here: the MU fits' reductions then sum in one order whatever the machine's
    thread count (OpenBLAS splits a long dot product between its threads), so the segments are
    bit-identical on any machine. Returns ``(plan, final dose, goals, sequencing record, weights,
    fluence dose, evaluated structures)``.
    """
    from art.blas import single_threaded_blas
    from art.final_dose import evaluation_structures

    with single_threaded_blas():
        plan, seq = _deliverable(beams, im, weights, machine, int(protocol.prescription.fractions), sequencing, stages, position)
        with stages.stage("structure polygons"):
            evaluated = evaluation_structures(structures)
        plan, delivered, goals, seq = _final(ct, plan, evaluated, protocol, machine, im, grid, seq, fluence_dose, stages, engine)
        if correction and _missed(goals):
            plan, delivered, goals, seq, weights, fluence_dose = _correct(ct, plan, delivered, goals, evaluated, protocol, machine, im, grid,
                                                                         seq, weights, fluence_dose, stages, sequencing, engine)  # fmt: skip
    return plan, delivered, goals, seq, weights, fluence_dose, evaluated


def _checked_inputs(protocol: Any, structures: StructureSet, patient_position: str, warm_start: Any, final_engine: str = "pb",
                    machine: Any = None) -> tuple[str, str]:  # fmt: skip
    """:func:`check_structures`; the patient position checked and the same as a warm-start plan's; the final engine's name
    checked, and that it can use ``machine`` (before the optimisation, not at the final dose).

    Returns ``(patient position, final engine)``.
    """
    from art.dose.engines import check_machine, engine_name

    engine = engine_name(final_engine, parameter="final_engine")
    check_machine(engine, machine)
    check_structures(protocol, structures)
    position = check_patient_position(patient_position)
    if isinstance(warm_start, Plan) and warm_start.patient_position != position:
        raise InputError(f"warm start: the plan is for patient position {warm_start.patient_position}, today's image is {position}")
    return position, engine


def _final(ct: Volume, plan: Plan, structures: StructureSet, protocol: Any, machine: Any, im: Any, grid: Any, seq: dict,
           fluence_dose: Volume, stages: Stages, engine: str = "pb") -> tuple[Plan, Volume, list, dict]:  # fmt: skip
    """Final dose on the export grid (by ``engine``), sequencing check, normalisation (deliverable MU) and the goals on it."""
    from art.dose.engines import ENGINE_LABELS
    from art.final_dose import evaluate, final_dose, normalise_deliverable

    with stages.stage("final dose"):
        delivered = final_dose(ct, plan, machine, structures, grid, engine=engine)
        stages.note(f"final dose ({ENGINE_LABELS[engine]}) on a {grid.spacing[0]:g} mm grid {tuple(grid.shape)}")
    with stages.stage("sequencing check"):
        seq = _sequencing_check(fluence_dose, delivered, seq, stages)
    with stages.stage("normalisation and evaluation"):
        plan, delivered, norm = normalise_deliverable(ct, plan, delivered, structures, protocol, machine, engine=engine)
        seq = dict(seq, **norm)
        goals = evaluate(delivered, structures, protocol)
    return plan, delivered, goals, seq


def _deliverable(beams: list[Beam], im: Any, weights: np.ndarray, machine: Any, fractions: int, sequencing: dict, stages: Stages,
                 patient_position: str) -> tuple[Plan, dict]:  # fmt: skip
    """Leaf sequencing of the optimised fluence and the segments' MU re-fitted to it."""
    with stages.stage("leaf sequencing"):
        fluence_plan = Plan(beams=_with_fluence(beams, im, weights), fractions=fractions, machine_name=machine.name,
                            patient_position=patient_position)  # fmt: skip
        plan, seq = _sequence(fluence_plan, machine, **sequencing)
    with stages.stage("segment weight refinement"):
        plan, seq = _refine_segment_weights(plan, seq, im, weights, machine, stages)
    return plan, seq


def _missed(goals: list) -> list[str]:
    return [f"{g.structure} {g.metric}" for g in goals if g.priority == 1 and not g.met]


#: The segment-MU correction runs on plans of at most this many segments (its size, ~100–200 variables, keeps it fast).
SEGMENT_MU_MAX_SEGMENTS = 200

#: At most this many fluence re-optimisations in the correction stage.
FLUENCE_CORRECTIONS = 2


def _correct(ct: Volume, plan: Plan, delivered: Volume, goals: list, structures: StructureSet, protocol: Any, machine: Any, im: Any,
             grid: Any, seq: dict, weights: np.ndarray, fluence_dose: Volume, stages: Stages, sequencing: dict, engine: str = "pb") -> tuple:  # fmt: skip
    """The correction stage, when a priority-1 goal is missed on the final dose.

    1. Segment MU (apertures fixed) re-optimised on the final grid (:func:`art.final_dose.correct_segment_mu`),
       for plans of at most ``SEGMENT_MU_MAX_SEGMENTS`` segments.
    2. While a priority-1 goal is still missed (``FLUENCE_CORRECTIONS`` rounds at most, each kept): the
       fluence re-optimised from the current weights with each missed goal's level moved by its
       shortfall on the final dose, then sequenced, its final dose normalised and evaluated.

    Each result is kept only when better by :func:`art.final_dose.goals_key`; ``seq["correction"]`` records both.
    """
    from art.final_dose import correct_segment_mu, goals_key

    record: dict[str, Any] = {"missed": _missed(goals)}
    n_segments = sum(len(b.segments) for b in plan.beams)
    with stages.stage("correction"):
        stages.note(f"priority-1 goal(s) missed on the final dose: {', '.join(record['missed'])}")
        if n_segments <= SEGMENT_MU_MAX_SEGMENTS:
            plan, delivered, goals, record["segment_mu"] = correct_segment_mu(ct, plan, delivered, goals, structures, protocol, machine=machine,
                                                                              influence=im, engine=engine)  # fmt: skip
            stages.note(f"segment MU: {'kept' if record['segment_mu']['kept'] else 'not better, discarded'}")
            if record["segment_mu"]["kept"]:  # the plan's normalisation is now that of the corrected MU
                seq = dict(seq, **{k: record["segment_mu"][k] for k in ("normalisation_factor", "normalisation", "segments_lifted_to_min_mu")})
        else:
            record["segment_mu"] = {"ran": False, "reason": f"{n_segments} segments > {SEGMENT_MU_MAX_SEGMENTS}"}
        record["fluence"], shifted = [], protocol
        while _missed(goals) and len(record["fluence"]) < FLUENCE_CORRECTIONS and all(r["kept"] for r in record["fluence"]):
            shifted = _shifted_protocol(protocol, shifted, goals, _optimiser_goals(fluence_dose, structures, protocol))
            opt, _, _ = _optimise(im, structures, shifted, machine, warm_start=None, options={"warm_start": weights}, stages=stages, fallback=False)
            w2 = np.asarray(opt.weights, dtype=np.float64)
            flu2 = im.dose(w2, fractions=int(plan.fractions))
            plan2, seq2 = _deliverable(_bare(plan.beams), im, w2, machine, int(plan.fractions), sequencing, stages, plan.patient_position)
            plan2, dose2, goals2, seq2 = _final(ct, plan2, structures, protocol, machine, im, grid, seq2, flu2, stages, engine)
            kept = goals_key(goals2) > goals_key(goals)
            record["fluence"].append({"kept": bool(kept), "missed_after": _missed(goals2), "levels": {
                f"{g.structure} {g.metric.text}": g.at_most if g.at_most is not None else g.at_least for g in shifted.goals if g.priority == 1}})  # fmt: skip
            stages.note(f"fluence re-optimised with the shortfalls: {'kept' if kept else 'not better, discarded'}")
            if kept:
                plan, delivered, goals, seq, weights, fluence_dose = plan2, dose2, goals2, seq2, w2, flu2
    return plan, delivered, goals, dict(seq, correction=record), weights, fluence_dose


def _shifted_protocol(protocol: Any, base: Any, goals: list, achieved: list | None = None) -> Any:
    """``base`` (the protocol, or the last shifted one) with each missed priority-1 goal's level moved by its shortfall.

    The shortfall is measured on the final dose against ``protocol``; the new level is the tighter
    of the base level and the value the optimiser achieved on its own grid (``achieved``, the
    goals on the optimised fluence), moved by the shortfall plus 0.5 % of the prescription (or
    0.5 % volume): the optimiser must do better than it did by what the final dose missed.
    """
    rx = float(protocol.prescription.dose_gy)
    new = []
    for i, (g0, g, r) in enumerate(zip(protocol.goals, base.goals, goals)):
        if g.priority == 1 and not r.met:
            pad = 0.005 * rx if g.unit == "Gy" else 0.5
            a = float(achieved[i].value) if achieved is not None else None
            if g0.at_most is not None and r.value > g0.at_most:
                level = g.at_most if a is None else min(g.at_most, a)
                g = dataclasses.replace(g, at_most=max(level - (r.value - g0.at_most) - pad, 0.5 * g0.at_most))
            elif g0.at_least is not None and r.value < g0.at_least:
                level = g.at_least if a is None else max(g.at_least, a)
                g = dataclasses.replace(g, at_least=level + (g0.at_least - r.value) + pad)
        new.append(g)
    return dataclasses.replace(base, goals=tuple(new))


def _bare(beams: list[Beam]) -> list[Beam]:
    """The beams without segments or fluence (the geometry only)."""
    return [dataclasses.replace(b, segments=[], fluence=None, fluence_grid=None) for b in beams]


def _optimiser_goals(fluence_dose: Volume, structures: StructureSet, protocol: Any) -> list:
    """The goals on the optimised fluence's dose (optimisation grid, occupancy): the optimiser's figures, not the plan's."""
    from art.evaluate import evaluate_goals

    return evaluate_goals(fluence_dose, structures, protocol, mode=OPTIMISER_EVALUATION_MODE)


def _checked_isocentre(beams: list[Beam], structures: StructureSet) -> np.ndarray:
    """The beams' common isocentre (LPS mm, shape (3,)), after checking it lies inside the BODY/EXTERNAL."""
    iso = np.asarray(beams[0].isocenter_lps, dtype=np.float64)
    body = structures.external()
    if body is None:
        raise InputError("the structure set has no BODY/EXTERNAL structure")
    if not _inside(body, iso):
        raise InputError(f"the isocentre {np.round(iso, 1).tolist()} mm (LPS) is outside the body")
    return iso


def _optimise(im: Any, structures: StructureSet, protocol: Any, machine: Any, *, warm_start: Any, options: dict | None, stages: Stages,
              fallback: bool = True) -> tuple[Any, dict, bool]:  # fmt: skip
    """Fluence-map optimisation against the protocol's goals on the influence matrix ``im``.

    A warm start (a previous :class:`PlanResult`'s weights, or a :class:`Plan`'s segments as
    fluence) that ends short of a priority-1 goal is solved again from a cold start and the
    better result by priority is kept. Returns the optimiser's result (weights per fraction),
    the options it ran with and whether the cold-start fallback won.
    """
    from art.optimize.fmo import optimize_fluence, priority_key
    from art.optimize.neighbours import transfer_weights
    from art.optimize.voxels import build_structure_voxels

    rx = protocol.prescription
    names = sorted(set(protocol.structure_names) | {rx.target})
    svs = build_structure_voxels(im, structures, names=names, fractional=True)
    # aim 1 % of the prescription beyond each goal: leaf sequencing and re-normalisation
    # then still leave the delivered plan on the right side of its goals
    opts = dict(_optimizer_extras(im, structures, rx.target), fractions=int(rx.fractions), goal_margin=0.01)
    opts.update(options or {})
    if isinstance(warm_start, PlanResult):
        opts["warm_start"] = transfer_weights(warm_start.influence, warm_start.weights, im)
    elif isinstance(warm_start, Plan):
        opts["warm_start"] = weights_from_segments(warm_start, im, machine)
    elif warm_start is not None:
        raise InputError(f"warm_start must be a PlanResult or a Plan, got {type(warm_start).__name__}")
    opt = optimize_fluence(im.matrix, svs, list(protocol.goals), rx, **opts)
    fallback = False
    if fallback and "warm_start" in opts and not opt.priority1_met:
        # a warm start that ends short of a priority-1 goal (e.g. today's anatomy is far from
        # the reference): solve again from scratch and keep the better plan by priority
        stages.note("warm start missed a priority-1 goal: optimising again from a cold start")
        cold_opts = {k: v for k, v in opts.items() if k != "warm_start"}
        cold = optimize_fluence(im.matrix, svs, list(protocol.goals), rx, **cold_opts)
        if priority_key(cold.goals) > priority_key(opt.goals):
            opt, fallback = cold, True
    return opt, opts, fallback


def _refine_segment_weights(plan: Plan, seq: dict, im: Any, weights: np.ndarray, machine: Any, stages: Stages) -> tuple[Plan, dict]:
    """Re-fit the sequenced segments' MU to the optimised fluence dose; the fit's figures go into ``seq``."""
    from art.delivery import refine_segment_weights

    plan, refine = refine_segment_weights(plan, im, weights, machine)
    seq = dict(seq, refinement={k: v for k, v in refine.items() if isinstance(v, (int, float, str))})
    stages.note(f"segment MU re-fitted: RMS dose difference {refine.get('rms_before', float('nan')):.4f} -> {refine.get('rms_after', float('nan')):.4f}")
    return plan, seq


def _sequencing_check(fluence_dose: Volume, delivered: Volume, seq: dict, stages: Stages) -> dict:
    """Gamma 3 %/2 mm (10 % threshold) of the sequenced plan's dose against the optimised fluence's; added to ``seq``."""
    from art.evaluate import gamma_index

    g = gamma_index(fluence_dose, delivered, dose_percent=3.0, distance_mm=2.0, threshold_percent=10.0)
    stages.note(f"sequenced vs optimised dose: gamma 3 %/2 mm pass rate {g.pass_rate:.1f} %")
    return dict(seq, gamma_3pct_2mm_vs_optimised_percent=round(float(g.pass_rate), 2))


def _inside(structure: Any, point_lps: np.ndarray) -> bool:
    idx = np.round(structure.grid.lps_to_index(np.asarray(point_lps, float)[None, :])[0]).astype(int)
    if np.any(idx < 0) or np.any(idx >= np.asarray(structure.grid.shape)):
        return False
    return bool(structure.mask[tuple(idx)])


def _optimizer_extras(im: Any, structures: StructureSet, target: str) -> dict:
    """Beamlet neighbours (fluence smoothness) and distance to target (normal-tissue fall-off)."""
    from art.optimize.neighbours import distance_rows, neighbours_from_influence

    return {
        "beamlet_neighbours": neighbours_from_influence(im),
        "distance_to_target_mm": distance_rows(im, structures, target),
    }


def _with_fluence(beams: list[Beam], im: Any, weights: np.ndarray) -> list[Beam]:
    return [dataclasses.replace(b, fluence=f, fluence_grid=g) for b, (f, g) in zip(beams, im.fluence_maps(weights))]


def _sequence(plan: Plan, machine: Any, **options: Any) -> tuple[Plan, dict]:
    from art.delivery import sequence_plan

    result = sequence_plan(plan, machine, **options)
    if isinstance(result, tuple):
        return result[0], dict(result[1])
    return result, {}
