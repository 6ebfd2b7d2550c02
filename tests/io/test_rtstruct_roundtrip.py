"""Issue 15 item 5: structures exported as given; masks traced with sub-voxel accuracy.

The input RTSTRUCT is written here with pydicom, as another planning system would
(analytic polygons, 6-decimal strings), then read by ``read_rtstruct``, exported by
``write_rtstruct`` and read again.  Volumes and distances are checked against the
analytic shapes, computed in this file.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from art.errors import GeometryError, InputError
from art.geometry import Grid, Volume
from art.io import PatientInfo, read_rtstruct, write_image_series, write_rtstruct
from art.io.rtstruct_write import format_ds_exact
from art.structures import Structure, StructureSet

CENTRE = np.array([3.3, -7.7, 0.0])  # LPS mm, the shapes' centre (not on a voxel centre)


def make_image(tmp_path, *, spacing=(2.0, 2.0, 2.0), shape=(30, 70, 80), name="ct", for_uid=None):
    """An axial CT series whose slice planes are z = -29 + 2 k (slice spacing 2 mm), centred on CENTRE in-plane."""
    half = np.array([(shape[2] - 1) * spacing[2], (shape[1] - 1) * spacing[1]]) / 2
    origin = (CENTRE[0] - half[0] + 0.37, CENTRE[1] - half[1] - 0.21, -29.0)
    grid = Grid(shape, spacing, origin)
    vol = Volume(np.full(shape, -1000.0, np.float32), grid)
    return write_image_series(vol, tmp_path / name, patient=PatientInfo(name="Anon^RT", id="RT1"), frame_of_reference_uid=for_uid)


def circle(cx, cy, r, z, n=72, phase=0.0):
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)])


def ellipsoid_matrix():
    """Quadric A of the tilted ellipsoid x^T A x = 1 (semi-axes 30, 18, 12 mm; tilted 30 deg about L and 20 deg about P)."""
    def rot(axis, deg):
        t = np.deg2rad(deg)
        c, s = np.cos(t), np.sin(t)
        i, j = [a for a in range(3) if a != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    r = rot(0, 30.0) @ rot(1, 20.0)
    return r @ np.diag(1 / np.array([30.0, 18.0, 12.0]) ** 2) @ r.T


def ellipse_section(a, z, n=96):
    """The section of the ellipsoid (about CENTRE) by the plane z (LPS), as a polygon; None if the plane misses it."""
    a2, apz, azz = a[:2, :2], a[:2, 2], a[2, 2]
    dz = z - CENTRE[2]
    p0 = -dz * np.linalg.solve(a2, apz)
    rhs = 1 - azz * dz**2 + dz**2 * apz @ np.linalg.solve(a2, apz)
    if rhs <= 1e-3:
        return None
    w, v = np.linalg.eigh(a2 / rhs)
    t = 2 * np.pi * np.arange(n) / n
    pts = (v @ np.vstack([np.cos(t) / np.sqrt(w[0]), np.sin(t) / np.sqrt(w[1])])).T + p0 + CENTRE[:2]
    return np.column_stack([pts, np.full(n, z)])


def analytic_polygons(planes):
    """Polygons (lists of (n, 3) LPS arrays) of the shapes on the given planes, and their kind for the checks."""
    a = ellipsoid_matrix()
    shapes = {"Sphere": [], "Core": [], "Annulus": [], "C-shape": [], "Ellipsoid": []}
    for z in planes:
        dz = z - CENTRE[2]
        if abs(dz) < 15.0:
            shapes["Sphere"].append(circle(CENTRE[0] + 40, CENTRE[1], np.sqrt(15.0**2 - dz**2), z))
        if abs(dz) <= 15.0:  # the C-shape case's Core: a 10 mm radius cylinder
            shapes["Core"].append(circle(CENTRE[0], CENTRE[1], 10.0, z, phase=0.1))
        if abs(dz + 6) <= 10.0:  # annulus: outer 25 mm, hole 12 mm (two contours, even-odd)
            shapes["Annulus"] += [circle(CENTRE[0] - 30, CENTRE[1] + 20, 25.0, z), circle(CENTRE[0] - 30, CENTRE[1] + 20, 12.0, z)[::-1]]
        if abs(dz - 4) <= 8.0:  # a C: outer 30, inner 18, open over +-40 degrees towards +x
            t = np.deg2rad(np.linspace(40, 320, 57))
            outer = np.column_stack([30 * np.cos(t), 30 * np.sin(t)])
            inner = np.column_stack([18 * np.cos(t[::-1]), 18 * np.sin(t[::-1])])
            xy = np.vstack([outer, inner]) + CENTRE[:2] + np.array([0.0, -45.0])
            shapes["C-shape"].append(np.column_stack([xy, np.full(len(xy), z)]))
        e = ellipse_section(a, z)
        if e is not None:
            shapes["Ellipsoid"].append(e + np.array([0.0, 0.0, 0.0]))
    return shapes


def write_foreign_rtstruct(path, image, shapes, *, decimals=6):
    """An RTSTRUCT as another system writes it (pydicom only): one ROI per shape, each polygon on its plane."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "RTSTRUCT", "Anon^RT", "RT1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = image.study_instance_uid, generate_uid()
    ds.FrameOfReferenceUID, ds.StructureSetLabel = image.frame_of_reference_uid, "other TPS"
    ref = Dataset()
    ref.FrameOfReferenceUID = image.frame_of_reference_uid
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    rois, contours, obs = [], [], []
    for n, (name, polys) in enumerate(shapes.items(), start=1):
        r = Dataset()
        r.ROINumber, r.ROIName, r.ReferencedFrameOfReferenceUID, r.ROIGenerationAlgorithm = n, name, image.frame_of_reference_uid, "MANUAL"
        rois.append(r)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ROIDisplayColor = n, [200, 10 * n, 0]
        items = []
        for p in polys:
            c = Dataset()
            c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(p)
            c.ContourData = [f"{v:.{decimals}f}" for v in p.ravel()]
            items.append(c)
        rc.ContourSequence = Sequence(items)
        contours.append(rc)
        o = Dataset()
        o.ObservationNumber, o.ReferencedROINumber, o.RTROIInterpretedType = n, n, "PTV" if name == "Core" else "ORGAN"
        obs.append(o)
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = Sequence(rois), Sequence(contours), Sequence(obs)
    ds.save_as(path, enforce_file_format=True)
    return ds


