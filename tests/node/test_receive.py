"""art.node.receive: when a received series is complete, and whether it may start a re-plan.

End to end where it matters (dcmtk's storescu → StorageSCP → SeriesTracker, real time with a
0.5 s quiet period); with explicit ``now`` where exact times are asserted. check_series runs on
series folders laid out as the SCP writes them, the own-frame CBCT and its REG written by the
test's independent helpers (tests/independent_reg.py).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from art.errors import DicomError, InputError
from art.node.receive import SeriesTracker, check_series, content_hash
from art.node.scp import StorageSCP
from tests.independent_reg import rewrite_in_own_frame, series_refs, translation, write_reg
from tests.node.scp_support import shared_phantom, storescu


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return shared_phantom(tmp_path_factory)


@pytest.fixture
def node(tmp_path):
    """(tracker, scp, received): a SeriesTracker (quiet 0.5 s, incomplete after 1 s) fed by a running StorageSCP."""
    incoming = tmp_path / "incoming"
    tracker = SeriesTracker(incoming, quiet_period_s=0.5, incomplete_timeout_s=1.0)
    received: list = []

    def on_instance(inst):
        received.append(inst)
        tracker.add(inst)

    scp = StorageSCP(incoming_dir=incoming, on_instance=on_instance, port=0, allowed_calling_aes=["CBCT1"])
    scp.start()
    yield tracker, scp, received
    scp.stop()


def _header(path: Path):
    return pydicom.dcmread(path, stop_before_pixels=True)


def _wait_for_event(tracker: SeriesTracker, limit_s: float = 10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        events = tracker.poll()
        if events:
            return events
        time.sleep(0.02)
    raise AssertionError(f"no series event within {limit_s} s")


def _with_expected_count(src: Path, dst: Path, n: int) -> list[Path]:
    """Copies of the series in ``src`` with ImagesInAcquisition = n."""
    dst.mkdir(parents=True)
    out = []
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        ds.ImagesInAcquisition = n
        ds.save_as(dst / f.name)
        out.append(dst / f.name)
    return out


def test_series_without_count_completes_after_the_quiet_period(phantom, node):
    tracker, scp, received = node
    cbct = phantom / "CBCT_01"
    assert storescu(scp.port, cbct).returncode == 0
    last = max(i.received_at for i in received)
    assert tracker.poll(now=last + 0.4) == []  # still within the quiet period
    (event,) = _wait_for_event(tracker)
    assert time.time() - last >= 0.5
    ds = _header(next(cbct.iterdir()))
    assert event.complete and event.reason == "" and event.n_instances == 40 == len(list(cbct.iterdir()))
    assert event.folder == scp.incoming_dir / str(ds.SeriesInstanceUID) and event.series_instance_uid == str(ds.SeriesInstanceUID)
    assert (event.modality, event.patient_id, event.frame_of_reference_uid, event.study_instance_uid) == (
        "CT", str(ds.PatientID), str(ds.FrameOfReferenceUID), str(ds.StudyInstanceUID))  # fmt: skip
    assert tracker.poll(now=time.time() + 3600) == []  # reported once


def test_series_with_count_completes_as_soon_as_it_is_reached(phantom, node, tmp_path):
    tracker, scp, received = node
    files = _with_expected_count(phantom / "CBCT_01", tmp_path / "counted", 40)
    assert storescu(scp.port, files[:39]).returncode == 0
    assert tracker.poll(now=max(i.received_at for i in received)) == []
    assert storescu(scp.port, files[39:]).returncode == 0
    (event,) = tracker.poll(now=max(i.received_at for i in received))  # no quiet period to wait for
    assert event.complete and event.n_instances == 40 and received[-1].expected_count == 40


def test_incomplete_series_waits_then_fails_with_the_reason(phantom, node, tmp_path):
    tracker, scp, received = node
    files = _with_expected_count(phantom / "CBCT_01", tmp_path / "counted", 40)
    assert storescu(scp.port, files[:30]).returncode == 0
    last = max(i.received_at for i in received)
    assert tracker.poll(now=last + 0.7) == []  # past the quiet period: waits for the 10 missing
    (event,) = _wait_for_event(tracker)
    assert not event.complete and event.n_instances == 30
    assert event.reason.startswith("incomplete series: 30 of 40 instances received, none for ") and event.reason.endswith(" s")

    # the node restarts: the series is found again, with its expected count, and fails on the same rule
    restarted = SeriesTracker(scp.incoming_dir, quiet_period_s=30, incomplete_timeout_s=600)
    restarted.rebuild()
    newest = max(p.stat().st_mtime for p in event.folder.iterdir())
    assert restarted.poll(now=newest + 599) == []
    (again,) = restarted.poll(now=newest + 600)
    assert again.reason == "incomplete series: 30 of 40 instances received, none for 600 s"
    assert again.content_hash == event.content_hash


def test_resent_series_has_the_same_content_hash(phantom, node, tmp_path):
    tracker, scp, received = node
    assert storescu(scp.port, phantom / "CBCT_01").returncode == 0
    (first,) = _wait_for_event(tracker)
    shutil.move(first.folder, tmp_path / "job-1")  # what the node does: the job takes the folder
    tracker.forget(first.series_instance_uid)

    assert storescu(scp.port, phantom / "CBCT_01").returncode == 0  # the imaging system sends it again
    (second,) = _wait_for_event(tracker)
    assert second.folder == first.folder and second.n_instances == 40 and second.content_hash == first.content_hash
    assert storescu(scp.port, sorted((phantom / "CBCT_01").iterdir())[:3]).returncode == 0  # not forgotten: a new round
    (third,) = _wait_for_event(tracker)
    assert third.content_hash == first.content_hash  # the same 40 files on disk

    changed = tmp_path / "changed"
    shutil.copytree(first.folder, changed)
    victim = sorted(changed.iterdir())[5]
    ds = pydicom.dcmread(victim)
    ds.PixelData = (ds.pixel_array + 1).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(victim)
    assert content_hash(changed) != first.content_hash
    victim.unlink()
    assert content_hash(changed) != first.content_hash


def test_rebuild_resumes_series_after_a_restart(phantom, tmp_path):
    incoming = tmp_path / "incoming"
    _place(incoming, sorted((phantom / "CBCT_01").iterdir()))
    reg = _place(incoming, [_reg_file(tmp_path, phantom, frame="1.2.3", registered_for="1.2.4")])[0]
    cbct_folder = incoming / str(_header(next((phantom / "CBCT_01").iterdir())).SeriesInstanceUID)
    (cbct_folder / "garbage.dcm").write_bytes(b"not DICOM at all")
    (cbct_folder / ".1.2.3.abc.part").write_bytes(b"an interrupted write")
    for p in cbct_folder.iterdir():
        p.touch()
    newest = max(p.stat().st_mtime for p in cbct_folder.iterdir() if p.suffix == ".dcm")

    tracker = SeriesTracker(incoming, quiet_period_s=30)
    tracker.rebuild()
    assert tracker.tracked() == {cbct_folder.name: 40, reg.parent.name: 1}
    assert [e.modality for e in tracker.poll(now=newest + 29)] == []
    events = {e.modality: e for e in tracker.poll(now=newest + 31)}
    assert set(events) == {"CT", "REG"} and all(e.complete for e in events.values())
    assert events["CT"].n_instances == 41  # the .dcm files on disk, the unreadable one included (check_series refuses it)
    tracker.rebuild()  # series already tracked are not tracked twice
    assert tracker.poll(now=newest + 3600) == []


# --- check_series ---------------------------------------------------------------------------------


def _place(incoming: Path, files: list[Path]) -> list[Path]:
    """Copy files into incoming/<SeriesInstanceUID>/<SOPInstanceUID>.dcm, as the SCP stores them."""
    out = []
    for f in files:
        ds = _header(f)
        dst = incoming / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
        out.append(dst)
    return out


def _reg_file(tmp_path: Path, phantom: Path, *, frame: str, registered_for: str, offset=(0.0, 0.0, 0.0), patient_id=None,
              refs=None) -> Path:  # fmt: skip
    ct = _header(next((phantom / "CT").iterdir()))
    path = tmp_path / f"reg-{time.monotonic_ns()}.dcm"
    item = {"frame": frame, "matrix": translation(-np.asarray(offset)), "refs": refs}
    return write_reg(path, registered_for=registered_for, items=[item], patient_id=patient_id or str(ct.PatientID),
                     study_uid=str(ct.StudyInstanceUID))  # fmt: skip


def _events(incoming: Path) -> dict[str, object]:
    """The events of every series folder in ``incoming``, by modality (a restarted tracker, past its quiet period)."""
    tracker = SeriesTracker(incoming, quiet_period_s=0)
    tracker.rebuild()
    return {e.modality: e for e in tracker.poll(now=time.time() + 1)}


@pytest.fixture(scope="module")
def frames(phantom):
    return str(_header(next((phantom / "CT").iterdir())).FrameOfReferenceUID)


@pytest.fixture(scope="module")
def own_frame(phantom, tmp_path_factory):
    """The CBCT rewritten in a frame of its own, shifted by (10, -5, 3) mm; (folder, frame UID)."""
    folder = tmp_path_factory.mktemp("own") / "cbct"
    return folder, rewrite_in_own_frame(phantom / "CBCT_01", folder, offset_mm=(10.0, -5.0, 3.0))


def test_check_series_accepts_the_reference_frame(phantom, frames, tmp_path):
    incoming = tmp_path / "incoming"
    _place(incoming, sorted((phantom / "CBCT_01").iterdir()))
    assert check_series(_events(incoming)["CT"], reference_frame_uid=frames, incoming_dir=incoming) is None


def test_check_series_finds_the_reg_linking_an_own_frame_cbct(phantom, frames, own_frame, tmp_path):
    from art.io.registration_frames import frame_link_for
    from art.io.series_read import read_image_series

    folder, own_uid = own_frame
    incoming = tmp_path / "incoming"
    _place(incoming, sorted(folder.iterdir()))
    other = _place(incoming, [_reg_file(tmp_path, phantom, frame=own_uid, registered_for=frames, offset=(1, 1, 1),
                                        patient_id="SOMEONE-ELSE")])[0]  # fmt: skip
    reg = _place(incoming, [_reg_file(tmp_path, phantom, frame=own_uid, registered_for=frames, offset=(10, -5, 3),
                                      refs=series_refs(folder))])[0]  # fmt: skip
    event = _events(incoming)["CT"]
    assert check_series(event, reference_frame_uid=frames, incoming_dir=incoming) == reg != other
    # the REG found is one the re-plan accepts with the real images: own frame → CT frame = -offset
    link = frame_link_for(read_image_series(event.folder), read_image_series(phantom / "CT"), cbct_dir=event.folder, registration=reg)
    assert np.allclose(link.matrix_4x4, translation([-10.0, 5.0, -3.0]))


def test_check_series_refuses_an_unlinked_frame(phantom, frames, own_frame, tmp_path):
    folder, own_uid = own_frame
    incoming = tmp_path / "incoming"
    _place(incoming, sorted(folder.iterdir()))
    event = _events(incoming)["CT"]
    unlinked = (rf"frame of reference …{own_uid[-8:]} is not the registered reference's \(…{frames[-8:]}\) "
                r"and no Spatial Registration \(REG\) received for this patient links them")  # fmt: skip
    with pytest.raises(InputError, match=unlinked + "$") as e:
        check_series(event, reference_frame_uid=frames, incoming_dir=incoming)
    assert e.value.path == event.folder

    _place(incoming, [_reg_file(tmp_path, phantom, frame=own_uid, registered_for=frames, patient_id="SOMEONE-ELSE")])
    wrong = _place(incoming, [_reg_file(tmp_path, phantom, frame="1.2.3.4.5", registered_for=frames)])[0]
    with pytest.raises(InputError, match=unlinked) as e:
        check_series(event, reference_frame_uid=frames, incoming_dir=incoming)
    assert f"(REG files of this patient considered: {wrong.name}: links frames ….2.3.4.5 and …{frames[-8:]}, not these two)" in str(e.value)
    assert "SOMEONE-ELSE" not in str(e.value)


def test_check_series_refuses_wrong_modality_and_bad_series(phantom, frames, tmp_path):
    _place(tmp_path / "reg", [_reg_file(tmp_path, phantom, frame="1.2.3", registered_for=frames)])
    with pytest.raises(InputError, match=r"modality REG received: a CT or CBCT image series \(modality CT\) is needed"):
        check_series(_events(tmp_path / "reg")["REG"], reference_frame_uid=frames, incoming_dir=tmp_path / "reg")

    files = _place(tmp_path / "in", sorted((phantom / "CBCT_01").iterdir()))
    mixed = pydicom.dcmread(files[3])
    mixed.Modality = "MR"
    mixed.save_as(files[3])
    with pytest.raises(InputError, match=f"the series mixes modalities: {files[3].name} is MR"):
        check_series(_events(tmp_path / "in")["CT"], reference_frame_uid=frames, incoming_dir=tmp_path / "in")
    shutil.copy2(_source_of(phantom, files[3]), files[3])

    moved = pydicom.dcmread(files[4])
    moved.FrameOfReferenceUID = "1.2.826.0.1.99"
    moved.save_as(files[4])
    with pytest.raises(InputError, match="the series has 2 frames of reference"):
        check_series(_events(tmp_path / "in")["CT"], reference_frame_uid=frames, incoming_dir=tmp_path / "in")
    shutil.copy2(_source_of(phantom, files[4]), files[4])

    files[5].write_bytes(files[5].read_bytes()[:-5000])  # cut short in its pixel data
    with pytest.raises(DicomError, match="pixel data truncated") as e:
        check_series(_events(tmp_path / "in")["CT"], reference_frame_uid=frames, incoming_dir=tmp_path / "in")
    assert e.value.path == files[5]


def _source_of(phantom: Path, stored: Path) -> Path:
    """The phantom's CBCT file whose SOP instance UID names ``stored``."""
    return next(f for f in (phantom / "CBCT_01").iterdir() if str(_header(f).SOPInstanceUID) == stored.stem)


def test_check_series_refuses_an_incomplete_series(phantom, frames, tmp_path):
    counted = _with_expected_count(phantom / "CBCT_01", tmp_path / "counted", 60)
    _place(tmp_path / "in", counted)
    tracker = SeriesTracker(tmp_path / "in", quiet_period_s=0, incomplete_timeout_s=0)
    tracker.rebuild()
    (event,) = tracker.poll(now=time.time() + 1)
    with pytest.raises(InputError, match="the series is not complete: incomplete series: 40 of 60 instances received"):
        check_series(event, reference_frame_uid=frames, incoming_dir=tmp_path / "in")
    with pytest.raises(InputError, match="incomplete_timeout_s .* must be at least quiet_period_s"):
        SeriesTracker(tmp_path, quiet_period_s=10, incomplete_timeout_s=5)
    with pytest.raises(InputError, match="quiet_period_s must be a finite number of seconds"):
        SeriesTracker(tmp_path, quiet_period_s=-1)
