"""RTSTRUCT: masks -> contours -> masks on analytic shapes, references, foreign files."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from art.errors import DicomError, GeometryError
from art.geometry import Grid, Volume
from art.io import PatientInfo, read_image_series, read_rtstruct, structures_to_dataset, write_image_series, write_rtstruct
from art.io.rtstruct import rasterise_contours
from art.structures import Structure, StructureSet


def rotation(axis, degrees):
    a = np.asarray(axis, dtype=float)
    a /= np.linalg.norm(a)
    t = np.deg2rad(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def make_image(tmp_path, direction=None, shape=(40, 90, 110), spacing=(3.0, 2.0, 2.0), name="ct"):
    d = np.eye(3) if direction is None else np.asarray(direction)
    centre = np.array([5.0, -12.0, 30.0])  # LPS of the grid centre
    half = np.array([(n - 1) * s / 2 for n, s in zip(shape, spacing)])[::-1]
    origin = centre - d @ half
    grid = Grid(shape, spacing, tuple(origin), tuple(d.ravel()))
    vol = Volume(np.full(shape, -1000.0, dtype=np.float32), grid)
    image = write_image_series(vol, tmp_path / name, patient=PatientInfo(name="Anon^Test", id="X"))
    return image, centre


def analytic_shapes(grid, centre):
    """Boolean masks (voxel centres inside) of analytic shapes, in the grid's own axes around ``centre``."""
    x, y, z = grid.lps_coordinates(np.float64)
    p = np.stack([x - centre[0], y - centre[1], z - centre[2]], axis=-1) @ grid.direction_matrix  # local (u, v, w) mm
    u, v, w = p[..., 0], p[..., 1], p[..., 2]
    r_uv = np.hypot(u, v)
    shapes = {
        "Sphere": (u - 40) ** 2 + v**2 + w**2 < 25.0**2,
        "Ellipsoid": (u / 30.0) ** 2 + ((v - 40) / 18.0) ** 2 + (w / 40.0) ** 2 < 1.0,
        "Ring": (r_uv > 12.0) & (r_uv < 26.0) & (np.abs(w + 20) < 25.0),  # a hole on every slice
        "Islands": (((u + 45) ** 2 + (v + 45) ** 2 < 12.0**2) | ((u + 45) ** 2 + (v - 5) ** 2 < 12.0**2)) & (np.abs(w) < 21.0),
        "C-shape": (r_uv > 15.0) & (r_uv < 30.0) & ~((u > 0) & (np.abs(v) < 8.0)) & (np.abs(w - 30) < 15.0),
    }
    return shapes, (u, v, w)


TYPES = {"Sphere": "PTV", "Ellipsoid": "ORGAN", "Ring": "AVOIDANCE", "Islands": "GTV", "C-shape": "ORGAN"}
COLORS = {"Sphere": (255, 0, 0), "Ellipsoid": (0, 128, 255), "Ring": (12, 200, 40), "Islands": (250, 250, 0), "C-shape": (128, 0, 128)}


def structure_set(grid, shapes):
    ss = StructureSet(grid)
    for name, m in shapes.items():
        ss.add(Structure(name, m, grid, TYPES.get(name, "ORGAN"), COLORS.get(name, (1, 2, 3))))
    return ss


@pytest.mark.parametrize("direction", [None, rotation((1, 2, 3), 25.0)], ids=["axial", "oblique"])
def test_round_trip_analytic_shapes(tmp_path, direction):
    image, centre = make_image(tmp_path, direction)
    shapes, _ = analytic_shapes(image.grid, centre)
    ss = structure_set(image.grid, shapes)
    for s in ss:
        assert s.volume_cc >= 5.0, s.name
    path = tmp_path / "RS.dcm"
    write_rtstruct(ss, image, path)
    back = read_rtstruct(path, image)
    assert back.names == ss.names
    for s in ss:
        b = back[s.name]
        d = dice(s.mask, b.mask)
        assert d >= 0.98, (s.name, d)
        assert abs(b.volume_cc - s.volume_cc) <= 0.02 * s.volume_cc
        assert b.roi_type == s.roi_type and b.color == s.color
    # the ring really has its hole and the islands are two
    from scipy import ndimage

    ring = back["Ring"].mask
    k_mid = int(np.argmax(ring.sum(axis=(1, 2))))
    assert ndimage.label(~ring[k_mid])[1] >= 2  # background outside + the hole
    isl = back["Islands"].mask
    k_isl = int(np.argmax(isl.sum(axis=(1, 2))))
    assert ndimage.label(isl[k_isl])[1] == 2


