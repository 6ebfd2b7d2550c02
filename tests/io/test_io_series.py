"""CT series: write -> read round trips and every refusal of read_image_series."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io import PatientInfo, new_uid, read_image_series, write_image_series

PATIENT = PatientInfo(name="Testpatient^Secret", id="PID-93117", birth_date="19600101", sex="O")


def rotation(axis, degrees):
    """Rotation matrix about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=float)
    a /= np.linalg.norm(a)
    t = np.deg2rad(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def synthetic_volume(shape=(12, 40, 50), spacing=(2.5, 0.9765625, 1.1), origin=(-24.4, -19.53, -13.75), direction=None, seed=0):
    grid = Grid(shape, spacing, origin, tuple(np.eye(3).ravel() if direction is None else np.asarray(direction).ravel()))
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    arr = -1000 + 1040 * ((j - shape[1] / 2) ** 2 + (i - shape[2] / 2) ** 2 < (shape[1] / 2.5) ** 2)
    arr = arr + 30 * np.sin(k / 2.0) + rng.normal(0, 20, shape) + 300 * (i > shape[2] * 0.7)
    return Volume(arr.astype(np.float32), grid)


def write(tmp_path, name="ct", **kw):
    vol = kw.pop("volume", None) or synthetic_volume()
    folder = tmp_path / name
    series = write_image_series(vol, folder, patient=PATIENT, **kw)
    return vol, series, folder


def assert_no_patient_data(message: str):
    assert "Secret" not in message and "PID-93117" not in message and "19600101" not in message


def edit(path, fn):
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path, enforce_file_format=True)


# ------------------------------------------------------------------ round trips
def test_round_trip_values_grid_uids(tmp_path):
    vol, written, folder = write(
        tmp_path,
        frame_of_reference_uid="1.2.3.4",
        study_instance_uid="1.2.3.5",
        series_instance_uid="1.2.3.6",
        series_description="planning CT",
        study_date="20240131",
        study_time="101500",
    )
    back = read_image_series(folder)
    assert back.volume.array.dtype == np.float32
    assert back.grid.shape == vol.grid.shape
    assert back.grid.same_as(vol.grid, tol_mm=1e-4)
    assert np.allclose(back.grid.direction, vol.grid.direction, atol=1e-9)
    assert np.max(np.abs(back.volume.array - vol.array)) <= 0.5 + 1e-3  # int16 quantisation, slope 1
    assert np.array_equal(back.volume.array, written.volume.array)  # what write says it stored
    assert (back.study_instance_uid, back.series_instance_uid, back.frame_of_reference_uid) == ("1.2.3.5", "1.2.3.6", "1.2.3.4")
    assert back.sop_instance_uids == written.sop_instance_uids
    assert len(set(back.sop_instance_uids)) == vol.grid.shape[0]
    assert back.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert [p.name for p in back.files] == [p.name for p in written.files]
    assert (back.patient.name, back.patient.id, back.patient.birth_date, back.patient.sex) == (
        PATIENT.name, PATIENT.id, PATIENT.birth_date, PATIENT.sex)  # fmt: skip
    assert (back.series_description, back.study_date, back.study_time) == ("planning CT", "20240131", "101500")
    assert back.modality == "CT" and not back.is_cbct
    assert_no_patient_data(repr(back.patient))


@pytest.mark.parametrize("axis,deg", [((1, 2, 3), 25.0), ((0, 0, 1), 90.0), ((1, 0, 0), -70.0)])
def test_round_trip_oblique_direction(tmp_path, axis, deg):
    r = rotation(axis, deg)
    vol, written, folder = write(tmp_path, volume=synthetic_volume(direction=r))
    back = read_image_series(folder)
    assert np.allclose(back.grid.direction_matrix, r, atol=1e-9)
    assert np.allclose(back.grid.origin, vol.grid.origin, atol=1e-6)
    assert np.allclose(back.grid.spacing, vol.grid.spacing, atol=1e-6)
    assert np.max(np.abs(back.volume.array - vol.array)) <= 0.5 + 1e-3
    # the ImagePositionPatient of slice k is the LPS position of voxel (k, 0, 0)
    for k, path in enumerate(back.files):
        ipp = np.array([float(v) for v in pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient])
        assert np.allclose(ipp, vol.grid.index_to_lps([k, 0, 0]), atol=1e-6)


