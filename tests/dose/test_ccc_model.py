"""The machine file's ``ccc`` section: read, validated, refused with the file and field named."""

import json

import numpy as np
import pytest

from art.dose import load_machine
from art.dose.ccc import ccc_model
from art.dose.ccc.model import parse_section
from art.dose.machine import DEFAULT_MACHINE
from art.errors import MachineDataError

GOOD = {"spectrum": {"energies_mev": [1.0, 2.0, 6.0], "fluence": [0.5, 0.3, 0.2]}, "source_sigma_mm": 1.0}


def _machine_with(tmp_path, section, name="m.json"):
    data = json.loads(DEFAULT_MACHINE.read_text(encoding="utf-8"))
    data.pop("ccc", None)
    if section is not None:
        data["ccc"] = section
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return load_machine(p)


def test_the_generic_machine_has_a_valid_section():
    m = ccc_model(load_machine())
    assert m.energies_mev.size == m.fluence.size >= 10
    assert 0.0 <= m.source_sigma_mm <= 5.0
    assert 0.0 <= m.contamination_fraction <= 0.5


def test_machine_without_ccc_section_is_refused_naming_the_file(tmp_path):
    m = _machine_with(tmp_path, None, "no_ccc.json")
    with pytest.raises(MachineDataError, match=r"no_ccc\.json.*field 'ccc': missing.*commission"):
        ccc_model(m)


def test_a_valid_section_is_read(tmp_path):
    m = ccc_model(_machine_with(tmp_path, {**GOOD, "extra_focal": {"fraction": 0.03, "sigma_mm": 25.0}}))
    np.testing.assert_allclose(m.fluence, [0.5, 0.3, 0.2])
    assert m.extra_focal_fraction == 0.03 and m.extra_focal_sigma_mm == 25.0
    assert m.contamination_fraction == 0.0


@pytest.mark.parametrize(
    "change, field",
    [
        ({"spectrum": {"energies_mev": [1.0, 7.0], "fluence": [1.0, 1.0]}}, "ccc.spectrum.energies_mev"),
        ({"spectrum": {"energies_mev": [1.0, 2.0], "fluence": [1.0, -1.0]}}, "ccc.spectrum.fluence"),
        ({"spectrum": {"energies_mev": [1.0, 2.0], "fluence": [1.0]}}, "ccc.spectrum.fluence"),
        ({"spectrum": {"energies_mev": [2.0, 1.0], "fluence": [1.0, 1.0]}}, "ccc.spectrum.energies_mev"),
        ({"source_sigma_mm": 9.0}, "ccc.source_sigma_mm"),
        ({"source_sigma_mm": None}, "ccc.source_sigma_mm"),
        ({"electron_contamination": {"fraction": 0.9, "depth_mm": 10.0}}, "ccc.electron_contamination.fraction"),
        ({"extra_focal": {"fraction": 0.1}}, "ccc.extra_focal.sigma_mm"),
    ],
)
def test_invalid_fields_are_named(change, field):
    with pytest.raises(MachineDataError, match=rf"where\.json: field '{field}'"):
        parse_section({**GOOD, **change}, "where.json")


def test_section_must_be_an_object():
    with pytest.raises(MachineDataError, match="field 'ccc'"):
        parse_section([1, 2], "where.json")
