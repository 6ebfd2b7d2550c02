"""The shipped machine files (6X, 10X, 6FFF) and MLC models: content, generator, optional fields, kernel fits."""

import hashlib
import importlib.util
import json

import numpy as np
import pytest

from art.dose import fit_kernel, load_machine, load_mlc
from art.dose.machine import DATA_DIR, DEFAULT_MACHINE
from art.errors import MachineDataError

#: SHA-256 of generic_6x.json's beam data (sections below, canonical JSON) as every test and
#: benchmark was calibrated on before the machine library: it must not change.
BEAM_DATA_6X_SHA256 = "6f5205ddf08a4fa427ebe364b18c584b42eb33469a8502e98a79f31b5db40e50"
BEAM_SECTIONS = ("sad_mm", "calibration", "depth_dose", "output_factors", "profile", "mlc", "jaws", "mu")


def _generator():
    spec = importlib.util.spec_from_file_location("make_generic_machines", DATA_DIR / "make_generic_machines.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generic_6x_beam_data_unchanged():
    data = json.loads(DEFAULT_MACHINE.read_text())
    blob = json.dumps({k: data[k] for k in BEAM_SECTIONS}, sort_keys=True).encode()
    assert hashlib.sha256(blob).hexdigest() == BEAM_DATA_6X_SHA256
    assert "off_axis" not in data  # flat: the 6X dose is what it was


def test_shipped_files_are_the_generators_output():
    gen = _generator()
    for fname, spec in (("generic_6x.json", gen.SPEC_6X), ("generic_10x.json", gen.SPEC_10X), ("generic_6fff.json", gen.SPEC_6FFF)):
        shipped = json.loads((DATA_DIR / fname).read_text())
        shipped.pop("ccc", None)  # written by the CCC commissioning, kept by the generator
        assert shipped == gen.machine_data(spec), fname
    for fname, mlc in (("mlc_millennium120.json", gen.MLC_MILLENNIUM), ("mlc_agility80.json", gen.MLC_AGILITY)):
        assert json.loads((DATA_DIR / fname).read_text()) == {"format": "art-mlc/1", **mlc}


def _pdd_landmarks(m):
    depths = np.arange(0.0, 60.0, 0.5)
    pdd = m.pdd(depths, 100.0)
    return depths[np.argmax(pdd)], m.pdd([50.0, 100.0, 200.0], 100.0)


def test_generic_10x_is_a_typical_10mv_beam():
    m = load_machine(DATA_DIR / "generic_10x.json")
    assert (m.name, m.energy, m.fluence_mode) == ("Generic10X", "10X", "STANDARD")
    dmax, (p5, p10, p20) = _pdd_landmarks(m)
    assert 22.0 <= dmax <= 25.0 and m.calib_depth_mm == 23.0
    assert 72.0 <= p10 <= 74.0 and 90.0 <= p5 <= 92.5 and 44.5 <= p20 <= 47.0
    six = load_machine()
    assert p10 > six.pdd(100.0, 100.0) + 5  # more penetrating than 6 MV
    assert six.pdd(0.0, 100.0) > m.pdd(0.0, 100.0)  # more skin sparing
    # flattened beam: horns off axis, softer off axis
    assert m.off_axis_ratio(150.0) > 1.03 and m.off_axis_mu_ratio(200.0) > 1.05
    desc = json.loads((DATA_DIR / "generic_10x.json").read_text())["description"]
    assert "BJR Supplement 25" in desc and "NOT the commissioning data" in desc


def test_generic_6fff_is_a_truebeam_class_fff_beam():
    m = load_machine(DATA_DIR / "generic_6fff.json")
    assert (m.name, m.energy, m.fluence_mode) == ("Generic6FFF", "6FFF", "FFF")
    dmax, (p5, p10, p20) = _pdd_landmarks(m)
    assert 12.5 <= dmax <= 15.0
    assert 63.0 <= p10 <= 64.5
    assert p10 < load_machine().pdd(100.0, 100.0) - 2  # softer than 6X on the axis
    # FFF output factors vary less with field size than the flattened beam's (less head scatter)
    six = load_machine()
    assert m.output_factor(400.0) - m.output_factor(30.0) < six.output_factor(400.0) - six.output_factor(30.0)
    # the off-axis fluence falls to ~0.6-0.7 at 150-200 mm, monotonically; mild softening
    r = np.arange(0.0, 250.0, 5.0)
    assert np.all(np.diff(m.off_axis_ratio(r)) < 0)
    assert 0.65 <= m.off_axis_ratio(150.0) <= 0.75 and 0.6 <= m.off_axis_ratio(200.0) <= 0.7
    assert 1.0 < m.off_axis_mu_ratio(200.0) < 1.08
    assert m.dose_rate_mu_per_min > six.dose_rate_mu_per_min
    desc = json.loads((DATA_DIR / "generic_6fff.json").read_text())["description"]
    assert "TrueBeam" in desc and "NOT the commissioning data" in desc


def test_mlc_models():
    mil = load_mlc(DATA_DIR / "mlc_millennium120.json")
    agi = load_mlc(DATA_DIR / "mlc_agility80.json")
    assert mil.name == "Millennium120-like" and mil.n_pairs == 60 and mil.transmission == pytest.approx(0.015)
    np.testing.assert_array_equal(mil.boundaries_mm, load_machine().mlc.boundaries_mm)
    assert agi.name == "Agility80-like" and agi.n_pairs == 80 and agi.transmission == pytest.approx(0.005)
    np.testing.assert_allclose(agi.boundaries_mm, np.linspace(-200.0, 200.0, 81))
    assert agi.source.endswith("mlc_agility80.json") and len(agi.digest) == 64


def test_machine_defaults_without_optional_fields():
    m = load_machine()
    assert m.fluence_mode == "STANDARD" and m.aliases == ()
    assert isinstance(m.ccc, dict) and "spectrum" in m.ccc  # the collapsed-cone commissioning (art.dose.ccc.commission)
    assert not m.has_off_axis_fluence and not m.has_off_axis_softening
    np.testing.assert_array_equal(m.off_axis_ratio([0.0, 100.0, 300.0]), 1.0)
    # mu_eff from the 10x10 PDD slope (inverse square removed) between 100 and 200 mm
    assert 0.0035 < m.effective_mu_per_mm() < 0.0045


@pytest.mark.parametrize("fname", ["generic_6x.json", "generic_10x.json", "generic_6fff.json"])
def test_kernel_fit_reproduces_each_machines_broad_fields(fname):
    """Worst broad-field central-axis mismatch of the fitted kernel (all fields, 10-300 mm):
    6X 1.2 %, 10X 1.0 %, 6FFF 0.9 % (the FFF fit includes the off-axis profile)."""
    m = load_machine(DATA_DIR / fname)
    k = fit_kernel(m)
    assert k.fit_max_rel_error < 0.013
    np.testing.assert_allclose(k.penumbra_fit_mm, m.penumbra_mm, atol=0.3)
    assert np.all(k.weights >= 0)


def _mutated(tmp_path, fn, source="generic_6fff.json"):
    data = json.loads((DATA_DIR / source).read_text())
    fn(data)
    p = tmp_path / "m.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.update(fluence_mode="flat"), "fluence_mode"),
        (lambda d: d.update(fluence_mode="STANDARD"), "fluence_mode"),  # energy 6FFF
        (lambda d: d.update(aliases="TB1"), "aliases"),
        (lambda d: d.update(aliases=["TB1", ""]), "aliases"),
        (lambda d: d.update(ccc=[1, 2]), "ccc"),
        (lambda d: d.update(off_axis=[1.0]), "off_axis"),
        (lambda d: d["off_axis"].update(radii_mm=[5.0] + d["off_axis"]["radii_mm"][1:]), "off_axis.radii_mm"),
        (lambda d: d["off_axis"].update(radii_mm=d["off_axis"]["radii_mm"][::-1]), "off_axis.radii_mm"),
        (lambda d: d["off_axis"]["fluence_ratio"].__setitem__(0, 0.9), "off_axis.fluence_ratio"),
        (lambda d: d["off_axis"]["fluence_ratio"].pop(), "off_axis.fluence_ratio"),
        (lambda d: d["off_axis"]["fluence_ratio"].__setitem__(3, -0.5), "off_axis.fluence_ratio"),
        (lambda d: d["off_axis"]["mu_ratio"].__setitem__(4, 3.0), "off_axis.mu_ratio"),
        (lambda d: d["off_axis"].pop("fluence_ratio"), "off_axis.fluence_ratio"),
    ],
)
def test_invalid_optional_fields_name_file_and_field(tmp_path, mutate, field):
    p = _mutated(tmp_path, mutate)
    with pytest.raises(MachineDataError) as ei:
        load_machine(p)
    assert str(p) in str(ei.value) and f"field {field!r}" in str(ei.value)


