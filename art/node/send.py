"""Sending a finished re-plan to its destination (a TMS or PACS) by C-STORE, retried with back-off.

:func:`results_to_send` picks the DICOM files of an ``art replan`` result folder that a
treatment management system needs; :func:`send_with_retry` sends exactly those with
:func:`art.io.network.send_folder` (over TLS when the destination has a context), and
when the send fails (peer down, association refused or aborted, an instance refused)
tries again after a back-off that doubles up to a maximum. A bad folder or destination
(:class:`~art.errors.InputError`) is never retried.

What goes to the TMS, and in what order: the synthetic CT (``sCT/``, the images the
adapted RTPLAN and RTDOSE were computed on and reference), the daily RTSTRUCT, the
adapted RTPLAN and RTDOSE, the REG and DREG (CBCT ↔ planning CT) — images before the
objects that reference them. Not sent: ``report.html``, ``summary.json`` and any other
DICOM file of the folder. The daily RTSTRUCT references the CBCT, which the imaging
system sent and the TMS already has (or gets from it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from art.errors import InputError, NetworkError

__all__ = ["results_to_send", "send_with_retry", "SENT_MODALITIES"]

#: Modalities of the result objects sent from the top of the result folder, in the order sent.
SENT_MODALITIES = ("RTSTRUCT", "RTPLAN", "RTDOSE", "REG")


def results_to_send(folder: str | Path) -> list[Path]:
    """The DICOM files of a finished re-plan result folder that go to the destination, in sending order.

    Parameters
    ----------
    folder : str or Path
        An ``art replan`` result folder (``RTPLAN.dcm``, ``RTDOSE.dcm``, ``RTSTRUCT.dcm``,
        ``REG.dcm``, ``DREG.dcm``, ``sCT/``, ``report.html``, ``summary.json``).

    Returns
    -------
    list of Path
        The CT images of ``sCT/`` (by path), then the files at the top of ``folder``
        with Modality RTSTRUCT, RTPLAN, RTDOSE, REG (REG and DREG), in that order of
        modality and by path within one. Other files are left out.

    Raises
    ------
    InputError
        ``folder`` is not a folder, or holds no RTPLAN or no RTDOSE at its top (not a
        finished re-plan).
    """
    from art.io.dicom_common import read_dataset
    from art.io.dicom_files import find_dicom_files
    from art.jobs import SYNTHETIC_CT_FOLDER

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("result folder to send not found (or not a folder)", path=folder)
    dicom, _ = find_dicom_files(folder)
    images: list[Path] = []
    objects: dict[str, list[Path]] = {m: [] for m in SENT_MODALITIES}
    for p in dicom:
        rel = p.relative_to(folder)
        modality = str(read_dataset(p, stop_before_pixels=True).get("Modality", "") or "").upper()
        if len(rel.parts) == 1 and modality in objects:
            objects[modality].append(p)
        elif rel.parts[0] == SYNTHETIC_CT_FOLDER and modality == "CT":
            images.append(p)
    missing = [m for m in ("RTPLAN", "RTDOSE") if not objects[m]]
    if missing:
        raise InputError(f"not a finished re-plan result: no {' and no '.join(missing)} file at its top", path=folder)
    return images + [p for m in SENT_MODALITIES for p in objects[m]]


def send_with_retry(
    folder: str | Path,
    destination: Any,
    *,
    attempts: int = 5,
    backoff_s: float = 10.0,
    max_backoff_s: float = 300.0,
    sleep: Callable[[float], Any] = time.sleep,
    on_attempt: Callable[[int, Exception | None], Any] | None = None,
    timeout_s: float = 30.0,
) -> Any:
    """Send a finished re-plan (:func:`results_to_send`) to ``destination``, retrying with back-off.

    Parameters
    ----------
    folder : str or Path
        The ``art replan`` result folder.
    destination : object
        Where to send: attributes ``ae_title`` (called AE), ``host``, ``port``, and
        optionally ``calling_ae`` (our AE title, default ``"ART"``) and ``tls`` (a
        client-side :class:`ssl.SSLContext`, or None for plain TCP) — e.g. the node
        configuration's ``Destination``.
    attempts : int, keyword-only
        How many times to try in all (≥ 1, default 5).
    backoff_s : float, keyword-only
        Wait after the first failed attempt, s (≥ 0, default 10); it doubles after
        each further failure.
    max_backoff_s : float, keyword-only
        Longest wait between two attempts, s (≥ 0, default 300).
    sleep : callable, keyword-only
        ``sleep(seconds)`` that waits (default :func:`time.sleep`; a test may record instead).
    on_attempt : callable, optional, keyword-only
        Called after each attempt as ``on_attempt(n, exc)``: ``n`` counts from 1, ``exc``
        is the attempt's :class:`~art.errors.NetworkError`, or None when it succeeded
        (before any wait; an exception it raises stops the sending).
    timeout_s : float, keyword-only
        Network timeout of each attempt, s (connection, association, each response).

    Returns
    -------
    StoreReport
        The successful attempt's report (every file chosen stored).

    Raises
    ------
    NetworkError
        Every attempt failed: says how many attempts over how long, with the last
        attempt's message; ``exc.report`` is the last attempt's report and the last
        attempt's error is chained (``__cause__``).
    InputError
        ``folder`` is not a finished re-plan, a bad destination, or bad options (not retried).
    """
    from art.io.network import send_folder

    waits = _backoff_schedule(attempts, backoff_s, max_backoff_s)
    peer = _peer(destination)
    if not callable(sleep) or (on_attempt is not None and not callable(on_attempt)):
        raise InputError("sleep and on_attempt must be callables (on_attempt may be None)")
    files = results_to_send(folder)
    busy_s, last = 0.0, None
    for n in range(1, attempts + 1):
        t0 = time.monotonic()
        try:
            report = send_folder(folder, files=files, timeout_s=timeout_s, **peer)
        except NetworkError as exc:
            busy_s += time.monotonic() - t0
            last = exc
            if on_attempt is not None:
                on_attempt(n, exc)
            if n < attempts:
                sleep(waits[n - 1])
            continue
        if on_attempt is not None:
            on_attempt(n, None)
        return report
    raise _gave_up(Path(folder), peer, waits, busy_s, last) from last


def _gave_up(folder: Path, peer: dict, waits: list[float], busy_s: float, last: NetworkError) -> NetworkError:
    """The error after the last failed attempt: how many attempts over how long (sending + waits), and the last one's message."""
    waited = f" (waits of {', '.join(f'{w:g}' for w in waits)} s between attempts)" if waits else ""
    return NetworkError(
        f"C-STORE of {folder.name} to {peer['ae_title']}@{peer['host']}:{peer['port']} failed {len(waits) + 1} time(s) "
        f"over {busy_s + sum(waits):.0f} s{waited}; last attempt: {last}",
        report=last.report,
    )


