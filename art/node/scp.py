"""The node's DICOM Storage SCP: receive CT/CBCT series and their registrations, safely.

:class:`StorageSCP` (pynetdicom) accepts C-STORE of CT Image Storage, Enhanced CT
Image Storage, Spatial Registration and Deformable Spatial Registration objects, and
answers C-ECHO (Verification). Each instance is stored as
``incoming/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` exactly as it arrived (the
encoded dataset behind a PS3.10 file meta header; no re-encoding), written under a
temporary name, flushed to disk and renamed into place; only then is the C-STORE
answered with success (0x0000) and the instance handed to ``on_instance``.

Security (PS3.15 and the node's design):

* it binds 127.0.0.1 unless told otherwise;
* associations from calling AE titles not in ``allowed_calling_aes`` are rejected
  (A-ASSOCIATE-RJ: rejected-permanent, service-user, "calling AE title not
  recognised"); so are those addressed to another called AE title ("called AE title
  not recognised") and, when ``allowed_hosts`` is given, those from other addresses
  (rejected-permanent, service-user, no reason given);
* optional TLS (:func:`art.node.tls.server_context`); the TLS handshake runs in the
  association's thread with a time limit, so a client that connects and stays silent
  cannot hold up other senders;
* instances whose UIDs are not valid UIDs (they become file names) or that lack
  SOPInstanceUID, SeriesInstanceUID or Modality are refused (0xC000, cannot
  understand); a failed write is refused (0xA700, out of resources) and leaves no file;
* nothing logged names the patient; pynetdicom's own logging (which can print
  datasets) is limited to warnings.

Transfer syntaxes accepted: Implicit and Explicit VR Little Endian, Deflated Explicit
VR Little Endian and the lossless compressed syntaxes this installation's pydicom can
decode (RLE Lossless always; JPEG Lossless and JPEG 2000 Lossless when a decoder is
installed): art must be able to read what it acknowledges.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from art.errors import InputError
from art.io.network_association import check_ae_title as _check_ae
from art.io.uids import is_valid_uid
from art.node.receive import ReceivedInstance, expected_count_of

__all__ = ["StorageSCP", "STORAGE_SOP_CLASSES", "accepted_transfer_syntaxes"]

log = logging.getLogger("art.node")

STORAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.66.1": "Spatial Registration Storage",
    "1.2.840.10008.5.1.4.1.1.66.3": "Deformable Spatial Registration Storage",
}
"""SOP class UID → name of the objects the SCP stores."""

_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99")
"""Explicit VR Little Endian, Implicit VR Little Endian, Deflated Explicit VR Little Endian."""

_LOSSLESS = ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.90")
"""RLE Lossless, JPEG Lossless SV1, JPEG Lossless, JPEG 2000 Lossless: accepted when pydicom can decode them."""

SUCCESS, OUT_OF_RESOURCES, DATASET_MISMATCH, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000


class _Refused(Exception):
    """An instance the SCP refuses: the C-STORE status and why (no identifiers)."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


def accepted_transfer_syntaxes() -> list[str]:
    """The transfer syntaxes the SCP accepts: uncompressed, deflated, and the lossless ones pydicom can decode here."""
    from pydicom.pixels import get_decoder

    out = list(_UNCOMPRESSED)
    for ts in _LOSSLESS:
        with contextlib.suppress(Exception):
            if get_decoder(ts).is_available:
                out.append(ts)
    return out


def _host_networks(hosts: Sequence[str]) -> list[Any]:
    """``allowed_hosts`` as IP networks: addresses, networks ('10.0.0.0/24') or host names (resolved now)."""
    if isinstance(hosts, str):
        raise InputError("allowed_hosts must be a list of addresses, not one string")
    nets = []
    for h in hosts:
        text = str(h).strip()
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            raise InputError(f"allowed_hosts: {text!r} is neither an IP address, a network nor a host name that resolves ({exc})") from exc
        nets += [ipaddress.ip_network(info[4][0]) for info in infos]
    return nets


