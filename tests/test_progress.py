"""Stages: timed stages in order, child prefixes, and stages recorded after running elsewhere."""

from __future__ import annotations

import time

from art.progress import Stages


def test_stages_time_in_order_and_record_a_stage_run_beside_them():
    s = Stages(show=False)
    with s.stage("first"):
        time.sleep(0.01)
    child = s.child("adapted: ")
    with child.stage("dose"):
        pass
    s.record("scheduled plan dose", 1.23456)
    assert list(s.timings) == ["first", "adapted: dose", "scheduled plan dose"]
    assert s.timings["first"] >= 0.01
    assert s.timings["scheduled plan dose"] == 1.235
    assert s.total_s == round(sum(s.timings.values()), 3)