def contour_data(ds):
    """{ROI name: list of ((n, 3) points, ContourData strings, referenced SOP instance or None)} of a dataset, read with pydicom alone."""
    names = {int(r.ROINumber): r.ROIName for r in ds.StructureSetROISequence}
    out = {}
    for rc in ds.ROIContourSequence:
        rows = []
        for c in rc.get("ContourSequence", []):
            strings = [str(v) for v in c.ContourData]
            img = c.get("ContourImageSequence", None)
            rows.append((np.array([float(v) for v in strings]).reshape(-1, 3), strings, img[0].ReferencedSOPInstanceUID if img else None))
        out[names[int(rc.ReferencedROINumber)]] = rows
    return out


def polygon_area(p):
    x, y = p[:, 0], p[:, 1]
    return 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def slab_volume(polys, thickness):
    """Slab-rule volume (mm^3): even-odd area of each plane (signed areas of nested, oppositely wound polygons) × slice thickness."""
    return sum(abs(polygon_area(p)) * (1 if polygon_area(p) > 0 else -1) for p in polys) * thickness if polys else 0.0


def even_odd_volume(polys, thickness):
    """Slab volume with holes subtracted: a polygon inside another of its plane counts negative (independent of winding)."""
    total = 0.0
    for i, p in enumerate(polys):
        inside = sum(1 for j, q in enumerate(polys) if j != i and abs(q[0, 2] - p[0, 2]) < 1e-6 and _point_in(p[0, :2], q[:, :2]))
        total += (-1) ** inside * abs(polygon_area(p))
    return total * thickness


def _point_in(pt, poly):
    x, y = pt
    xs, ys = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(xs, -1), np.roll(ys, -1)
    cross = (ys > y) != (y2 > y)
    xc = xs + (y - ys) * (x2 - xs) / np.where(y2 == ys, 1, y2 - ys)
    return bool(np.sum(cross & (x < xc)) % 2)


