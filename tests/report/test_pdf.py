"""art.report.pdf: the PDF printed beside other work (``art demo`` prints the reference report beside the re-plan)."""

from __future__ import annotations

import pytest


def test_the_pdf_printed_beside_other_work_is_written_or_noted(monkeypatch, tmp_path):
    """``art.report.pdf.print_pdf_beside`` (the demo prints the reference report beside the re-plan): the waiter returns once report.pdf is written (Chromium installed) or notes
    why it is not; with None it only waits; an error of the print (no HTML) is raised by the waiter."""
    import shutil

    from art.progress import Stages
    from art.report.pdf import print_pdf_beside

    html = tmp_path / "report.html"
    html.write_text("<html><body><h1>QA report</h1></body></html>", encoding="utf-8")
    stages = Stages(show=False)
    notes = []
    monkeypatch.setattr(stages, "note", notes.append)
    print_pdf_beside(html)(stages)
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        assert (tmp_path / "report.pdf").read_bytes()[:5] == b"%PDF-" and notes == []
    monkeypatch.setattr("art.report.pdf.find_chromium", lambda: None)
    (tmp_path / "report.pdf").unlink(missing_ok=True)
    print_pdf_beside(html)(stages)
    assert not (tmp_path / "report.pdf").exists() and any("no Chromium" in n for n in notes)
    print_pdf_beside(tmp_path / "missing.html")(None)  # the caller's failure: only waits
    with pytest.raises(Exception, match="no such HTML report"):
        print_pdf_beside(tmp_path / "missing.html")(stages)
