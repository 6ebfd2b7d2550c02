"""Machine library: loading, per-beam selection (energy, fluence mode, TreatmentMachineName, leaf
boundaries), refusals, resolve_machines and dose() with a library or one machine per beam."""

import json

import numpy as np
import pytest

from art.dose import MachineLibrary, dose, load_library, load_machine, resolve_machines
from art.dose.library import energy_key
from art.dose.machine import DATA_DIR
from art.errors import InputError, MachineDataError
from art.geometry import Grid, Volume
from art.plan import Beam, Plan, Segment

AGILITY_BND = np.linspace(-200.0, 200.0, 81)


def _seg(n_pairs, half=20.0, mu=50.0, jaws=None):
    lp = np.vstack([np.full(n_pairs, -half), np.full(n_pairs, half)])
    return Segment(lp, jaws or (-half - 5, half + 5, -half, half), mu)


def _beam(name, energy, *, n_pairs=60, bnd=None, gantry=0.0, sad=1000.0):
    return Beam(name, gantry, energy=energy, segments=[_seg(n_pairs)], leaf_boundaries_mm=bnd, sad_mm=sad)


@pytest.fixture(scope="module")
def lib():
    return load_library()


def test_shipped_library(lib):
    assert lib.energies == ["6X", "10X", "6FFF"]
    assert [m.name for m in lib.machines] == ["Generic6X", "Generic10X", "Generic6FFF"]
    assert [m.n_pairs for m in lib.mlc_models] == [60, 80]
    assert load_library() is lib  # read once per process
    six = lib.machines[0]
    assert six.digest == load_machine().digest  # the library's 6X is the default machine


@pytest.mark.parametrize(
    "label, key",
    [("6X", (6.0, "STANDARD")), ("6MV", (6.0, "STANDARD")), (" 10x ", (10.0, "STANDARD")), ("6FFF", (6.0, "FFF")),
     ("10fff", (10.0, "FFF")), ("6SRS", (6.0, "SRS")), ("2.5X", (2.5, "STANDARD"))],
)  # fmt: skip
def test_energy_key(label, key):
    assert energy_key(label) == key


def test_energy_key_refuses_nonsense():
    with pytest.raises(InputError, match="energy"):
        energy_key("six MV")


@pytest.mark.parametrize("energy, name", [("6X", "Generic6X"), ("10X", "Generic10X"), ("6FFF", "Generic6FFF"), ("6MV", "Generic6X")])
def test_selection_by_energy_and_fluence_mode(lib, energy, name):
    m = lib.for_beam(_beam("B1", energy))
    assert m.name == name
    assert m.mlc is lib.machines[[x.name for x in lib.machines].index(name)].mlc  # the machine's own MLC


def test_unknown_energy_is_refused_naming_beam_file_and_library(lib, tmp_path):
    plan_path = tmp_path / "RP.dcm"
    with pytest.raises(InputError) as ei:
        lib.for_beam(_beam("B2", "15X"), path=plan_path)
    msg = str(ei.value)
    assert "beam 'B2': energy 15X has no machine file in the library (6X, 10X, 6FFF); give one with --machine FILE" in msg
    assert str(plan_path) in msg
    with pytest.raises(InputError, match="10FFF has no machine file"):
        lib.for_beam(_beam("B3", "10FFF"))  # 10 MV FFF is not 10X


def test_selection_by_leaf_boundaries(lib):
    m = lib.for_beam(_beam("A", "6X", n_pairs=80, bnd=AGILITY_BND))
    assert m.name == "Generic6X" and m.mlc.n_pairs == 80 and m.mlc.name == "Agility80-like"
    assert m.mlc.transmission == pytest.approx(0.005) and m.mlc.source.endswith("mlc_agility80.json")
    assert m.digest == lib.machines[0].digest  # same beam data (and kernel)
    own = lib.machines[0].mlc.boundaries_mm
    assert lib.for_beam(_beam("M", "6X", bnd=own + 0.004)) is lib.machines[0]  # ±0.01 mm: the machine's own MLC
    with pytest.raises(InputError) as ei:
        lib.for_beam(_beam("C", "10X", n_pairs=40, bnd=np.linspace(-200.0, 200.0, 41)), path="plan.dcm")
    msg = str(ei.value)
    assert "beam 'C': its MLC (40 leaf pairs, -200 to 200 mm)" in msg and "Generic10X" in msg and "--machine FILE" in msg
    with pytest.raises(InputError, match="80 leaf pairs"):  # boundaries of 60 pairs, segments of 80
        lib.for_beam(Beam("D", 0.0, segments=[_seg(80)], leaf_boundaries_mm=own))


def _machine_file(tmp_path, source, fname, **changes):
    data = json.loads((DATA_DIR / source).read_text())
    data.update(changes)
    p = tmp_path / fname
    p.write_text(json.dumps(data))
    return p


def test_selection_by_treatment_machine_name(tmp_path):
    a = _machine_file(tmp_path, "generic_6x.json", "a.json", name="LinacA", aliases=["TB1"])
    b = _machine_file(tmp_path, "generic_6x.json", "b.json", name="LinacB", aliases=["TB2", "tb3"])
    lib = load_library([a, b])
    assert [m.name for m in lib.machines] == ["LinacA", "LinacB", "Generic10X", "Generic6FFF"]  # they replace Generic6X
    beam = _beam("B1", "6X")
    assert lib.for_beam(beam, machine_name="TB1").name == "LinacA"
    assert lib.for_beam(beam, machine_name="linacb").name == "LinacB"
    assert lib.for_beam(beam, machine_name="TB3").name == "LinacB"
    assert lib.for_beam(beam, machine_name="Other,TB2").name == "LinacB"  # a plan's comma-joined names
    with pytest.raises(InputError) as ei:
        lib.for_beam(beam, machine_name="Other")
    assert "several machine files" in str(ei.value) and "a.json" in str(ei.value) and "aliases" in str(ei.value)
    # one candidate: the name is only a preference
    assert load_library([a]).for_beam(beam, machine_name="Other").name == "LinacA"