def test_polygons_are_exported_as_given_and_keep_volume_and_boundary(tmp_path):
    image = make_image(tmp_path, spacing=(2.0, 1.0, 1.0), shape=(30, 180, 180))
    grid = image.grid
    planes = grid.origin[2] + grid.spacing[0] * np.arange(grid.shape[0])
    shapes = analytic_polygons(planes)
    src = write_foreign_rtstruct(tmp_path / "RS_in.dcm", image, shapes)
    first = read_rtstruct(tmp_path / "RS_in.dcm", image)
    write_rtstruct(first, image, tmp_path / "RS_out.dcm")
    again = read_rtstruct(tmp_path / "RS_out.dcm", image)
    given, out = contour_data(src), contour_data(pydicom.dcmread(tmp_path / "RS_out.dcm"))
    vox = grid.voxel_volume_cc * 1000.0
    for name in shapes:
        # same polygons, same order, every coordinate reads back to the same float
        assert len(out[name]) == len(given[name]) > 0
        for (p_in, _, _), (p_out, s_out, ref) in zip(given[name], out[name]):
            assert np.array_equal(p_in, p_out), name
            assert all(len(s) <= 16 for s in s_out)
            k = int(round((p_out[0, 2] - grid.origin[2]) / grid.spacing[0]))
            assert ref == image.sop_instance_uids[k]  # on the plane of slice k
        assert all(np.array_equal(a, b) for a, b in zip(again[name].contours, first[name].contours))
        assert np.array_equal(again[name].mask, first[name].mask)
        # volume: slab rule on the polygons read back against the analytic polygons' own, and the mask
        v_given = even_odd_volume([p for p, _, _ in given[name]], grid.spacing[0])
        v_back = even_odd_volume(list(again[name].contours), grid.spacing[0])
        assert v_back == pytest.approx(v_given, rel=1e-12)
        assert v_given == pytest.approx(even_odd_volume(shapes[name], grid.spacing[0]), rel=1e-6)  # 6 decimals
        assert again[name].voxel_count * vox == pytest.approx(v_given, rel=0.01), name
    # the boundary is the analytic surface: sphere points 15 mm from its centre, the Core 10 mm from its axis
    sph = np.concatenate(again["Sphere"].contours)
    r = np.linalg.norm(sph - (CENTRE + [40.0, 0.0, 0.0]), axis=1)
    assert np.max(np.abs(r - 15.0)) < 1e-5
    core = np.concatenate(again["Core"].contours)
    assert np.max(np.abs(np.hypot(core[:, 0] - CENTRE[0], core[:, 1] - CENTRE[1]) - 10.0)) < 1e-5
    ell = np.concatenate(again["Ellipsoid"].contours) - CENTRE
    q = np.einsum("ni,ij,nj->n", ell, ellipsoid_matrix(), ell)
    assert np.max(np.abs(q - 1.0)) < 1e-5
    # the analytic volumes themselves (the slab rule on 2 mm slices is within 1 %)
    assert v_sphere(again, grid) == pytest.approx(4 / 3 * np.pi * 15.0**3, rel=0.01)
    n_annulus = len(again["Annulus"].contours) // 2  # planes, two contours each
    assert even_odd_volume(list(again["Annulus"].contours), 2.0) == pytest.approx(np.pi * (25.0**2 - 12.0**2) * 2.0 * n_annulus, rel=0.01)


def v_sphere(ss, grid):
    return even_odd_volume(list(ss["Sphere"].contours), grid.spacing[0])


def test_a_contour_between_slices_references_no_image(tmp_path):
    image = make_image(tmp_path, shape=(10, 40, 40))
    z0 = image.grid.origin[2]
    shapes = {"On": [circle(CENTRE[0], CENTRE[1], 8.0, z0 + 4.0)], "Between": [circle(CENTRE[0], CENTRE[1], 8.0, z0 + 5.0)]}
    write_foreign_rtstruct(tmp_path / "in.dcm", image, shapes)
    ds = write_rtstruct(read_rtstruct(tmp_path / "in.dcm", image), image, tmp_path / "out.dcm")
    rows = contour_data(ds)
    assert rows["On"][0][2] == image.sop_instance_uids[2]
    assert rows["Between"][0][2] is None and "ContourImageSequence" not in ds.ROIContourSequence[1].ContourSequence[0]


