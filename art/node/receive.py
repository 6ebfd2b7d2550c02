"""Received series: when a series is complete, and whether it may start a re-plan.

The Storage SCP (:mod:`art.node.scp`) stores every instance as
``incoming/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` and hands a
:class:`ReceivedInstance` to a :class:`SeriesTracker`. DICOM has no "end of series"
message, so the tracker decides:

* the expected number of instances is known (ImagesInAcquisition, 0020,1002) and
  reached: complete at once;
* it is not known: complete when no instance has arrived for ``quiet_period_s``;
* it is known but not reached: wait; after ``incomplete_timeout_s`` without a new
  instance the series has *failed* ("incomplete series: 41 of 60 instances received,
  none for 600 s").

Each series is reported once by :meth:`SeriesTracker.poll` as a :class:`SeriesEvent`
(REG series too: they are the candidates :func:`check_series` links frames with). The
folder stays where it is; the caller moves or deletes it and calls
:meth:`SeriesTracker.forget`. An instance that arrives for a series already reported
starts a new round for it (a re-sent series is tracked anew); ``content_hash`` lets the
caller recognise a series it has seen. After a restart :meth:`SeriesTracker.rebuild`
re-reads the folders.

:func:`check_series` then checks a complete series before a job starts: modality CT,
one frame of reference, every file readable, and that frame either the registered
reference's or linked to it by a Spatial Registration (REG) the sender also sent.

Patient IDs are carried (the registry needs them) but never logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from art.errors import DicomError, InputError

__all__ = ["ReceivedInstance", "SeriesEvent", "SeriesTracker", "UnlinkedFrameError", "check_series", "content_hash", "series_files", "expected_count_of"]

log = logging.getLogger("art.node")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


class UnlinkedFrameError(InputError):
    """A series in another frame of reference than the reference's, and no REG received links the two (yet)."""


@dataclass(frozen=True)
class ReceivedInstance:
    """One stored instance, as the SCP hands it to the tracker.

    Attributes
    ----------
    path : Path
        The stored file, ``incoming/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
    sop_instance_uid, sop_class_uid, series_instance_uid, study_instance_uid : str
        Its UIDs.
    modality : str
        Modality (0008,0060), upper case ("CT" for a CBCT too, "REG").
    frame_of_reference_uid : str or None
        FrameOfReferenceUID, None when absent.
    patient_id : str
        PatientID; carried for the registry, never logged.
    expected_count : int or None
        ImagesInAcquisition (0020,1002) when present and positive, else None.
    calling_ae, peer_host : str
        Who sent it (AE title, IP address).
    received_at : float
        When it was stored (``time.time()``, s).
    """

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    modality: str
    frame_of_reference_uid: str | None
    patient_id: str
    expected_count: int | None
    calling_ae: str
    peer_host: str
    received_at: float


@dataclass(frozen=True)
class SeriesEvent:
    """A series that is complete, or that failed waiting for its missing instances.

    Attributes
    ----------
    series_instance_uid : str
        The series.
    folder : Path
        ``incoming/<SeriesInstanceUID>``, the instances received.
    modality, patient_id, study_instance_uid : str
        From its instances (patient_id is never logged).
    frame_of_reference_uid : str or None
        From its first instance (``check_series`` checks they agree).
    n_instances : int
        The ``.dcm`` files in ``folder`` when reported.
    complete : bool
        True: complete; False: failed, see ``reason``.
    reason : str
        Why it failed ('' when complete).
    content_hash : str
        SHA-256 (hex) over the sorted (SOP instance UID, file SHA-256) pairs: equal for
        a series sent again unchanged.
    """

    series_instance_uid: str
    folder: Path
    modality: str
    patient_id: str
    frame_of_reference_uid: str | None
    study_instance_uid: str
    n_instances: int
    complete: bool
    reason: str
    content_hash: str


@dataclass
class _Series:
    """The tracker's state of one series (one round: until it is reported)."""

    folder: Path
    modality: str
    patient_id: str
    frame_of_reference_uid: str | None
    study_instance_uid: str
    last_received: float
    expected_count: int | None = None
    sop_uids: set[str] = field(default_factory=set)
    reported: bool = False

    def take(self, sop_uid: str, expected: int | None, at: float) -> None:
        self.sop_uids.add(sop_uid)
        self.last_received = max(self.last_received, at)
        if expected is not None:
            self.expected_count = max(expected, self.expected_count or 0)


def _short(uid: str | None) -> str:
    uid = uid or ""
    return f"…{uid[-8:]}" if len(uid) > 8 else (uid or "(none)")