def test_optional_fields_are_read(tmp_path):
    def f(d):
        d.update(aliases=[" TrueBeam1 ", "TB-FFF"], ccc={"spectrum": [1, 2, 3]})
        d["off_axis"].pop("mu_ratio")
        d.pop("fluence_mode")  # default from the energy

    m = load_machine(_mutated(tmp_path, f))
    assert m.fluence_mode == "FFF" and m.aliases == ("TrueBeam1", "TB-FFF") and m.ccc == {"spectrum": [1, 2, 3]}
    assert m.has_off_axis_fluence and not m.has_off_axis_softening
    # a 6 MV beam labelled "6X" with fluence_mode FFF is an FFF beam
    m2 = load_machine(_mutated(tmp_path, lambda d: d.update(energy="6X", fluence_mode="FFF")))
    assert m2.fluence_mode == "FFF"


def test_invalid_mlc_model_names_file_and_field(tmp_path):
    data = json.loads((DATA_DIR / "mlc_agility80.json").read_text())
    for mutate, field in ((lambda d: d.update(format="art-machine/1"), "format"), (lambda d: d.update(n_pairs=79), "leaf_widths_mm"),
                          (lambda d: d.pop("name"), "name"), (lambda d: d.update(transmission=0.5), "transmission")):  # fmt: skip
        d = json.loads(json.dumps(data))
        mutate(d)
        p = tmp_path / "mlc.json"
        p.write_text(json.dumps(d))
        with pytest.raises(MachineDataError) as ei:
            load_mlc(p)
        assert str(p) in str(ei.value) and f"field {field!r}" in str(ei.value)