def test_contour_points_lie_on_the_analytic_surface(tmp_path):
    """Independent of our reader: sphere contour points in the file are ~R from the centre (LPS)."""
    d = rotation((0, 1, 1), 40.0)
    image, centre = make_image(tmp_path, d)
    shapes, _ = analytic_shapes(image.grid, centre)
    ds = structures_to_dataset(structure_set(image.grid, {"Sphere": shapes["Sphere"]}), image)
    sphere_centre = centre + d @ np.array([40.0, 0.0, 0.0])
    radii = []
    for c in ds.ROIContourSequence[0].ContourSequence:
        pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
        assert c.ContourGeometricType == "CLOSED_PLANAR" and int(c.NumberOfContourPoints) == len(pts)
        assert not np.allclose(pts[0], pts[-1])  # first point not repeated
        # planar, in the plane of its image slice
        kk = image.grid.lps_to_index(pts)[:, 0]
        assert np.ptp(kk) < 1e-4 and abs(kk[0] - round(kk[0])) < 1e-4  # 4 decimals of a mm
        # in-plane radius against the analytic circle of that slice
        w = (pts - sphere_centre) @ d[:, 2]
        r_plane = np.linalg.norm((pts - sphere_centre) - np.outer(w, d[:, 2]), axis=1)
        expected = np.sqrt(np.maximum(25.0**2 - w**2, 0))
        radii.append(r_plane - expected)
    err = np.concatenate(radii)
    assert np.abs(np.median(err)) < 0.5  # mm; voxel 2 mm
    assert np.max(np.abs(err)) < 2.5


def test_shifted_contours_fail_the_dice_threshold(tmp_path):
    """The Dice check above can fail: moving the contours by one voxel (2 mm) drops it below 0.98."""
    image, centre = make_image(tmp_path)
    shapes, _ = analytic_shapes(image.grid, centre)
    ss = structure_set(image.grid, {"Sphere": shapes["Sphere"]})
    ds = structures_to_dataset(ss, image)
    for c in ds.ROIContourSequence[0].ContourSequence:
        pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
        pts[:, 0] += 2.0
        c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
    path = tmp_path / "RS_shifted.dcm"
    ds.save_as(path, enforce_file_format=True)
    back = read_rtstruct(path, image)
    d = dice(back["Sphere"].mask, ss["Sphere"].mask)
    assert d < 0.98
    assert d > 0.85  # still the same sphere, just moved
    # and it moved the right way: +2 mm in LPS x is +1 column on an axial grid
    assert np.array_equal(back["Sphere"].mask[:, :, 1:], ss["Sphere"].mask[:, :, :-1])


