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
    write_deformable_registration(np.zeros(g.shape + (3,), np.float32), g, tmp_path / "DREG.dcm", registered=cb, source=ct)
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
    ds = write_deformable_registration(d, rotated_grid, tmp_path / "DREG.dcm", registered=cb, source=ct, pre_matrix=pre)
    assert ds.FrameOfReferenceUID == cb.frame_of_reference_uid  # the registered image's frame
    item = ds.DeformableRegistrationSequence[0]
    assert item.SourceFrameOfReferenceUID == ct.frame_of_reference_uid
    assert [r.ReferencedSOPInstanceUID for r in item.ReferencedImageSequence] == ct.sop_instance_uids
    assert list(item.DeformableRegistrationGridSequence[0].GridDimensions) == [12, 16, 8]  # columns, rows, slices
    reg = read_deformable_registration(tmp_path / "DREG.dcm")
    assert np.allclose(reg.displacement, d, atol=1e-3) and reg.grid.same_as(rotated_grid)  # the whole map survives
    assert np.allclose(reg.pre_matrix, pre, atol=1e-12) and np.allclose(reg.post_matrix, np.eye(4))
    assert reg.source_sop_instance_uids == tuple(ct.sop_instance_uids)
    # the stored vectors are what is left after the pre-deformation matrix: p + d(p) - pre(p)
    stored = np.frombuffer(item.DeformableRegistrationGridSequence[0].VectorGridData, "<f4").reshape(d.shape)
    p = rotated_grid.index_to_lps(np.array([[2.0, 3.0, 4.0]]))[0]
    assert np.allclose(stored[2, 3, 4], p + d[2, 3, 4] - (pre[:3, :3] @ p + pre[:3, 3]), atol=1e-3)
    write_deformable_registration(d, rotated_grid, tmp_path / "b.dcm", registered=cb, source=ct)
    none = read_deformable_registration(tmp_path / "b.dcm")
    assert np.allclose(none.pre_matrix, np.eye(4)) and np.allclose(none.displacement, d, atol=1e-5)


def test_deformable_reader_applies_a_post_matrix(images, tmp_path, small_grid):
    """PS3.3 C.20.3.1.1: source = M_post (M_pre p + D); another system's post matrix is applied, not refused."""
    ct, cb, _ = images
    d = np.zeros(small_grid.shape + (3,), np.float32)
    d[..., 0] = 1.5
    write_deformable_registration(d, small_grid, tmp_path / "D.dcm", registered=cb, source=ct)
    ds = pydicom.dcmread(tmp_path / "D.dcm")
    post = rigid(10.0, (5.0, 0.0, -2.0))
    ds.DeformableRegistrationSequence[0].PostDeformationMatrixRegistrationSequence[0].FrameOfReferenceTransformationMatrix = [
        f"{v:.10g}" for v in post.reshape(-1)
    ]
    ds.save_as(tmp_path / "D.dcm")
    reg = read_deformable_registration(tmp_path / "D.dcm")
    p = small_grid.index_to_lps(np.array([[1.0, 2.0, 3.0]]))[0]
    expected = post[:3, :3] @ (p + [1.5, 0.0, 0.0]) + post[:3, 3]
    assert np.allclose(p + reg.displacement[1, 2, 3], expected, atol=1e-4)


def test_deformable_left_handed_grid_keeps_points(images, tmp_path):
    ct, cb, _ = images
    g = Grid((4, 3, 2), (2.0, 3.0, 4.0), (0.0, 0.0, 10.0), (1, 0, 0, 0, 1, 0, 0, 0, -1))
    d = np.arange(np.prod(g.shape) * 3, dtype=np.float32).reshape(g.shape + (3,))
    write_deformable_registration(d, g, tmp_path / "D.dcm", registered=cb, source=ct, pre_matrix=rigid())
    reg = read_deformable_registration(tmp_path / "D.dcm")
    assert np.linalg.det(reg.grid.direction_matrix) > 0
    # the vector at each LPS point is unchanged
    for k in range(g.shape[0]):
        p = g.index_to_lps(np.array([[k, 1.0, 1.0]]))
        k2 = np.rint(reg.grid.lps_to_index(p)).astype(int)[0]
        assert np.allclose(reg.displacement[k2[0], k2[1], k2[2]], d[k, 1, 1], atol=1e-3)


def test_deformable_refuses_bad_input(images, tmp_path, small_grid):
    ct, cb, _ = images
    with pytest.raises(InputError, match="shape"):
        write_deformable_registration(np.zeros((2, 2, 2, 3)), small_grid, tmp_path / "x.dcm", registered=cb, source=ct)
    with pytest.raises(TypeError):  # the roles are named: the old positional (fixed, moving) call cannot swap them silently
        write_deformable_registration(np.zeros(small_grid.shape + (3,)), small_grid, ct, cb, tmp_path / "x.dcm")
    with pytest.raises(DicomError, match="not a Deformable"):
        write_spatial_registration(rigid(), ct, cb, tmp_path / "r.dcm")
        read_deformable_registration(tmp_path / "r.dcm")
    ds = pydicom.dcmread(tmp_path / "r.dcm")
    assert ds.Modality == "REG"
