"""The synthetic CT exported as a derived CT series, and the RT Plan / RT Dose that reference it (issue 16, item 3).

Written with the functions ``art replan`` uses (:func:`art.io.derived_series.write_synthetic_ct`,
:func:`art.results.write_plan_files` with ``dose_image``) on a coarse digital patient; read back
with pydicom and art's reader; checked with dciodvfy and art's reference check.
"""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from art.io.references import check_result_references

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")


def _tiny_plan(image, machine):
    """Two static 40 × 40 mm beams at the image centre (no optimisation)."""
    from art.plan import Beam, Plan, Segment

    n = machine.mlc.n_pairs
    seg = Segment(np.vstack([np.full(n, -20.0), np.full(n, 20.0)]), (-20.0, 20.0, -20.0, 20.0), 100.0)
    iso = tuple(image.grid.index_to_lps(np.array([[s / 2 for s in image.grid.shape]], float))[0])
    beams = [Beam("B1", 0.0, isocenter_lps=iso, segments=[seg]), Beam("B2", 180.0, isocenter_lps=iso, segments=[seg])]
    return Plan(beams, fractions=20, machine_name=machine.name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An adapted-plan folder: sCT/ (a fractional-HU synthetic CT on the CBCT grid), RTSTRUCT on the CBCT, RTPLAN, RTDOSE."""
    from art.dose import load_machine
    from art.geometry import Volume
    from art.io import read_image_series, read_rtstruct
    from art.io.derived_series import write_synthetic_ct
    from art.protocol import load_protocol
    from art.results import write_plan_files
    from art.structures import StructureSet
    from art_phantoms.write import write_phantom

    root = tmp_path_factory.mktemp("sct")
    write_phantom(root / "p", seed=1, fractions=1, spacing=(5.0, 4.0, 4.0))
    ct = read_image_series(root / "p" / "CT")
    cbct = read_image_series(root / "p" / "CBCT_01")
    rng = np.random.default_rng(0)
    values = np.clip(cbct.volume.array * 0.97 + rng.uniform(-0.5, 0.5, cbct.grid.shape) + 12.3, -1000.0, 3071.0)
    sct = Volume(values.astype(np.float32), cbct.grid)
    ct_slices = [[min(k, ct.grid.shape[0] - 2), min(k, ct.grid.shape[0] - 2) + 1] for k in range(cbct.grid.shape[0])]
    folder = root / "adapted"
    folder.mkdir()
    written = write_synthetic_ct(sct, cbct, ct, folder / "sCT", ct_slices=ct_slices)
    planning = read_rtstruct(root / "p" / "RTSTRUCT.dcm", ct)
    body = planning.find("BODY")
    from art.geometry import resample_mask

    daily = StructureSet(cbct.grid, [type(body)(body.name, resample_mask(body.volume, cbct.grid).array, cbct.grid, body.roi_type)])
    machine = load_machine()
    dose = Volume(np.full(cbct.grid.shape, 1.5, np.float32), cbct.grid)
    protocol = load_protocol(root / "p" / "protocol.toml")
    write_plan_files(folder, plan=_tiny_plan(cbct, machine), dose=dose, ct=cbct, structures=daily, protocol=protocol,
                     machine=machine, label="ADAPTED", rtstruct_label="daily", dose_image=written)  # fmt: skip
    return {"folder": folder, "ct": ct, "cbct": cbct, "sct": sct, "written": written, "ct_slices": ct_slices}


def test_read_back_equals_the_synthetic_ct_on_the_cbct_grid(exported):
    from art.io import read_image_series
    from art.io.series_write import stored_image

    sct, cbct = exported["sct"], exported["cbct"]
    back = read_image_series(exported["folder"] / "sCT")
    assert back.grid.same_as(cbct.grid)
    assert np.max(np.abs(back.volume.array - sct.array)) <= 0.5 + 1e-4  # whole HU (rescale slope 1)
    assert np.array_equal(back.volume.array, stored_image(sct).array)  # what the dose is computed on in art replan
    assert np.array_equal(back.volume.array, exported["written"].volume.array)
    # pydicom alone: the HU of a slice, and every slice on the CBCT's slice positions
    files = sorted((exported["folder"] / "sCT").iterdir())
    by_ipp = {}
    for f in files:
        ds = pydicom.dcmread(f)
        by_ipp[tuple(round(float(v), 3) for v in ds.ImagePositionPatient)] = ds
    for k, f in enumerate(cbct.files):
        c = pydicom.dcmread(f, stop_before_pixels=True)
        ds = by_ipp[tuple(round(float(v), 3) for v in c.ImagePositionPatient)]
        assert [float(v) for v in ds.ImageOrientationPatient] == [float(v) for v in c.ImageOrientationPatient]
        assert [float(v) for v in ds.PixelSpacing] == [float(v) for v in c.PixelSpacing]
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.max(np.abs(hu - sct.array[k])) <= 0.5 + 1e-4


def test_series_is_marked_derived_and_names_its_sources(exported):
    cbct, ct, written = exported["cbct"], exported["ct"], exported["written"]
    ds_all = [pydicom.dcmread(f, stop_before_pixels=True) for f in written.files]
    for k, ds in enumerate(ds_all):
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert ds.Modality == "CT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert ds.SeriesInstanceUID not in (cbct.series_instance_uid, ct.series_instance_uid)
        assert ds.FrameOfReferenceUID == cbct.frame_of_reference_uid and ds.StudyInstanceUID == cbct.study_instance_uid
        assert "deformed" in ds.SeriesDescription and "CBCT" in ds.SeriesDescription
        assert "deformably registered to the daily CBCT" in ds.DerivationDescription
        src = list(ds.SourceImageSequence)
        assert src[0].ReferencedSOPInstanceUID == cbct.sop_instance_uids[k] and src[0].SpatialLocationsPreserved == "YES"
        assert [s.ReferencedSOPInstanceUID for s in src[1:]] == [ct.sop_instance_uids[i] for i in exported["ct_slices"][k]]
        assert all(s.SpatialLocationsPreserved == "NO" and s.ReferencedSOPClassUID == ct.sop_class_uid for s in src[1:])
        assert all(s.PurposeOfReferenceCodeSequence[0].CodeValue == "121322" for s in src)
    assert len({ds.SOPInstanceUID for ds in ds_all}) == len(ds_all)


def test_plan_and_dose_reference_the_synthetic_ct(exported):
    folder, written, cbct, ct = exported["folder"], exported["written"], exported["cbct"], exported["ct"]
    for name in ("RTPLAN.dcm", "RTDOSE.dcm"):
        ds = pydicom.dcmread(folder / name, stop_before_pixels=True)
        assert [r.ReferencedSOPInstanceUID for r in ds.ReferencedImageSequence] == list(written.sop_instance_uids)
        assert {r.ReferencedSOPClassUID for r in ds.ReferencedImageSequence} == {"1.2.840.10008.5.1.4.1.1.2"}
    # the structure set stays on the CBCT
    rs = pydicom.dcmread(folder / "RTSTRUCT.dcm")
    series = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == cbct.series_instance_uid
    assert check_result_references(folder, images=[cbct, ct]) == []


@pytest.mark.parametrize("what", ["plan image", "dose image", "source image", "two series"])
def test_broken_references_to_the_synthetic_ct_are_reported(exported, tmp_path, what):
    folder = tmp_path / "adapted"
    shutil.copytree(exported["folder"], folder)
    other = "2.25.123456789012345678901234567890"
    if what in ("plan image", "dose image"):
        name = "RTPLAN.dcm" if what == "plan image" else "RTDOSE.dcm"
        ds = pydicom.dcmread(folder / name)
        ds.ReferencedImageSequence[3].ReferencedSOPInstanceUID = other
        ds.save_as(folder / name)
        expected = [name, "ReferencedImageSequence", "do not exist"]
    elif what == "source image":
        f = sorted((folder / "sCT").iterdir())[2]
        ds = pydicom.dcmread(f)
        ds.SourceImageSequence[1].ReferencedSOPInstanceUID = other
        ds.save_as(f)
        expected = ["sCT/", "SourceImageSequence", "do not exist"]
    else:  # the dose names one planning CT slice among the synthetic CT's
        ds = pydicom.dcmread(folder / "RTDOSE.dcm")
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = exported["ct"].sop_instance_uids[0]
        ds.save_as(folder / "RTDOSE.dcm")
        expected = ["RTDOSE.dcm", "ReferencedImageSequence", "2 image series"]
    problems = check_result_references(folder, images=[exported["cbct"], exported["ct"]])
    assert any(all(w in p for w in expected) for p in problems), problems


@needs_dciodvfy
def test_dciodvfy_accepts_the_synthetic_ct_plan_and_dose(exported):
    from art.io.validate import run_dciodvfy

    folder = exported["folder"]
    for f in [exported["written"].files[0], exported["written"].files[-1], folder / "RTPLAN.dcm", folder / "RTDOSE.dcm"]:
        assert run_dciodvfy(f) == [], f.name


def test_bad_synthetic_ct_inputs_are_refused(exported, tmp_path):
    from art.errors import InputError
    from art.geometry import Volume
    from art.io.derived_series import write_synthetic_ct

    cbct, ct, sct = exported["cbct"], exported["ct"], exported["sct"]
    with pytest.raises(InputError, match="CBCT's grid"):
        write_synthetic_ct(Volume(ct.volume.array, ct.grid), cbct, ct, tmp_path / "a", ct_slices=exported["ct_slices"])
    with pytest.raises(InputError, match="ct_slices"):
        write_synthetic_ct(sct, cbct, ct, tmp_path / "b", ct_slices=exported["ct_slices"][:-1])
    bad = [list(s) for s in exported["ct_slices"]]
    bad[0] = [ct.grid.shape[0] + 5]
    with pytest.raises(InputError, match="outside the planning CT"):
        write_synthetic_ct(sct, cbct, ct, tmp_path / "c", ct_slices=bad)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_source_slices_are_the_planning_ct_slices_the_deformation_samples():
    """A CBCT grid inside the CT's, a field shifting every point 7.5 mm superior: CBCT slice k samples CT slices around k + offset."""
    from art.geometry import Grid
    from art.registration.deformable import DeformableResult
    from art.registration.synthetic_ct import source_slices

    ct_grid = Grid(shape=(30, 8, 8), spacing=(3.0, 2.0, 2.0), origin=(0.0, 0.0, -45.0))
    cbct_grid = Grid(shape=(10, 6, 6), spacing=(3.0, 2.0, 2.0), origin=(2.0, 2.0, -30.0))  # CBCT slice k at CT slice k + 5
    field = np.zeros(cbct_grid.shape + (3,), np.float32)
    field[..., 2] = 7.5  # 2.5 CT slices superior
    res = DeformableResult(cbct_to_ct=field, ct_to_cbct=np.zeros(ct_grid.shape + (3,), np.float32), cbct_grid=cbct_grid, ct_grid=ct_grid,
                           rigid=None)  # fmt: skip
    got = source_slices(ct_grid, res)
    assert got[0] == [7, 8] and got[9] == [16, 17]  # z index 7.5 and 16.5: the two slices interpolated
    field[-1, ..., 2] = 100.0  # the last slice's points land beyond the CT: nothing sampled there
    assert source_slices(ct_grid, res)[-1] == []