def test_references_and_modules(tmp_path):
    image, centre = make_image(tmp_path, shape=(20, 60, 70))
    shapes, _ = analytic_shapes(image.grid, centre)
    ss = structure_set(image.grid, {"Sphere": shapes["Sphere"], "Islands": shapes["Islands"]})
    ss.add(Structure("Empty", np.zeros(image.grid.shape, bool), image.grid, "", (9, 9, 9)))
    path = tmp_path / "out"
    path.mkdir()
    ds = write_rtstruct(ss, image, path, label="daily", series_instance_uid="1.2.3.77")
    files = list(path.iterdir())
    assert len(files) == 1 and files[0].name == f"RS.{ds.SOPInstanceUID}.dcm"
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.StudyInstanceUID == image.study_instance_uid and ds.PatientID == "X"
    assert ds.SeriesInstanceUID == "1.2.3.77" != image.series_instance_uid
    assert ds.FrameOfReferenceUID == image.frame_of_reference_uid
    assert ds.StructureSetLabel == "daily"
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == image.frame_of_reference_uid
    study = ref.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == image.study_instance_uid
    series = study.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == image.series_instance_uid
    assert [it.ReferencedSOPInstanceUID for it in series.ContourImageSequence] == image.sop_instance_uids
    names = {int(r.ROINumber): r.ROIName for r in ds.StructureSetROISequence}
    assert list(names.values()) == ["Sphere", "Islands", "Empty"]
    for r in ds.StructureSetROISequence:
        assert r.ReferencedFrameOfReferenceUID == image.frame_of_reference_uid and r.ROIGenerationAlgorithm
    types = {int(o.ReferencedROINumber): o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    assert types == {1: "PTV", 2: "GTV", 3: ""}
    n_contours = 0
    for rc in ds.ROIContourSequence:
        name = names[int(rc.ReferencedROINumber)]
        assert tuple(int(v) for v in rc.ROIDisplayColor) == ss[name].color
        for c in rc.get("ContourSequence", []):
            n_contours += 1
            pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
            k = int(round(image.grid.lps_to_index(pts)[0, 0]))
            assert c.ContourImageSequence[0].ReferencedSOPInstanceUID == image.sop_instance_uids[k]
            assert c.ContourImageSequence[0].ReferencedSOPClassUID == image.sop_class_uid
    assert n_contours > 10
    assert "ContourSequence" not in ds.ROIContourSequence[2]
    # the islands make two contours per slice
    isl_k = [int(round(image.grid.lps_to_index(np.array([float(v) for v in c.ContourData[:3]]))[0]))
             for c in ds.ROIContourSequence[1].ContourSequence]  # fmt: skip
    assert max(isl_k.count(k) for k in set(isl_k)) == 2
    back = read_rtstruct(files[0], image)
    assert back["Empty"].is_empty and back["Empty"].roi_type == "" and back["Empty"].color == (9, 9, 9)
    # an RTSTRUCT in the CT folder is ignored by the series reader
    shutil.copy(files[0], image.files[0].parent / "RS.dcm")
    again = read_image_series(image.files[0].parent)
    assert again.sop_instance_uids == image.sop_instance_uids


def test_frame_of_reference_mismatch(tmp_path):
    image, centre = make_image(tmp_path, shape=(10, 40, 40))
    other, _ = make_image(tmp_path, shape=(10, 40, 40), name="other")
    assert other.frame_of_reference_uid != image.frame_of_reference_uid
    mask = np.zeros(image.grid.shape, bool)
    mask[3:7, 10:30, 12:25] = True
    path = tmp_path / "RS.dcm"
    write_rtstruct(StructureSet(image.grid, [Structure("Box", mask, image.grid)]), image, path)
    with pytest.raises(DicomError) as info:
        read_rtstruct(path, other)
    assert str(path) in str(info.value) and "frame of reference" in str(info.value)
    with pytest.warns(UserWarning, match="frame of reference"):
        loose = read_rtstruct(path, other, strict_references=False)
    assert np.array_equal(loose["Box"].mask, mask)  # same grid geometry here
    assert np.array_equal(read_rtstruct(path, image.grid)["Box"].mask, mask)  # bare grid: no check


def test_grid_mismatch_and_not_an_rtstruct(tmp_path):
    image, _ = make_image(tmp_path, shape=(10, 40, 40))
    g2 = image.grid.with_spacing((3.0, 2.5, 2.5))
    with pytest.raises(GeometryError, match="not on the image grid"):
        structures_to_dataset(StructureSet(g2, [Structure("A", np.ones(g2.shape, bool), g2)]), image)
    with pytest.raises(DicomError, match="not an RTSTRUCT"):
        read_rtstruct(image.files[0], image)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")
    with pytest.raises(DicomError) as info:
        read_rtstruct(junk, image)
    assert "junk.dcm" in str(info.value)


def test_pydicom_rtstruct_test_file():
    path = get_testdata_file("rtstruct.dcm")
    ds = pydicom.dcmread(path, force=True)
    all_pts = np.concatenate([np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
                              for rc in ds.ROIContourSequence for c in rc.ContourSequence])  # fmt: skip
    lo, hi = all_pts.min(axis=0), all_pts.max(axis=0)
    spacing = (10.0, 5.0, 5.0)  # contours every 10 mm in z
    shape = tuple(int(np.ceil((h - lo_) / s)) + 3 for h, lo_, s in zip(hi[::-1], lo[::-1], spacing))
    grid = Grid(shape, spacing, tuple(lo - np.array([5.0, 5.0, 0.0])))
    ss = read_rtstruct(path, grid)
    assert ss.names == ["patient", "Isocenter 1", "Isocenter 2"]
    body = ss["patient"]
    assert body.roi_type == "EXTERNAL" and body.color == (220, 160, 120)
    assert ss["Isocenter 1"].roi_type == "ISOCENTER" and ss["Isocenter 1"].is_empty  # POINT contours: no area
    # area per slice against the shoelace area of each polygon (plane z)
    for c in ds.ROIContourSequence[0].ContourSequence:
        pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
        x, y = pts[:, 0], pts[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
        k = int(round(grid.lps_to_index(pts[0])[0]))
        got = body.mask[k].sum() * 25.0
        perimeter = np.sum(np.hypot(np.diff(np.append(x, x[0])), np.diff(np.append(y, y[0]))))
        assert abs(got - area) <= 0.5 * 5.0 * perimeter + 50, (got, area)
    assert body.mask.sum() > 0
    # the polygons are kept as given (closed planar only: the POINT ROIs keep none)
    given = [np.array([float(v) for v in c.ContourData]).reshape(-1, 3) for c in ds.ROIContourSequence[0].ContourSequence]
    assert body.contours is not None and len(body.contours) == len(given)
    assert all(np.array_equal(a, b) for a, b in zip(body.contours, given))
    assert ss["Isocenter 1"].contours is None


def test_structure_contours_are_checked():
    from art.errors import InputError
    from art.structures import Structure

    grid = Grid((2, 4, 4), (3.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="'PTV'.*contour"):
        Structure("PTV", np.zeros(grid.shape, bool), grid, roi_type="PTV", contours=(np.zeros((2, 3)),))
    s = Structure("PTV", np.zeros(grid.shape, bool), grid, roi_type="PTV", contours=[[[0, 0, 0], [1, 0, 0], [1, 1, 0]]])
    assert isinstance(s.contours, tuple) and s.contours[0].dtype == np.float64 and s.contours[0].shape == (3, 3)


def test_even_odd_and_nearest_plane_rasterisation():
    grid = Grid((4, 20, 20), (3.0, 1.0, 1.0), (0.0, 0.0, 0.0))

    def square(x0, x1, y0, y1, z):
        return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=float)

    outer, inner = square(2.5, 15.5, 2.5, 15.5, 3.0), square(6.5, 10.5, 6.5, 10.5, 3.0)
    island = square(17.5, 19.2, 0.2, 3.5, 3.0)
    mask = rasterise_contours([outer, inner, island], grid)
    expected = np.zeros(grid.shape, bool)
    expected[1, 3:16, 3:16] = True
    expected[1, 7:11, 7:11] = False
    expected[1, 1:4, 18:20] = True
    assert np.array_equal(mask, expected)
    # two planes within half a slice of slice 2 (z = 5.5 and 6.4): the nearest (6.4) wins, no XOR
    a, b = square(2.5, 8.5, 2.5, 8.5, 5.5), square(4.5, 12.5, 4.5, 12.5, 6.4)
    for polys in ([a, b], [b, a]):
        m2 = rasterise_contours(polys, grid)
        assert np.array_equal(m2[2], rasterise_contours([square(4.5, 12.5, 4.5, 12.5, 6.0)], grid)[2])
        assert m2[1].sum() == 0 and m2[2].sum() == 64
    # off-grid and oblique contours are skipped
    skipped = {"off": 0, "oblique": 0}
    tilted = np.array([[1, 1, 0.0], [10, 1, 0.0], [10, 10, 6.0]])
    m3 = rasterise_contours([square(1, 5, 1, 5, 30.0), tilted], grid, _skipped=skipped)
    assert not m3.any() and skipped == {"off": 1, "oblique": 1}


def test_off_slice_contours_warn(tmp_path):
    image, centre = make_image(tmp_path, shape=(10, 40, 40))
    mask = np.zeros(image.grid.shape, bool)
    mask[3:7, 10:30, 12:25] = True
    ds = structures_to_dataset(StructureSet(image.grid, [Structure("Box", mask, image.grid)]), image)
    c = ds.ROIContourSequence[0].ContourSequence[0]
    pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
    pts[:, 2] += 500.0
    c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
    path = tmp_path / "RS.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.warns(UserWarning, match="skipped 1 contour"):
        back = read_rtstruct(path, image)
    assert back["Box"].mask.sum() == mask[4:7].sum()


def test_write_is_deterministic(tmp_path):
    image, centre = make_image(tmp_path, shape=(10, 40, 40))
    mask = np.zeros(image.grid.shape, bool)
    mask[3:7, 10:30, 12:25] = True
    ss = StructureSet(image.grid, [Structure("Box", mask, image.grid)])
    write_rtstruct(ss, image, tmp_path / "a.dcm", series_instance_uid="1.2.3.9")
    write_rtstruct(ss, image, tmp_path / "b.dcm", series_instance_uid="1.2.3.9")
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_accepts_rtstruct(tmp_path):
    image, centre = make_image(tmp_path, rotation((1, 2, 3), 25.0), shape=(12, 50, 50))
    shapes, _ = analytic_shapes(image.grid, centre)
    path = tmp_path / "RS.dcm"
    write_rtstruct(structure_set(image.grid, {"Sphere": shapes["Sphere"]}), image, path)
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    assert "RTStructureSet" in out
    assert [line for line in out.splitlines() if line.startswith("Error")] == []
