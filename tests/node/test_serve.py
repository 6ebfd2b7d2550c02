"""``art serve``'s node with its real parts: dcmtk storescu sends, pynetdicom receives, Dask runs, Orthanc stores (issue 18).

One node (a LocalCluster of one worker) and one Orthanc serve the module. The reference
is a quick one (an open-beam RTPLAN that is not the protocol's beams), so every re-plan
that starts here fails inside ``art replan`` after about half a minute: enough to see that
a failed re-plan is reported with its reason and nothing is sent. The full re-plan through
the node is tests/node/test_serve_replan.py (slow).
"""

from __future__ import annotations

import pytest

from tests.node.cases import quick_reference
from tests.node.node_support import copy_series, jobs_of, rewritten_series, running_node, series_uid, wait_for, write_config
from tests.node.orthanc import orthanc_fixture
from tests.node.scp_support import storescu

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

pacs = orthanc_fixture(scope="module", graceful_stop=False)


@pytest.fixture(scope="module")
def node(tmp_path_factory, pacs):
    from art.node.registry import register_reference
    from art.node.store import NodeStore
    from art.node.config import load_config

    root = tmp_path_factory.mktemp("serve")
    case = quick_reference(root)
    cfg = write_config(root, orthanc=pacs, quiet_period_s=1.0, incomplete_timeout_s=3.0)
    register_reference(NodeStore(load_config(cfg).database), case["reference"])
    with running_node(cfg) as n:
        yield {"node": n, "case": case, "root": root}


def test_unknown_calling_ae_is_rejected(node):
    n = node["node"]
    before = n.store.jobs()
    r = storescu(n.scp.port, node["case"]["patient"] / "CBCT_01", calling="INTRUDER")
    assert r.returncode != 0 and "rejected" in (r.stdout + r.stderr).lower()
    assert not any(n.config.incoming_dir.iterdir())
    assert n.store.jobs() == before


def test_unregistered_patient_fails_and_nothing_is_sent(node, tmp_path, pacs):
    n = node["node"]
    series = rewritten_series(node["case"]["patient"] / "CBCT_01", tmp_path / "other", PatientID="NOT-REGISTERED-42")
    r = storescu(n.scp.port, series)
    assert r.returncode == 0, r.stderr
    uid = series_uid(series)
    job = wait_for(lambda: [j for j in jobs_of(n, uid) if j["state"] == "failed"], timeout_s=30, what="the job fails")[0]
    assert job["detail"].startswith("unknown patient")
    assert "NOT-REGISTERED-42" not in job["detail"]
    assert pacs.count() == 0


def test_incomplete_series_waits_then_fails_with_the_reason(node, tmp_path):
    n = node["node"]
    full = sorted((node["case"]["patient"] / "CBCT_01").iterdir())
    series = rewritten_series(node["case"]["patient"] / "CBCT_01", tmp_path / "all", ImagesInAcquisition=len(full))
    part = copy_series(series, tmp_path / "part", n=len(full) - 5)
    assert storescu(n.scp.port, part).returncode == 0
    uid = series_uid(part)
    wait_for(lambda: n.tracker.tracked().get(uid) == len(full) - 5, timeout_s=10, what="the series is tracked")
    assert not jobs_of(n, uid)  # waiting: no job before the timeout (3 s after the last instance)
    job = wait_for(lambda: jobs_of(n, uid), timeout_s=30, what="the incomplete series is reported")[0]
    assert job["state"] == "failed"
    assert f"{len(full) - 5} of {len(full)}" in job["detail"] and "incomplete" in job["detail"]


