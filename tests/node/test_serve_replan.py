"""The node end to end with real re-plans, and its faults (slow: each re-plan takes 1–2 minutes on 2 cores).

* a CBCT sent by dcmtk storescu is re-planned on Dask and its results are found in Orthanc;
* a Dask worker killed in the middle of a job: the job runs again and completes, and only
  the complete result is sent (one RTPLAN per job in Orthanc);
* ``art serve`` killed (SIGKILL) and restarted in the middle of its queue: every job
  completes exactly once.

Run: ``.venv/bin/python -m pytest tests/node/test_serve_replan.py -m slow -q``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.node.cases import planned_reference
from tests.node.node_support import jobs_of, running_node, series_uid, wait_for, write_config
from tests.node.orthanc import free_port, orthanc_fixture
from tests.node.scp_support import storescu

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

pacs = orthanc_fixture(scope="module", graceful_stop=False)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return planned_reference(tmp_path_factory.mktemp("serve_replan"), fractions=3)


def _register(cfg: Path, reference: Path) -> None:
    from art.node.config import load_config
    from art.node.registry import register_reference
    from art.node.store import NodeStore

    register_reference(NodeStore(load_config(cfg).database), reference)


def _rtplans(pacs) -> list[dict]:
    return pacs.find(modality="RTPLAN")


def test_replan_through_the_node_and_a_killed_worker(case, pacs, tmp_path):
    cfg = write_config(tmp_path, orthanc=pacs, quiet_period_s=2.0, incomplete_timeout_s=10.0)
    _register(cfg, case["reference"])
    with running_node(cfg) as node:
        cbct = case["patient"] / "CBCT_01"
        sent_at = time.time()
        assert storescu(node.scp.port, cbct).returncode == 0
        uid = series_uid(cbct)
        job = wait_for(lambda: [j for j in jobs_of(node, uid) if j["state"] in ("sent", "failed")], timeout_s=900, what="job 1 ends")[0]
        assert job["state"] == "sent", job["detail"]
        latency = time.time() - sent_at
        modalities = {i["Modality"] for i in pacs.instances()}
        assert {"RTPLAN", "RTDOSE", "RTSTRUCT", "REG", "CT"} <= modalities
        assert len(_rtplans(pacs)) == 1 and job["exit_code"] in (0, 3) and job["sends"]["pacs"]["state"] == "sent"
        (result,) = [p for p in node.config.output_dir.iterdir() if p.name.endswith(f"job{job['id']:05d}")]
        assert (result / "report.html").is_file() and (result / "summary.json").is_file()
        print(f"node latency (storescu start → RTPLAN stored): {latency:.1f} s")

        # a worker killed while it re-plans the second CBCT: Dask runs the job again; one complete result is sent
        cbct2 = case["patient"] / "CBCT_02"
        assert storescu(node.scp.port, cbct2).returncode == 0
        uid2 = series_uid(cbct2)
        wait_for(lambda: [j for j in jobs_of(node, uid2) if j["state"] == "running"], timeout_s=120, what="job 2 runs")
        time.sleep(15)  # well inside the re-plan (registration, contours)
        for pid in node._engine.worker_pids().values():
            os.kill(pid, signal.SIGKILL)
        job2 = wait_for(lambda: [j for j in jobs_of(node, uid2) if j["state"] in ("sent", "failed")], timeout_s=900, what="job 2 ends")[0]
        assert job2["state"] == "sent", job2["detail"]
        assert len(_rtplans(pacs)) == 2  # one RTPLAN per job: the killed run sent nothing
        runs = sorted(p.name for p in (node.config.jobs_dir / f"job{job2['id']:05d}").glob("run-*"))
        assert runs == ["run-1"]  # the same run, retried by Dask; no stray temporary folder left as a result
        assert not [p for p in (node.config.jobs_dir / f"job{job2['id']:05d}" / "run-1").iterdir() if p.name != "result" and p.is_dir()]


def _serve(cfg: Path, *, once: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "art_cli.main", "serve", "--config", str(cfg), *(["--once"] if once else [])]
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_serve_killed_and_restarted_mid_queue_completes_every_job_once(case, pacs, tmp_path):
    from art.node.config import load_config
    from art.node.store import NodeStore

    port = free_port()
    cfg = write_config(tmp_path, orthanc=pacs, quiet_period_s=2.0, incomplete_timeout_s=10.0).read_text().replace("port = 0", f"port = {port}")
    (tmp_path / "node.toml").write_text(cfg)
    cfg = tmp_path / "node.toml"
    _register(cfg, case["reference"])
    store = NodeStore(load_config(cfg).database)
    before = len(_rtplans(pacs))
    proc = _serve(cfg)
    try:
        wait_for(lambda: storescu(port, case["patient"] / "CBCT_02", timeout_s=30).returncode == 0, timeout_s=60, what="the node accepts")
        assert storescu(port, case["patient"] / "CBCT_03").returncode == 0
        wait_for(lambda: len(store.jobs(["queued", "running"])) == 2 and store.jobs(["running"]), timeout_s=120, what="two jobs queued, one running")
        time.sleep(10)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the node and its Dask workers die at once
        proc.wait(timeout=30)
    assert {j["state"] for j in store.jobs()} <= {"queued", "running"}
    proc = _serve(cfg, once=True)
    try:
        out, _ = proc.communicate(timeout=1500)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    jobs = store.jobs()
    assert proc.returncode == 0, out[-3000:]
    assert len(jobs) == 2 and all(j["state"] == "sent" for j in jobs), [(j["state"], j["detail"]) for j in jobs]
    assert len(_rtplans(pacs)) == before + 2  # every job's result sent once
