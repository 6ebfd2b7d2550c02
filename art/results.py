"""Writing result folders: ``art plan`` and ``art replan`` outputs (DESIGN.md command contract).

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
        synthetic CT, in ``ct``'s frame of reference): the RTPLAN and RTDOSE name its
        slices in ReferencedImageSequence (:func:`art.io.derived_series.reference_images`).
    """
    from art.delivery import assert_deliverable
    from art.io import write_rtstruct
    from art.io.rtdose import write_rtdose
    from art.io.rtplan import write_rtplan

    rx = protocol.prescription
    assert_deliverable(plan, machine)
    check_dose(dose, prescription_gy=rx.dose_gy, what=label)
    paths = {"rtstruct": folder / "RTSTRUCT.dcm", "rtplan": folder / "RTPLAN.dcm", "rtdose": folder / "RTDOSE.dcm"}
    write_rtstruct(structures, ct, paths["rtstruct"], label=rtstruct_label)
    plan_ds = write_rtplan(
        plan, ct, paths["rtstruct"], paths["rtplan"], machine=machine, label=label, prescription_gy=rx.dose_gy, target_name=rx.target
    )
    write_rtdose(dose, ct, paths["rtdose"], plan_ds_or_uid=plan_ds)
    if dose_image is not None:
        _reference_dose_image([paths["rtplan"], paths["rtdose"]], dose_image)
    return paths


def _reference_dose_image(files: list[Path], image: Any) -> None:
    """Add ``image``'s slices to the ReferencedImageSequence of each written RT Plan / RT Dose file (rewritten in place)."""
    from art.io.dicom_common import read_dataset, save_dataset
    from art.io.derived_series import reference_images

    for f in files:
        ds = read_dataset(f)
        reference_images(ds, image)
        save_dataset(ds, f)