def test_resent_series_starts_no_second_job_and_a_failed_replan_sends_nothing(node, pacs):
    n = node["node"]
    cbct = node["case"]["patient"] / "CBCT_01"
    uid = series_uid(cbct)
    assert storescu(n.scp.port, cbct).returncode == 0
    job = wait_for(lambda: [j for j in jobs_of(n, uid) if j["state"] in ("queued", "running")], timeout_s=30, what="the job is queued")[0]
    assert job["reference_dir"] == str(node["case"]["reference"].absolute()) and job["registration"] is None
    assert storescu(n.scp.port, cbct).returncode == 0  # the imaging system sends the series again
    wait_for(lambda: not n.tracker.tracked(), timeout_s=15, what="the re-sent series is complete")
    assert [j["id"] for j in jobs_of(n, uid)] == [job["id"]]
    # the quick reference's open beam is not the protocol's: art replan refuses it; the job fails with that reason
    done = wait_for(lambda: n.store.job(job["id"])["state"] in ("failed", "done", "sent") and n.store.job(job["id"]), timeout_s=400,
                    what="the re-plan ends")  # fmt: skip
    assert done["state"] == "failed" and done["detail"].startswith("re-plan failed:") and "beams" in done["detail"]
    assert [h[1] for h in n.store.history(job["id"])][:3] == ["received", "queued", "queued"]
    assert pacs.count() == 0 and not list(n.config.output_dir.iterdir())


def test_tls_from_the_configuration(tmp_path):
    """[node.tls] and [destination.tls] from the TOML: a TLS C-ECHO with a client certificate succeeds, plain TCP does not."""
    from art.errors import NetworkError
    from art.io.network import verify
    from art.node.config import load_config
    from art.node.serve import Node
    from tests.node.tls_certs import make_certificates

    c = make_certificates(tmp_path / "certs")
    cfg = tmp_path / "node.toml"
    cfg.write_text(f"""
[node]
port = 0
allowed_calling_aes = ["ART"]
state_dir = "state"
output_dir = "out"
[node.tls]
certificate = "{c.server_cert}"
private_key = "{c.server_key}"
ca_certificates = "{c.ca}"
require_client_certificate = true
[dask]
workers = 1
threads_per_worker = 1
[[destination]]
name = "self"
ae_title = "ART"
host = "127.0.0.1"
[destination.tls]
ca_certificates = "{c.ca}"
certificate = "{c.client_cert}"
private_key = "{c.client_key}"
""")
    config = load_config(cfg)
    with Node(config) as node:
        dest = config.destinations[0]
        verify("127.0.0.1", node.scp.port, "ART", calling_ae=dest.calling_ae, tls=dest.tls, timeout_s=10)
        with pytest.raises(NetworkError):
            verify("127.0.0.1", node.scp.port, "ART", calling_ae="ART", timeout_s=5)  # no TLS: refused


