"""art.node.scp: the Storage SCP against real senders (dcmtk's storescu, pynetdicom), on loopback.

What is checked: instances land as incoming/<SeriesInstanceUID>/<SOPInstanceUID>.dcm with the
dataset bytes as sent; C-ECHO; TLS with a client certificate, and without one refused; unknown
calling/called AE titles and hosts rejected with the standard reasons; bad instances refused with
a failure status and no file; a failing callback does not stop the SCP; no patient identifier in
the log.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from art.errors import InputError, NetworkError
from art.node.scp import StorageSCP
from art.node.tls import client_context, server_context
from tests.node.scp_support import associate, make_certificates, shared_phantom, store_files, storescu

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return shared_phantom(tmp_path_factory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def start_scp(tmp_path):
    """start_scp(**options) → (running StorageSCP on a free port, list of ReceivedInstance); stopped afterwards."""
    started = []

    def start(**options):
        received: list = []
        kw = {"incoming_dir": tmp_path / "incoming", "on_instance": received.append, "port": 0, "allowed_calling_aes": ["CBCT1"]}
        scp = StorageSCP(**{**kw, **options})
        scp.start()
        started.append(scp)
        return scp, received

    yield start
    for scp in started:
        scp.stop()


@pytest.fixture
def no_identifiers_logged(phantom, caplog):
    """After the test: no log record carries the patient's ID or name."""
    caplog.set_level(logging.DEBUG)
    yield
    ds = pydicom.dcmread(next((phantom / "CT").iterdir()), stop_before_pixels=True)
    records = caplog.get_records("setup") + caplog.get_records("call")
    text = "\n".join(r.getMessage() for r in records)
    assert records, "nothing was logged: the check below would prove nothing"
    for ident in (str(ds.PatientID), str(ds.PatientName)):  # ("ART^Phantom": its family name is our AE title)
        assert ident and ident not in text


