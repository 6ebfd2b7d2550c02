"""Encoded Decimal Strings: ``set_ds_values`` writes a multi-valued DS as one encoded element, ``ds_values`` reads it back."""

from __future__ import annotations

import numpy as np
import pytest

from art.io.dicom_common import ds_values, format_ds_fixed, make_file_meta, set_ds_values


@pytest.mark.parametrize("charset", [None, "ISO_IR 192"])
def test_encoded_ds_values_survive_a_file_in_any_character_set(tmp_path, charset):
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    rng = np.random.default_rng(3)
    pts = rng.uniform(-400, 400, (200, 3))
    ds = Dataset()
    ds.file_meta = make_file_meta("1.2.840.10008.5.1.4.1.1.481.3", "2.25.1")
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.481.3", "2.25.1"
    if charset:
        ds.SpecificCharacterSet = charset
        ds.PatientName = "Müller^Zoë"
    item = Dataset()
    set_ds_values(item, "ContourData", format_ds_fixed(pts))
    item.NumberOfContourPoints = len(pts)
    ds.ROIContourSequence = Sequence([Dataset()])
    ds.ROIContourSequence[0].ContourSequence = Sequence([item])
    path = tmp_path / "rs.dcm"
    ds.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path).ROIContourSequence[0].ContourSequence[0]
    np.testing.assert_allclose(ds_values(back, "ContourData").reshape(-1, 3), pts, atol=5e-5)
    np.testing.assert_allclose(np.array(back.ContourData, float).reshape(-1, 3), pts, atol=5e-5)  # pydicom's own decoding agrees
    assert ds_values(back, "ContourImageSequence") is None


def test_bad_encoded_ds_values_are_errors():
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    item = Dataset()
    item[0x30060050] = RawDataElement(Tag(0x30060050), "DS", 8, b"1.0\\abc ", 0, False, True)
    with pytest.raises(ValueError):
        ds_values(item, "ContourData")
    with pytest.raises(Exception, match="16 characters"):
        set_ds_values(Dataset(), "ContourData", ["1.00000000000000001"])


def _contour_file(tmp_path, data: bytes):
    """An RTSTRUCT-like file whose one ContourData element holds ``data`` (raw DS bytes)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.tag import Tag

    ds = Dataset()
    ds.file_meta = make_file_meta("1.2.840.10008.5.1.4.1.1.481.3", "2.25.2")
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.481.3", "2.25.2"
    item = Dataset()
    item[0x30060050] = RawDataElement(Tag(0x30060050), "DS", len(data), data, 0, False, True)
    item.NumberOfContourPoints = 3
    ds.ROIContourSequence = Sequence([Dataset()])
    ds.ROIContourSequence[0].ContourSequence = Sequence([item])
    path = tmp_path / "rs.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_read_dataset_checks_contour_data_from_its_bytes_and_leaves_it_for_ds_values(tmp_path):
    """read_dataset does not decode ContourData value by value (seconds per RTSTRUCT); the numbers are checked
    from the bytes and read by ds_values; pydicom still decodes them on access."""
    from art.io.dicom_common import read_dataset

    path = _contour_file(tmp_path, b"1.5\\-2\\3e1 \\4\\5\\6.25\\7\\8\\9 ")
    item = read_dataset(path).ROIContourSequence[0].ContourSequence[0]
    assert item.get_item(0x30060050).is_raw
    np.testing.assert_array_equal(ds_values(item, "ContourData"), [1.5, -2, 30, 4, 5, 6.25, 7, 8, 9])
    assert [float(v) for v in item.ContourData] == [1.5, -2, 30, 4, 5, 6.25, 7, 8, 9]
    assert item.NumberOfContourPoints == 3


def test_read_dataset_leaves_non_numeric_contour_data_to_pydicom(tmp_path):
    """A ContourData that is not numbers is decoded (and judged) by pydicom during the read, as every other element."""
    import pydicom

    from art.errors import DicomError
    from art.io.dicom_common import read_dataset

    path = _contour_file(tmp_path, b"1.0\\abc\\3 ")
    try:
        expected = [str(v) for v in pydicom.dcmread(path).ROIContourSequence[0].ContourSequence[0].ContourData]
    except Exception:  # pydicom refuses the value: so must read_dataset, naming the file
        with pytest.raises(DicomError, match="rs.dcm"):
            read_dataset(path)
        return
    item = read_dataset(path).ROIContourSequence[0].ContourSequence[0]
    assert not item.get_item(0x30060050).is_raw  # decoded by pydicom during the read
    assert [str(v) for v in item.ContourData] == expected
