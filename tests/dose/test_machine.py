import json

import numpy as np
import pytest

from art.dose import fit_kernel, hu_to_density, load_hu_table, load_machine
from art.dose.machine import DEFAULT_MACHINE
from art.errors import MachineDataError


def test_generic_6x_is_plausible(machine):
    assert machine.sad_mm == 1000.0
    assert machine.dose_per_mu_gy == pytest.approx(0.01)
    depths = np.arange(0, 60, 0.5)
    pdd = machine.pdd(depths, 100.0)
    assert abs(depths[np.argmax(pdd)] - 15.0) <= 1.0
    p5, p10, p20 = machine.pdd([50, 100, 200], 100.0)
    assert 85.0 <= p5 <= 87.5 and 66.0 <= p10 <= 67.5 and 37.5 <= p20 <= 39.5
    # larger fields: deeper penetration and more output
    assert np.all(np.diff([machine.pdd(100, s) for s in (50, 100, 200)]) > 0)
    assert machine.output_factor(50) < 1.0 < machine.output_factor(200)
    mlc = machine.mlc
    assert mlc.n_pairs == 60
    assert mlc.boundaries_mm[0] == -200 and mlc.boundaries_mm[-1] == 200
    assert np.sum(mlc.widths_mm == 5.0) == 40 and np.sum(mlc.widths_mm == 10.0) == 20
    assert mlc.widths_mm[0] == 10.0 and mlc.widths_mm[30] == 5.0


def test_kernel_fit_reproduces_broad_fields(machine):
    k = fit_kernel(machine)
    assert k.fit_max_rel_error_le20 < 0.015
    assert np.allclose(k.penumbra_fit_mm, machine.penumbra_mm, atol=0.3)
    assert np.all(k.weights >= 0)


def _write(tmp_path, data):
    p = tmp_path / "m.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("sad_mm"), "sad_mm"),
        (lambda d: d["depth_dose"]["values_percent"].pop(), "depth_dose.values_percent"),
        (lambda d: d["output_factors"].update(total=d["output_factors"]["total"][:-1]), "output_factors.total"),
        (lambda d: d["mlc"].update(n_pairs=59), "mlc.leaf_widths_mm"),
        (lambda d: d["calibration"].update(dose_per_mu_gy="x"), "calibration.dose_per_mu_gy"),
        (lambda d: d["depth_dose"].update(depths_mm=d["depth_dose"]["depths_mm"][::-1]), "depth_dose.depths_mm"),
    ],
)
def test_invalid_machine_file_names_file_and_field(tmp_path, mutate, field):
    data = json.loads(DEFAULT_MACHINE.read_text())
    mutate(data)
    p = _write(tmp_path, data)
    with pytest.raises(MachineDataError) as ei:
        load_machine(p)
    assert str(p) in str(ei.value) and field in str(ei.value)


def test_not_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{ nope")
    with pytest.raises(MachineDataError, match="bad.json"):
        load_machine(p)


def test_user_machine_loads(tmp_path):
    data = json.loads(DEFAULT_MACHINE.read_text())
    data["name"] = "MyLinac"
    m = load_machine(_write(tmp_path, data))
    assert m.name == "MyLinac"


def test_hu_to_density():
    t = load_hu_table()
    rho = hu_to_density(np.array([-3000, -1000, -700, -100, 0, 40, 1000, 2000, 5000]), t)
    assert rho.dtype == np.float32
    np.testing.assert_allclose(rho, [0.001, 0.001, 0.3, 0.93, 1.0, 1.04, 1.6, 1.9, 1.9], rtol=1e-5)
    assert hu_to_density(np.array([20.0]), t)[0] == pytest.approx(1.02)


def test_hu_table_validation(tmp_path):
    p = tmp_path / "hu.json"
    p.write_text(json.dumps({"hu": [0, -100], "relative_electron_density": [1, 0.9]}))
    with pytest.raises(MachineDataError, match="hu"):
        load_hu_table(p)
