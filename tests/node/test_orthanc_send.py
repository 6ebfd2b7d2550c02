"""Sending results to a real Orthanc (the Debian package's binary on loopback): send_folder, send_with_retry, TLS.

One plain Orthanc serves the module (only ``test_orthanc_stores_the_chosen_files_byte_for_byte``
stores into it); the retry test starts its own Orthanc on pre-allocated ports between two
attempts; the TLS tests share one Orthanc with DICOM TLS and REST authentication.
Orthanc keeps each received dataset as it arrived (its own file meta in front), so the
bytes after the file meta must equal ours.
"""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "io"))
from dicom_peers import dataset_bytes  # noqa: E402

from tests.node.orthanc import OrthancServer, OrthancTLS, free_port, orthanc_fixture, require_orthanc  # noqa: E402
from tests.node.result_folder import write_result_folder  # noqa: E402
from tests.node.tls_certs import make_certificates  # noqa: E402

from art.errors import InputError, NetworkError  # noqa: E402
from art.io.network import send_folder, verify  # noqa: E402
from art.node.send import results_to_send, send_with_retry  # noqa: E402

pacs = orthanc_fixture(scope="module")


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> Path:
    """A result-shaped folder (sCT/, RTSTRUCT, RTPLAN, RTDOSE, REG, DREG, report, summary) with planning_ct/ and cbct/ beside it."""
    return write_result_folder(tmp_path_factory.mktemp("node-send"))


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _modality(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).Modality)


