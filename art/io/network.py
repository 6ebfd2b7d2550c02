"""DICOM networking: send a result folder to a peer by C-STORE, and C-ECHO.

:func:`send_folder` finds every DICOM file under a folder (recursively; other
files such as ``report.html`` or ``summary.json`` are skipped and listed),
negotiates one presentation context per (SOP class, transfer syntax) found,
sends each file by C-STORE and checks each response status.  It returns a
:class:`StoreReport` that says, file by file, what was and was not stored, and
raises :class:`~art.errors.NetworkError` (carrying the report) when anything
was not stored: a partial success is a failure.

Byte fidelity
-------------
A PS3.10 file (128-byte preamble, ``DICM``, file meta) whose transfer syntax
the peer accepts is sent *as it is on disk*: the encoded dataset that follows
the file meta information is streamed unchanged (pynetdicom's chunked mode),
so the peer receives exactly the bytes that were written.  Only when the peer
accepts the SOP class in another uncompressed transfer syntax (e.g. Implicit
VR Little Endian only) is the dataset decoded and re-encoded; the report then
says so for that file.

pynetdicom is imported only inside the functions.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from art.errors import InputError, NetworkError

__all__ = ["StoreResult", "StoreReport", "send_folder", "verify", "find_dicom_files", "pixel_data_problem"]

_STATUS_SUCCESS = "success"
_STATUS_WARNING = "warning"
_STATUS_FAILURE = "failure"
_STATUS_NOT_SENT = "not sent"

_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")
"""Explicit VR Little Endian, Implicit VR Little Endian, Explicit VR Big Endian."""

_MAX_CONTEXTS = 128
_send_lock = threading.Lock()  # pynetdicom's chunked-send switch is process-global


@dataclass(frozen=True)
class StoreResult:
    """The outcome of sending one file.

    Attributes
    ----------
    file : Path
        The file, relative to the folder sent.
    sop_class : str
        Name of its SOP class (e.g. ``"CT Image Storage"``), or its UID when unknown.
    sop_class_uid : str
        Its SOP Class UID ('' when unreadable).
    status : str
        ``"success"`` or ``"warning"`` (stored; the peer may have coerced
        elements), ``"failure"`` (the peer refused it) or ``"not sent"``
        (unreadable file, SOP class not accepted, association lost).
    status_code : int or None
        The C-STORE response status (0x0000 success), None when not sent or
        when no response came.
    detail : str
        The meaning of the status, or why it was not sent.
    """

    file: Path
    sop_class: str
    sop_class_uid: str
    status: str
    status_code: int | None = None
    detail: str = ""

    @property
    def stored(self) -> bool:
        """True when the peer confirmed storage (success or warning)."""
        return self.status in (_STATUS_SUCCESS, _STATUS_WARNING)

    def line(self) -> str:
        """One human-readable line: status, code, file, SOP class, detail."""
        code = f"0x{self.status_code:04X}" if self.status_code is not None else "------"
        text = f"{self.status:<8} {code}  {self.file.as_posix()}  [{self.sop_class}]"
        return f"{text}  {self.detail}" if self.detail else text


@dataclass
class StoreReport:
    """What a C-STORE of a folder stored and did not store.

    Attributes
    ----------
    folder : Path
        The folder sent.
    host, port : str, int
        The peer's address.
    called_ae, calling_ae : str
        The peer's AE title and ours.
    results : list of StoreResult
        One per DICOM file found, in sorted path order.
    skipped : list of Path
        Files that are not DICOM (relative to ``folder``), not sent.
    error : str
        Why the whole transfer failed ('' when the association worked).
    """

    folder: Path
    host: str
    port: int
    called_ae: str
    calling_ae: str
    results: list[StoreResult] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    error: str = ""

    @property
    def stored(self) -> list[StoreResult]:
        """Results of the files the peer stored."""
        return [r for r in self.results if r.stored]

    @property
    def not_stored(self) -> list[StoreResult]:
        """Results of the files the peer did not store (refused or never sent)."""
        return [r for r in self.results if not r.stored]

    @property
    def ok(self) -> bool:
        """True when every DICOM file was stored and nothing failed."""
        return not self.error and bool(self.results) and not self.not_stored

    @property
    def peer(self) -> str:
        """``AE@host:port``."""
        return f"{self.called_ae}@{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (paths as POSIX strings)."""
        return {
            "folder": str(self.folder),
            "peer": {"host": self.host, "port": self.port, "called_ae": self.called_ae, "calling_ae": self.calling_ae},
            "ok": self.ok,
            "error": self.error,
            "n_files": len(self.results),
            "n_stored": len(self.stored),
            "n_not_stored": len(self.not_stored),
            "results": [
                {**asdict(r), "file": r.file.as_posix(), "stored": r.stored} for r in self.results
            ],
            "skipped_non_dicom": [p.as_posix() for p in self.skipped],
        }

    def format_text(self) -> str:
        """A multi-line report: one line per file, then a summary line."""
        lines = [f"C-STORE to {self.peer} (calling AE {self.calling_ae}) from {self.folder}"]
        lines += ["  " + r.line() for r in self.results]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} non-DICOM file(s): " + ", ".join(p.as_posix() for p in self.skipped))
        summary = f"{len(self.stored)} of {len(self.results)} DICOM file(s) stored"
        if self.error:
            summary += f"; {self.error}"
        lines.append(("OK: " if self.ok else "FAILED: ") + summary)
        return "\n".join(lines)


