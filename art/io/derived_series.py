"""The synthetic CT of an adapted plan as a DICOM CT series, and references to the images a dose was computed on.

An adapted plan is optimised and its dose computed on the synthetic CT of the day
(the planning CT deformed onto today's anatomy, :func:`art.registration.synthetic_ct`),
not on the CBCT, whose HU are not reliable for dose. So that another system can
recompute the plan, the synthetic CT is exported (:func:`write_synthetic_ct`) as a CT
Image Storage series (PS3.3 A.3):

* its own SeriesInstanceUID (and SOP instance UIDs), in the CBCT's study, patient and
  **frame of reference**, on the CBCT's grid (same ImagePositionPatient,
  ImageOrientationPatient, PixelSpacing and slice positions as the CBCT);
* ImageType ``DERIVED\\SECONDARY\\AXIAL``, SeriesDescription ``sCT: planning CT
  deformed to CBCT``, and a DerivationDescription saying how it was made;
* per slice a SourceImageSequence (General Reference module, C.12.4): the CBCT slice
  at the same position (SpatialLocationsPreserved ``YES``) and the planning CT slices
  the deformation sampled for it (``NO``: resampled through the deformation), each
  with the purpose (121322, DCM, "Source image for image processing operation").

The RT Plan and RT Dose computed on it name its slices in ReferencedImageSequence
(:func:`reference_images`; General Reference module, present in both IODs), while
their RT Structure Set stays on the CBCT (same frame of reference, same grid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from art.errors import InputError
from art.geometry import Volume
from art.io.dicom_common import CT_IMAGE_STORAGE
from art.io.image_series import ImageSeries
from art.io.series_write import Derivation, SourceImage, write_image_series

__all__ = ["SYNTHETIC_CT_DESCRIPTION", "write_synthetic_ct", "reference_images"]

#: SeriesDescription of the exported synthetic CT (LO, at most 64 characters).
SYNTHETIC_CT_DESCRIPTION = "sCT: planning CT deformed to CBCT"

_DERIVATION = (
    "Synthetic CT for the adapted plan's dose: the planning CT deformably registered to the daily CBCT "
    "and resampled (linear) onto the CBCT's grid and frame of reference; gas pockets of the day (and gas gone "
    "since planning) take the CBCT's HU after a linear calibration against the deformed CT; -1000 HU outside "
    "the body; outside the CBCT's field of view the deformed planning CT. Not an acquired image."
)


def write_synthetic_ct(
    sct: Volume,
    cbct: ImageSeries,
    ct: ImageSeries,
    folder: str | Path,
    *,
    ct_slices: Sequence[Sequence[int]],
    series_number: int = 901,
    patient_position: str = "HFS",
) -> ImageSeries:
    """Write the synthetic CT of the day as a derived CT series (see module notes).

    Parameters
    ----------
    sct : Volume
        The synthetic CT, HU, on ``cbct.grid`` (z, y, x).
    cbct : ImageSeries
        Today's CBCT: patient, study, frame of reference and grid of the series;
        slice ``k`` is the source of slice ``k`` (SpatialLocationsPreserved ``YES``).
    ct : ImageSeries
        The planning CT the synthetic CT was deformed from.
    folder : str or Path
        Output folder (created), one file per slice.
    ct_slices : sequence of sequences of int, keyword-only
        Per synthetic CT slice (array order), the planning CT slice indices it was
        sampled from (:func:`art.registration.synthetic_ct.source_slices`).
    series_number : int, keyword-only
        SeriesNumber.
    patient_position : str, keyword-only
        PatientPosition (the CBCT's).

    Returns
    -------
    ImageSeries
        The series as written (values as stored: whole HU).

    Raises
    ------
    InputError
        ``sct`` not on the CBCT's grid, or ``ct_slices`` not one entry per slice
        with indices of the planning CT's slices.
    """
    if not isinstance(sct, Volume) or not isinstance(cbct, ImageSeries) or not isinstance(ct, ImageSeries):
        raise InputError("write_synthetic_ct needs the synthetic CT Volume and the CBCT and planning CT ImageSeries")
    if not sct.grid.same_as(cbct.grid):
        raise InputError("the synthetic CT must be on the CBCT's grid")
    nz = sct.grid.shape[0]
    if len(ct_slices) != nz:
        raise InputError(f"ct_slices has {len(ct_slices)} entries for {nz} synthetic CT slices")
    n_ct = len(ct.sop_instance_uids)
    sources = []
    for k in range(nz):
        idx = sorted({int(i) for i in ct_slices[k]})
        if idx and (idx[0] < 0 or idx[-1] >= n_ct):
            raise InputError(f"ct_slices[{k}] names a slice outside the planning CT's {n_ct} slices")
        items = [SourceImage(cbct.sop_class_uid, cbct.sop_instance_uids[k], "YES")]
        items += [SourceImage(ct.sop_class_uid, ct.sop_instance_uids[i], "NO") for i in idx]
        sources.append(tuple(items))
    derivation = Derivation(_DERIVATION, tuple(sources))
    return write_image_series(
        sct, folder, patient=cbct.patient, frame_of_reference_uid=cbct.frame_of_reference_uid,
        study_instance_uid=cbct.study_instance_uid, series_description=SYNTHETIC_CT_DESCRIPTION,
        series_number=series_number, study_date=cbct.study_date or None, study_time=cbct.study_time or None,
        patient_position=patient_position, derivation=derivation,
    )  # fmt: skip


def reference_images(ds: Any, image: ImageSeries) -> None:
    """Name every slice of ``image`` in ``ds``'s ReferencedImageSequence (General Reference module).

    For the RT Plan and RT Dose of a plan computed on ``image`` (the synthetic CT):
    its slices must be in the object's frame of reference.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An RT Plan or RT Dose dataset (FrameOfReferenceUID set).
    image : ImageSeries
        The image series the dose was computed on.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    if not isinstance(image, ImageSeries):
        raise InputError(f"image must be an ImageSeries, got {type(image).__name__}")
    if str(ds.get("FrameOfReferenceUID", "")) != image.frame_of_reference_uid:
        raise InputError("the referenced image series is not in the object's frame of reference")
    items = []
    for uid in image.sop_instance_uids:
        it = Dataset()
        it.ReferencedSOPClassUID = image.sop_class_uid or CT_IMAGE_STORAGE
        it.ReferencedSOPInstanceUID = uid
        items.append(it)
    ds.ReferencedImageSequence = Sequence(items)