def test_given_files_replace_shipped_entries(tmp_path):
    m15 = _machine_file(tmp_path, "generic_10x.json", "my15x.json", name="My15X", energy="15X")
    tenx = _machine_file(tmp_path, "generic_10x.json", "my10x.json", name="Clinic10X")
    mlc = json.loads((DATA_DIR / "mlc_agility80.json").read_text())
    mlc.update(name="MyAgility", transmission=0.004)
    mp = tmp_path / "mlc.json"
    mp.write_text(json.dumps(mlc))
    lib = load_library([m15, tenx, mp])
    assert lib.energies == ["15X", "10X", "6X", "6FFF"]
    assert lib.for_beam(_beam("B", "15X")).name == "My15X"
    assert lib.for_beam(_beam("B", "10X")).name == "Clinic10X"
    assert [m.name for m in lib.mlc_models] == ["Millennium120-like", "MyAgility"]
    assert lib.for_beam(_beam("A", "6X", n_pairs=80, bnd=AGILITY_BND)).mlc.transmission == pytest.approx(0.004)
    # the same name and energy given twice: the later file wins
    again = _machine_file(tmp_path, "generic_10x.json", "again.json", name="Clinic10X", sad_mm=1000.0, aliases=["x"])
    assert load_library([tenx, again]).for_beam(_beam("B", "10X")).aliases == ("x",)


def test_library_refuses_bad_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"format": "something/1"}))
    with pytest.raises(MachineDataError) as ei:
        load_library([p])
    assert str(p) in str(ei.value) and "art-machine/1" in str(ei.value) and "art-mlc/1" in str(ei.value)
    with pytest.raises(MachineDataError, match="cannot read"):
        load_library([tmp_path / "missing.json"])
    with pytest.raises(InputError, match="at least one Machine"):
        MachineLibrary(())


def test_sad_mismatch_is_refused(lib):
    with pytest.raises(InputError, match="beam 'S'.*SAD 800 mm.*Generic6X"):
        lib.for_beam(_beam("S", "6X", sad=800.0))


def test_resolve_machines(lib):
    plan = Plan([_beam("A", "6X"), _beam("B", "10X", gantry=90.0), _beam("C", "6FFF", gantry=180.0)], 1, "Anything")
    assert [m.name for m in resolve_machines(plan)] == ["Generic6X", "Generic10X", "Generic6FFF"]
    assert [m.name for m in resolve_machines(plan, lib)] == ["Generic6X", "Generic10X", "Generic6FFF"]
    six, tenx, fff = lib.machines
    assert resolve_machines(plan, [six, tenx, fff]) == [six, tenx, fff]
    with pytest.raises(InputError, match="beam 'B': energy 10X is not machine 'Generic6X''s"):
        resolve_machines(plan, six, path="p.dcm")
    with pytest.raises(InputError, match="beam 'C': energy 6FFF is not machine 'Generic6X''s"):
        resolve_machines(plan, [six, tenx, six])
    with pytest.raises(InputError, match="one Machine per beam"):
        resolve_machines(plan, [six, tenx])
    with pytest.raises(InputError, match="MachineLibrary"):
        resolve_machines(plan, "generic_6x.json")
    agility = Plan([_beam("A", "6X", n_pairs=80, bnd=AGILITY_BND)], 1, "x")
    with pytest.raises(InputError, match="its MLC \\(80 leaf pairs"):
        resolve_machines(agility, six)


@pytest.fixture(scope="module")
def water_box():
    g = Grid((12, 24, 24), (5.0, 5.0, 5.0), (-57.5, -57.5, -27.5))
    return Volume(np.zeros(g.shape, np.float32), g)


def test_dose_with_a_library_is_each_beam_with_its_machine(water_box, lib):
    """A mixed plan (6X, 10X, 6FFF, 6X with an 80-pair MLC): dose() with the library equals the sum of
    each beam's dose with its machine; the default (None) is the shipped library; 6X plans are unchanged."""
    beams = [_beam("A", "6X"), _beam("B", "10X", gantry=90.0), _beam("C", "6FFF", gantry=180.0),
             _beam("D", "6X", n_pairs=80, bnd=AGILITY_BND, gantry=270.0)]  # fmt: skip
    plan = Plan(beams, 2, "Mixed")
    total = dose(water_box, plan, lib, dose_grid_mm=5.0)
    np.testing.assert_array_equal(dose(water_box, plan, None, dose_grid_mm=5.0).array, total.array)
    machines = resolve_machines(plan, lib)
    parts = sum(dose(water_box, Plan([b], 2, "x"), m, dose_grid_mm=5.0).array for b, m in zip(beams, machines))
    np.testing.assert_allclose(total.array, parts, rtol=1e-5, atol=1e-7 * float(parts.max()))
    six_plan = Plan([_beam("A", "6X")], 1, "Generic6X")
    np.testing.assert_array_equal(dose(water_box, six_plan, dose_grid_mm=5.0).array, dose(water_box, six_plan, load_machine(), dose_grid_mm=5.0).array)
    # the machines matter: the 10X beam computed as 6X would differ
    tenx_as_6x = dose(water_box, Plan([Beam("B", 90.0, segments=beams[1].segments)], 2, "x"), lib.machines[0], dose_grid_mm=5.0)
    assert np.abs(tenx_as_6x.array - dose(water_box, Plan([beams[1]], 2, "x"), lib, dose_grid_mm=5.0).array).max() > 0.01 * float(total.array.max())
