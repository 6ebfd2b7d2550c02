"""RT Dose: 16-bit export (resolution, geometry, references), dciodvfy, foreign files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io import PatientInfo, write_image_series
from art.io.rtdose import read_rtdose, write_rtdose
from art.io.validate import run_dciodvfy

PLAN_UID = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rtdose")
    g = Grid((6, 12, 10), (3.0, 2.0, 2.0), (-10.0, -12.0, 5.0))
    return write_image_series(Volume(np.zeros(g.shape, np.float32), g), tmp / "ct", patient=PatientInfo(name="D^D", id="D1"))


def smooth_dose(grid, top=61.7):
    x, y, z = grid.lps_coordinates(np.float64)
    r2 = (x - 3.0) ** 2 + (y + 2.0) ** 2 + (z - 10.0) ** 2
    return Volume((top * np.exp(-r2 / 800.0)).astype(np.float32), grid)


def rotated_grid(left_handed=False):
    a = np.deg2rad(20.0)
    d = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    if left_handed:
        d[:, 2] *= -1
    return Grid((7, 9, 11), (2.5, 3.0, 2.0), (1.0, -4.0, 20.0), tuple(d.ravel()))


@pytest.mark.parametrize("left_handed", [False, True])
def test_round_trip_values_and_geometry(image, tmp_path, left_handed):
    grid = rotated_grid(left_handed)
    dv = smooth_dose(grid)
    ds = write_rtdose(dv, image, tmp_path / "RD.dcm", plan_ds_or_uid=PLAN_UID)
    back = read_rtdose(tmp_path / "RD.dcm")
    top = float(dv.array.max())
    # 16-bit: one step is max/65535, far below 0.1 % of the maximum
    assert float(ds.DoseGridScaling) * 65535 == pytest.approx(top, rel=1e-6)
    pts = grid.index_to_lps(np.argwhere(np.ones(grid.shape, bool)).astype(float))
    idx = np.rint(back.grid.lps_to_index(pts)).astype(int)
    assert np.allclose(back.grid.index_to_lps(idx.astype(float)), pts, atol=1e-3)  # same voxel centres
    got = back.array[idx[:, 0], idx[:, 1], idx[:, 2]]
    err = np.abs(got - dv.array.reshape(-1))
    assert err.max() <= 0.5 * top / 65535 * 1.01 + 1e-6 and err.max() <= 1e-3 * top
    assert np.linalg.det(back.grid.direction_matrix) > 0
    assert back.array.dtype == np.float32


def test_attributes_and_references(image, tmp_path):
    write_rtdose(smooth_dose(image.grid), image, tmp_path / "RD.dcm", plan_ds_or_uid=PLAN_UID)
    ds = pydicom.dcmread(tmp_path / "RD.dcm")
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == PLAN_UID
    assert (ds.BitsAllocated, ds.PixelRepresentation, int(ds.NumberOfFrames)) == (16, 0, image.grid.shape[0])
    assert [float(v) for v in ds.GridFrameOffsetVector] == pytest.approx([0, 3, 6, 9, 12, 15])
    assert ds.FrameOfReferenceUID == image.frame_of_reference_uid and ds.StudyInstanceUID == image.study_instance_uid
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_dciodvfy_accepts_rtdose(image, tmp_path):
    write_rtdose(smooth_dose(rotated_grid()), image, tmp_path / "RD.dcm", plan_ds_or_uid=PLAN_UID)
    errors = run_dciodvfy(tmp_path / "RD.dcm")
    if errors is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    assert errors == []


def test_bad_doses_are_refused(image, tmp_path):
    g = image.grid
    bad = smooth_dose(g)
    bad.array[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        write_rtdose(bad, image, tmp_path / "a.dcm", plan_ds_or_uid=PLAN_UID)
    neg = smooth_dose(g)
    neg.array[0, 0, 0] = -1.0
    with pytest.raises(InputError, match="negative"):
        write_rtdose(neg, image, tmp_path / "a.dcm", plan_ds_or_uid=PLAN_UID)
    with pytest.raises(InputError, match="needs the plan"):
        write_rtdose(smooth_dose(g), image, tmp_path / "a.dcm")
    assert not (tmp_path / "a.dcm").exists()


def test_zero_dose_round_trips(image, tmp_path):
    write_rtdose(Volume(np.zeros(image.grid.shape, np.float32), image.grid), image, tmp_path / "z.dcm", plan_ds_or_uid=PLAN_UID)
    assert float(read_rtdose(tmp_path / "z.dcm").array.max()) == 0.0


def test_absolute_and_reversed_frame_offsets(image, tmp_path):
    dv = smooth_dose(image.grid)
    write_rtdose(dv, image, tmp_path / "RD.dcm", plan_ds_or_uid=PLAN_UID)
    ds = pydicom.dcmread(tmp_path / "RD.dcm")
    z0 = float(ds.ImagePositionPatient[2])
    ds.GridFrameOffsetVector = [f"{z0 + 3.0 * k:.3f}" for k in range(6)]  # absolute (first value not 0)
    ds.save_as(tmp_path / "abs.dcm")
    a = read_rtdose(tmp_path / "abs.dcm")
    assert a.grid.same_as(image.grid) and np.allclose(a.array, read_rtdose(tmp_path / "RD.dcm").array)
    # frames stored top-down: relative offsets 0, -3, ... and the first frame at the top
    arr = ds.pixel_array[::-1].copy()
    ds.PixelData = arr.astype("<u2").tobytes()
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], f"{z0 + 15.0:.3f}"]
    ds.GridFrameOffsetVector = [f"{-3.0 * k:.1f}" for k in range(6)]
    ds.save_as(tmp_path / "rev.dcm")
    r = read_rtdose(tmp_path / "rev.dcm")
    assert r.grid.same_as(image.grid) and np.allclose(r.array, a.array)


def test_uneven_frames_are_refused(image, tmp_path):
    write_rtdose(smooth_dose(image.grid), image, tmp_path / "RD.dcm", plan_ds_or_uid=PLAN_UID)
    ds = pydicom.dcmread(tmp_path / "RD.dcm")
    ds.GridFrameOffsetVector = ["0", "3", "6", "10", "12", "15"]
    ds.save_as(tmp_path / "u.dcm")
    with pytest.raises(DicomError, match="evenly"):
        read_rtdose(tmp_path / "u.dcm")


def test_pydicom_rtdose_32_bit_relative():
    path = get_testdata_file("rtdose.dcm")
    with pytest.raises(DicomError, match="RELATIVE"):
        read_rtdose(path)
    v = read_rtdose(path, allow_relative=True)
    assert v.shape == (15, 10, 10) and v.grid.spacing == (5.0, 10.0, 10.0)
    assert np.allclose(v.grid.origin, (189.43125, 199.43125, -761.87))
    raw = pydicom.dcmread(path).pixel_array
    assert np.allclose(v.array, raw.astype(np.float64) * 1e-6, rtol=1e-6)
