"""DICOM input/output: CT/CBCT image series and RT structure sets.

* :mod:`art.io.series` — :func:`read_image_series`, :func:`write_image_series`,
  :class:`ImageSeries`, :class:`PatientInfo`;
* :mod:`art.io.rtstruct` — :func:`read_rtstruct`, :func:`write_rtstruct`,
  :func:`structures_to_dataset`;
* :mod:`art.io.uids` — :func:`new_uid`;
* :mod:`art.io.dicom_common` — shared helpers (DS formatting, file meta,
  patient module) for the other DICOM writers.

pydicom is imported only when a file is read or written.
"""

from art.io.dicom_common import PatientInfo
from art.io.rtstruct import read_rtstruct, structures_to_dataset, write_rtstruct
from art.io.series import ImageSeries, read_image_series, write_image_series
from art.io.uids import new_uid

__all__ = [
    "PatientInfo",
    "ImageSeries",
    "read_image_series",
    "write_image_series",
    "read_rtstruct",
    "write_rtstruct",
    "structures_to_dataset",
    "new_uid",
]

# RT Plan, RT Dose, registration objects and validation (issue 5)
from art.io.registration import (  # noqa: E402
    read_deformable_registration,
    read_spatial_registration,
    write_deformable_registration,
    write_spatial_registration,
)
from art.io.rtdose import read_rtdose, write_rtdose  # noqa: E402
from art.io.rtplan import read_rtplan, write_rtplan  # noqa: E402

__all__ += [
    "read_rtplan",
    "write_rtplan",
    "read_rtdose",
    "write_rtdose",
    "write_spatial_registration",
    "read_spatial_registration",
    "write_deformable_registration",
    "read_deformable_registration",
]