def _check_seconds(value: object, name: str) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        v = float("nan")
    if not 0 <= v < float("inf"):
        raise InputError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return v


def expected_count_of(ds: Any) -> int | None:
    """ImagesInAcquisition (0020,1002) of a dataset as a positive int, else None."""
    try:
        n = int(ds.get("ImagesInAcquisition", None))
    except (TypeError, ValueError, AttributeError):
        return None
    return n if n > 0 else None


def series_files(folder: Path) -> list[Path]:
    """The stored instances of a series folder (``*.dcm``, sorted; the SCP's temporary files excluded)."""
    try:
        return sorted(p for p in Path(folder).iterdir() if p.suffix == ".dcm" and not p.name.startswith(".") and p.is_file())
    except OSError:
        return []


def content_hash(folder: Path) -> str:
    """SHA-256 (hex) over the sorted (SOP instance UID, file SHA-256) pairs of a series folder.

    The SOP instance UID is the file's name (the SCP names files by it).
    """
    pairs = []
    for p in series_files(folder):
        h = hashlib.sha256()
        try:
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            continue  # removed meanwhile: not part of what the caller will see
        pairs.append((p.stem, h.hexdigest()))
    total = hashlib.sha256()
    for uid, digest in sorted(pairs):
        total.update(f"{uid}\0{digest}\n".encode("ascii", errors="replace"))
    return total.hexdigest()


class SeriesTracker:
    """Decide when received series are complete (see the module notes).

    Parameters
    ----------
    incoming_dir : str or Path
        The SCP's folder (``incoming/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``).
    quiet_period_s : float, keyword-only
        Without a known instance count, a series is complete after this long without a
        new instance (s).
    incomplete_timeout_s : float, keyword-only
        With a known count not reached, the series fails after this long without a new
        instance (s); at least ``quiet_period_s``.

    Notes
    -----
    :meth:`add` is called from the SCP's threads, :meth:`poll` from the node's loop;
    every method is thread-safe.
    """

    def __init__(self, incoming_dir: str | Path, *, quiet_period_s: float = 30.0, incomplete_timeout_s: float = 600.0):
        self.incoming_dir = Path(incoming_dir)
        self.quiet_period_s = _check_seconds(quiet_period_s, "quiet_period_s")
        self.incomplete_timeout_s = _check_seconds(incomplete_timeout_s, "incomplete_timeout_s")
        if self.incomplete_timeout_s < self.quiet_period_s:
            raise InputError(f"incomplete_timeout_s ({incomplete_timeout_s}) must be at least quiet_period_s ({quiet_period_s})")
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}

    def add(self, inst: ReceivedInstance) -> None:
        """Count a stored instance (a series already reported starts a new round)."""
        uid = inst.series_instance_uid
        with self._lock:
            s = self._series.get(uid)
            if s is None or s.reported:
                if s is not None:
                    log.info("series %s: new instances after it was reported; tracked again", _short(uid))
                s = _Series(folder=inst.path.parent, modality=inst.modality, patient_id=inst.patient_id,
                            frame_of_reference_uid=inst.frame_of_reference_uid,
                            study_instance_uid=inst.study_instance_uid, last_received=inst.received_at)  # fmt: skip
                self._series[uid] = s
            s.take(inst.sop_instance_uid, inst.expected_count, inst.received_at)

    def forget(self, series_instance_uid: str) -> None:
        """Drop a series (the caller has moved or deleted its folder); unknown UIDs are ignored."""
        with self._lock:
            self._series.pop(series_instance_uid, None)

    def tracked(self) -> dict[str, int]:
        """Series UID → instances counted, for the series not yet reported (for status displays)."""
        with self._lock:
            return {uid: len(s.sop_uids) for uid, s in self._series.items() if not s.reported}

    def rebuild(self) -> None:
        """Track the series folders found in ``incoming_dir`` (after a restart of the node).

        Each subfolder is a series; its ``.dcm`` headers give the instances, the newest
        file's modification time the last reception. Series already tracked are left as
        they are; unreadable files are skipped (and counted in the log).
        """
        if not self.incoming_dir.is_dir():
            return
        for folder in sorted(p for p in self.incoming_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            with self._lock:
                if folder.name in self._series:
                    continue
            state = _state_from_folder(folder)
            if state is not None:
                with self._lock:
                    self._series.setdefault(folder.name, state)

    def poll(self, now: float | None = None) -> list[SeriesEvent]:
        """The series complete or failed since the last call, each reported once.

        Parameters
        ----------
        now : float, optional
            The time (``time.time()`` scale, s); default now.

        Returns
        -------
        list of SeriesEvent
            Sorted by series UID.
        """
        now = time.time() if now is None else float(now)
        due: list[tuple[str, _Series, bool, str]] = []
        with self._lock:
            for uid, s in sorted(self._series.items()):
                if s.reported:
                    continue
                verdict = self._verdict(s, now)
                if verdict is not None:
                    s.reported = True
                    due.append((uid, s, *verdict))
        return [_event(uid, s, complete, reason) for uid, s, complete, reason in due]

    def _verdict(self, s: _Series, now: float) -> tuple[bool, str] | None:
        """(complete, reason) when the series is due, else None (still waiting)."""
        n, idle, expected = len(s.sop_uids), now - s.last_received, s.expected_count
        if expected is not None and n >= expected:
            return True, ""
        if expected is None and idle >= self.quiet_period_s:
            return True, ""
        if expected is not None and idle >= self.incomplete_timeout_s:
            return False, f"incomplete series: {n} of {expected} instances received, none for {idle:.0f} s"
        return None


def _event(uid: str, s: _Series, complete: bool, reason: str) -> SeriesEvent:
    files = series_files(s.folder)
    event = SeriesEvent(series_instance_uid=uid, folder=s.folder, modality=s.modality, patient_id=s.patient_id,
                        frame_of_reference_uid=s.frame_of_reference_uid, study_instance_uid=s.study_instance_uid,
                        n_instances=len(files), complete=complete, reason=reason, content_hash=content_hash(s.folder))  # fmt: skip
    if complete:
        log.info("series %s (%s): complete, %d instances", _short(uid), s.modality, len(files))
    else:
        log.warning("series %s (%s): %s", _short(uid), s.modality, reason)
    return event


def _state_from_folder(folder: Path) -> _Series | None:
    """The tracker state of a series folder read from disk, or None when it holds no readable instance."""
    import pydicom

    state: _Series | None = None
    bad = 0
    for p in series_files(folder):
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True)
            sop = str(ds.SOPInstanceUID)
            mtime = p.stat().st_mtime
        except Exception:  # noqa: BLE001 - any unreadable file is skipped, the job's reader names it later
            bad += 1
            continue
        if state is None:
            state = _Series(folder=folder, modality=str(ds.get("Modality", "") or "").upper(),
                            patient_id=str(ds.get("PatientID", "") or ""),
                            frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "") or None,
                            study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""), last_received=mtime)  # fmt: skip
        state.take(sop, expected_count_of(ds), mtime)
    if bad:
        log.warning("series %s: %d unreadable file(s) skipped while resuming", _short(folder.name), bad)
    if state is not None:
        log.info("series %s (%s): resumed with %d instances", _short(folder.name), state.modality, len(state.sop_uids))
    return state