def test_left_handed_grid_is_written_reversed_but_same_voxels(tmp_path):
    d = np.diag([1.0, 1.0, -1.0])  # slices go towards the feet
    vol, written, folder = write(tmp_path, volume=synthetic_volume(direction=d))
    back = read_image_series(folder)
    assert np.linalg.det(back.grid.direction_matrix) > 0
    nz = vol.grid.shape[0]
    for k in (0, 3, nz - 1):
        p_back = back.grid.index_to_lps([k, 5, 7])
        p_orig = vol.grid.index_to_lps([nz - 1 - k, 5, 7])
        assert np.allclose(p_back, p_orig, atol=1e-6)
        assert abs(back.volume.array[k, 5, 7] - vol.array[nz - 1 - k, 5, 7]) <= 0.5 + 1e-3


def test_write_is_deterministic_given_uids(tmp_path):
    kw = dict(frame_of_reference_uid=new_uid(), study_instance_uid=new_uid(), series_instance_uid=new_uid())
    _, a, _ = write(tmp_path, name="a", **kw)
    _, b, _ = write(tmp_path, name="b", **kw)
    assert [p.name for p in a.files] == [p.name for p in b.files]
    for pa, pb in zip(a.files, b.files):
        assert pa.read_bytes() == pb.read_bytes()
    _, c, _ = write(tmp_path, name="c")
    assert c.series_instance_uid != a.series_instance_uid and c.sop_instance_uids[0] != a.sop_instance_uids[0]


def test_ds_values_fit_16_characters_and_file_meta(tmp_path):
    vol = synthetic_volume(spacing=(1 / 3, 0.9765625, 2 / 3), origin=(-123.456789012345, 98.7654321098765, -1 / 7),
                           direction=rotation((1, 1, 0), 33.3))  # fmt: skip
    _, written, _ = write(tmp_path, volume=vol)
    ds = pydicom.dcmread(written.files[3])
    n_ds = 0
    for elem in ds.iterall():
        if elem.VR == "DS":
            values = elem.value if elem.VM > 1 else [elem.value]
            for v in values:
                n_ds += 1
                assert len(str(v.original_string if hasattr(v, "original_string") else v)) <= 16
    assert n_ds >= 12
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 1
    assert written.files[3].name == f"CT.{ds.SOPInstanceUID}.dcm"


def test_values_beyond_int16_use_a_slope(tmp_path):
    vol = synthetic_volume()
    vol.array[2, 3, 4] = 60000.0
    vol.array[5, 6, 7] = -40000.0
    _, written, folder = write(tmp_path, volume=vol)
    back = read_image_series(folder)
    slope = float(pydicom.dcmread(written.files[0], stop_before_pixels=True).RescaleSlope)
    assert slope > 1
    assert np.max(np.abs(back.volume.array - vol.array)) <= slope / 2 + 1e-3


def test_cbct_marked_and_recognised(tmp_path):
    _, written, folder = write(tmp_path, is_cbct=True)
    back = read_image_series(folder)
    assert back.is_cbct and back.modality == "CT"
    assert "CBCT" in back.image_type


def test_per_slice_rescale_applied(tmp_path):
    vol, written, folder = write(tmp_path)

    def shift(ds):  # store the same HU as unsigned values + intercept -2048
        arr = ds.pixel_array.astype(np.int32) + 2048
        assert arr.min() >= 0
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-2048"
        ds.PixelData = arr.astype("<u2").tobytes()

    edit(written.files[4], shift)
    back = read_image_series(folder)
    assert np.array_equal(back.volume.array, written.volume.array)