def _host_allowed(address: str, nets: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return any(ip in n for n in nets)


def _server_class() -> type:
    """pynetdicom's threaded association server, with the TLS handshake moved into the association's thread.

    pynetdicom 3 wraps an accepted socket in TLS inside the accept loop, handshake
    included: one client that connects and says nothing blocks every later connection.
    Here the socket is wrapped without handshake; the association's own thread does the
    handshake with a time limit, then hands the socket to pynetdicom as usual.
    """
    from pynetdicom.transport import ThreadedAssociationServer

    class _Server(ThreadedAssociationServer):
        handshake_timeout_s = 10.0

        def get_request(self) -> tuple[Any, Any]:
            client, address = self.socket.accept()
            # responses go out as several small writes: without TCP_NODELAY each can wait for a delayed ACK
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context:
                client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
            return client, address

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            if self.ssl_context:
                try:
                    request.settimeout(self.handshake_timeout_s)
                    request.do_handshake()
                    request.settimeout(None)
                except (OSError, ValueError) as exc:
                    log.warning("TLS handshake with %s failed: %s", client_address[0], type(exc).__name__ + f" {exc}"[:200])
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)

        def shutdown(self) -> None:  # the AE does not list this server (it was not started by ae.start_server)
            from socketserver import BaseServer

            BaseServer.shutdown(self)
            self.server_close()

    return _Server


def _quiet_pynetdicom() -> None:
    """Keep pynetdicom from logging datasets and PDUs (they may name the patient)."""
    from pynetdicom import _config

    _config.LOG_HANDLER_LEVEL = "none"
    lg = logging.getLogger("pynetdicom")
    if lg.getEffectiveLevel() < logging.WARNING:
        lg.setLevel(logging.WARNING)


def _log_rejected(event: Any) -> None:
    """EVT_REJECTED (an unknown calling or called AE title): say who was turned away and why."""
    with contextlib.suppress(Exception):
        rq, rj = event.assoc.requestor.primitive, event.assoc.acceptor.primitive
        log.warning("association from %s (calling AE %s, called AE %s) rejected: %s", event.assoc.requestor.address,
                    str(rq.calling_ae_title).strip(), str(rq.called_ae_title).strip(), rj.reason_str.lower())  # fmt: skip


def _uid(ds: Any, keyword: str) -> str:
    """A UID attribute of the received dataset, checked (it becomes a file name)."""
    value = str(ds.get(keyword, "") or "").strip().rstrip("\0").strip()
    if not value:
        raise _Refused(CANNOT_UNDERSTAND, f"{keyword} missing")
    if not is_valid_uid(value):
        raise _Refused(CANNOT_UNDERSTAND, f"{keyword} is not a valid UID")
    return value


