"""Writing result folders: ``art plan`` and ``art replan`` outputs (what each writes: docs/workflow.md).

Every writer here fills a folder that the caller created with
:func:`art.outputs.atomic_output_dir`, so a failure leaves nothing behind. Before
any plan is written it passes the deliverability checks (:func:`art.delivery.check_plan`);
a plan that fails them is not exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from art.errors import InputError


def check_dose(dose: Any, *, prescription_gy: float, what: str) -> None:
    """A dose must be finite, non-negative and below a sanity ceiling (2 × prescription)."""
    a = np.asarray(dose.array)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what}: the dose has non-finite values; nothing exported")
    if float(a.max(initial=0.0)) > 2.0 * float(prescription_gy):
        raise InputError(
            f"{what}: maximum dose {float(a.max()):.1f} Gy exceeds twice the prescription ({prescription_gy:g} Gy); nothing exported"
        )


def write_plan_files(
    folder: Path,
    *,
    plan: Any,
    dose: Any,
    ct: Any,
    structures: Any,
    protocol: Any,
    machine: Any,
    label: str,
    rtstruct_label: str = "art",
    dose_image: Any = None,
) -> dict[str, Path]:
    """RTSTRUCT, RTPLAN and RTDOSE for a plan on an image series; returns the paths written.

    The RT Plan states each beam's dose at a point of the target (:func:`beam_dose_reference`,
    computed by the engine on the image the dose was computed on) as BeamDose, with the point as a dose reference.

    Parameters
    ----------
    folder : Path
        Existing (temporary) output folder.
    plan : Plan
        Sequenced plan (segments, MU per fraction).
    dose : Volume
        The final dose (course, Gy) on its export grid in the image's frame: written as it
        is, on that grid (:mod:`art.final_dose`), so the file holds the evaluated dose.
    ct : ImageSeries
        The image the plan is on (planning CT, or today's CBCT for an adapted plan).
    structures : StructureSet
        On ``ct``'s grid.
    dose_image : ImageSeries, optional, keyword-only
        The image the dose was computed on when it is not ``ct`` (an adapted plan's
        synthetic CT, in ``ct``'s frame of reference): the beams' doses at the dose reference
        point are computed on it, and the RTPLAN and RTDOSE name its slices in
        ReferencedImageSequence (:func:`art.io.derived_series.reference_images`).
    """
    from art.delivery import assert_deliverable
    from art.io import write_rtstruct
    from art.io.derived_series import reference_images
    from art.io.dicom_common import save_dataset
    from art.io.rtdose import dose_to_dataset
    from art.io.rtplan import plan_to_dataset

    rx = protocol.prescription
    assert_deliverable(plan, machine)
    check_dose(dose, prescription_gy=rx.dose_gy, what=label)
    paths = {"rtstruct": folder / "RTSTRUCT.dcm", "rtplan": folder / "RTPLAN.dcm", "rtdose": folder / "RTDOSE.dcm"}
    write_rtstruct(structures, ct, paths["rtstruct"], label=rtstruct_label)
    ref = beam_dose_reference(ct.volume if dose_image is None else dose_image.volume, plan, machine, structures, rx.target)
    plan_ds = plan_to_dataset(
        plan, ct, paths["rtstruct"], machine=machine, label=label, prescription_gy=rx.dose_gy, target_name=rx.target, dose_reference=ref,
    )
    dose_ds = dose_to_dataset(dose, ct, plan_ds_or_uid=plan_ds)
    for ds, key in ((plan_ds, "rtplan"), (dose_ds, "rtdose")):
        if dose_image is not None:
            reference_images(ds, dose_image)  # the image the dose was computed on (the sCT)
        save_dataset(ds, paths[key])
    return paths


def dose_reference_point(plan: Any, structures: Any, target: str) -> tuple[np.ndarray, str] | None:
    """The point each beam's dose is stated at (BeamDose): the isocentre when it lies in the target, else the
    target voxel nearest the target's centroid; None when the target is missing or empty.

    Returns
    -------
    (point, description) : ((3,) float64 LPS mm, str) or None
    """
    s = structures.find(target) if structures is not None else None
    if s is None or s.is_empty:
        return None
    iso = np.asarray(plan.beams[0].isocenter_lps, dtype=np.float64)
    k = np.round(s.grid.lps_to_index(iso[None, :])[0]).astype(int)
    if np.all(k >= 0) and np.all(k < np.asarray(s.grid.shape)) and bool(s.mask[tuple(k)]):
        return iso, f"isocentre (in {target}): beam dose point"[:64]
    kji = np.argwhere(s.mask).astype(np.float64)
    pts = s.grid.index_to_lps(kji)
    point = pts[int(np.argmin(np.sum((pts - s.centroid_lps()) ** 2, axis=1)))]
    return point, f"{target} point nearest its centroid: beam dose point"[:64]


def beam_dose_reference(ct_hu: Any, plan: Any, machine: Any, structures: Any, target: str, *, patient_position: str | None = None) -> Any:
    """Each beam's dose (Gy per fraction) at :func:`dose_reference_point`, segment by segment, by the dose engine.

    Each beam's dose is the engine's (:func:`art.dose.calc.beam_dose_at` at one point, the
    same model and HU → density table as the final dose), so the beams' doses add up to
    the plan's dose at the point; it is shared among the segments in proportion to their
    doses there by direct kernel summation (:func:`art.dose.calc.segment_doses_at`), which
    gives the control points' CumulativeDoseReferenceCoefficient.

    Parameters
    ----------
    ct_hu : Volume
        The CT the plan's dose is computed on, HU.
    plan : Plan
        Sequenced (segments, MU per fraction).
    machine : Machine
    structures : StructureSet
        With the target.
    target : str
        The prescription target's name.
    patient_position : str, optional, keyword-only
        The patient position the dose engine uses (default: the plan's).

    Returns
    -------
    art.io.rtplan.BeamDoseReference or None
        None when the target is missing or empty (the RT Plan then states no BeamDose).
    """
    from art.dose.calc import beam_dose_at, segment_doses_at
    from art.dose.machine import hu_to_density
    from art.geometry import Volume
    from art.io.rtplan import BeamDoseReference

    found = dose_reference_point(plan, structures, target)
    if found is None:
        return None
    point, description = found
    density = Volume(hu_to_density(ct_hu.array), ct_hu.grid)
    patient_position = plan.patient_position if patient_position is None else patient_position
    doses = {}
    for b in plan.beams:
        total = float(beam_dose_at(density, b, machine, point[None, :], patient_position=patient_position)[0])
        parts = segment_doses_at(density, b, machine, point, patient_position=patient_position)[[s.mu > 0 for s in b.segments]]
        share = parts / parts.sum() if parts.sum() > 0 else np.zeros_like(parts)
        doses[b.name] = [float(v) for v in total * share]
    return BeamDoseReference(tuple(float(v) for v in point), doses, description)
