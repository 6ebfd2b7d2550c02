"""Provenance: what produced a result (software version, input hashes, parameters).

Hashes identify inputs without copying any patient data into the outputs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
from pathlib import Path
from typing import Any, Iterable

from art._version import __version__


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of one file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(paths: Iterable[str | Path]) -> str:
    """One SHA-256 over several files (order-independent: sorted by content hash).

    Used for DICOM series folders, whose file names and order carry no meaning.
    """
    digests = sorted(sha256_file(p) for p in paths)
    h = hashlib.sha256()
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()


def hash_inputs(**paths: str | Path | None) -> dict[str, str]:
    """SHA-256 of each input by name: a file's digest, or a folder's (:func:`sha256_tree` of every file under it); None skipped."""
    out = {}
    for name, p in paths.items():
        if p is None:
            continue
        p = Path(p)
        out[name] = sha256_tree(sorted(q for q in p.rglob("*") if q.is_file())) if p.is_dir() else sha256_file(p)
    return out


def provenance(*, inputs: dict[str, str] | None = None, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-serialisable provenance record.

    Parameters
    ----------
    inputs : dict, optional
        Name → SHA-256 of each input (file or series).
    parameters : dict, optional
        The parameters and seeds the result depends on.
    """
    return {
        "software": "art",
        "version": __version__,
        "python": platform.python_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "inputs": dict(inputs or {}),
        "parameters": dict(parameters or {}),
    }