class StorageSCP:
    """A DICOM Storage SCP that stores received instances for the node (see the module notes).

    Parameters
    ----------
    incoming_dir : str or Path, keyword-only
        Where instances are stored (``<SeriesInstanceUID>/<SOPInstanceUID>.dcm``); created.
    on_instance : callable, keyword-only
        Called with a :class:`~art.node.receive.ReceivedInstance` after each instance is
        stored, from the association's thread; what it raises is logged (type only) and
        does not affect the C-STORE status.
    ae_title : str, keyword-only
        Our AE title; associations must be addressed to it (``require_called_ae``).
    host : str, keyword-only
        Address to bind (default 127.0.0.1: this machine only; "0.0.0.0" for every interface).
    port : int, keyword-only
        TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
    allowed_calling_aes : sequence of str, keyword-only
        Calling AE titles accepted (at least one); others are rejected.
    allowed_hosts : sequence of str, keyword-only
        IP addresses, networks ("10.1.0.0/16") or host names accepted; empty: any host.
    ssl_context : ssl.SSLContext, optional, keyword-only
        TLS (:func:`art.node.tls.server_context`); None: plain TCP.
    require_called_ae : bool, keyword-only
        Reject associations addressed to another called AE title (default True).
    timeout_s : float, keyword-only
        ACSE, DIMSE and network timeouts of the associations (s).
    max_associations : int, keyword-only
        Simultaneous associations accepted.
    """

    def __init__(self, *, incoming_dir: str | Path, on_instance: Callable[[ReceivedInstance], None], ae_title: str = "ART",
                 host: str = "127.0.0.1", port: int = 11112, allowed_calling_aes: Sequence[str], allowed_hosts: Sequence[str] = (),
                 ssl_context: Any | None = None, require_called_ae: bool = True, timeout_s: float = 60.0,
                 max_associations: int = 10):  # fmt: skip
        if not callable(on_instance):
            raise InputError("on_instance must be callable")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InputError(f"port must be an integer from 0 to 65535 (0: any free port), got {port!r}")
        if not isinstance(host, str) or not host.strip():
            raise InputError(f"host must be an address to bind, got {host!r}")
        if isinstance(allowed_calling_aes, str) or not allowed_calling_aes:
            raise InputError("allowed_calling_aes must list at least one calling AE title (the imaging systems that may send)")
        if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s < float("inf")):
            raise InputError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.incoming_dir = Path(incoming_dir)
        self.ae_title = _check_ae(ae_title, "ae_title")
        self.host, self.port = host.strip(), port
        self.allowed_calling_aes = tuple(_check_ae(a, "allowed_calling_aes") for a in allowed_calling_aes)
        self._networks = _host_networks(allowed_hosts)
        self.ssl_context = ssl_context
        self.require_called_ae = bool(require_called_ae)
        self.timeout_s = float(timeout_s)
        self.max_associations = int(max_associations)
        self._on_instance = on_instance
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the SCP is accepting associations."""
        return self._server is not None

    def start(self) -> None:
        """Start accepting associations in background threads (returns at once).

        Raises
        ------
        NetworkError
            The address cannot be bound (in use, not an address of this machine).
        """
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        from art.errors import NetworkError

        if self._server is not None:
            return
        _quiet_pynetdicom()
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self._remove_partial_files()
        ae = AE(ae_title=self.ae_title)
        ae.require_calling_aet = list(self.allowed_calling_aes)
        ae.require_called_aet = self.require_called_ae
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.maximum_associations = self.max_associations
        syntaxes = accepted_transfer_syntaxes()
        for sop in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop, syntaxes)
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self._handle_store), (evt.EVT_REQUESTED, self._handle_requested),
                    (evt.EVT_REJECTED, _log_rejected)]  # fmt: skip
        try:
            server = ae.make_server((self.host, self.port), ssl_context=self.ssl_context, evt_handlers=handlers,
                                    server_class=_server_class())  # fmt: skip
        except OSError as exc:
            raise NetworkError(f"Storage SCP {self.ae_title}: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"art-scp-{self.ae_title}", daemon=True)
        thread.start()
        self._server, self._thread, self.port = server, thread, int(server.server_address[1])
        log.info("Storage SCP %s listening on %s:%d%s", self.ae_title, self.host, self.port, " (TLS)" if self.ssl_context else "")

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop accepting, abort the associations in progress and close the port (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        for assoc in list(server.active_associations):
            with contextlib.suppress(Exception):
                assoc.abort()
        if self._thread is not None:
            self._thread.join(timeout_s)
        log.info("Storage SCP %s stopped", self.ae_title)

    def __enter__(self) -> StorageSCP:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _remove_partial_files(self) -> None:
        """Temporary files of writes interrupted by a crash (never acknowledged): removed."""
        for p in self.incoming_dir.glob("*/.*.part"):
            with contextlib.suppress(OSError):
                p.unlink()

    def _handle_requested(self, event: Any) -> None:
        """EVT_REQUESTED: reject an association from a host not in ``allowed_hosts``."""
        if not self._networks:
            return
        address = str(event.assoc.requestor.address)
        if _host_allowed(address, self._networks):
            return
        log.warning("association from %s (calling AE %s) rejected: host not in allowed_hosts", address,
                    event.assoc.requestor.primitive.calling_ae_title)  # fmt: skip
        event.assoc.acse.send_reject(0x01, 0x01, 0x01)  # rejected-permanent, service-user, no reason given
        event.assoc.kill()

    def _handle_store(self, event: Any) -> int:
        """EVT_C_STORE: store the instance; the status is success only once the file is on disk."""
        peer = f"{event.assoc.requestor.ae_title}@{event.assoc.requestor.address}"
        try:
            fields = self._read_fields(event)
        except _Refused as exc:
            log.warning("C-STORE from %s refused (0x%04X): %s", peer, exc.status, exc)
            return exc.status
        folder = self.incoming_dir / fields["series_instance_uid"]
        target = folder / f"{fields['sop_instance_uid']}.dcm"
        try:
            _write_atomically(target, event.encoded_dataset(include_meta=True))
        except Exception as exc:  # noqa: BLE001 - disk full, permissions, encoding: all refuse the instance
            log.error("C-STORE from %s refused (0x%04X): cannot write the instance (%s)", peer, OUT_OF_RESOURCES, type(exc).__name__)
            return OUT_OF_RESOURCES
        inst = ReceivedInstance(path=target, calling_ae=str(event.assoc.requestor.ae_title).strip(),
                                peer_host=str(event.assoc.requestor.address), received_at=time.time(), **fields)  # fmt: skip
        log.debug("stored %s instance …%s of series …%s from %s", inst.modality, inst.sop_instance_uid[-8:],
                  inst.series_instance_uid[-8:], peer)  # fmt: skip
        try:
            self._on_instance(inst)
        except Exception as exc:  # noqa: BLE001 - the SCP keeps running; the instance is stored
            log.error("on_instance callback failed for an instance of series …%s: %s", inst.series_instance_uid[-8:], type(exc).__name__)
        return SUCCESS

    @staticmethod
    def _read_fields(event: Any) -> dict[str, Any]:
        """The ReceivedInstance fields of the C-STORE's dataset, or _Refused."""
        try:
            ds = event.dataset
            request = event.request
            fields = {
                "sop_instance_uid": _uid(ds, "SOPInstanceUID"),
                "sop_class_uid": _uid(ds, "SOPClassUID"),
                "series_instance_uid": _uid(ds, "SeriesInstanceUID"),
                "study_instance_uid": str(ds.get("StudyInstanceUID", "") or "").strip(),
                "modality": str(ds.get("Modality", "") or "").strip().upper(),
                "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "") or "").strip() or None,
                "patient_id": str(ds.get("PatientID", "") or ""),
                "expected_count": expected_count_of(ds),
            }
            affected = (str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID))
        except _Refused:
            raise
        except Exception as exc:  # noqa: BLE001 - an undecodable dataset
            raise _Refused(CANNOT_UNDERSTAND, f"the dataset cannot be decoded ({type(exc).__name__})") from exc
        if not fields["modality"]:
            raise _Refused(CANNOT_UNDERSTAND, "Modality missing")
        if fields["sop_instance_uid"] != affected[1]:
            raise _Refused(CANNOT_UNDERSTAND, "SOPInstanceUID differs from the request's Affected SOP Instance UID")
        if fields["sop_class_uid"] != affected[0]:
            raise _Refused(DATASET_MISMATCH, "SOPClassUID differs from the request's Affected SOP Class UID")
        return fields


def _write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file in the same folder, flushed to disk, then renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.stem}.{uuid.uuid4().hex}.part"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_folder(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk where the platform allows it."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
