"""art.jobs.demo_job's digital patient: its daily CBCT is simulated beside the reference plan."""

from __future__ import annotations

import threading

import pytest

import art.jobs


def test_a_failed_reference_plan_leaves_nothing_and_no_thread(monkeypatch, tmp_path):
    """The reference plan fails while the fractions are simulated on their thread: the demo waits
    for them, raises the plan's error and leaves no output folder."""
    seen = {}

    def failing_plan_job(ct_dir, structures, protocol, out, **_):
        seen["planning files"] = sorted(p.name for p in ct_dir.parent.iterdir())
        raise RuntimeError("the reference plan failed")

    monkeypatch.setattr(art.jobs, "plan_job", failing_plan_job)
    out = tmp_path / "demo"
    with pytest.raises(RuntimeError, match="reference plan failed"):
        art.jobs.demo_job(out, seed=1, show=False, spacing=(5.0, 4.0, 4.0))
    assert {"CT", "RTSTRUCT.dcm", "protocol.toml"} <= set(seen["planning files"])
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert not any(t.name.startswith("art-phantom-fractions") for t in threading.enumerate())

