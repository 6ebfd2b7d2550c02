"""PDF of the HTML report, printed by a headless Chromium when one is installed.

No PDF library is a dependency of ``art``; Debian's ``chromium`` (installed in
CI) prints the self-contained HTML faithfully. Without a browser the PDF is
simply not made (:func:`write_pdf` returns ``None``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

from art.errors import BackendError, InputError

__all__ = ["find_chromium", "write_pdf", "print_pdf_or_note", "print_pdf_beside"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable (``ART_CHROMIUM`` overrides), or None."""
    env = os.environ.get("ART_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def write_pdf(html_path: str | Path, pdf_path: str | Path, *, timeout_s: float = 120.0) -> Path | None:
    """Print an HTML file to PDF with headless Chromium (atomic write).

    Parameters
    ----------
    html_path : str or Path
        The self-contained report (no network is used).
    pdf_path : str or Path
        Destination; its folder must exist.
    timeout_s : float, keyword-only
        Give up after this many seconds.

    Returns
    -------
    Path or None
        ``pdf_path``, or None when no Chromium is installed.

    Raises
    ------
    InputError
        When ``html_path`` does not exist.
    BackendError
        When Chromium fails or times out.
    """
    html_path = Path(html_path).resolve()
    pdf_path = Path(pdf_path)
    if not html_path.is_file():
        raise InputError("no such HTML report", path=html_path)
    if not pdf_path.parent.is_dir():
        raise InputError("the PDF's folder does not exist", path=pdf_path.parent)
    exe = find_chromium()
    if exe is None:
        return None
    with tempfile.TemporaryDirectory(prefix="art-chromium-") as profile:
        tmp = Path(profile) / "report.pdf"
        cmd = [
            exe,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={tmp}",
            html_path.as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, "HOME": profile})
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"chromium did not print the report within {timeout_s:g} s") from exc
        if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [""]
            raise BackendError(f"chromium could not print the report to PDF (exit {proc.returncode}): {tail[0]}")
        staged = pdf_path.parent / f".{pdf_path.name}.tmp"
        shutil.copyfile(tmp, staged)
        os.replace(staged, pdf_path)
    return pdf_path


def print_pdf_or_note(html: str | Path, stages: Any) -> None:
    """``report.pdf`` beside ``report.html`` (:func:`write_pdf`); without Chromium, or when it fails,
    the HTML report stands and ``stages.note`` says why there is no PDF (a failed print is not a failed plan).

    Parameters
    ----------
    html : str or Path
        The report; the PDF is written next to it with the suffix ``.pdf``.
    stages : art.progress.Stages
        Where the note goes (anything with a ``note(str)`` method).
    """
    html = Path(html)
    try:
        if write_pdf(html, html.with_suffix(".pdf"), timeout_s=120.0) is None:
            stages.note("no Chromium found: report.pdf skipped (report.html is complete)")
    except BackendError as exc:
        stages.note(f"report.pdf not written: {exc}")


def print_pdf_beside(html: str | Path) -> Callable[[Any], None]:
    """Start :func:`print_pdf_or_note` on a thread (Chromium prints in its own process, so other work
    goes on meanwhile) and return the function that waits for it.

    Called with a ``Stages``, the waiter notes what the print noted and raises what it raised (e.g.
    :class:`InputError` for a missing HTML file); called with None (the caller failed and will remove
    the folder), it only waits.
    """
    from art.threads import in_background

    notes: list[str] = []

    class _Notes:
        def note(self, message: str) -> None:
            notes.append(message)

    printing = in_background(print_pdf_or_note, html, _Notes(), name="art-report-pdf")

    def wait(stages: Any) -> None:
        error = printing.exception()  # waits
        if stages is not None:
            for message in notes:
                stages.note(message)
            if error is not None:
                raise error

    return wait