def test_writer_refuses_bad_input(tmp_path):
    vol = synthetic_volume()
    bad = vol.copy()
    bad.array[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_image_series(bad, tmp_path / "x", patient=PATIENT)
    one = Volume(vol.array[:1].copy(), Grid((1, 40, 50), vol.grid.spacing, vol.grid.origin))
    with pytest.raises(InputError, match="two slices"):
        write_image_series(one, tmp_path / "y", patient=PATIENT)
    with pytest.raises(InputError, match="UID"):
        write_image_series(vol, tmp_path / "z", patient=PATIENT, series_instance_uid="1.02.abc")


# ------------------------------------------------------------------ messy folders
def test_shuffled_names_and_junk_files(tmp_path):
    vol, written, folder = write(tmp_path)
    rng = np.random.default_rng(1)
    for p in written.files:
        p.rename(folder / f"x{rng.integers(1e9)}")  # no extension, random order
    (folder / "README").write_text("exported by hand\n")
    (folder / "notes.txt").write_text("nothing to see")
    (folder / "thumb.png").write_bytes(bytes(range(256)) * 3)
    (folder / "empty").write_bytes(b"")
    (folder / "sub").mkdir()
    dicomdir = pydicom.Dataset()  # a DICOMDIR-like file: file meta but no SOP instance
    dicomdir.file_meta = pydicom.dataset.FileMetaDataset()
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.file_meta.MediaStorageSOPInstanceUID = new_uid()
    dicomdir.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    dicomdir.FileSetID = "ART"
    dicomdir.save_as(folder / "DICOMDIR", enforce_file_format=True)
    back = read_image_series(folder)
    assert np.array_equal(back.volume.array, written.volume.array)
    assert back.sop_instance_uids == written.sop_instance_uids
    assert back.grid.same_as(written.grid)


def test_raw_datasets_without_preamble_are_read(tmp_path):
    """Old exports: no preamble, no file meta, implicit VR; file names without extension."""
    vol, written, folder = write(tmp_path)
    for k, p in enumerate(written.files):
        ds = pydicom.dcmread(p)
        del ds.file_meta
        ds.preamble = None
        ds.save_as(folder / f"IM{k:04d}", implicit_vr=True, little_endian=True)
        p.unlink()
    assert not any(open(p, "rb").read(132)[128:132] == b"DICM" for p in folder.iterdir())
    back = read_image_series(folder)
    assert np.array_equal(back.volume.array, written.volume.array)
    assert back.grid.same_as(written.grid)


def test_second_series_needs_series_uid(tmp_path):
    vol, first, folder = write(tmp_path)
    other = synthetic_volume(shape=(7, 40, 50), seed=4)
    second = write_image_series(other, folder, patient=PATIENT)
    with pytest.raises(DicomError) as info:
        read_image_series(folder)
    msg = str(info.value)
    assert first.series_instance_uid in msg and second.series_instance_uid in msg
    assert "12 slices" in msg and "7 slices" in msg
    assert_no_patient_data(msg)
    back = read_image_series(folder, series_uid=second.series_instance_uid)
    assert back.grid.shape == (7, 40, 50)
    assert np.array_equal(back.volume.array, second.volume.array)
    with pytest.raises(DicomError, match="not in the folder"):
        read_image_series(folder, series_uid="1.2.3")


def test_missing_middle_slice_names_gap(tmp_path):
    vol, written, folder = write(tmp_path)
    written.files[5].unlink()
    with pytest.raises(DicomError) as info:
        read_image_series(folder)
    msg = str(info.value)
    z4, z6 = vol.grid.index_to_lps([4, 0, 0])[2], vol.grid.index_to_lps([6, 0, 0])[2]
    assert "uneven slice spacing" in msg and f"{z4:.3f}" in msg and f"{z6:.3f}" in msg
    assert str(folder) in msg
    assert_no_patient_data(msg)


def test_duplicated_position(tmp_path):
    vol, written, folder = write(tmp_path)
    # the very same instance stored twice: one copy kept
    shutil.copy(written.files[3], folder / "copy_of_slice_4.dcm")
    back = read_image_series(folder)
    assert back.grid.shape == vol.grid.shape
    # a distinct instance at the same position: refused
    dup = folder / "another.dcm"
    shutil.copy(written.files[3], dup)
    edit(dup, lambda ds: setattr(ds, "SOPInstanceUID", new_uid()))
    with pytest.raises(DicomError, match="same slice position"):
        read_image_series(folder)


def test_gantry_tilt_attribute_refused(tmp_path):
    _, written, folder = write(tmp_path)
    for p in written.files:
        edit(p, lambda ds: setattr(ds, "GantryDetectorTilt", "12"))
    with pytest.raises(DicomError, match="tilt"):
        read_image_series(folder)


def test_sheared_positions_refused(tmp_path):
    vol, written, folder = write(tmp_path)
    dz = vol.grid.spacing[0]
    for k, p in enumerate(written.files):

        def tilt(ds, k=k):
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [f"{x:.6f}", f"{y + k * dz * np.tan(np.deg2rad(5)):.6f}", f"{z:.6f}"]

        edit(p, tilt)
    with pytest.raises(DicomError, match="not along the slice normal"):
        read_image_series(folder)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the damaged values
@pytest.mark.parametrize("keep_bytes", [300, 400, 700, 1000, -7, None])
def test_truncated_file_named(tmp_path, keep_bytes):
    _, written, folder = write(tmp_path)
    victim = written.files[7]
    data = victim.read_bytes()
    victim.write_bytes(data[: keep_bytes or len(data) // 2])  # header, mid-UID, ..., pixels
    with pytest.raises(DicomError) as info:
        read_image_series(folder)
    assert victim.name in str(info.value)


def test_mr_only_folder_refused(tmp_path):
    _, written, folder = write(tmp_path)

    def to_mr(ds):
        ds.Modality = "MR"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID

    for p in written.files:
        edit(p, to_mr)
    with pytest.raises(DicomError) as info:
        read_image_series(folder)
    assert "no CT image" in str(info.value) and "MR" in str(info.value)
    back = read_image_series(folder, modalities=("MR",))
    assert back.modality == "MR"


def test_inconsistent_pixel_spacing_refused(tmp_path):
    _, written, folder = write(tmp_path)
    edit(written.files[6], lambda ds: setattr(ds, "PixelSpacing", ["1.0", "1.2"]))
    with pytest.raises(DicomError, match="PixelSpacing differs") as info:
        read_image_series(folder)
    assert written.files[6].name in str(info.value)


def test_inconsistent_orientation_and_size_refused(tmp_path):
    _, written, folder = write(tmp_path)
    edit(written.files[2], lambda ds: setattr(ds, "ImageOrientationPatient", ["0", "1", "0", "1", "0", "0"]))
    with pytest.raises(DicomError, match="ImageOrientationPatient differs"):
        read_image_series(folder)


def test_single_slice_and_empty_folder_refused(tmp_path):
    _, written, folder = write(tmp_path)
    for p in written.files[1:]:
        p.unlink()
    with pytest.raises(DicomError, match="single slice"):
        read_image_series(folder)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hello")
    with pytest.raises(DicomError, match="no CT image"):
        read_image_series(tmp_path / "empty")
    with pytest.raises(DicomError, match="not a folder"):
        read_image_series(tmp_path / "nope")


def test_non_finite_pixels_refused(tmp_path):
    _, written, folder = write(tmp_path)

    def float_slope(ds):
        ds.RescaleSlope = "1e308"
        ds.RescaleIntercept = "1e308"

    edit(written.files[1], float_slope)
    with pytest.raises(DicomError, match="not finite"):
        read_image_series(folder)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_accepts_ct_slices(tmp_path):
    _, written, _ = write(tmp_path, volume=synthetic_volume(direction=rotation((1, 2, 3), 25)), is_cbct=True)
    res = subprocess.run(["dciodvfy", str(written.files[0])], capture_output=True, text=True, timeout=60)
    errors = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]
    assert errors == []
    assert "CTImage" in res.stdout + res.stderr