class Sleeps(list):
    """A fake ``sleep``: records the waits asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_results_to_send_picks_the_tms_objects_images_first(result, tmp_path):
    folder = tmp_path / "result"
    shutil.copytree(result, folder)
    cbct_slice = sorted((result.parent / "cbct").glob("*.dcm"))[0]
    shutil.copy(cbct_slice, folder / "CBCT_copy.dcm")  # a CT at the top: not a result object
    shutil.copytree(result.parent / "planning_ct", folder / "planning_ct")  # CT outside sCT/: not sent
    files = results_to_send(folder)
    rel = [p.relative_to(folder).as_posix() for p in files]
    n_sct = len(list((folder / "sCT").glob("*.dcm")))
    assert n_sct == 6 and all(r.startswith("sCT/") for r in rel[:n_sct])
    assert rel[n_sct:] == ["RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm", "DREG.dcm", "REG.dcm"]
    assert [_modality(p) for p in files[n_sct:]] == ["RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "REG"]
    (folder / "RTDOSE.dcm").unlink()
    with pytest.raises(InputError, match="not a finished re-plan result: no RTDOSE"):
        results_to_send(folder)


def test_orthanc_stores_the_chosen_files_byte_for_byte(result, tmp_path, pacs):
    folder = tmp_path / "result"
    shutil.copytree(result, folder)
    shutil.copytree(result.parent / "cbct", folder / "cbct")  # DICOM in the folder that is not chosen
    files = results_to_send(folder)
    report = send_folder(folder, host=pacs.host, port=pacs.port, ae_title=pacs.ae_title, files=files)
    assert report.ok and [r.file for r in report.results] == [p.relative_to(folder) for p in files]
    assert report.skipped == []
    pacs.wait_for(lambda server: server.count() >= len(files), 5)  # C-STORE success: already indexed
    stored = {d["SOPInstanceUID"]: d for d in pacs.instances()}
    assert {_uid(p) for p in files} <= set(stored)
    assert not {_uid(p) for p in (folder / "cbct").glob("*.dcm")} & set(stored)  # not chosen, not sent
    plan, image = folder / "RTPLAN.dcm", files[0]
    assert stored[_uid(plan)]["Modality"] == "RTPLAN"
    assert stored[_uid(plan)]["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.481.5"
    for p in (plan, image, folder / "DREG.dcm"):
        got = tmp_path / f"from-orthanc-{p.name}"
        got.write_bytes(pacs.file(_uid(p)))
        assert dataset_bytes(got) == dataset_bytes(p), p.name
    ours, theirs = pydicom.dcmread(image), pydicom.dcmread(tmp_path / f"from-orthanc-{image.name}")
    assert theirs.PixelData == ours.PixelData and theirs.SeriesInstanceUID == ours.SeriesInstanceUID


def test_send_folder_files_must_be_dicom_files_inside_the_folder(result, tmp_path, pacs):
    kw = {"host": pacs.host, "port": pacs.port, "ae_title": pacs.ae_title}
    with pytest.raises(InputError, match="not a DICOM file"):
        send_folder(result, files=["report.html"], **kw)
    with pytest.raises(InputError, match="not inside the folder sent"):
        send_folder(result, files=[next((result.parent / "cbct").glob("*.dcm"))], **kw)
    with pytest.raises(InputError, match="not found"):
        send_folder(result, files=["nope.dcm"], **kw)
    with pytest.raises(InputError, match="sequence of paths"):
        send_folder(result, files="RTPLAN.dcm", **kw)


def test_harness_orthanc_runs_alone_on_its_ports_without_plugins(pacs):
    system = pacs.rest("/system")
    assert (system["DicomPort"], system["HttpPort"], system["DicomAet"]) == (pacs.port, pacs.http_port, pacs.ae_title)
    # no plugin loaded ("explorer.js" is built in: the Explorer extensions of plugins): /etc/orthanc is not used
    assert set(pacs.rest("/plugins")) <= {"explorer.js"}
    assert pacs.startup_s < 5 and pacs.running


def test_orthanc_answers_echo_and_rejects_another_called_ae(pacs):
    verify(pacs.host, pacs.port, pacs.ae_title)
    with pytest.raises(NetworkError, match="rejected"):
        verify(pacs.host, pacs.port, "NOT_ORTHANC")


def test_send_with_retry_gives_up_after_the_attempts_with_doubling_waits(result):
    port = free_port()  # nothing listens there
    dest = type("Dest", (), {"ae_title": "TMS", "host": "127.0.0.1", "port": port, "calling_ae": "ART", "tls": None})()
    sleeps, seen = Sleeps(), []
    with pytest.raises(NetworkError, match=r"failed 3 time\(s\) over \d+ s \(waits of 10, 20 s") as err:
        send_with_retry(result, dest, attempts=3, sleep=sleeps, on_attempt=lambda n, exc: seen.append((n, exc)), timeout_s=5)
    assert sleeps == [10.0, 20.0]
    assert [n for n, _ in seen] == [1, 2, 3] and all(isinstance(e, NetworkError) for _, e in seen)
    assert err.value.__cause__ is seen[-1][1] and "cannot connect" in str(err.value)
    assert err.value.report is seen[-1][1].report and len(err.value.report.results) == len(results_to_send(result))


def test_send_with_retry_waits_are_capped(result):
    dest = type("Dest", (), {"ae_title": "TMS", "host": "127.0.0.1", "port": free_port(), "calling_ae": "ART", "tls": None})()
    sleeps = Sleeps()
    with pytest.raises(NetworkError, match="failed 5 time"):
        send_with_retry(result, dest, attempts=5, backoff_s=10, max_backoff_s=25, sleep=sleeps, timeout_s=5)
    assert sleeps == [10.0, 20.0, 25.0, 25.0]


def test_send_with_retry_succeeds_when_orthanc_starts_between_attempts(result, tmp_path):
    require_orthanc()
    server = OrthancServer(tmp_path / "late-orthanc", dicom_port=free_port(), http_port=free_port())
    dest = server.destination(calling_ae="ART_NODE")
    sleeps, seen = Sleeps(), []

    def on_attempt(n, exc):
        seen.append((n, exc))
        if n == 1:
            assert isinstance(exc, NetworkError) and not server.running
            server.start()  # the peer comes up during the back-off

    try:
        report = send_with_retry(result, dest, attempts=4, sleep=sleeps, on_attempt=on_attempt, timeout_s=10)
        assert report.ok and sleeps == [10.0] and [(n, e is None) for n, e in seen] == [(1, False), (2, True)]
        want = {_uid(p) for p in results_to_send(result)}
        assert {d["SOPInstanceUID"] for d in server.instances()} == want and server.count() == len(want)
    finally:
        server.stop(graceful=False)


def test_send_with_retry_does_not_retry_input_errors(result, tmp_path):
    sleeps, seen = Sleeps(), []
    dest = type("Dest", (), {"ae_title": "TMS", "host": "127.0.0.1", "port": free_port()})()
    not_a_result = tmp_path / "half"
    not_a_result.mkdir()
    shutil.copy(result / "RTSTRUCT.dcm", not_a_result)
    with pytest.raises(InputError, match="no RTPLAN and no RTDOSE"):
        send_with_retry(not_a_result, dest, sleep=sleeps, on_attempt=lambda n, e: seen.append(n))
    with pytest.raises(InputError, match="destination lacks port"):
        send_with_retry(result, type("D", (), {"ae_title": "TMS", "host": "x"})(), sleep=sleeps)
    with pytest.raises(InputError, match="attempts must be"):
        send_with_retry(result, dest, attempts=0, sleep=sleeps)
    with pytest.raises(InputError, match="backoff_s must be"):
        send_with_retry(result, dest, backoff_s=-1, sleep=sleeps)
    with pytest.raises(InputError, match="ae_title must be"):
        send_with_retry(result, type("D", (), {"ae_title": "WAY_TOO_LONG_AE_TITLE", "host": "127.0.0.1", "port": 104})(),
                        sleep=sleeps, on_attempt=lambda n, e: seen.append(n))  # fmt: skip
    assert sleeps == [] and seen == []


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_pacs(tmp_path_factory, certs):
    tls = OrthancTLS(certs.server_cert, certs.server_key, certs.ca, remote_certificate_required=True)
    server = OrthancServer(tmp_path_factory.mktemp("orthanc-tls"), ae_title="TLS_PACS", tls=tls, user=("art", "s3cret"))
    with server:
        yield server


def test_send_with_retry_over_tls_to_orthanc(result, certs, tls_pacs):
    verify(tls_pacs.host, tls_pacs.port, tls_pacs.ae_title, tls=certs.client_context())
    sleeps = Sleeps()
    report = send_with_retry(result, tls_pacs.destination(tls=certs.client_context()), sleep=sleeps, timeout_s=10)
    assert report.ok and sleeps == []
    plan = result / "RTPLAN.dcm"
    stored = {d["SOPInstanceUID"] for d in tls_pacs.instances()}  # REST with the user's password
    assert {_uid(p) for p in results_to_send(result)} <= stored
    with pytest.raises(urllib.error.HTTPError) as http:  # REST without the user's password
        urllib.request.urlopen(tls_pacs.url + "/instances", timeout=5)
    assert http.value.code == 401
    got = result.parent / "rtplan-over-tls.dcm"
    got.write_bytes(tls_pacs.file(_uid(plan)))
    assert dataset_bytes(got) == dataset_bytes(plan)


def test_tls_failures_are_network_errors_naming_why(result, certs, tls_pacs):
    host, port, aet = tls_pacs.host, tls_pacs.port, tls_pacs.ae_title
    with pytest.raises(NetworkError, match="certificate verify failed"):
        verify(host, port, aet, tls=certs.client_context(trust=certs.other_ca), timeout_s=5)
    with pytest.raises(NetworkError, match="client certificate"):
        verify(host, port, aet, tls=certs.client_context(with_certificate=False), timeout_s=5)
    with pytest.raises(NetworkError, match="aborted"):
        send_folder(result, host=host, port=port, ae_title=aet, timeout_s=5)  # plain TCP to a TLS port
    import ssl

    with pytest.raises(InputError, match="server-side"):
        verify(host, port, aet, tls=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    with pytest.raises(InputError, match="ssl.SSLContext"):
        send_folder(result, host=host, port=port, ae_title=aet, tls="yes")