def _read_series_headers(event: SeriesEvent) -> tuple[list[str], set[str], set[str]]:
    """SOP instance UIDs, frames of reference and SOP classes of the series' files; every file must be readable."""
    from art.io.dicom_common import read_dataset
    from art.io.dicom_files import pixel_data_problem

    files = series_files(event.folder)
    if not files:
        raise InputError("the series folder holds no DICOM instance", path=event.folder)
    sops, frames, classes = [], set(), set()
    for p in files:
        ds = read_dataset(p, what="received CT image")  # names the file when unreadable
        problem = pixel_data_problem(ds)
        if problem:
            raise DicomError(problem, path=p)
        modality = str(ds.get("Modality", "") or "").upper()
        if modality != "CT":
            raise InputError(f"the series mixes modalities: {p.name} is {modality or '(none)'}; an image series of modality CT is needed",
                             path=event.folder)  # fmt: skip
        sops.append(str(ds.get("SOPInstanceUID", "")))
        frames.add(str(ds.get("FrameOfReferenceUID", "") or ""))
        classes.add(str(ds.get("SOPClassUID", "") or ""))
    return sops, frames, classes


def check_series(event: SeriesEvent, *, reference_frame_uid: str, incoming_dir: str | Path) -> Path | None:
    """Check a complete series before a re-plan starts on it.

    Parameters
    ----------
    event : SeriesEvent
        The complete series (a CT or a CBCT; a CBCT arrives as modality CT).
    reference_frame_uid : str, keyword-only
        FrameOfReferenceUID of the patient's registered reference (planning CT).
    incoming_dir : str or Path, keyword-only
        The SCP's folder; its series folders are searched for Spatial Registration
        (REG) instances of the same patient when the frames differ.

    Returns
    -------
    Path or None
        None when the series is in the reference's frame; else the REG file that links
        the series' frame to the reference's (to pass as ``registration=``).

    Raises
    ------
    InputError
        Not a complete series, modality not CT, Enhanced (multi-frame) CT, a file that
        cannot be read, several or no frames of reference, or a frame that is not the
        reference's and no REG links it. Names the series folder (or the file).
    """
    folder = event.folder
    if not event.complete:
        raise InputError(f"the series is not complete: {event.reason}", path=folder)
    if event.modality.upper() != "CT":
        raise InputError(f"modality {event.modality or '(none)'} received: a CT or CBCT image series (modality CT) is needed",
                         path=folder)  # fmt: skip
    sops, frames, classes = _read_series_headers(event)
    if ENHANCED_CT_IMAGE_STORAGE in classes:
        raise InputError("Enhanced CT (multi-frame) images are not read by art: send the series as CT Image Storage", path=folder)
    if "" in frames:
        raise InputError("an instance of the series lacks FrameOfReferenceUID", path=folder)
    if len(frames) != 1:
        raise InputError(f"the series has {len(frames)} frames of reference ({', '.join(sorted(_short(f) for f in frames))}); one is needed",
                         path=folder)  # fmt: skip
    frame = frames.pop()
    if frame == reference_frame_uid:
        return None
    return _linking_registration(event, frame, sops, reference_frame_uid, Path(incoming_dir))