def test_polygons_are_never_written_into_another_frame(tmp_path):
    image = make_image(tmp_path, shape=(10, 40, 40))
    other = make_image(tmp_path, shape=(10, 40, 40), name="other")
    assert other.frame_of_reference_uid != image.frame_of_reference_uid
    write_foreign_rtstruct(tmp_path / "in.dcm", image, {"Core": [circle(CENTRE[0], CENTRE[1], 10.0, image.grid.origin[2] + 6.0)]})
    with pytest.warns(UserWarning, match="frame of reference"):
        foreign = read_rtstruct(tmp_path / "in.dcm", other, strict_references=False)
    assert foreign["Core"].frame_of_reference_uid == image.frame_of_reference_uid
    out = tmp_path / "out.dcm"
    with pytest.raises(GeometryError, match="'Core'.*another frame"):
        write_rtstruct(foreign, other, out)
    assert not out.exists()
    # the same polygons are written onto a series of the same frame (another series, same geometry)
    same = make_image(tmp_path, shape=(10, 40, 40), name="same", for_uid=image.frame_of_reference_uid)
    ss = read_rtstruct(tmp_path / "in.dcm", same)
    write_rtstruct(ss, same, out)
    assert contour_data(pydicom.dcmread(out))["Core"][0][2] == same.sop_instance_uids[3]
    # polygons of unknown frame, and a mask changed under its polygons, are refused too
    s = ss["Core"]
    unknown = Structure("Core", s.mask, s.grid, contours=s.contours)
    with pytest.raises(GeometryError, match="no known frame"):
        write_rtstruct(StructureSet(s.grid, [unknown]), same, tmp_path / "x.dcm")
    edited = s.mask.copy()
    edited[3, 20, 20] = ~edited[3, 20, 20]
    changed = Structure("Core", edited, s.grid, contours=s.contours, frame_of_reference_uid=s.frame_of_reference_uid)
    with pytest.raises(GeometryError, match="not the rasterisation"):
        write_rtstruct(StructureSet(s.grid, [changed]), same, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_ds_strings_read_back_within_a_micrometre():
    values = np.array([1 / 3 * 100, -0.0, 1e-7, -123.45678901234, 123456789012345.0, 98765.43210987654, 2.5])
    strings = format_ds_exact(values)
    assert all(len(s) <= 16 for s in strings)
    back = np.array([float(s) for s in strings])
    assert np.max(np.abs(back - values)) <= 1e-3
    assert back[3] == values[3] and back[6] == 2.5 and strings[1] == "0.0"  # exact where 16 characters allow
    assert abs(back[0] - values[0]) < 1e-12
    with pytest.raises(InputError, match="16 characters within 1"):
        format_ds_exact([100000000000000.1], what="structure 'X'")
    with pytest.raises(InputError, match="non-finite"):
        format_ds_exact([np.nan])


def traced_case(tmp_path, pixel_mm, shape_kind, offset, smoothing=None):
    """A mask-only sphere (r 15 mm) or cylinder (r 10 mm) rasterised on a grid of ``pixel_mm`` in-plane, its centre moved by ``offset`` (mm); its traced polygons read back.

    Returns the distances (mm) of the polygons' vertices and edge mid-points from the true surface,
    the relative error of their slab area against the true sections, the structure read back and the mask.
    """
    n = int(round(70 / pixel_mm))
    tag = f"{pixel_mm}{shape_kind}{offset[0]:.2f}{smoothing}"
    image = make_image(tmp_path, spacing=(2.0, pixel_mm, pixel_mm), shape=(24, n, n), name=f"ct{tag}")
    x, y, z = image.grid.lps_coordinates(np.float64)
    c = CENTRE + np.asarray(offset)
    if shape_kind == "sphere":
        mask = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < 15.0**2
    else:
        mask = ((x - c[0]) ** 2 + (y - c[1]) ** 2 < 10.0**2) & (np.abs(z - c[2]) < 15.0)
    ss = StructureSet(image.grid, [Structure("S", mask, image.grid)])
    opts = {} if smoothing is None else {"smoothing": smoothing}
    ds = write_rtstruct(ss, image, tmp_path / f"RS{tag}.dcm", **opts)
    polys = [p for p, _, _ in contour_data(ds)["S"]]
    pts = np.concatenate([np.vstack([p, (p + np.roll(p, -1, axis=0)) / 2]) for p in polys])  # vertices and edge mid-points
    radial = np.hypot(pts[:, 0] - c[0], pts[:, 1] - c[1])
    if shape_kind == "sphere":
        true_r = np.sqrt(np.maximum(15.0**2 - (pts[:, 2] - c[2]) ** 2, 0.0))
    else:
        true_r = 10.0
    zs = sorted({round(float(p[0, 2]), 3) for p in polys})  # the true section of each plane that holds a contour
    true_area = sum(np.pi * (15.0**2 - (zz - c[2]) ** 2) for zz in zs) if shape_kind == "sphere" else len(zs) * np.pi * 10.0**2
    traced_area = sum(abs(polygon_area(p)) for p in polys)
    return np.abs(radial - true_r), traced_area / true_area - 1.0, read_rtstruct(tmp_path / f"RS{tag}.dcm", image)["S"], mask


OFFSETS = [(0.3, -0.45, 0.7), (0.9, 0.2, -0.3), (-0.55, 0.75, 0.1), (0.1, 0.05, 0.9), (-0.8, -0.6, -0.6), (0.45, 0.95, 0.4)]


@pytest.mark.parametrize("shape_kind", ["sphere", "cylinder"])
def test_traced_masks_on_a_1mm_grid_keep_area_and_boundary(tmp_path, shape_kind):
    dist, area_err, back, mask = traced_case(tmp_path, 1.0, shape_kind, OFFSETS[0])
    assert abs(area_err) < 0.01, area_err
    assert np.max(dist) <= 0.5, np.max(dist)
    assert np.mean(dist) < 0.15, np.mean(dist)
    assert 2 * np.count_nonzero(back.mask & mask) / (back.mask.sum() + mask.sum()) > 0.98


@pytest.mark.parametrize("shape_kind", ["sphere", "cylinder"])
def test_traced_masks_on_a_2mm_grid_keep_area_and_boundary(tmp_path, shape_kind):
    """On 2 mm pixels the voxel count of one 10 mm disc varies by about 2 % with its sub-pixel position, and the
    mask tells where the boundary is only within a pixel where it runs along a grid axis: checked over six positions."""
    cases = [traced_case(tmp_path, 2.0, shape_kind, off) for off in OFFSETS]
    errs = np.array([c[1] for c in cases])
    dist = np.concatenate([c[0] for c in cases])
    assert abs(errs.mean()) < 0.01, errs
    assert np.max(np.abs(errs)) < 0.04, errs
    assert np.mean(dist) < 0.32, np.mean(dist)
    assert np.percentile(dist, 90) < 0.65, np.percentile(dist, 90)
    assert np.max(dist) <= 1.0, np.max(dist)  # half a pixel


def test_smoothing_beats_the_voxel_tracing(tmp_path):
    """The sub-voxel tracing is measurably closer to the true surface than the voxel-edge tracing it starts from."""
    smooth = [traced_case(tmp_path, 2.0, "sphere", off) for off in OFFSETS[:3]]
    voxel = [traced_case(tmp_path, 2.0, "sphere", off, smoothing=0) for off in OFFSETS[:3]]
    assert np.mean(np.concatenate([c[0] for c in smooth])) < 0.85 * np.mean(np.concatenate([c[0] for c in voxel]))
    assert all(np.array_equal(c[2].mask, c[3]) for c in voxel)  # the voxel tracing reads back to the very voxels


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_accepts_a_structure_set_written_as_given(tmp_path):
    image = make_image(tmp_path, shape=(16, 60, 70))
    grid = image.grid
    planes = grid.origin[2] + grid.spacing[0] * np.arange(grid.shape[0])
    shapes = analytic_polygons(planes)
    shapes["Between"] = [circle(CENTRE[0], CENTRE[1], 5.0, planes[3] + 1.0)]
    write_foreign_rtstruct(tmp_path / "in.dcm", image, shapes)
    ss = read_rtstruct(tmp_path / "in.dcm", image)
    path = tmp_path / "RS.dcm"
    write_rtstruct(ss, image, path)
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    assert "RTStructureSet" in out
    assert [line for line in out.splitlines() if line.startswith("Error")] == []
