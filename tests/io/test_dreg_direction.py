"""The exported Deformable Spatial Registration points the way DICOM says (issue 16, item 2).

A known map between a daily CBCT and a planning CT — a smooth deformation plus a
rigid part, the two images on different grids (and, in one case, in different
frames of reference) — is exported the way ``art replan`` exports it
(:func:`art.jobs._write_registration`) and read back by an independent reader
written here from the standard's text, with pydicom and NumPy/SciPy only (not
art's reader):

DICOM PS3.3 C.20.3.1.1 (Deformable Registration Sequence application): the
registrations are applied to **Registered RCS** coordinates (the object's
FrameOfReferenceUID) — first the Pre Deformation Matrix, then the deformation
offset of grid element (i, j, k), then the Post Deformation Matrix; the result
addresses the sample point in the **Source RCS** (SourceFrameOfReferenceUID,
whose images the item's ReferencedImageSequence lists). The grid element
(i, j, k) lies at ImagePositionPatient + i·Δx·row + j·Δy·column + k·Δz·(row ×
column) in the Registered RCS (C.20.3.1.1, C.20.3.1.3: vectors x fastest, then
rows, then planes).

The test does not assume which image art makes the registered one: it finds
out from the file and checks that known CBCT points land on their CT points
(and back, by inverting the read map numerically) within 0.5 mm.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from art.geometry import Grid, Volume
from art.io import PatientInfo, write_image_series

TOL_MM = 0.5


# ------------------------------------------------------------------ the known map
def rotation(ax_deg: float, az_deg: float) -> np.ndarray:
    a, c = np.deg2rad(ax_deg), np.deg2rad(az_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ rx


RIGID = np.eye(4)
RIGID[:3, :3] = rotation(3.0, 4.0)
RIGID[:3, 3] = (12.0, -7.0, 20.0)  # CBCT LPS -> CT LPS (with a frame offset in the own-frame case)
BUMPS = [  # (centre in CBCT LPS mm, amplitude vector mm, sigma mm)
    (np.array([-10.0, 5.0, 0.0]), np.array([4.0, -3.0, 2.5]), 22.0),
    (np.array([15.0, -10.0, 12.0]), np.array([-2.5, 3.5, -4.0]), 18.0),
]


def deformable_part(y: np.ndarray) -> np.ndarray:
    """u(y), LPS mm, (..., 3): a smooth deformation in the CBCT's coordinates."""
    out = np.zeros_like(y, dtype=np.float64)
    for c, a, s in BUMPS:
        w = np.exp(-np.sum((y - c) ** 2, axis=-1) / (2 * s * s))
        out += w[..., None] * a
    return out


def cbct_to_ct(y: np.ndarray) -> np.ndarray:
    """The true map: CBCT point y shows the planning tissue at T(y + u(y))."""
    q = y + deformable_part(y)
    return q @ RIGID[:3, :3].T + RIGID[:3, 3]


# ------------------------------------------------------------------ the independent reader
def _matrix(seq_item) -> np.ndarray:
    return np.array([float(v) for v in seq_item.FrameOfReferenceTransformationMatrix], dtype=np.float64).reshape(4, 4)


class StandardReader:
    """C.20.3.1.1, literally: Registered RCS point -> Source RCS point."""

    def __init__(self, path):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.3"
        self.registered_for = str(ds.FrameOfReferenceUID)
        items = [it for it in ds.DeformableRegistrationSequence if len(it.get("DeformableRegistrationGridSequence", [])) == 1]
        assert items, "no item with a deformation grid"
        it = items[0]
        self.source_for = str(it.SourceFrameOfReferenceUID)
        self.source_instances = {str(r.ReferencedSOPInstanceUID) for r in it.get("ReferencedImageSequence", [])}
        self.pre = _matrix(it.PreDeformationMatrixRegistrationSequence[0]) if "PreDeformationMatrixRegistrationSequence" in it else np.eye(4)
        self.post = _matrix(it.PostDeformationMatrixRegistrationSequence[0]) if "PostDeformationMatrixRegistrationSequence" in it else np.eye(4)
        g = it.DeformableRegistrationGridSequence[0]
        iop = np.array([float(v) for v in g.ImageOrientationPatient])
        self.start = np.array([float(v) for v in g.ImagePositionPatient])
        self.axes = np.column_stack([iop[:3], iop[3:], np.cross(iop[:3], iop[3:])])  # row, column, depth
        self.res = np.array([float(v) for v in g.GridResolution])  # (x, y, z)
        xd, yd, zd = (int(v) for v in g.GridDimensions)
        vec = np.frombuffer(g.VectorGridData, dtype="<f4").reshape(zd, yd, xd, 3).astype(np.float64)
        self.vectors = vec  # [k, j, i, component]

    def to_source(self, p: np.ndarray) -> np.ndarray:
        """Source RCS points of Registered RCS points p (n, 3): M_post (M_pre p + D(i, j, k))."""
        p = np.asarray(p, dtype=np.float64)
        ijk = np.linalg.solve(self.axes, (p - self.start).T).T / self.res  # continuous (i, j, k)
        coords = [ijk[:, 2], ijk[:, 1], ijk[:, 0]]
        d = np.stack([ndimage.map_coordinates(self.vectors[..., c], coords, order=1, mode="nearest") for c in range(3)], axis=-1)
        h = np.c_[p, np.ones(len(p))] @ self.pre.T
        h[:, :3] += d
        return (h @ self.post.T)[:, :3]

    def to_registered(self, q: np.ndarray, iterations: int = 200) -> np.ndarray:
        """Invert :meth:`to_source` numerically (fixed-point iteration)."""
        q = np.asarray(q, dtype=np.float64)
        p = q.copy()
        for _ in range(iterations):
            p = p + (q - self.to_source(p))
        return p


