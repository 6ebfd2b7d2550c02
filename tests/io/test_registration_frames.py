"""A REG linking a CBCT in its own frame of reference to the planning CT (issue 16, item 6).

The REG files are written by a small writer independent of art (tests/independent_reg.py,
pydicom only, from PS3.3 C.20.2); art must read the CBCT → CT matrix whichever frame the
sender made the registered one, and refuse, naming the file, a REG that does not link
exactly these two frames.
"""

from __future__ import annotations

import numpy as np
import pytest

from art.errors import DicomError, InputError
from art.geometry import Grid, Volume
from art.io import PatientInfo, write_image_series
from art.io.registration_frames import find_spatial_registrations, frame_link_for, read_frame_registration
from tests.independent_reg import series_refs, translation, write_reg

PID = "FR1"


def rigid(angle_deg, t):
    a = np.deg2rad(angle_deg)
    m = np.eye(4)
    m[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    m[:3, 3] = t
    return m


#: CBCT own-frame LPS -> planning-CT LPS (what the imaging system's REG says)
LINK = rigid(2.0, (-31.0, 12.5, -250.0))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frames")
    p = PatientInfo(name="F^R", id=PID)
    g = Grid((4, 6, 7), (3.0, 2.0, 2.0), (-10.0, -8.0, 0.0))
    ct = write_image_series(Volume(np.zeros(g.shape, np.float32), g), tmp / "CT", patient=p)
    cbct = write_image_series(Volume(np.zeros(g.shape, np.float32), g), tmp / "CBCT", patient=p, is_cbct=True)
    same = write_image_series(Volume(np.zeros(g.shape, np.float32), g), tmp / "SAME", patient=p, frame_of_reference_uid=ct.frame_of_reference_uid)
    third = write_image_series(Volume(np.zeros(g.shape, np.float32), g), tmp / "THIRD", patient=p)
    assert len({ct.frame_of_reference_uid, cbct.frame_of_reference_uid, third.frame_of_reference_uid}) == 3
    return {"ct": ct, "cbct": cbct, "same": same, "third": third, "dirs": {k: tmp / k.upper() for k in ("ct", "cbct", "same", "third")}}


def ct_registered(tmp_path, im, **kw):
    """The usual IGRT orientation: registered = planning CT, the CBCT's item carries the matrix."""
    items = kw.pop("items", [{"frame": im["ct"].frame_of_reference_uid, "matrix": np.eye(4)},
                             {"frame": im["cbct"].frame_of_reference_uid, "matrix": LINK, "refs": series_refs(im["dirs"]["cbct"])}])  # fmt: skip
    return write_reg(tmp_path / "REG.dcm", registered_for=kw.pop("registered_for", im["ct"].frame_of_reference_uid), items=items,
                     patient_id=kw.pop("patient_id", PID), **kw)  # fmt: skip


@pytest.mark.parametrize("orientation", ["CT registered", "CBCT registered", "CT item omitted"])
def test_link_read_in_either_orientation(images, tmp_path, orientation):
    ct, cbct = images["ct"], images["cbct"]
    if orientation == "CT registered":
        path = ct_registered(tmp_path, images)
    elif orientation == "CBCT registered":  # the CT's item maps CT points into the CBCT's frame: the inverse link
        path = write_reg(tmp_path / "REG.dcm", registered_for=cbct.frame_of_reference_uid, patient_id=PID,
                         items=[{"frame": ct.frame_of_reference_uid, "matrix": np.linalg.inv(LINK)}])  # fmt: skip
    else:  # the registered frame without an item of its own is the identity
        path = write_reg(tmp_path / "REG.dcm", registered_for=ct.frame_of_reference_uid, patient_id=PID,
                         items=[{"frame": cbct.frame_of_reference_uid, "matrix": LINK}])  # fmt: skip
    link = read_frame_registration(path, cbct=cbct, ct=ct)
    assert link.path == path
    y = np.array([12.0, -40.0, 7.5, 1.0])  # a CBCT-frame point lands where the REG says
    assert np.allclose(link.matrix_4x4 @ y, LINK @ y, atol=1e-6)


@pytest.mark.parametrize(
    "case, words",
    [
        ("other patient", ["REG.dcm", "PatientID"]),
        ("not a REG", ["REG.dcm", "not a Spatial Registration", "SOPClassUID"]),
        ("CBCT frame missing", ["REG.dcm", "does not register the CBCT's frame"]),
        ("third frame", ["REG.dcm", "other frame", "exactly"]),
        ("not rigid", ["REG.dcm", "not rigid", "AFFINE"]),
        ("other images", ["REG.dcm", "item 2", "ReferencedImageSequence"]),
    ],
)
def test_mismatched_reg_is_refused_naming_the_file(images, tmp_path, case, words):
    ct, cbct, third = images["ct"], images["cbct"], images["third"]
    ct_for, cb_for = ct.frame_of_reference_uid, cbct.frame_of_reference_uid
    if case == "other patient":
        path = ct_registered(tmp_path, images, patient_id="SOMEONE-ELSE")
    elif case == "not a REG":
        path = ct_registered(tmp_path, images, sop_class="1.2.840.10008.5.1.4.1.1.66.3")
    elif case == "CBCT frame missing":  # links the CT to another frame (e.g. another day's CBCT)
        path = ct_registered(tmp_path, images, items=[{"frame": third.frame_of_reference_uid, "matrix": LINK}])
    elif case == "third frame":
        path = ct_registered(tmp_path, images, items=[{"frame": cb_for, "matrix": LINK}, {"frame": third.frame_of_reference_uid, "matrix": LINK}])
    elif case == "not rigid":
        scaled = LINK.copy()
        scaled[:3, :3] *= 1.05
        path = ct_registered(tmp_path, images, items=[{"frame": cb_for, "matrix": scaled, "type": "AFFINE"}])
    else:  # the CBCT frame's item registers other slices of that frame
        path = ct_registered(tmp_path, images, items=[{"frame": ct_for, "matrix": np.eye(4)},
                                                     {"frame": cb_for, "matrix": LINK, "refs": series_refs(images["dirs"]["ct"])}])  # fmt: skip
    with pytest.raises(DicomError) as err:
        read_frame_registration(path, cbct=cbct, ct=ct)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert PID not in str(err.value)


def test_found_in_the_cbct_folder_or_given(images, tmp_path):
    import shutil

    ct, cbct = images["ct"], images["cbct"]
    folder = tmp_path / "CBCT"
    shutil.copytree(images["dirs"]["cbct"], folder)
    # different frames and no REG: a clear error that names the folder and says a REG is needed
    with pytest.raises(InputError, match="no Spatial Registration \\(REG\\) links them") as err:
        frame_link_for(cbct, ct, cbct_dir=folder)
    assert str(folder) in str(err.value)
    reg = ct_registered(tmp_path, images)
    shutil.copy2(reg, folder / "IGRT.dcm")
    assert find_spatial_registrations(folder) == [folder / "IGRT.dcm"]  # the image slices are not taken for one
    assert np.allclose(frame_link_for(cbct, ct, cbct_dir=folder).matrix_4x4, LINK, atol=1e-6)
    given = frame_link_for(cbct, ct, cbct_dir=folder, registration=reg)
    assert given.path == reg
    # a second REG that links the same frames: ambiguous, choose one
    shutil.copy2(reg, folder / "IGRT2.dcm")
    with pytest.raises(InputError, match="choose one with --registration"):
        frame_link_for(cbct, ct, cbct_dir=folder)
    # one shared frame: nothing to link; a REG given for it is refused, naming it
    assert frame_link_for(images["same"], ct, cbct_dir=images["dirs"]["same"]) is None
    with pytest.raises(InputError, match="shares the planning CT's frame") as err:
        frame_link_for(images["same"], ct, cbct_dir=images["dirs"]["same"], registration=reg)
    assert "REG.dcm" in str(err.value)


def test_pure_translation_link(images, tmp_path):
    """A CBCT frame whose origin is shifted: the link is the translation, exactly."""
    ct, cbct = images["ct"], images["cbct"]
    path = write_reg(tmp_path / "REG.dcm", registered_for=ct.frame_of_reference_uid, patient_id=PID,
                     items=[{"frame": cbct.frame_of_reference_uid, "matrix": translation((-40.0, 25.0, 310.0))}])  # fmt: skip
    assert np.allclose(read_frame_registration(path, cbct=cbct, ct=ct).matrix_4x4, translation((-40.0, 25.0, 310.0)))
