"""Atomic result folders and provenance."""

import json

import pytest

from art.outputs import atomic_output_dir
from art.provenance import provenance, sha256_file, sha256_tree


def test_success_moves_result_into_place(tmp_path):
    out = tmp_path / "result"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["result"]  # no temporary folders left


def test_failure_leaves_previous_result_and_no_partial_output(tmp_path):
    out = tmp_path / "result"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "half.txt").write_text("partial")
            raise RuntimeError("stage failed")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["result"]


def test_interrupt_cleans_up(tmp_path):
    out = tmp_path / "result"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(out) as tmp:
            (tmp / "half.txt").write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_success_replaces_previous_result(tmp_path):
    out = tmp_path / "result"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    with atomic_output_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["result"]


def test_out_that_is_a_file_is_refused(tmp_path):
    from art.errors import InputError

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        with atomic_output_dir(f):
            pass


def test_provenance_records_hashes_and_version(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert sha256_file(a) != sha256_file(b)
    assert sha256_tree([a, b]) == sha256_tree([b, a])
    rec = provenance(inputs={"a": sha256_file(a)}, parameters={"seed": 3})
    json.dumps(rec)
    assert rec["inputs"]["a"] == sha256_file(a) and rec["parameters"]["seed"] == 3 and rec["version"]