# ---------------------------------------------------------------- validation
def _check_ae(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__}")
    v = value.strip()
    if not 1 <= len(v) <= 16 or "\\" in v or not all(32 <= ord(c) < 127 for c in v):
        raise InputError(f"{name} must be 1 to 16 printable ASCII characters without backslash, got {value!r}")
    return v


def _check_peer(host: Any, port: Any, timeout_s: Any) -> tuple[str, int, float]:
    if not isinstance(host, str) or not host.strip():
        raise InputError(f"host must be a non-empty string, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError(f"port must be an integer from 1 to 65535, got {port!r}")
    try:
        t = float(timeout_s)
    except (TypeError, ValueError):
        t = float("nan")
    if not t > 0 or t == float("inf"):
        raise InputError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return host.strip(), int(port), t


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    if not uid:
        return "unknown"
    name = UID(uid).name
    return name if name and name != uid else uid


# ---------------------------------------------------------------- scanning
@dataclass
class _File:
    path: Path
    rel: Path
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    transfer_syntax: str = ""
    part10: bool = True  # has preamble + file meta (can be streamed unchanged)
    problem: str = ""


def _is_raw_dataset(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return head in (b"\x08\x00", b"\x02\x00")


def find_dicom_files(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """Split the files under ``folder`` (recursively) into DICOM and other files.

    A file is DICOM when it has the PS3.10 preamble (``DICM`` at byte 128) or
    is a raw little-endian dataset (starts with group 0008 or 0002) that
    pydicom can read with a SOP Class UID.

    Parameters
    ----------
    folder : str or Path
        The folder to search.

    Returns
    -------
    dicom, other : list of Path, list of Path
        Absolute paths, sorted.
    """
    from art.io.dicom_common import looks_like_dicom

    folder = Path(folder)
    dicom, other = [], []
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        if looks_like_dicom(p) or (_is_raw_dataset(p) and _raw_has_sop_class(p)):
            dicom.append(p)
        else:
            other.append(p)
    return dicom, other


def _raw_has_sop_class(path: Path) -> bool:
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True, specific_tags=["SOPClassUID"])
        return bool(ds.get("SOPClassUID", None))
    except Exception:
        return False


def _inspect(path: Path, rel: Path) -> _File:
    """Read one DICOM file fully (so truncation shows) and check its file meta against the dataset."""
    from art.errors import DicomError
    from art.io.dicom_common import looks_like_dicom, read_dataset

    f = _File(path=path, rel=rel, part10=looks_like_dicom(path))
    try:
        ds = read_dataset(path)
        if "PixelData" in ds:
            _ = ds.PixelData  # materialise: a truncated value fails here
    except DicomError as exc:
        f.problem = f"unreadable: {exc.problem}"
        return f
    problem = pixel_data_problem(ds)
    if problem:
        f.problem = f"unreadable: {problem}"
        return f
    f.sop_class_uid = str(ds.get("SOPClassUID", "") or "")
    f.sop_instance_uid = str(ds.get("SOPInstanceUID", "") or "")
    meta = getattr(ds, "file_meta", None)
    f.transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    if not f.sop_class_uid or not f.sop_instance_uid:
        f.problem = "lacks SOPClassUID or SOPInstanceUID"
    elif not f.transfer_syntax:
        f.problem = "transfer syntax unknown"
    elif f.part10:
        ms_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
        ms_inst = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        if ms_class != f.sop_class_uid or ms_inst != f.sop_instance_uid:
            f.problem = "file meta MediaStorageSOPClassUID/InstanceUID differ from the dataset's SOPClassUID/InstanceUID"
    return f


def pixel_data_problem(ds: Any) -> str:
    """'' when the native (uncompressed) pixel data has the length its attributes need, else why not.

    pydicom reads a file cut inside its last element (usually PixelData)
    without complaint; this catches it.  Encapsulated (compressed) pixel data
    is not checked.
    """
    if "PixelData" not in ds:
        return ""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID", None) if meta is not None else None
    if ts is None or ts.is_compressed:
        return ""
    try:
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return "pixel data without valid Rows, Columns or BitsAllocated"
    expected = (n * bits + 7) // 8
    have = len(ds.PixelData)
    if have < expected:
        return f"pixel data truncated ({have} of {expected} bytes): incomplete file"
    return ""


# ---------------------------------------------------------------- association
def _make_ae(calling_ae: str, timeout_s: float) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = timeout_s
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    return ae


def _associate(ae: Any, host: str, port: int, called_ae: str, *, attempts: int = 3) -> tuple[Any, str]:
    """Request an association; return it and '' or None and why it failed (one line).

    A peer that rejects an association and closes the connection at once is
    sometimes seen by pynetdicom as an abort (the close overtakes the
    A-ASSOCIATE-RJ): an association aborted during negotiation is requested
    again (``attempts`` in all; no data has been sent) so that the peer's
    reason can be reported.
    """
    for k in range(attempts):
        assoc, why = _associate_once(ae, host, port, called_ae)
        if assoc is not None or not why.endswith("aborted during negotiation"):
            return assoc, why
    return None, why + f" ({attempts} attempts)"


def _associate_once(ae: Any, host: str, port: int, called_ae: str) -> tuple[Any, str]:
    from pynetdicom import evt

    connected = threading.Event()

    def on_open(event: Any) -> None:
        connected.set()
        # DIMSE messages go out as several small writes: without TCP_NODELAY each C-STORE can wait
        # for the peer's delayed ACK (about 40-90 ms per instance on Linux).
        with contextlib.suppress(Exception):
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    assoc = ae.associate(host, port, ae_title=called_ae, evt_handlers=[(evt.EVT_CONN_OPEN, on_open)])
    if assoc.is_established:
        return assoc, ""
    peer = f"{called_ae}@{host}:{port}"
    if assoc.is_rejected:
        prim = assoc.acceptor.primitive
        why = ", ".join(
            str(getattr(prim, a, "") or "") for a in ("reason_str", "result_str", "source_str") if getattr(prim, a, None)
        )
        return None, f"association rejected by {peer}: {why or 'no reason given'}"
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        names = sorted({_sop_class_name(str(cx.abstract_syntax)) for cx in assoc.rejected_contexts})
        return None, f"{peer} accepted none of the proposed SOP classes ({', '.join(names)})"
    if not connected.is_set():
        return None, f"cannot connect to {host}:{port} (connection refused, host unreachable or timed out)"
    if assoc.is_aborted:
        return None, f"association with {peer} aborted during negotiation"
    return None, f"no association with {peer} (no answer within the timeout)"


def verify(
    host: str, port: int, ae_title: str, *, calling_ae: str = "ART", timeout_s: float = 30
) -> None:
    """Check a DICOM peer with C-ECHO (Verification).

    Parameters
    ----------
    host : str
        Peer host name or IP address.
    port : int
        Peer TCP port (1–65535).
    ae_title : str
        The peer's (called) AE title, at most 16 characters.
    calling_ae : str, keyword-only
        Our AE title (default ``"ART"``).
    timeout_s : float, keyword-only
        Connection, association and response timeout in seconds.

    Raises
    ------
    NetworkError
        No association, or the C-ECHO status is not success; names ``AE@host:port``.
    InputError
        Invalid host, port, AE title or timeout.
    """
    from pynetdicom.sop_class import Verification

    host, port, timeout_s = _check_peer(host, port, timeout_s)
    called = _check_ae(ae_title, "ae_title")
    calling = _check_ae(calling_ae, "calling_ae")
    ae = _make_ae(calling, timeout_s)
    ae.add_requested_context(Verification)
    assoc, why = _associate(ae, host, port, called)
    if assoc is None:
        raise NetworkError(f"C-ECHO: {why}")
    try:
        rsp = assoc.send_c_echo()
    finally:
        with contextlib.suppress(Exception):
            assoc.release()
    code = int(rsp.get("Status", -1)) if rsp else -1
    if code != 0:
        raise NetworkError(
            f"C-ECHO to {called}@{host}:{port} failed: "
            + ("no response" if code < 0 else f"status 0x{code:04X}")
        )


def _classify(code: int) -> tuple[str, str]:
    from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

    _, text = STORAGE_SERVICE_CLASS_STATUS.get(code, ("", ""))
    if code == 0x0000:
        return _STATUS_SUCCESS, ""
    if code == 0x0001 or 0xB000 <= code <= 0xBFFF:
        return _STATUS_WARNING, text or "warning"
    return _STATUS_FAILURE, text or "failure"


def send_folder(
    folder: str | Path,
    *,
    host: str,
    port: int,
    ae_title: str,
    calling_ae: str = "ART",
    timeout_s: float = 30,
) -> StoreReport:
    """Send every DICOM file under ``folder`` to a DICOM peer by C-STORE.

    Parameters
    ----------
    folder : str or Path
        The folder to send (searched recursively). Non-DICOM files
        (``report.html``, ``summary.json`` ...) are skipped and listed in the
        report.
    host : str, keyword-only
        Peer host name or IP address.
    port : int, keyword-only
        Peer TCP port (1–65535).
    ae_title : str, keyword-only
        The peer's (called) AE title, at most 16 characters.
    calling_ae : str, keyword-only
        Our AE title (default ``"ART"``).
    timeout_s : float, keyword-only
        Connection, association and per-response timeout in seconds (default 30).

    Returns
    -------
    StoreReport
        Every file stored: one result per DICOM file, status success or warning.

    Raises
    ------
    NetworkError
        Anything not stored: association refused, rejected or aborted,
        unreachable peer, SOP class or transfer syntax not accepted, an
        instance refused (failure status) or unanswered, or an unreadable
        DICOM file.  The message names ``AE@host:port``, the count stored and
        the failing files; ``exc.report`` holds the full :class:`StoreReport`.
    InputError
        ``folder`` missing or without DICOM files; invalid host, port, AE
        title or timeout.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("folder to send not found (or not a folder)", path=folder)
    host, port, timeout_s = _check_peer(host, port, timeout_s)
    called = _check_ae(ae_title, "ae_title")
    calling = _check_ae(calling_ae, "calling_ae")

    dicom, other = find_dicom_files(folder)
    if not dicom:
        raise InputError("no DICOM files to send", path=folder)
    files = [_inspect(p, p.relative_to(folder)) for p in dicom]
    report = StoreReport(folder=folder, host=host, port=port, called_ae=called, calling_ae=calling,
                         skipped=[p.relative_to(folder) for p in other])
    results: dict[Path, StoreResult] = {}

    def result(f: _File, status: str, code: int | None = None, detail: str = "") -> None:
        results[f.rel] = StoreResult(f.rel, _sop_class_name(f.sop_class_uid), f.sop_class_uid, status, code, detail)

    sendable = []
    for f in files:
        if f.problem:
            result(f, _STATUS_NOT_SENT, detail=f.problem)
        else:
            sendable.append(f)

    # ---- presentation contexts: one per (SOP class, transfer syntax) found, each with that single
    # syntax so the file can be sent unchanged; plus, per class with uncompressed files, one context
    # offering the uncompressed syntaxes as a fallback (re-encoding) for peers that refuse the first.
    wanted: list[tuple[str, list[str]]] = []
    for sop, ts in sorted({(f.sop_class_uid, f.transfer_syntax) for f in sendable}):
        wanted.append((sop, [ts]))
    for sop in sorted({f.sop_class_uid for f in sendable if f.transfer_syntax in _UNCOMPRESSED}):
        wanted.append((sop, list(_UNCOMPRESSED)))
    if len(wanted) > _MAX_CONTEXTS:
        raise InputError(
            f"the folder needs {len(wanted)} presentation contexts (SOP class x transfer syntax); "
            f"one association allows {_MAX_CONTEXTS}: send it in parts",
            path=folder,
        )

    if sendable:
        ae = _make_ae(calling, timeout_s)
        for sop, tss in wanted:
            ae.add_requested_context(sop, tss)
        assoc, why = _associate(ae, host, port, called)
        if assoc is None:
            report.error = why
            for f in sendable:
                result(f, _STATUS_NOT_SENT, detail="no association")
        else:
            _store_all(assoc, sendable, result, report)
    report.results = [results[f.rel] for f in files]
    if not report.ok:
        raise NetworkError(_failure_message(report), report=report)
    return report


def _store_all(assoc: Any, files: list[_File], result: Any, report: StoreReport) -> None:
    from pynetdicom import _config

    accepted = [(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts]
    stop = aborted_by_peer = False
    try:
        with _send_lock:
            old = _config.STORE_SEND_CHUNKED_DATASET
            _config.STORE_SEND_CHUNKED_DATASET = True
            try:
                for msg_id, f in enumerate(files, start=1):
                    if stop or not assoc.is_established:
                        result(f, _STATUS_NOT_SENT, detail="association ended before it was sent")
                        continue
                    exact = (f.sop_class_uid, f.transfer_syntax) in accepted
                    alt = [ts for sop, ts in accepted if sop == f.sop_class_uid and ts in _UNCOMPRESSED]
                    if exact and f.part10:
                        payload: Any = f.path  # streamed unchanged after the file meta
                        note = ""
                    elif alt and f.transfer_syntax in _UNCOMPRESSED:
                        from art.io.dicom_common import read_dataset

                        payload = read_dataset(f.path)
                        note = "" if exact else f"re-encoded as {_ts_name(alt[0])} (the peer refused {_ts_name(f.transfer_syntax)})"
                    else:
                        if not any(sop == f.sop_class_uid for sop, _ in accepted):
                            why = "the peer refused this SOP class"
                        else:
                            why = f"the peer refused its transfer syntax ({_ts_name(f.transfer_syntax)}) for this SOP class"
                        result(f, _STATUS_NOT_SENT, detail=why)
                        continue
                    try:
                        _pause_reactor(assoc)
                        rsp = assoc.send_c_store(payload, msg_id=(msg_id - 1) % 65535 + 1)
                    except (ValueError, AttributeError, RuntimeError) as exc:
                        result(f, _STATUS_NOT_SENT, detail=f"cannot send: {exc}")
                        continue
                    if not rsp or "Status" not in rsp:
                        # no answer: the association is unusable (aborted by the peer, or a timeout
                        # after which the peer's state is unknown): stop here
                        lost = assoc.is_aborted or not assoc.is_established or _acse_aborted(assoc)
                        result(f, _STATUS_FAILURE, detail="no response: association aborted" if lost else "no response within the timeout")
                        if assoc.is_established:
                            with contextlib.suppress(Exception):
                                assoc.abort()
                        aborted_by_peer = aborted_by_peer or lost
                        stop = True
                        continue
                    code = int(rsp.Status)
                    status, text = _classify(code)
                    comment = str(rsp.get("ErrorComment", "") or "").strip()
                    detail = "; ".join(t for t in (text, comment, note) if t)
                    result(f, status, code, detail)
            finally:
                _config.STORE_SEND_CHUNKED_DATASET = old
    finally:
        if assoc.is_established:
            with contextlib.suppress(Exception):
                assoc.release()
    if aborted_by_peer and not report.error:
        report.error = f"association aborted by {report.peer}"
    elif stop and not report.error:
        report.error = f"no response from {report.peer} within the timeout"


def _pause_reactor(assoc: Any, *, settle_s: float = 0.02, limit_s: float = 1.0) -> None:
    """Make sure pynetdicom's reactor thread is parked before a request is sent.

    pynetdicom 3.0.4 pauses its reactor with a flag that can be stale: the
    reactor may have passed its checkpoint just before ``send_c_store`` clears
    it, then take the C-STORE response off the queue itself ("Received
    unexpected C-STORE service message"), and the sender waits for the DIMSE
    timeout.  Seen under load with fast-answering peers.  Here the checkpoint
    is cleared first and the reactor is seen to (re-)enter its pause, or to
    stay paused for ``settle_s``, before the request goes out.
    """
    import time

    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None or not hasattr(assoc, "_is_paused"):
        return
    checkpoint.clear()
    t0 = time.monotonic()
    seen_running = False
    paused_since = None
    while time.monotonic() - t0 < limit_s:
        if assoc._is_paused:
            if seen_running:
                return
            paused_since = paused_since or time.monotonic()
            if time.monotonic() - paused_since >= settle_s:
                return
        else:
            seen_running, paused_since = True, None
        time.sleep(0.0005)


def _acse_aborted(assoc: Any) -> bool:
    with contextlib.suppress(Exception):
        return bool(assoc.acse.is_aborted())
    return False


def _ts_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid else "unknown transfer syntax"


def _failure_message(report: StoreReport) -> str:
    bad = report.not_stored
    n = len(report.results)
    head = f"C-STORE to {report.peer}"
    if report.error:
        head += f": {report.error}"
    listed = ", ".join(f"{r.file.as_posix()} ({r.status}{': ' + r.detail if r.detail else ''})" for r in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"{head}; {len(report.stored)} of {n} file(s) stored, not stored: {listed}{more}"
