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

Modules: :mod:`art.io.dicom_files` (finding and inspecting the files),
:mod:`art.io.network_association` (peer checks, presentation contexts,
associating), :mod:`art.io.network_store` (the C-STORE loop) and
:mod:`art.io.network_report` (:class:`StoreResult`, :class:`StoreReport`).
pynetdicom is imported only inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from art.errors import InputError, NetworkError
from art.io.dicom_files import _inspect, find_dicom_files, pixel_data_problem
from art.io.network_association import _associate, _check_ae, _check_peer, _make_ae, _presentation_contexts
from art.io.network_report import StoreReport, StoreResult, _failure_message
from art.io.network_store import _open_and_store, _record, _sendable

__all__ = ["StoreResult", "StoreReport", "send_folder", "verify", "find_dicom_files", "pixel_data_problem"]


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
    result = functools.partial(_record, results)
    sendable = _sendable(files, result)
    contexts = _presentation_contexts(sendable, folder)
    if sendable:
        _open_and_store(report, sendable, contexts, result, timeout_s)
    report.results = [results[f.rel] for f in files]
    if not report.ok:
        raise NetworkError(_failure_message(report), report=report)
    return report
