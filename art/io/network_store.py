"""Sending files by C-STORE: the association's send loop and the outcome of each file.

:func:`_open_and_store` associates with the peer and sends every readable file
(:func:`_store_all`), recording one :class:`~art.io.network_report.StoreResult`
per file. pynetdicom is imported only inside the functions.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from art.io.dicom_files import _File
from art.io.network_association import _UNCOMPRESSED, _acse_aborted, _associate, _make_ae, _pause_reactor, _sop_class_name
from art.io.network_report import (
    _STATUS_FAILURE,
    _STATUS_NOT_SENT,
    _STATUS_SUCCESS,
    _STATUS_WARNING,
    StoreReport,
    StoreResult,
)

_send_lock = threading.Lock()  # pynetdicom's chunked-send switch is process-global


def _record(results: dict[Path, StoreResult], f: _File, status: str, code: int | None = None, detail: str = "") -> None:
    """Record the outcome of sending ``f`` in ``results`` (by its path relative to the folder), replacing an earlier one.

    Parameters
    ----------
    results : dict relative path -> StoreResult
        Updated in place.
    f : _File
        The file.
    status : str
        ``"success"``, ``"warning"``, ``"failure"`` or ``"not sent"``.
    code : int, optional
        The C-STORE response status.
    detail : str, optional
        The status's meaning, or why the file was not sent.
    """
    results[f.rel] = StoreResult(f.rel, _sop_class_name(f.sop_class_uid), f.sop_class_uid, status, code, detail)


def _sendable(files: list[_File], result: Any) -> list[_File]:
    """The files that can be sent; each of the others is recorded as not sent, with its problem.

    Parameters
    ----------
    files : list of _File
        Every DICOM file found, inspected.
    result : callable
        :func:`_record` bound to the results.

    Returns
    -------
    list of _File
        The files without a problem, in the order given.
    """
    sendable = []
    for f in files:
        if f.problem:
            result(f, _STATUS_NOT_SENT, detail=f.problem)
        else:
            sendable.append(f)
    return sendable


def _open_and_store(
    report: StoreReport, files: list[_File], contexts: list[tuple[str, list[str]]], result: Any, timeout_s: float,
    *, tls: Any = None,
) -> None:
    """Associate with the peer of ``report`` proposing ``contexts``, and send ``files`` by C-STORE.

    Parameters
    ----------
    report : StoreReport
        Gives the peer and our AE title; its ``error`` is set when the
        association fails or ends early.
    files : list of _File
        The files to send, in order.
    contexts : list of (SOP class UID, list of transfer syntax UIDs)
        From :func:`~art.io.network_association._presentation_contexts`.
    result : callable
        :func:`_record` bound to the results: called once per file (or more;
        the last call counts).
    timeout_s : float
        Connection, association and response timeout, s.
    tls : ssl.SSLContext, optional, keyword-only
        Connect over TLS with this (client-side) context.
    """
    ae = _make_ae(report.calling_ae, timeout_s)
    for sop, tss in contexts:
        ae.add_requested_context(sop, tss)
    assoc, why = _associate(ae, report.host, report.port, report.called_ae, tls=tls)
    if assoc is None:
        report.error = why
        for f in files:
            result(f, _STATUS_NOT_SENT, detail="no association")
    else:
        _store_all(assoc, files, result, report)


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


def _classify(code: int) -> tuple[str, str]:
    from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

    _, text = STORAGE_SERVICE_CLASS_STATUS.get(code, ("", ""))
    if code == 0x0000:
        return _STATUS_SUCCESS, ""
    if code == 0x0001 or 0xB000 <= code <= 0xBFFF:
        return _STATUS_WARNING, text or "warning"
    return _STATUS_FAILURE, text or "failure"


def _ts_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid else "unknown transfer syntax"