def test_a_failed_send_is_retried_reported_and_resumed(tmp_path):
    """A done job whose destination is down: retried with back-off, then ``failed`` naming the destination and the tries;
    a job left ``done`` (the node stopped) is sent at the next start, once the destination is up."""
    import time

    from art.node.config import load_config
    from art.node.serve import Node
    from art.node.store import NodeStore
    from tests.node.orthanc import OrthancServer, free_port
    from tests.node.result_folder import write_result_folder

    result = write_result_folder(tmp_path / "r")
    down = OrthancServer(tmp_path / "pacs", dicom_port=free_port(), http_port=free_port())  # not started yet
    cfg = write_config(tmp_path, orthanc=down).read_text().replace("backoff_s = 1", "backoff_s = 0.2")
    (tmp_path / "node.toml").write_text(cfg)
    config = load_config(tmp_path / "node.toml")
    store = NodeStore(config.database)
    job_a, _ = store.add_job(series_uid="1.2.3.1", content_hash="a")
    store.set_state(job_a, "done", "adapted plan recommended", out_dir=result, exit_code=0, priority1_met=True)
    with Node(config) as node:  # resume: the done job is sent; the destination is down
        wait_for(lambda: node.store.job(job_a)["state"] == "failed", timeout_s=30, what="the send gives up")
    job = store.job(job_a)
    assert job["sends"]["pacs"]["state"] == "failed" and job["sends"]["pacs"]["attempts"] == 3
    assert "not sent" in job["detail"] and "failed 3 time(s)" in job["sends"]["pacs"]["detail"]
    assert [h[1] for h in store.history(job_a)] == ["received", "done", "failed"]

    job_b, _ = store.add_job(series_uid="1.2.3.2", content_hash="b")
    store.set_state(job_b, "done", "adapted plan recommended", out_dir=result, exit_code=0, priority1_met=True)
    slow = cfg.replace("backoff_s = 0.2", "backoff_s = 60")
    (tmp_path / "node.toml").write_text(slow)
    t0 = time.monotonic()
    with Node(load_config(tmp_path / "node.toml")) as node:  # stopped while the send waits 60 s for its second try
        wait_for(lambda: node.store.job(job_b)["sends"].get("pacs", {}).get("attempts") == 1, timeout_s=30, what="first try")
    assert time.monotonic() - t0 < 40 and store.job(job_b)["state"] == "done"  # not failed: resumes at the next start
    with down as pacs:
        with Node(load_config(tmp_path / "node.toml")):
            wait_for(lambda: store.job(job_b)["state"] == "sent", timeout_s=60, what="sent after the restart")
        assert pacs.find(modality="RTPLAN") and store.job(job_b)["sends"]["pacs"]["state"] == "sent"


def test_a_cbct_in_its_own_frame_waits_for_the_reg_sent_after_it(node, tmp_path):
    """The imaging system sends the CBCT (its own frame), then the REG linking it: the job is queued with that REG.
    A CBCT in another own frame whose REG never comes fails after the wait, naming the missing link."""
    import numpy as np

    from tests.independent_reg import rewrite_in_own_frame, series_refs, translation, write_reg

    n, case = node["node"], node["case"]
    offset = (10.0, -5.0, 3.0)
    own_for = rewrite_in_own_frame(case["patient"] / "CBCT_01", tmp_path / "own_frame", offset_mm=offset)
    own = rewritten_series(tmp_path / "own_frame", tmp_path / "own")  # new UIDs: not the series the other tests sent
    (tmp_path / "reg").mkdir()
    reg = write_reg(tmp_path / "reg" / "REG.dcm", registered_for=case["frame"], patient_id=case["patient_id"],
                    items=[{"frame": own_for, "matrix": translation(-np.asarray(offset)), "refs": series_refs(own)}])  # fmt: skip
    rewrite_in_own_frame(case["patient"] / "CBCT_01", tmp_path / "lost_frame", offset_mm=offset)
    lost = rewritten_series(tmp_path / "lost_frame", tmp_path / "lost")  # new series and instance UIDs: another series
    assert storescu(n.scp.port, own).returncode == 0 and storescu(n.scp.port, lost).returncode == 0
    uid, lost_uid = series_uid(own), series_uid(lost)
    wait_for(lambda: jobs_of(n, uid), timeout_s=30, what="the own-frame series becomes a job")
    first = n.store.job(jobs_of(n, uid)[0]["id"])
    assert first["state"] == "received", first["detail"]  # no REG yet: waiting for it
    assert storescu(n.scp.port, [reg]).returncode == 0
    job = wait_for(lambda: [j for j in jobs_of(n, uid) if j["state"] in ("queued", "running", "failed")], timeout_s=30,
                   what="the job is checked")[0]  # fmt: skip
    assert job["state"] in ("queued", "running"), job["detail"]
    assert job["registration"] and pydicom_uid(job["registration"]) == pydicom_uid(reg)
    lost_job = wait_for(lambda: [j for j in jobs_of(n, lost_uid) if j["state"] == "failed"], timeout_s=30, what="the unlinked job fails")[0]
    assert "no Spatial Registration (REG)" in lost_job["detail"]


def pydicom_uid(path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
