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

TLS
---
``tls=`` (an :class:`ssl.SSLContext`, client side) makes :func:`send_folder` and
:func:`verify` connect over TLS (DICOM PS3.15 B.1; pynetdicom's ``tls_args``), the
peer's certificate checked against ``host`` when the context checks host names. A
failed handshake is a :class:`~art.errors.NetworkError` naming the TLS library's
reason (e.g. ``certificate verify failed``). Without ``tls`` nothing changes.

Modules: :mod:`art.io.dicom_files` (finding and inspecting the files),
:mod:`art.io.network_association` (peer checks, presentation contexts,
associating), :mod:`art.io.network_store` (the C-STORE loop) and
:mod:`art.io.network_report` (:class:`StoreResult`, :class:`StoreReport`).
pynetdicom is imported only inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from art.errors import InputError, NetworkError
from art.io.dicom_files import _inspect, _is_dicom, find_dicom_files, pixel_data_problem
from art.io.network_association import _associate, _check_peer, check_ae_title, _check_tls, _make_ae, _presentation_contexts
from art.io.network_report import StoreReport, StoreResult, _failure_message
from art.io.network_store import _open_and_store, _record, _sendable

if TYPE_CHECKING:
    import ssl

__all__ = ["StoreResult", "StoreReport", "send_folder", "verify", "find_dicom_files", "pixel_data_problem"]


def verify(
    host: str, port: int, ae_title: str, *, calling_ae: str = "ART", timeout_s: float = 30, tls: ssl.SSLContext | None = None
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
    tls : ssl.SSLContext, optional, keyword-only
        Connect over TLS (DICOM PS3.15 B.1) with this client-side context, as for
        :func:`send_folder`. None (default): plain TCP.

    Raises
    ------
    NetworkError
        No association (over TLS: also a failed handshake, with the TLS
        library's reason), or the C-ECHO status is not success; names ``AE@host:port``.
    InputError
        Invalid host, port, AE title, timeout or ``tls``.
    """
    from pynetdicom.sop_class import Verification

    host, port, timeout_s = _check_peer(host, port, timeout_s)
    called = check_ae_title(ae_title, "ae_title")
    calling = check_ae_title(calling_ae, "calling_ae")
    tls = _check_tls(tls)
    ae = _make_ae(calling, timeout_s)
    ae.add_requested_context(Verification)
    assoc, why = _associate(ae, host, port, called, tls=tls)
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
    tls: ssl.SSLContext | None = None,
    files: Sequence[str | Path] | None = None,
) -> StoreReport:
    """Send every DICOM file under ``folder`` (or the ``files`` chosen there) to a DICOM peer by C-STORE.

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
    tls : ssl.SSLContext, optional, keyword-only
        Send over TLS (DICOM PS3.15 B.1) with this client-side context, e.g.
        ``ssl.create_default_context(cafile=CA)`` (+ ``load_cert_chain(cert, key)``
        for a peer that requires a client certificate); the peer's certificate
        is checked against ``host`` when the context checks host names (the
        default). None (default): plain TCP.
    files : sequence of str or Path, optional, keyword-only
        Send only these DICOM files under ``folder`` (absolute or relative to
        it), in the order given (e.g. images before the objects that reference
        them), as is the report (nothing skipped). None (default): every
        DICOM file under ``folder``, in sorted path order.

    Returns
    -------
    StoreReport
        Every file stored: one result per DICOM file, status success or warning.

    Raises
    ------
    NetworkError
        Anything not stored: association refused, rejected or aborted,
        unreachable peer (over TLS: also a failed handshake, with the TLS
        library's reason), SOP class or transfer syntax not accepted, an
        instance refused (failure status) or unanswered, or an unreadable
        DICOM file.  The message names ``AE@host:port``, the count stored and
        the failing files; ``exc.report`` holds the full :class:`StoreReport`.
    InputError
        ``folder`` missing or without DICOM files; one of ``files`` missing,
        outside ``folder`` or not DICOM; invalid host, port, AE title, timeout, ``tls``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("folder to send not found (or not a folder)", path=folder)
    host, port, timeout_s = _check_peer(host, port, timeout_s)
    called, calling, tls = check_ae_title(ae_title, "ae_title"), check_ae_title(calling_ae, "calling_ae"), _check_tls(tls)
    dicom, other = find_dicom_files(folder) if files is None else _chosen_files(folder, files)
    if not dicom:
        raise InputError("no DICOM files to send", path=folder)
    found = [_inspect(p, p.relative_to(folder)) for p in dicom]
    report = StoreReport(folder=folder, host=host, port=port, called_ae=called, calling_ae=calling,
                         skipped=[p.relative_to(folder) for p in other])
    results: dict[Path, StoreResult] = {}
    result = functools.partial(_record, results)
    sendable = _sendable(found, result)
    contexts = _presentation_contexts(sendable, folder)
    if sendable:
        _open_and_store(report, sendable, contexts, result, timeout_s, tls=tls)
    report.results = [results[f.rel] for f in found]
    if not report.ok:
        raise NetworkError(_failure_message(report), report=report)
    return report


def _chosen_files(folder: Path, files: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """``send_folder(files=...)``: the chosen files as paths under ``folder``, in the order given, once each (and no other files)."""
    if isinstance(files, (str, Path)):
        raise InputError(f"files must be a sequence of paths, got a single {type(files).__name__}")
    base = folder.resolve()
    chosen: dict[Path, None] = {}
    for f in files:
        p = Path(f)
        p = p if p.is_absolute() else folder / p
        if not p.is_file():
            raise InputError("file to send not found", path=p)
        try:
            rel = p.resolve().relative_to(base)
        except ValueError:
            raise InputError(f"file to send is not inside the folder sent ({folder})", path=p) from None
        if not _is_dicom(folder / rel):
            raise InputError("file to send is not a DICOM file", path=p)
        chosen.setdefault(folder / rel)
    return list(chosen), []