# ------------------------------------------------------------------ the images
@pytest.fixture(scope="module", params=["own frame", "shared frame"])
def images(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dreg")
    patient = PatientInfo(name="D^R", id="DR1")
    ct_grid = Grid((24, 40, 44), (3.0, 2.5, 2.5), (-55.0, -50.0, -36.0))
    cb_grid = Grid((22, 30, 32), (2.0, 3.0, 2.8), (-44.0, -41.0, -20.0))
    ct = write_image_series(Volume(np.zeros(ct_grid.shape, np.float32), ct_grid), tmp / "CT", patient=patient)
    for_uid = None if request.param == "own frame" else ct.frame_of_reference_uid
    cbct = write_image_series(Volume(np.zeros(cb_grid.shape, np.float32), cb_grid), tmp / "CBCT", patient=patient,
                              frame_of_reference_uid=for_uid, is_cbct=True)  # fmt: skip
    assert (cbct.frame_of_reference_uid == ct.frame_of_reference_uid) == (request.param == "shared frame")
    return ct, cbct


def known_points(cbct, n=300, seed=4):
    """CBCT points well inside its grid and their true CT points."""
    g = cbct.grid
    rng = np.random.default_rng(seed)
    idx = np.column_stack([rng.uniform(2, s - 3, n) for s in g.shape])
    y = g.index_to_lps(idx)
    return y, cbct_to_ct(y)


def exported(tmp_path, ct, cbct):
    """DREG.dcm (and REG.dcm) as ``art replan`` writes them for the known map."""
    from art.jobs import _write_registration

    pts = cbct.grid.index_to_lps(np.indices(cbct.grid.shape).reshape(3, -1).T.astype(np.float64)).reshape(cbct.grid.shape + (3,))
    field = (cbct_to_ct(pts) - pts).astype(np.float32)
    result = SimpleNamespace(rigid=SimpleNamespace(matrix_4x4=RIGID.copy()), deformable=SimpleNamespace(cbct_to_ct=field))
    _write_registration(tmp_path, result, SimpleNamespace(ct=ct), cbct)
    return tmp_path / "DREG.dcm"


def test_exported_dreg_maps_known_points_both_ways(images, tmp_path):
    ct, cbct = images
    reader = StandardReader(exported(tmp_path, ct, cbct))
    # which image is the registered one, which the source: from the file
    by_instances = {id(s): bool(reader.source_instances & set(s.sop_instance_uids)) for s in (ct, cbct)}
    assert sum(by_instances.values()) == 1, "ReferencedImageSequence must name the source image's slices only"
    source = ct if by_instances[id(ct)] else cbct
    registered = cbct if source is ct else ct
    assert reader.source_for == source.frame_of_reference_uid
    assert reader.registered_for == registered.frame_of_reference_uid
    y, x = known_points(cbct)
    if registered is cbct:
        ct_from_cbct, cbct_from_ct = reader.to_source(y), reader.to_registered(x)
    else:
        cbct_from_ct, ct_from_cbct = reader.to_source(x), reader.to_registered(y)
    err_forward = np.linalg.norm(ct_from_cbct - x, axis=1)
    err_back = np.linalg.norm(cbct_from_ct - y, axis=1)
    assert err_forward.max() <= TOL_MM, f"CBCT -> CT: max error {err_forward.max():.2f} mm"
    assert err_back.max() <= TOL_MM, f"CT -> CBCT: max error {err_back.max():.2f} mm"
    # the map is not trivial: the known points move by centimetres
    assert np.linalg.norm(x - y, axis=1).min() > 10.0


def test_exported_registrations_reference_both_images(images, tmp_path):
    from art.io.references import check_result_references

    ct, cbct = images
    exported(tmp_path, ct, cbct)
    assert check_result_references(tmp_path, images=[ct, cbct]) == []


def test_exported_dreg_carries_the_rigid_part_as_a_matrix(images, tmp_path):
    """The rigid part is the Pre Deformation Matrix (registered -> source); the vectors hold the rest."""
    ct, cbct = images
    reader = StandardReader(exported(tmp_path, ct, cbct))
    assert reader.registered_for == cbct.frame_of_reference_uid
    assert np.allclose(reader.pre, RIGID, atol=1e-6) and np.allclose(reader.post, np.eye(4))
    # the vectors alone are the deformable part rotated into the CT's axes: |D| <= max |u|
    assert np.abs(reader.vectors).max() <= max(np.linalg.norm(a) for _, a, _ in BUMPS) + 1e-3


def test_art_reader_agrees_with_the_standard_reader(images, tmp_path):
    from art.io.registration import read_deformable_registration

    ct, cbct = images
    path = exported(tmp_path, ct, cbct)
    reg = read_deformable_registration(path)
    assert reg.frame_of_reference_uid == cbct.frame_of_reference_uid
    assert reg.source_frame_of_reference_uid == ct.frame_of_reference_uid
    pts = reg.grid.index_to_lps(np.indices(reg.grid.shape).reshape(3, -1).T.astype(np.float64))
    art_map = pts + reg.displacement.reshape(-1, 3)
    assert np.abs(art_map - StandardReader(path).to_source(pts)).max() < 1e-3
    assert np.abs(art_map - cbct_to_ct(pts)).max() < 1e-3
