"""DICOM unique identifiers (UIDs) made by ``art``.

Format decision
---------------
``art`` has no registered organisation root, so it uses the root that the
DICOM standard (PS3.5 B.2) sets aside for UIDs derived from a UUID:
``2.25.<the UUID as a decimal integer>`` (at most 44 characters, well under
the 64-character limit, never a leading zero).

* :func:`new_uid` without ``entropy`` draws a random (version 4) UUID: a new,
  globally unique UID every call.
* ``new_uid(entropy=...)`` hashes the given values (SHA-256) into a name-based
  UUID (version 5 bits set), so the same inputs always give the same UID.  Use
  it for seeded phantoms and for the SOP instance UIDs of a series whose
  series UID is known, so that writing the same data twice gives identical
  files.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from art.errors import InputError

UID_ROOT = "2.25."
"""The UUID-derived UID root (PS3.5 B.2) under which ``art`` makes its UIDs."""

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def new_uid(*, entropy: Any = None) -> str:
    """A new DICOM UID under :data:`UID_ROOT`.

    Parameters
    ----------
    entropy : object, optional, keyword-only
        When given (a string, number or a tuple/list of them), the UID is a
        deterministic function of the text built from it: equal
        inputs give equal UIDs.  When ``None`` (default), the UID is random.

    Returns
    -------
    str
        A valid UID such as ``"2.25.31789..."`` (digits and dots, <= 64 chars).
    """
    if entropy is None:
        return f"{UID_ROOT}{uuid.uuid4().int}"
    text = _entropy_text(entropy)
    digest = hashlib.sha256(text.encode("utf-8")).digest()[:16]
    u = uuid.UUID(bytes=digest, version=5)
    return f"{UID_ROOT}{u.int}"


def _entropy_text(entropy: Any) -> str:
    if isinstance(entropy, (list, tuple)):
        return "\x1f".join(_entropy_text(e) for e in entropy)
    if isinstance(entropy, (str, int, float, bytes)):
        return f"{type(entropy).__name__}:{entropy!s}"
    raise InputError(f"entropy must be a string, a number or a tuple of them, got {type(entropy).__name__}")


def is_valid_uid(uid: str) -> bool:
    """True when ``uid`` is a syntactically valid DICOM UID (PS3.5 9.1)."""
    return isinstance(uid, str) and 0 < len(uid) <= 64 and bool(_UID_RE.match(uid))


def check_uid(uid: str, name: str) -> str:
    """Return ``uid`` if valid, else raise :class:`~art.errors.InputError` naming the parameter ``name``."""
    if not is_valid_uid(uid):
        raise InputError(f"{name} is not a valid DICOM UID (digits and dots, at most 64 characters): {uid!r}")
    return uid


def object_uids(series_instance_uid: str | None, sop_instance_uid: str | None, *, kind: str) -> tuple[str, str]:
    """The series and SOP instance UIDs of a written object (``kind``: "RTPLAN", "RTDOSE", ...).

    Given UIDs are checked; a missing series UID is new and random; a missing
    SOP instance UID is derived from the given series UID and ``kind``
    (deterministic output), else new and random.

    Returns
    -------
    series_uid, sop_uid : str
    """
    series_uid = check_uid(series_instance_uid, "series_instance_uid") if series_instance_uid else new_uid()
    if sop_instance_uid:
        sop_uid = check_uid(sop_instance_uid, "sop_instance_uid")
    elif series_instance_uid:
        sop_uid = new_uid(entropy=(series_uid, kind))
    else:
        sop_uid = new_uid()
    return series_uid, sop_uid
