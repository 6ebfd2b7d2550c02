"""The shipped collapsed-cone calibration factors (art/dose/data/ccc_calibration.json) are the engine's own values.

The default run recomputes the entry the independent check uses on the demo (generic 6X, 2.5 mm, fluence 1 mm);
``-m slow`` recomputes every entry. A failure means the engine or a machine changed without
``python -m art.dose.ccc.calibration_table`` being run.
"""

from __future__ import annotations

import dataclasses

import pytest

from art.dose import load_machine
from art.dose.ccc import calibration_table as table
from art.dose.ccc.calibration import calibration_factor, computed_factor
from art.dose.ccc.model import ccc_model


def test_the_check_grid_entry_of_the_6x_machine_is_shipped_and_is_the_engines_value():
    m = load_machine()
    model = ccc_model(m)
    shipped = table.lookup(m, model, (2.5, 2.5, 2.5), 1.0)
    assert shipped is not None, "no shipped entry: run python -m art.dose.ccc.calibration_table"
    assert shipped == computed_factor(m, model, (2.5, 2.5, 2.5), fluence_mm=1.0)
    assert calibration_factor(m, model, (2.5, 2.5, 2.5), fluence_mm=1.0) == shipped


def test_an_edited_machine_another_model_or_grid_finds_no_entry():
    m = load_machine()
    model = ccc_model(m)
    assert table.lookup(dataclasses.replace(m, digest="0" * 64), model, (2.5, 2.5, 2.5), 1.0) is None
    assert table.lookup(m, dataclasses.replace(model, source_sigma_mm=model.source_sigma_mm + 0.01), (2.5, 2.5, 2.5), 1.0) is None
    assert table.lookup(m, model, (2.5, 2.5, 2.6), 1.0) is None
    assert table.lookup(m, model, (2.5, 2.5, 2.5), 0.5) is None


@pytest.mark.slow
def test_every_shipped_entry_is_the_engines_value():
    shipped = table._entries()
    entries = table.compute_entries()
    assert len(entries) == len(shipped) > 0
    for e in entries:
        assert shipped.get(e["key"]) == e["gy_per_terma"], e
