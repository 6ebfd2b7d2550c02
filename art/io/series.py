"""CT (and CBCT) image series: read a folder of slices into a :class:`Volume`, write one back.

The public entry of the image-series code, re-exported by :mod:`art.io`:

* :func:`read_image_series` — reading, documented in :mod:`art.io.series_read`
  (the checks of the slices are in :mod:`art.io.series_checks`);
* :func:`write_image_series` — writing, documented in :mod:`art.io.series_write`;
* :class:`ImageSeries` (:mod:`art.io.image_series`) and :class:`PatientInfo`
  (:mod:`art.io.dicom_common`).
"""

from __future__ import annotations

from art.io.dicom_common import PatientInfo
from art.io.image_series import ImageSeries
from art.io.series_read import read_image_series
from art.io.series_write import write_image_series

__all__ = ["PatientInfo", "ImageSeries", "read_image_series", "write_image_series"]