def _backoff_schedule(attempts: Any, backoff_s: Any, max_backoff_s: Any) -> list[float]:
    """The waits between ``attempts`` attempts: ``backoff_s`` doubling, each at most ``max_backoff_s``."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InputError(f"attempts must be an integer >= 1, got {attempts!r}")
    for name, v in (("backoff_s", backoff_s), ("max_backoff_s", max_backoff_s)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InputError(f"{name} must be a finite number of seconds >= 0, got {v!r}")
    waits, w = [], float(backoff_s)
    for _ in range(attempts - 1):
        waits.append(min(w, float(max_backoff_s)))
        w = min(w * 2.0, float(max_backoff_s))
    return waits


def _peer(destination: Any) -> dict[str, Any]:
    """``send_folder``'s peer keywords from a destination object (InputError naming a missing attribute)."""
    missing = [a for a in ("ae_title", "host", "port") if getattr(destination, a, None) is None]
    if missing:
        raise InputError(f"destination lacks {', '.join(missing)} (needs ae_title, host, port; optional calling_ae, tls)")
    import ssl

    tls = getattr(destination, "tls", None)
    if tls is not None and not isinstance(tls, ssl.SSLContext):
        raise InputError(f"destination.tls must be an ssl.SSLContext or None, got {type(tls).__name__}")
    calling = getattr(destination, "calling_ae", None) or "ART"
    return {"host": destination.host, "port": destination.port, "ae_title": destination.ae_title, "calling_ae": calling, "tls": tls}