def _dataset_bytes(path: Path) -> bytes:
    """The encoded dataset after a PS3.10 file's meta group (whose length element comes first)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    (group_length,) = struct.unpack("<I", data[140:144])
    return data[144 + group_length :]


def _stored(incoming: Path) -> list[Path]:
    return sorted(p for p in incoming.rglob("*") if p.is_file())


def test_storescu_series_lands_as_sent_and_echo_answers(phantom, start_scp, no_identifiers_logged):
    scp, received = start_scp()
    assert scp.port > 0 and scp.running
    sent = sorted((phantom / "CBCT_01").iterdir())
    r = storescu(scp.port, phantom / "CBCT_01")
    assert r.returncode == 0, r.stderr

    stored = _stored(scp.incoming_dir)
    source = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in sent}
    series_uid = str(pydicom.dcmread(sent[0], stop_before_pixels=True).SeriesInstanceUID)
    assert [p.parent for p in stored] == [scp.incoming_dir / series_uid] * len(sent)
    assert {p.name for p in stored} == {f"{uid}.dcm" for uid in source}  # no temporary file left
    for p in stored:
        assert _dataset_bytes(p) == _dataset_bytes(source[p.stem])  # the dataset as it was sent
        assert pydicom.dcmread(p).file_meta.MediaStorageSOPInstanceUID == p.stem

    assert len(received) == len(sent)
    first = received[0]
    ds = pydicom.dcmread(sent[0], stop_before_pixels=True)
    assert (first.calling_ae, first.peer_host, first.modality, first.expected_count) == ("CBCT1", "127.0.0.1", "CT", None)
    assert (first.series_instance_uid, first.study_instance_uid, first.frame_of_reference_uid, first.patient_id) == (
        series_uid, str(ds.StudyInstanceUID), str(ds.FrameOfReferenceUID), str(ds.PatientID))  # fmt: skip
    assert first.path.is_file() and first.sop_class_uid == CT_STORAGE and abs(first.received_at - time.time()) < 60

    assoc = associate(scp.port, [(VERIFICATION, None)])
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_tls_store_with_a_client_certificate_and_refused_without(phantom, certs, start_scp):
    ctx = server_context(certificate=certs["server"], private_key=certs["server_key"], ca_certificates=certs["ca"],
                         require_client_certificate=True)  # fmt: skip
    scp, received = start_scp(ssl_context=ctx)
    files = sorted((phantom / "CT").iterdir())[:5]
    with_cert = client_context(ca_certificates=certs["ca"], certificate=certs["client"], private_key=certs["client_key"])

    silent = socket.create_connection(("127.0.0.1", scp.port))  # connects, never says a word
    try:
        t0 = time.monotonic()
        assert store_files(scp.port, files, tls=with_cert) == [0] * 5
        assert time.monotonic() - t0 < 5  # the silent client holds up nobody
    finally:
        silent.close()
    assert len(_stored(scp.incoming_dir)) == 5 and len(received) == 5

    without = client_context(ca_certificates=certs["ca"])
    with pytest.raises(ConnectionError, match="no association"):
        store_files(scp.port, sorted((phantom / "CBCT_01").iterdir())[:2], tls=without)
    with pytest.raises(ConnectionError, match="no association"):  # plain TCP to a TLS port
        store_files(scp.port, sorted((phantom / "CBCT_01").iterdir())[:2])
    assert len(_stored(scp.incoming_dir)) == 5 and len(received) == 5
    assert store_files(scp.port, files[:1], tls=with_cert) == [0]  # still serving


def test_unknown_calling_or_called_ae_is_rejected(phantom, start_scp, caplog):
    caplog.set_level(logging.INFO, logger="art.node")
    scp, received = start_scp()
    files = sorted((phantom / "CT").iterdir())[:2]
    r = storescu(scp.port, files, calling="INTRUDER")
    assert r.returncode != 0
    assert "Rejected Permanent" in r.stderr and "Calling AE Title Not Recognized" in r.stderr

    assoc = associate(scp.port, [(CT_STORAGE, None)], calling="INTRUDER")
    rj = assoc.acceptor.primitive
    assert assoc.is_rejected and (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)
    assert rj.reason_str == "Calling AE title not recognised"
    assoc = associate(scp.port, [(CT_STORAGE, None)], called="NOTART")
    rj = assoc.acceptor.primitive
    assert assoc.is_rejected and (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x07)
    assert _stored(scp.incoming_dir) == [] and received == []
    said = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "association from 127.0.0.1 (calling AE INTRUDER, called AE ART) rejected: calling ae title not recognised" in said
    assert "association from 127.0.0.1 (calling AE CBCT1, called AE NOTART) rejected: called ae title not recognised" in said


def test_host_not_allowed_is_rejected(phantom, start_scp):
    files = sorted((phantom / "CT").iterdir())[:2]
    scp, received = start_scp(allowed_hosts=["10.9.9.9"])
    assoc = associate(scp.port, [(CT_STORAGE, None)])
    rj = assoc.acceptor.primitive
    assert assoc.is_rejected and (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x01)
    r = storescu(scp.port, files)
    assert r.returncode != 0 and "Association Rejected" in r.stderr
    assert _stored(scp.incoming_dir) == [] and received == []

    scp2, received2 = start_scp(allowed_hosts=["10.9.9.9", "127.0.0.0/8"], incoming_dir=scp.incoming_dir.parent / "in2")
    assert store_files(scp2.port, files) == [0, 0] and len(received2) == 2
    with pytest.raises(InputError, match="allowed_hosts: 'no such host.invalid' is neither"):
        StorageSCP(incoming_dir=scp.incoming_dir, on_instance=print, allowed_calling_aes=["A"], allowed_hosts=["no such host.invalid"])


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")  # pydicom, on the sender's side
def test_bad_instances_are_refused_and_leave_no_file(phantom, start_scp, tmp_path, no_identifiers_logged):
    scp, received = start_scp()
    src = sorted((phantom / "CT").iterdir())
    no_modality = pydicom.dcmread(src[0])
    del no_modality.Modality
    escaping = pydicom.dcmread(src[1])
    escaping.SeriesInstanceUID = "1.2/../../escaped"
    bad_sop = pydicom.dcmread(src[2])
    bad_sop.SOPInstanceUID = bad_sop.file_meta.MediaStorageSOPInstanceUID = "../1.2"
    blocked = pydicom.dcmread(src[3])
    blocked.SeriesInstanceUID = "1.2.3.4"
    scp.incoming_dir.mkdir(parents=True, exist_ok=True)
    (scp.incoming_dir / "1.2.3.4").write_text("a file where the series folder would go")

    assoc = associate(scp.port, [(CT_STORAGE, None)])
    statuses = [int(assoc.send_c_store(ds).Status) for ds in (no_modality, escaping, bad_sop, blocked)]
    assoc.release()
    assert statuses == [0xC000, 0xC000, 0xC000, 0xA700]
    assert received == []
    assert _stored(tmp_path) == [scp.incoming_dir / "1.2.3.4"]  # nothing written anywhere, no temporary file
    assert store_files(scp.port, src[4:6]) == [0, 0] and len(received) == 2  # and the SCP still serves


def test_failing_callback_does_not_stop_the_scp(phantom, start_scp, caplog, no_identifiers_logged):
    pid = str(pydicom.dcmread(next((phantom / "CT").iterdir()), stop_before_pixels=True).PatientID)

    def callback(inst):
        raise ValueError(f"callback trouble for patient {inst.patient_id}")

    scp, _ = start_scp(on_instance=callback)
    files = sorted((phantom / "CT").iterdir())[:3]
    assert store_files(scp.port, files) == [0, 0, 0]
    assert store_files(scp.port, files[:1]) == [0]
    assert len(_stored(scp.incoming_dir)) == 3
    failures = [r.getMessage() for r in caplog.records if "on_instance callback failed" in r.getMessage()]
    assert len(failures) == 4 and all("ValueError" in m and pid not in m for m in failures)


def test_deflated_transfer_syntax_is_stored_readable(phantom, start_scp):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    scp, received = start_scp()
    src = sorted((phantom / "CT").iterdir())[0]
    assoc = associate(scp.port, [(CT_STORAGE, [DeflatedExplicitVRLittleEndian])])
    assert assoc.is_established
    assert assoc.send_c_store(pydicom.dcmread(src)).Status == 0
    assoc.release()
    (stored,) = _stored(scp.incoming_dir)
    got, want = pydicom.dcmread(stored), pydicom.dcmread(src)
    assert got.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert np.array_equal(got.pixel_array, want.pixel_array) and got.SOPInstanceUID == want.SOPInstanceUID


def test_options_are_checked_and_stop_frees_the_port(start_scp, tmp_path):
    kw = {"incoming_dir": tmp_path / "in", "on_instance": print}
    with pytest.raises(InputError, match="allowed_calling_aes must list at least one"):
        StorageSCP(**kw, allowed_calling_aes=[])
    with pytest.raises(InputError, match="port must be an integer from 0 to 65535"):
        StorageSCP(**kw, allowed_calling_aes=["A"], port=70000)
    with pytest.raises(InputError, match="ae_title must be 1 to 16"):
        StorageSCP(**kw, allowed_calling_aes=["A"], ae_title="A_VERY_LONG_AE_TITLE")
    with pytest.raises(InputError, match="on_instance must be callable"):
        StorageSCP(incoming_dir=tmp_path, on_instance=None, allowed_calling_aes=["A"])

    scp, _ = start_scp()
    assert scp.host == "127.0.0.1"
    with pytest.raises(NetworkError, match=f"cannot listen on 127.0.0.1:{scp.port}"):
        StorageSCP(**kw, allowed_calling_aes=["A"], port=scp.port).start()
    port = scp.port
    scp.stop()
    scp.stop()  # idempotent
    assert not scp.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
