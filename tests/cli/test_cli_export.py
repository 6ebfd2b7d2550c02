"""``art export``: C-STORE of a result folder to a real peer (dcmtk), exit codes and messages."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "io"))
from dicom_peers import dataset_bytes, free_port, start_dcmqrscp, start_storescp  # noqa: E402

from art_cli.app import run  # noqa: E402


@pytest.fixture(scope="module")
def result_folder(tmp_path_factory) -> Path:
    from art_phantoms.write import write_phantom

    out = tmp_path_factory.mktemp("export") / "result"
    write_phantom(out, seed=5, fractions=0, spacing=(5.0, 4.0, 4.0))
    (out / "report.html").write_text("<html></html>")
    return out


def _n_dicom(folder: Path) -> int:
    return len(list(folder.rglob("*.dcm")))


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


def _args(folder: Path, peer_port: int, aet: str, *extra: str) -> list[str]:
    return ["export", str(folder), "--host", "127.0.0.1", "--port", str(peer_port), "--ae-title", aet, *extra]


def test_export_sends_everything(result_folder, tmp_path, capsys):
    peer = start_storescp(tmp_path)
    try:
        code = run(_args(result_folder, peer.port, peer.aet, "--calling-ae", "ART_CI"))
        received = peer.received()
    finally:
        peer.stop()
    out = capsys.readouterr().out
    n = _n_dicom(result_folder)
    assert code == 0
    assert f"OK: {n} of {n} DICOM file(s) stored" in out and "RTSTRUCT.dcm" in out and "report.html" in out
    assert len(received) == n
    # the peer got our AE title and the exact dataset bytes of the RTSTRUCT
    got = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in received}
    rs = pydicom.dcmread(result_folder / "RTSTRUCT.dcm", stop_before_pixels=True)
    assert dataset_bytes(got[str(rs.SOPInstanceUID)]) == dataset_bytes(result_folder / "RTSTRUCT.dcm")
    assert pydicom.dcmread(got[str(rs.SOPInstanceUID)]).file_meta.SourceApplicationEntityTitle.strip() == "ART_CI"


def test_export_json(result_folder, tmp_path, capsys):
    peer = start_storescp(tmp_path)
    try:
        code = run(_args(result_folder, peer.port, peer.aet, "--json"))
    finally:
        peer.stop()
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["ok"] is True
    assert data["n_stored"] == data["n_files"] == _n_dicom(result_folder)
    assert {r["status"] for r in data["results"]} == {"success"}
    assert data["peer"] == {"host": "127.0.0.1", "port": peer.port, "called_ae": "ART_TEST", "calling_ae": "ART"}


def test_export_anonymized_sends_deidentified_copies_and_keeps_the_folder(result_folder, tmp_path, capsys):
    before = _tree_hash(result_folder)
    peer = start_storescp(tmp_path)
    try:
        code = run(_args(result_folder, peer.port, peer.aet, "--anonymize", "--json"))
        received = peer.received()
    finally:
        peer.stop()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert _tree_hash(result_folder) == before
    n = _n_dicom(result_folder)
    assert len(received) == n
    originals = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in result_folder.rglob("*.dcm")}
    for p in received:
        data = p.read_bytes()
        assert b"ART^Phantom" not in data and b"ARTPH00005" not in data
        assert str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) not in originals
    report = json.loads(captured.out)
    assert report["ok"] and report["anonymized"]["n_files"] == n
    assert any(r["file"].startswith("RTSTRUCT.dcm -> RTSTRUCT.") for r in report["results"])
    assert "ART^Phantom" not in captured.out + captured.err and "ARTPH00005" not in captured.out + captured.err


def test_unreachable_peer_exits_1_with_one_line(result_folder, capsys):
    port = free_port()
    code = run(_args(result_folder, port, "NOBODY", "--timeout", "5"))
    err = capsys.readouterr().err
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith("art: error:") and f"cannot connect to 127.0.0.1:{port}" in line


def test_refused_association_exits_1(result_folder, tmp_path, capsys):
    peer = start_storescp(tmp_path, options=("--refuse",))
    try:
        code = run(_args(result_folder, peer.port, peer.aet))
    finally:
        peer.stop()
    captured = capsys.readouterr()
    assert code == 1
    [line] = captured.err.strip().splitlines()
    assert "rejected" in line and f"127.0.0.1:{peer.port}" in line and "0 of" in line
    assert "FAILED: 0 of" in captured.out  # the per-file report still says what was not stored


def test_wrong_called_ae_title_exits_1(result_folder, tmp_path, capsys):
    peer = start_dcmqrscp(tmp_path, aet="ART_QR")
    try:
        code = run(_args(result_folder, peer.port, "WRONG_AE", "--timeout", "10"))
    finally:
        peer.stop()
    err = capsys.readouterr().err
    assert code == 1
    [line] = err.strip().splitlines()
    # dcmqrscp rejects ("Called AE title not recognised"); now and then it drops the connection
    # instead, which pynetdicom reports as an abort during negotiation (see tests/io/test_network.py)
    assert f"WRONG_AE@127.0.0.1:{peer.port}" in line
    assert "Called AE title not recognised" in line or "aborted during negotiation" in line


def test_missing_folder_exits_1(tmp_path, capsys):
    code = run(_args(tmp_path / "nothing", 104, "X"))
    assert code == 1
    assert "not found" in capsys.readouterr().err


def test_bad_port_is_a_usage_error(tmp_path, capsys):
    assert run(_args(tmp_path, 0, "X")) == 2
