"""art.node.engine on a real dask LocalCluster (worker processes): results, failures, a killed worker, sizing."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from art.errors import InputError, NetworkError
from art.node.engine import JobEngine, JobSpec, machine_size, output_lock, run_replan
from tests.node import jobs_for_tests as jobs


@pytest.fixture(scope="module")
def engine():
    with JobEngine(workers=2, threads_per_worker=1, retries=2) as eng:
        yield eng


def test_results_come_back(engine):
    futures = [engine.submit_call(f"square-{i}", jobs.square, i) for i in range(6)]
    assert [f.result(timeout=30) for f in futures] == [i * i for i in range(6)]
    assert engine.workers == 2 and engine.threads_per_worker == 1
    assert len(set(engine.worker_pids().values())) == 2


def test_the_cluster_listens_on_loopback_only(engine):
    addresses = [engine.client.scheduler.address, *engine.client.scheduler_info()["workers"]]
    assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses


def test_an_exception_is_retried(engine, tmp_path):
    assert engine.submit_call("flaky", jobs.flaky, str(tmp_path), 7).result(timeout=30) == 7
    assert (tmp_path / "failed-once").exists()


def test_without_retries_an_exception_reaches_the_caller(tmp_path):
    with JobEngine(workers=1, threads_per_worker=1, retries=0) as eng:
        with pytest.raises(RuntimeError, match="simulated transient failure"):
            eng.submit_call("flaky", jobs.flaky, str(tmp_path), 7).result(timeout=30)


def test_the_same_key_is_not_run_twice(engine):
    a = engine.submit_call("same-key", jobs.square, 3)
    b = engine.submit_call("same-key", jobs.square, 4)  # the key names the job: the second is the first
    assert a.key == b.key and b.result(timeout=30) == 9


def test_an_art_error_is_a_failed_record_and_nothing_is_written(engine, tmp_path):
    job = JobSpec(reference=tmp_path / "no-reference", cbct=tmp_path / "no-cbct", out=tmp_path / "out")
    res = engine.submit("replan-missing", job).result(timeout=120)
    assert res["status"] == "failed" and res["exit_code"] == 1
    assert "no-reference" in res["error"]
    assert not job.out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_a_killed_worker_is_replaced_and_its_job_completes_once(engine, tmp_path):
    fut = engine.submit_call("sleeper", jobs.marked_sleep, str(tmp_path), 4.0, 42)
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("start-*")):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    first = list(tmp_path.glob("start-*"))[0].name
    victim = int(first.split("-")[1])
    assert victim in engine.worker_pids().values()
    os.kill(victim, signal.SIGKILL)
    res = fut.result(timeout=60)
    assert res["value"] == 42 and res["pid"] != victim
    starts, done = sorted(tmp_path.glob("start-*")), sorted(tmp_path.glob("done-*"))
    assert len(starts) == 2 and len(done) == 1, (starts, done)
    assert done[0].name.split("-")[1] == str(res["pid"])
    # the nanny restarted the killed worker: two workers again
    deadline = time.monotonic() + 30
    while len(engine.worker_pids()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert victim not in engine.worker_pids().values()


def test_a_stale_temporary_folder_of_a_killed_writer_is_removed(tmp_path):
    out = tmp_path / "day1"
    stale = tmp_path / ".day1.tmp-k1ll3d"
    (stale / "sCT").mkdir(parents=True)
    (stale / "RTPLAN.dcm").write_bytes(b"half")
    res = run_replan(JobSpec(reference=tmp_path / "nope", cbct=tmp_path / "nope", out=out))
    assert res["status"] == "failed" and not stale.exists() and not out.exists()


def test_a_result_folder_being_written_is_not_written_twice(engine, tmp_path):
    out = tmp_path / "day1"
    live = tmp_path / ".day1.tmp-live"
    live.mkdir()
    with output_lock(out.absolute()):  # a live writer on this machine
        res = engine.submit("replan-locked", JobSpec(reference=tmp_path, cbct=tmp_path, out=out)).result(timeout=120)
    assert res["status"] == "failed" and "another job is writing" in res["error"] and str(out) in res["error"]
    assert live.exists()  # its temporary folder is left alone


def test_threads_in_the_workers_follow_threads_per_worker():
    names = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ART_JOB_THREADS"]
    before = {n: os.environ.get(n) for n in names}
    with JobEngine(workers=1, threads_per_worker=2, retries=0) as eng:
        got = eng.submit_call("env", jobs.worker_environment, names).result(timeout=120)
        info = eng.client.scheduler_info()["workers"]
    assert got["env"] == {n: "2" for n in names}
    if Path("/proc/self/environ").exists():  # set before the worker process started, not only after
        assert got["at_start"] == {n: "2" for n in names}
    assert got["torch"] == 2 and got["itk"] == 2
    assert [w["nthreads"] for w in info.values()] == [2] and [w["resources"] for w in info.values()] == [{"replan": 1}]
    assert {n: os.environ.get(n) for n in names} == before  # this process's environment is left as it was


def test_machine_size_is_within_the_machine():
    cpus = len(os.sched_getaffinity(0))
    w, t = machine_size()
    assert 1 <= w <= cpus and 1 <= t <= cpus and w * t <= cpus
    assert machine_size(memory_per_job_gb=1e6) == (1, cpus)  # memory-bound: one worker with every CPU
    assert machine_size(memory_per_job_gb=1e-6) == (cpus, 1)  # CPU-bound: one worker per CPU
    with pytest.raises(InputError, match="memory_per_job_gb"):
        machine_size(memory_per_job_gb=0)


def test_bad_sizes_are_input_errors():
    with pytest.raises(InputError, match="workers"):
        JobEngine(workers=0)
    with pytest.raises(InputError, match="retries"):
        JobEngine(retries=-1)
    with pytest.raises(InputError, match="existing scheduler"):
        JobEngine(scheduler="tcp://127.0.0.1:8786", workers=2)


def test_an_unreachable_scheduler_is_a_network_error_naming_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    address = f"tcp://127.0.0.1:{port}"
    t = time.monotonic()
    with pytest.raises(NetworkError, match=address):
        JobEngine(scheduler=address, connect_timeout_s=2.0)
    assert time.monotonic() - t < 15


def test_job_spec_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = JobSpec(reference="ref", cbct=Path("cbct"), out="out", registration="REG.dcm")
    assert job.reference == tmp_path / "ref" and job.out.is_absolute() and job.registration == tmp_path / "REG.dcm"
    assert job.final_grid_mm is None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_worker_killed_while_writing_a_replan_leaves_no_partial_result(tmp_path):
    """A real re-plan; its worker is killed while the result is being written; the retry writes it completely."""
    from tests.node.replan_case import make_case

    case = make_case(tmp_path / "case")
    out = tmp_path / "day1"
    job = JobSpec(reference=case["reference"], cbct=case["cbcts"][0], out=out, final_grid_mm=4.0)
    with JobEngine(workers=2, threads_per_worker=1, retries=2) as eng:
        fut = eng.submit("replan-killed", job)
        deadline = time.monotonic() + 900
        while not list(tmp_path.glob(".day1.tmp-*")):  # the first attempt is writing its result
            assert not fut.done() and time.monotonic() < deadline, "never saw the result being written"
            time.sleep(0.05)
        (addr, keys), = [(a, k) for a, k in eng.client.processing().items() if "replan-killed" in k]
        pid = eng.client.run(os.getpid, workers=[addr])[addr]
        os.kill(pid, signal.SIGKILL)
        partial = list(tmp_path.glob(".day1.tmp-*"))
        assert partial and not out.exists()
        res = fut.result(timeout=1200)
    assert res["status"] == "done" and res["exit_code"] in (0, 3), res
    names = {p.name for p in out.iterdir()}
    assert {"RTPLAN.dcm", "RTDOSE.dcm", "RTSTRUCT.dcm", "REG.dcm", "DREG.dcm", "summary.json", "report.html", "sCT"} <= names
    assert not list(tmp_path.glob(".day1.tmp-*"))  # the killed attempt's temporary folder was removed by the retry


def test_jobs_run_on_an_existing_cluster(tmp_path):
    """``--scheduler tcp://…``: the engine connects to a cluster it did not start, runs the job there and leaves the cluster up."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      resources={"replan": 1}) as cluster:  # fmt: skip
        with JobEngine(scheduler=cluster.scheduler_address) as eng:
            assert eng.workers == 1
            spec = JobSpec(reference=tmp_path, cbct=tmp_path, out=tmp_path / "out")
            assert eng.submit("on-existing", spec, fn=jobs.fake_replan).result(timeout=60)["status"] == "done"
        assert cluster.scheduler_info["workers"]  # still running after the engine closed
