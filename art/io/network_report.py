"""What a C-STORE of a folder stored: :class:`StoreResult` per file and the :class:`StoreReport`.

Used by :func:`art.io.network.send_folder`, which returns the report (or raises
:class:`~art.errors.NetworkError` carrying it, with the message of
:func:`_failure_message`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["StoreResult", "StoreReport"]

_STATUS_SUCCESS = "success"
_STATUS_WARNING = "warning"
_STATUS_FAILURE = "failure"
_STATUS_NOT_SENT = "not sent"


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
        One per DICOM file found, in sorted path order (``send_folder(files=...)``:
        one per file chosen, in the order given).
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


def _failure_message(report: StoreReport) -> str:
    bad = report.not_stored
    n = len(report.results)
    head = f"C-STORE to {report.peer}"
    if report.error:
        head += f": {report.error}"
    listed = ", ".join(f"{r.file.as_posix()} ({r.status}{': ' + r.detail if r.detail else ''})" for r in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"{head}; {len(report.stored)} of {n} file(s) stored, not stored: {listed}{more}"