def _holds_registrations(folder: Path) -> bool:
    """Whether a series folder's first instance is a Spatial Registration (a series holds one SOP class)."""
    import pydicom

    from art.io.registration_frames import SPATIAL_REGISTRATION_STORAGE

    files = series_files(folder)
    if not files:
        return False
    try:
        ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - unreadable: not a candidate
        return False
    return str(ds.get("SOPClassUID", "") or "") == SPATIAL_REGISTRATION_STORAGE


def _linking_registration(event: SeriesEvent, frame: str, sops: list[str], reference_frame_uid: str, incoming_dir: Path) -> Path:
    """The REG in ``incoming_dir/*/`` (same patient) linking ``frame`` to ``reference_frame_uid``, else InputError."""
    from art.io.dicom_common import read_dataset
    from art.io.registration_frames import _frame_matrices, find_spatial_registrations

    wanted = {frame, reference_frame_uid}
    images = {frame: SimpleNamespace(sop_instance_uids=tuple(sops))}
    links: list[tuple[Path, np.ndarray]] = []
    problems: list[str] = []
    folders = sorted(p for p in incoming_dir.iterdir() if p.is_dir()) if incoming_dir.is_dir() else []
    for reg in (r for f in folders if _holds_registrations(f) for r in find_spatial_registrations(f)):
        try:
            ds = read_dataset(reg, stop_before_pixels=True, what="Spatial Registration file")
            if str(ds.get("PatientID", "") or "") != event.patient_id:
                continue  # another patient's: not a candidate (and not named)
            matrices = _frame_matrices(ds, reg, images)
        except DicomError as exc:
            problems.append(f"{reg.name}: {exc.problem}")
            continue
        if set(matrices) == wanted:
            links.append((reg, np.linalg.inv(matrices[reference_frame_uid]) @ matrices[frame]))
        else:
            problems.append(f"{reg.name}: links frames {' and '.join(sorted(_short(f) for f in matrices))}, not these two")
    if not links:
        detail = f" (REG files of this patient considered: {'; '.join(problems)})" if problems else ""
        raise UnlinkedFrameError(f"frame of reference {_short(frame)} is not the registered reference's ({_short(reference_frame_uid)}) "
                         f"and no Spatial Registration (REG) received for this patient links them{detail}", path=event.folder)  # fmt: skip
    first = links[0][1]
    if any(not np.allclose(m, first, atol=1e-4) for _, m in links[1:]):
        raise InputError(f"{len(links)} Spatial Registration (REG) files link frame {_short(frame)} to the reference's "
                         f"with different matrices ({', '.join(p.name for p, _ in links)}): which one holds is not guessed",
                         path=event.folder)  # fmt: skip
    newest = max(links, key=lambda lk: (os.stat(lk[0]).st_mtime, lk[0].name))[0]
    log.info("series %s: frame of reference linked to the reference's by REG %s", _short(event.series_instance_uid), newest.name)
    return newest
