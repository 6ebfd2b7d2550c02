"""``art register`` and ``art jobs``: the node's registry and job list from the command line (issue 18)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from art_cli.app import run
from tests.node.cases import quick_reference

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def call(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("node_cli")
    case = quick_reference(root)
    cfg = root / "node.toml"
    cfg.write_text('[node]\nallowed_calling_aes = ["CBCT1"]\nstate_dir = "state"\noutput_dir = "out"\n')
    return {**case, "config": cfg, "root": root}


def test_register_then_find_the_reference(node):
    from art.node.config import load_config
    from art.node.store import NodeStore

    code, out, err = call(["register", "--reference", str(node["reference"]), "--config", str(node["config"]), "--json"])
    assert code == 0, err
    row = json.loads(out)
    assert row["frame_of_reference_uid"] == node["frame"] and row["reference"] == str(node["reference"].absolute())
    assert node["patient_id"] not in out + err  # never printed
    store = NodeStore(load_config(node["config"]).database)
    assert store.references(node["patient_id"]) == {node["frame"]: node["reference"].absolute()}


def test_register_refuses_an_incomplete_reference(node, tmp_path):
    import shutil

    bad = tmp_path / "ref"
    shutil.copytree(node["reference"], bad)
    (bad / "RTPLAN.dcm").unlink()
    code, out, err = call(["register", "--reference", str(bad), "--config", str(node["config"])])
    assert code == 1 and "RTPLAN" in err and str(bad) in err


def test_jobs_lists_states_as_text_and_json(node):
    from art.node.config import load_config
    from art.node.store import NodeStore

    store = NodeStore(load_config(node["config"]).database)
    a, _ = store.add_job(series_uid="1.2.826.0.1.3680043.2.1125.77", content_hash="x", n_instances=40)
    store.set_state(a, "failed", "unknown patient: no reference is registered for this patient")
    b, _ = store.add_job(series_uid="1.2.826.0.1.3680043.2.1125.78", content_hash="y")
    store.set_state(b, "queued")
    code, out, err = call(["jobs", "--config", str(node["config"]), "--json"])
    assert code == 0, err
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows[a]["state"] == "failed" and "unknown patient" in rows[a]["detail"] and rows[a]["n_instances"] == 40
    assert rows[b]["state"] == "queued"
    code, out, _ = call(["jobs", "--config", str(node["config"]), "--state", "failed"])
    assert code == 0 and "unknown patient" in out and "queued" not in out
    code, _, err = call(["jobs", "--config", str(node["config"]), "--state", "lost"])
    assert code == 2 and "unknown state" in err


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text("[node]\nport = 1\n")
    code, _, err = call(["jobs", "--config", str(cfg)])
    assert code == 1 and str(cfg) in err and "allowed_calling_aes: missing" in err


def test_serve_answers_echo_and_stops_on_sigterm(node, tmp_path):
    """``art serve`` as a service runs it: listening on loopback, C-ECHO answered, SIGTERM → exit 0 and a clean stop."""
    import os
    import signal
    import subprocess
    import sys

    from art.io.network import verify
    from tests.node.node_support import wait_for
    from tests.node.orthanc import free_port

    port = free_port()
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[node]\nport = {port}\nallowed_calling_aes = ["CBCT1"]\nstate_dir = "state"\noutput_dir = "out"\n[dask]\nworkers = 1\nthreads_per_worker = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "art_cli.main", "serve", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        def echo() -> bool:
            try:
                verify("127.0.0.1", port, "ART", calling_ae="CBCT1", timeout_s=2)
                return True
            except Exception:
                return proc.poll() is not None  # stop waiting if it died

        wait_for(echo, timeout_s=90, what="art serve answers C-ECHO")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-2000:]
    assert f"127.0.0.1:{port}" in out and node["patient_id"] not in out
    assert (tmp_path / "state" / "art-node.sqlite").is_file()
