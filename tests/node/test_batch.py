"""art.node.batch: manifest checks (every problem named before anything runs) and run_batch on a real LocalCluster."""

from __future__ import annotations

import pytest

from art.errors import InputError
from art.node.batch import BatchJob, job_key, read_manifest, run_batch
from art.node.engine import JobEngine, JobSpec
from tests.node import jobs_for_tests as jobs


@pytest.fixture
def site(tmp_path):
    """A manifest folder with two reference folders, two CBCT folders and a REG file."""
    for d in ("ref1", "ref2", "cbct1", "cbct2"):
        (tmp_path / d).mkdir()
    (tmp_path / "REG.dcm").write_bytes(b"")
    return tmp_path


def write(folder, text: str):
    path = folder / "batch.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
[defaults]
final_grid_mm = 3.0
retries = 4

[[job]]
name = "p1-day1"
reference = "ref1"
cbct = "cbct1"
out = "results/p1-day1"

[[job]]
reference = "ref2"
cbct = "cbct2"
out = "results/p2-day1"
registration = "REG.dcm"
final_grid_mm = 2.0
"""


def test_a_good_manifest(site, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # paths are the manifest folder's, not the working folder's
    m = read_manifest(write(site, GOOD))
    assert m.retries == 4 and [j.name for j in m.jobs] == ["p1-day1", "results/p2-day1"] and [j.row for j in m.jobs] == [1, 2]
    a, b = (j.spec for j in m.jobs)
    assert a.reference == site / "ref1" and a.cbct == site / "cbct1" and a.out == site / "results" / "p1-day1"
    assert a.registration is None and a.final_grid_mm == 3.0  # the default
    assert b.registration == site / "REG.dcm" and b.final_grid_mm == 2.0  # the row's own
    assert not (site / "results").exists()  # reading writes nothing
    assert job_key(m.jobs[0]) != job_key(m.jobs[1])


def problem(folder, text: str) -> str:
    with pytest.raises(InputError) as info:
        read_manifest(write(folder, text))
    msg = str(info.value)
    assert msg.startswith(str(folder / "batch.toml") + ": "), msg
    return msg


ROW2 = '[[job]]\nname = "a"\nreference = "ref1"\ncbct = "cbct1"\nout = "o1"\n\n[[job]]\nname = "b"\n'


@pytest.mark.parametrize(
    "row2, expected",
    [
        ('reference = "ref2"\nout = "o2"\n', "[[job]] 2 ('b'): missing key 'cbct'"),
        ('reference = "ref2"\ncbct = "cbct2"\nout = "o2"\ncbtc = "x"\n', "[[job]] 2 ('b'): unknown key 'cbtc'"),
        ('reference = "ref2"\ncbct = "cbct2"\nout = "o1"\n', "[[job]] 2 ('b'): 'out' "),
        ('reference = "nowhere"\ncbct = "cbct2"\nout = "o2"\n', "[[job]] 2 ('b'): 'reference' folder not found"),
        ('reference = "ref2"\ncbct = "REG.dcm"\nout = "o2"\n', "[[job]] 2 ('b'): 'cbct' folder not found"),
        ('reference = "ref2"\ncbct = "cbct2"\nout = "o2"\nregistration = "R.dcm"\n', "[[job]] 2 ('b'): 'registration' file not found"),
        ('reference = "ref2"\ncbct = "cbct2"\nout = "o2"\nfinal_grid_mm = 9\n', "[[job]] 2 ('b'): 'final_grid_mm' must be"),
        ('reference = 3\ncbct = "cbct2"\nout = "o2"\n', "[[job]] 2 ('b'): 'reference' must be a non-empty path"),
    ],
)
def test_each_bad_row_is_named_with_its_key(site, row2, expected):
    msg = problem(site, ROW2 + row2)
    assert expected in msg, msg
    assert "[[job]] 1" not in msg.replace("also the out of [[job]] 1", "")  # the good row is not blamed


def test_duplicate_out_names_both_rows(site):
    msg = problem(site, ROW2 + 'reference = "ref2"\ncbct = "cbct2"\nout = "./o1"\n')
    assert "[[job]] 2 ('b'): 'out'" in msg and "is also the out of [[job]] 1" in msg, msg


def test_an_existing_out_is_refused(site):
    (site / "o1").mkdir()
    msg = problem(site, ROW2 + 'reference = "ref2"\ncbct = "cbct2"\nout = "o2"\n')
    assert "[[job]] 1 ('a'): 'out' already exists" in msg and "o1" in msg, msg


def test_every_problem_is_reported_at_once(site):
    text = ROW2.replace('name = "b"', 'name = "a"') + 'cbct = "cbct2"\nout = "o2"\n\n[[job]]\nreference = "ref1"\n'
    msg = problem(site, text)
    assert "[[job]] 2 ('a'): missing key 'reference'" in msg
    assert "[[job]] 3: missing key 'cbct'" in msg and "[[job]] 3: missing key 'out'" in msg


def test_duplicate_names_are_refused(site):
    msg = problem(site, ROW2.replace('name = "b"', 'name = "a"') + 'reference = "ref2"\ncbct = "cbct2"\nout = "o2"\n')
    assert "[[job]] 2 ('a'): 'name' is also the name of [[job]] 1" in msg, msg


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "no [[job]] rows"),
        ("[defaults]\nretries = 1\n", "no [[job]] rows"),
        ("[[job]\n", "not valid TOML"),
        ('[defaults]\nretry = 1\n[[job]]\nreference = "ref1"\ncbct = "cbct1"\nout = "o"\n', "[defaults]: unknown key 'retry'"),
        ('[defaults]\nretries = -1\n[[job]]\nreference = "ref1"\ncbct = "cbct1"\nout = "o"\n', "'retries' must be an integer"),
        ('jobs = []\n[[job]]\nreference = "ref1"\ncbct = "cbct1"\nout = "o"\n', "unknown top-level key 'jobs'"),
        ('job = "x"\n', "'job' must be an array of tables"),
    ],
)
def test_bad_manifest_structure(site, text, expected):
    assert expected in problem(site, text)


def test_a_missing_manifest(tmp_path):
    with pytest.raises(InputError, match="manifest not found") as info:
        read_manifest(tmp_path / "none.toml")
    assert "none.toml" in str(info.value)


@pytest.fixture(scope="module")
def engine():
    with JobEngine(workers=2, threads_per_worker=1, retries=1) as eng:
        yield eng


def test_run_batch_isolates_failures(engine, tmp_path):
    names = ["good", "bad", "crash", "unmet", "good2"]
    batch = [BatchJob(name=n, row=i, spec=JobSpec(reference=tmp_path, cbct=tmp_path / f"cbct-{n}", out=tmp_path / f"out-{n}"))
             for i, n in enumerate(names, start=1)]  # fmt: skip
    seen = []
    rows = run_batch(batch, engine, progress=lambda row: seen.append(row["name"]), fn=jobs.fake_replan)
    assert sorted(seen) == sorted(names)
    assert [r["name"] for r in rows] == names  # the manifest's order
    by = {r["name"]: r for r in rows}
    assert by["good"]["status"] == by["good2"]["status"] == "done" and by["good"]["exit_code"] == 0 and by["good"]["error"] is None
    assert by["good"]["priority1_met"] is True and by["good"]["recommendation"] == "adapted"
    assert by["unmet"]["status"] == "done" and by["unmet"]["exit_code"] == 3 and by["unmet"]["priority1_met"] is False
    assert by["bad"]["status"] == "failed" and by["bad"]["exit_code"] == 1 and "cbct-bad" in by["bad"]["error"]
    assert by["crash"]["status"] == "failed" and by["crash"]["error"] == "RuntimeError: simulated crash" and by["crash"]["wall_s"] is None
    assert sorted(p.name for p in tmp_path.glob("out-*")) == ["out-good", "out-good2", "out-unmet"]
