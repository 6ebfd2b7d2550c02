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
