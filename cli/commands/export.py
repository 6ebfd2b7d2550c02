"""``art export``: send a result folder to a DICOM peer by C-STORE."""

from __future__ import annotations

import json as _json
from pathlib import Path
from typing import Annotated

import typer

from art_cli.options import Json

NAME = "export"


def command(
    folder: Annotated[Path, typer.Argument(help="Result folder to send (searched recursively; non-DICOM files are skipped).")],
    host: Annotated[str, typer.Option(help="DICOM peer host.")],
    port: Annotated[int, typer.Option(min=1, max=65535, help="DICOM peer port.")],
    ae_title: Annotated[str, typer.Option("--ae-title", help="Called AE title of the peer.")],
    calling_ae: Annotated[str, typer.Option("--calling-ae", help="Our (calling) AE title.")] = "ART",
    anonymize: Annotated[
        bool,
        typer.Option("--anonymize", help="Send de-identified copies (made in a temporary folder; FOLDER is not modified)."),
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Network timeout in seconds.")] = 30.0,
    json: Json = False,
) -> None:
    """Send a result folder to a DICOM peer by C-STORE and report what was and was not stored.

    Exit code 0 only when every DICOM file was stored; otherwise the report is
    printed, then a one-line error, and the exit code is 1.
    """
    import tempfile

    from art.errors import NetworkError
    from art.io.network import send_folder

    def emit(report, anonymised: dict | None) -> None:
        if json:
            data = report.to_dict()
            if anonymised is not None:
                data["anonymized"] = {k: v for k, v in anonymised.items() if k != "files"}
            typer.echo(_json.dumps(data, indent=2))
        else:
            typer.echo(report.format_text())

    def send(path: Path, anonymised: dict | None) -> None:
        try:
            report = send_folder(path, host=host, port=port, ae_title=ae_title, calling_ae=calling_ae, timeout_s=timeout)
        except NetworkError as exc:
            if exc.report is not None:
                emit(_with_source_names(exc.report, folder, anonymised), anonymised)
            raise
        emit(_with_source_names(report, folder, anonymised), anonymised)

    if not anonymize:
        send(folder, None)
        return
    from art.io.anonymize import anonymize_folder

    with tempfile.TemporaryDirectory(prefix="art-export-") as tmp:
        anon_dir = Path(tmp) / "anonymized"
        summary = anonymize_folder(folder, anon_dir)
        typer.echo(f"de-identified {summary['n_files']} DICOM file(s) ({summary['method']})", err=True)
        send(anon_dir, summary)


def _with_source_names(report, folder: Path, anonymised: dict | None):
    """Name the files in the report as they are in FOLDER (anonymised copies: 'source -> copy')."""
    from dataclasses import replace

    if anonymised is None:
        return report
    by_dest = {f["destination"]: f["source"] for f in anonymised["files"]}
    results = [
        replace(r, file=Path(f"{by_dest.get(r.file.as_posix(), '?')} -> {r.file.as_posix()}")) for r in report.results
    ]
    return replace(report, folder=folder, results=results, skipped=[Path(s) for s in anonymised["skipped"]])
