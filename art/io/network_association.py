"""DICOM associations with a peer: checking its address and AE titles, proposing presentation contexts, associating.

Also the workarounds that keep a pynetdicom association reliable
(:func:`_pause_reactor`, :func:`_acse_aborted`). pynetdicom is imported only
inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from pathlib import Path
from typing import Any

from art.errors import InputError
from art.io.dicom_files import _File

_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")
"""Explicit VR Little Endian, Implicit VR Little Endian, Explicit VR Big Endian."""

_MAX_CONTEXTS = 128


def check_ae_title(value: Any, name: str) -> str:
    """An AE title, stripped: 1–16 printable ASCII characters without backslash (InputError naming ``name`` otherwise)."""
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


def _check_tls(tls: Any) -> Any:
    """``tls`` as given when it is None or a client-side :class:`ssl.SSLContext`; InputError otherwise."""
    import ssl

    if tls is None:
        return None
    if not isinstance(tls, ssl.SSLContext):
        raise InputError(f"tls must be an ssl.SSLContext (client side) or None, got {type(tls).__name__}")
    if tls.protocol == ssl.PROTOCOL_TLS_SERVER:
        raise InputError("tls must be a client-side ssl.SSLContext (e.g. ssl.create_default_context(cafile=...)), "
                         "got a server-side one (PROTOCOL_TLS_SERVER)")  # fmt: skip
    return tls


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    if not uid:
        return "unknown"
    name = UID(uid).name
    return name if name and name != uid else uid


def _make_ae(calling_ae: str, timeout_s: float) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = timeout_s
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    return ae


def _associate(ae: Any, host: str, port: int, called_ae: str, *, attempts: int = 3, tls: Any = None) -> tuple[Any, str]:
    """Request an association; return it and '' or None and why it failed (one line).

    A peer that rejects an association and closes the connection at once is
    sometimes seen by pynetdicom as an abort (the close overtakes the
    A-ASSOCIATE-RJ): an association aborted during negotiation is requested
    again (``attempts`` in all; no data has been sent) so that the peer's
    reason can be reported. ``tls``: an :class:`ssl.SSLContext` to connect
    with (DICOM over TLS), or None.
    """
    for k in range(attempts):
        assoc, why = _associate_once(ae, host, port, called_ae, tls=tls)
        if assoc is not None or not why.endswith("aborted during negotiation"):
            return assoc, why
    hint = "; over TLS, also how a peer refuses a missing or untrusted client certificate" if tls is not None else ""
    return None, why + f" ({attempts} attempts{hint})"


def _associate_once(ae: Any, host: str, port: int, called_ae: str, *, tls: Any = None) -> tuple[Any, str]:
    from pynetdicom import evt

    connected = threading.Event()

    def on_open(event: Any) -> None:
        connected.set()
        # DIMSE messages go out as several small writes: without TCP_NODELAY each C-STORE can wait
        # for the peer's delayed ACK (about 40-90 ms per instance on Linux).
        with contextlib.suppress(Exception):
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    handlers = [(evt.EVT_CONN_OPEN, on_open)]
    if tls is None:
        assoc = ae.associate(host, port, ae_title=called_ae, evt_handlers=handlers)
    else:
        with _ConnectErrors() as errors:
            # server_hostname: the peer's certificate is checked against it when the context checks host names
            assoc = ae.associate(host, port, ae_title=called_ae, evt_handlers=handlers, tls_args=(tls, host))
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
        if tls is not None:
            return None, f"cannot connect to {host}:{port} over TLS ({errors.of(assoc) or _TLS_HINT})"
        return None, f"cannot connect to {host}:{port} (connection refused, host unreachable or timed out)"
    if assoc.is_aborted:
        return None, f"association with {peer} aborted during negotiation"
    return None, f"no association with {peer} (no answer within the timeout)"


_TLS_HINT = "connection refused, host unreachable, timed out, or the TLS handshake failed"


class _ConnectErrors(logging.Handler):
    """Collects pynetdicom's connection errors while installed (``with``), to name why a TLS connection failed.

    pynetdicom logs the exception of a failed connection (``TCP Initialisation
    Error: ...``, e.g. ``[SSL: CERTIFICATE_VERIFY_FAILED] ...``) from the
    association's DUL thread and reports no more; :meth:`of` picks the message
    logged by one association's thread.
    """

    _PREFIX = "TCP Initialisation Error: "

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[tuple[int | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            msg = record.getMessage()
            if msg.startswith(self._PREFIX):
                self.records.append((record.thread, msg[len(self._PREFIX):].strip()))

    def __enter__(self) -> _ConnectErrors:
        logging.getLogger("pynetdicom").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("pynetdicom").removeHandler(self)

    def of(self, assoc: Any) -> str:
        ident = getattr(getattr(assoc, "dul", None), "ident", None)
        mine = [m for t, m in self.records if t == ident and ident is not None]
        return mine[-1] if mine else ""


def _presentation_contexts(files: list[_File], folder: Path) -> list[tuple[str, list[str]]]:
    """The presentation contexts to propose for sending ``files``.

    One per (SOP class, transfer syntax) found, each with that single syntax so
    the file can be sent unchanged; plus, per class with uncompressed files, one
    context offering the uncompressed syntaxes as a fallback (re-encoding) for
    peers that refuse the first.

    Parameters
    ----------
    files : list of _File
        The readable files to send.
    folder : Path
        The folder sent (named in the error).

    Returns
    -------
    list of (SOP class UID, list of transfer syntax UIDs)
        In sorted order: the exact contexts, then the fallbacks.

    Raises
    ------
    InputError
        More contexts than one association allows (``_MAX_CONTEXTS``).
    """
    wanted: list[tuple[str, list[str]]] = []
    for sop, ts in sorted({(f.sop_class_uid, f.transfer_syntax) for f in files}):
        wanted.append((sop, [ts]))
    for sop in sorted({f.sop_class_uid for f in files if f.transfer_syntax in _UNCOMPRESSED}):
        wanted.append((sop, list(_UNCOMPRESSED)))
    if len(wanted) > _MAX_CONTEXTS:
        raise InputError(
            f"the folder needs {len(wanted)} presentation contexts (SOP class x transfer syntax); "
            f"one association allows {_MAX_CONTEXTS}: send it in parts",
            path=folder,
        )
    return wanted


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
