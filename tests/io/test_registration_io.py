"""Spatial Registration (rigid) and Deformable Spatial Registration objects: round trip, direction, dciodvfy."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io import PatientInfo, write_image_series
from art.io.registration import (
    read_deformable_registration,
    read_spatial_registration,
    write_deformable_registration,
    write_spatial_registration,
)
from art.io.validate import run_dciodvfy


def rigid(angle_deg=7.0, t=(4.0, -3.5, 12.25)):
    a = np.deg2rad(angle_deg)
    m = np.eye(4)
    m[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    m[:3, 3] = t
    return m


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reg")
    g = Grid((5, 8, 9), (3.0, 2.0, 2.0), (-10.0, -8.0, 0.0))
    p = PatientInfo(name="R^R", id="R1")
    ct = write_image_series(Volume(np.zeros(g.shape, np.float32), g), tmp / "ct", patient=p)
    # the CBCT shares the CT's frame of reference (as the phantoms' do) but is another series
    cb = write_image_series(
        Volume(np.zeros(g.shape, np.float32), g), tmp / "cb", patient=p, frame_of_reference_uid=ct.frame_of_reference_uid
    )
    other = write_image_series(Volume(np.zeros(g.shape, np.float32), g), tmp / "other", patient=p)
    return ct, cb, other


@pytest.mark.parametrize("shared_for", [True, False])
def test_rigid_round_trip_and_direction(images, tmp_path, shared_for):
    ct, cb, other = images
    moving = cb if shared_for else other
    m = rigid()
    ds = write_spatial_registration(m, ct, moving, tmp_path / "REG.dcm")
    assert ds.FrameOfReferenceUID == ct.frame_of_reference_uid  # the fixed image's frame
    items = ds.RegistrationSequence
    assert items[1].FrameOfReferenceUID == moving.frame_of_reference_uid
    assert [r.ReferencedSOPInstanceUID for r in items[1].ReferencedImageSequence] == moving.sop_instance_uids
    got = read_spatial_registration(tmp_path / "REG.dcm")
    assert np.allclose(got, m, atol=1e-12)
    assert np.allclose(read_spatial_registration(tmp_path / "REG.dcm", moving=ct), np.eye(4))
    assert np.allclose(read_spatial_registration(tmp_path / "REG.dcm", moving=moving), m, atol=1e-12)
    # direction: a moving-image point maps to the fixed image by M
    p_moving = np.array([10.0, 20.0, 30.0, 1.0])
    assert np.allclose(got @ p_moving, m @ p_moving)


def test_rigid_refuses_non_rigid(images, tmp_path):
    ct, cb, _ = images
    m = rigid()
    m[0, 0] *= 1.1
    with pytest.raises(InputError, match="not rigid"):
        write_spatial_registration(m, ct, cb, tmp_path / "x.dcm")
    with pytest.raises(InputError, match="4 x 4"):
        write_spatial_registration(np.eye(3), ct, cb, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_dciodvfy_accepts_both_registrations(images, tmp_path):
    ct, cb, other = images
    write_spatial_registration(rigid(), ct, other, tmp_path / "REG.dcm")
    g = Grid((3, 4, 5), (6.0, 5.0, 4.0), (-10.0, -8.0, 0.0))
    write_deformable_registration(np.zeros(g.shape + (3,), np.float32), g, ct, cb, tmp_path / "DREG.dcm")
    for name in ("REG.dcm", "DREG.dcm"):
        errors = run_dciodvfy(tmp_path / name)
        if errors is None:
            pytest.skip("dciodvfy (dicom3tools) not installed")
        assert errors == [], name


def test_deformable_round_trip(images, tmp_path, rotated_grid):
    ct, cb, _ = images
    rng = np.random.default_rng(3)
    d = rng.normal(0, 2.0, rotated_grid.shape + (3,)).astype(np.float32)
    pre = rigid(-3.0, (1.0, 2.0, -0.5))
    ds = write_deformable_registration(d, rotated_grid, ct, cb, tmp_path / "DREG.dcm", pre_matrix=pre)
    item = ds.DeformableRegistrationSequence[0]
    assert item.SourceFrameOfReferenceUID == cb.frame_of_reference_uid
    assert list(item.DeformableRegistrationGridSequence[0].GridDimensions) == [12, 16, 8]  # columns, rows, slices
    d2, g2, pre2 = read_deformable_registration(tmp_path / "DREG.dcm")
    assert np.array_equal(d2, d) and g2.same_as(rotated_grid)
    assert np.allclose(pre2, pre, atol=1e-12)
    write_deformable_registration(d, rotated_grid, ct, cb, tmp_path / "b.dcm")
    _, _, none = read_deformable_registration(tmp_path / "b.dcm")
    assert np.allclose(none, np.eye(4))


def test_deformable_left_handed_grid_keeps_points(images, tmp_path):
    ct, cb, _ = images
    g = Grid((4, 3, 2), (2.0, 3.0, 4.0), (0.0, 0.0, 10.0), (1, 0, 0, 0, 1, 0, 0, 0, -1))
    d = np.arange(np.prod(g.shape) * 3, dtype=np.float32).reshape(g.shape + (3,))
    write_deformable_registration(d, g, ct, cb, tmp_path / "D.dcm")
    d2, g2, _ = read_deformable_registration(tmp_path / "D.dcm")
    assert np.linalg.det(g2.direction_matrix) > 0
    # the vector at each LPS point is unchanged
    for k in range(g.shape[0]):
        p = g.index_to_lps(np.array([[k, 1.0, 1.0]]))
        k2 = np.rint(g2.lps_to_index(p)).astype(int)[0]
        assert np.array_equal(d2[k2[0], k2[1], k2[2]], d[k, 1, 1])


def test_deformable_refuses_bad_input(images, tmp_path, small_grid):
    ct, cb, _ = images
    with pytest.raises(InputError, match="shape"):
        write_deformable_registration(np.zeros((2, 2, 2, 3)), small_grid, ct, cb, tmp_path / "x.dcm")
    with pytest.raises(DicomError, match="not a Deformable"):
        write_spatial_registration(rigid(), ct, cb, tmp_path / "r.dcm")
        read_deformable_registration(tmp_path / "r.dcm")
    ds = pydicom.dcmread(tmp_path / "r.dcm")
    assert ds.Modality == "REG"
