"""Privacy: patient names and IDs stay out of logs, messages and reports unless asked for.

``art --verbose-phi <command>`` (or :func:`set_verbose_phi`) allows the commands to
show the patient's name and ID on the terminal and in the QA report, where a
person needs them to check they have the right patient. Without it, nothing
that art prints or writes besides the DICOM objects themselves carries them.
"""

from __future__ import annotations

import hashlib

_VERBOSE_PHI = False


def set_verbose_phi(on: bool) -> None:
    """Allow (True) or forbid (False, the default) patient identifiers in output."""
    global _VERBOSE_PHI
    _VERBOSE_PHI = bool(on)


def verbose_phi() -> bool:
    """Whether patient identifiers may be shown."""
    return _VERBOSE_PHI


def identifiers(patient) -> dict[str, str]:
    """Patient name and ID for display, only when :func:`verbose_phi` is on (else empty)."""
    if not _VERBOSE_PHI or patient is None:
        return {}
    return {"Patient name": str(getattr(patient, "name", "") or ""), "Patient ID": str(getattr(patient, "id", "") or "")}


def patient_key(patient_id: str) -> str:
    """A SHA-256 digest (hex) of a PatientID, compared and stored instead of the ID itself.

    Surrounding spaces are ignored (DICOM pads values); a fixed prefix keeps the digest
    specific to art. Used by the node's patient registry and to tell a course's patients apart.
    """
    return hashlib.sha256(("art-node-patient:" + str(patient_id or "").strip()).encode("utf-8")).hexdigest()
