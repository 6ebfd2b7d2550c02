"""Protocol parsing: the example of docs/protocol.md, every error class with its line number, the metric grammar."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from art.errors import InputError, ProtocolError
from art.protocol import load_protocol, parse_metric, parse_protocol
from art.protocol import Metric, format_number

# The protocol example (the format: docs/protocol.md); line numbers below refer to it.
DESIGN_EXAMPLE = """\
name = "Prostate 60 Gy in 20"

[prescription]
target = "PTV"          # structure name
dose_gy = 60.0          # total
fractions = 20

[beams]
energy = "6X"
gantry_angles = [0, 51, 103, 154, 206, 257, 309]
isocenter = "PTV"       # a structure's centroid, or [x, y, z] in mm (LPS)
bixel_mm = 5.0

[dose]
grid_mm = 3.0

[[goals]]
structure = "PTV"
metric = "D95%"         # see below
at_least = 57.0
priority = 1            # 1 = most important; goals of equal priority are weighed together

[[goals]]
structure = "Rectum"
metric = "V50Gy"
at_most = 20.0          # percent of the structure's volume
priority = 2
"""
LINES = DESIGN_EXAMPLE.splitlines()


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing ``needle`` (independent of the parser's scanner)."""
    hits = [i + 1 for i, ln in enumerate(text.splitlines()) if needle in ln]
    return hits[occurrence - 1]


def replace_line(text: str, needle: str, new: str, occurrence: int = 1) -> str:
    lines = text.splitlines()
    n = line_of(text, needle, occurrence)
    lines[n - 1] = new
    return "\n".join(lines) + "\n"


def insert_after(text: str, needle: str, new: str, occurrence: int = 1) -> str:
    lines = text.splitlines()
    n = line_of(text, needle, occurrence)
    lines.insert(n, new)
    return "\n".join(lines) + "\n"


def delete_line(text: str, needle: str, occurrence: int = 1) -> str:
    lines = text.splitlines()
    del lines[line_of(text, needle, occurrence) - 1]
    return "\n".join(lines) + "\n"


def error_of(text: str, *, source: str = "proto.toml") -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_protocol(text, source=source)
    return info.value


def assert_line(text: str, line: int, *words: str) -> ProtocolError:
    err = error_of(text)
    assert err.line == line, str(err)
    msg = str(err)
    assert msg.startswith(f"proto.toml: line {line}: "), msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return err


# ----------------------------------------------------------------- valid input
def test_design_example_parses():
    p = parse_protocol(DESIGN_EXAMPLE)
    assert p.name == "Prostate 60 Gy in 20"
    assert (p.prescription.target, p.prescription.dose_gy, p.prescription.fractions) == ("PTV", 60.0, 20)
    assert p.prescription.dose_per_fraction_gy == pytest.approx(3.0)
    assert p.beams.energy == "6X"
    assert p.beams.gantry_angles == (0, 51, 103, 154, 206, 257, 309)
    assert p.beams.collimator_angles == (0.0,) * 7 and p.beams.couch_angles == (0.0,) * 7
    assert p.beams.isocenter == "PTV" and p.beams.isocenter_structure == "PTV"
    assert p.beams.bixel_mm == 5.0 and p.dose_grid_mm == 3.0
    assert len(p.goals) == 2
    g1, g2 = p.goals
    assert (g1.structure, g1.metric.text, g1.at_least, g1.at_most, g1.priority) == ("PTV", "D95%", 57.0, None, 1)
    assert (g2.structure, g2.metric.text, g2.at_least, g2.at_most, g2.priority) == ("Rectum", "V50Gy", None, 20.0, 2)
    assert g2.metric.output_unit == "%"
    assert (g1.line, g2.line) == (17, 23)
    assert g1.describe() == "≥ 57 Gy" and g2.describe() == "≤ 20 %"
    assert p.structure_names == ["PTV", "Rectum"]
    assert list(p.goals_by_priority()) == [1, 2]


def test_load_from_file_and_roundtrip(tmp_path):
    f = tmp_path / "protocol.toml"
    f.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    p = load_protocol(f)
    assert p.source == str(f)
    again = parse_protocol(p.to_toml())
    assert again == p
    import json

    json.dumps(p.to_dict())


def test_optional_parts_and_extensions():
    text = DESIGN_EXAMPLE.replace("[dose]\ngrid_mm = 3.0\n", "").replace("bixel_mm = 5.0\n", "")
    text = text.replace('isocenter = "PTV"', "isocenter = [1.5, -2, 30]\ncollimator_angles = [0, 0, 0, 0, 0, 0, 90]\ncouch_angles = [0, 0, 0, 0, 0, 0, 270]")
    text = insert_after(text, 'at_most = 20.0', "stretch = 15.0")
    p = parse_protocol(text)
    assert p.dose_grid_mm == 3.0 and p.beams.bixel_mm == 5.0
    assert p.beams.isocenter == (1.5, -2.0, 30.0) and p.beams.isocenter_structure is None
    assert p.beams.collimator_angles[-1] == 90 and p.beams.couch_angles[-1] == 270
    assert p.goals[1].stretch == 15.0
    assert parse_protocol(p.to_toml()) == p


def test_both_bounds_and_equal_bounds_accepted():
    text = insert_after(DESIGN_EXAMPLE, "at_least = 57.0", "at_most = 63.0")
    p = parse_protocol(text)
    assert p.goals[0].describe() == "≥ 57 Gy and ≤ 63 Gy"
    parse_protocol(insert_after(DESIGN_EXAMPLE, "at_least = 57.0", "at_most = 57.0"))


def test_multiline_arrays_and_comments_keep_line_numbers():
    text = DESIGN_EXAMPLE.replace(
        "gantry_angles = [0, 51, 103, 154, 206, 257, 309]",
        "gantry_angles = [\n  0, 51,  # [first]\n  103, 154,\n  206, 257, 309,\n]",
    )
    text = replace_line(text, 'metric = "V50Gy"', 'metric = "V50"')
    assert_line(text, line_of(text, 'metric = "V50"'), "unknown metric")


def test_prescription_target_need_not_be_a_goal_structure():
    text = DESIGN_EXAMPLE.replace('target = "PTV"', 'target = "CTV"')
    assert parse_protocol(text).prescription.target == "CTV"


# ----------------------------------------------------------------- errors with line numbers
def test_toml_syntax_error_names_line():
    text = replace_line(DESIGN_EXAMPLE, "dose_gy = 60.0", "dose_gy = ")
    err = assert_line(text, 5, "invalid TOML")
    assert isinstance(err, InputError)


def test_unknown_top_level_key():
    text = insert_after(DESIGN_EXAMPLE, 'name = "Prostate', 'colour = "red"')
    assert_line(text, 2, "unknown key", "colour")


def test_unknown_table():
    text = DESIGN_EXAMPLE + "\n[optimizer]\niterations = 3\n"
    n = len(DESIGN_EXAMPLE.splitlines()) + 2
    assert_line(text, n, "unknown key", "optimizer")


@pytest.mark.parametrize(
    "after, occurrence, key",
    [("fractions = 20", 1, "dose"), ("bixel_mm = 5.0", 1, "mlc"), ("grid_mm = 3.0", 1, "algorithm"), ("at_most = 20.0", 1, "weight")],
)
def test_unknown_keys_in_tables(after, occurrence, key):
    text = insert_after(DESIGN_EXAMPLE, after, f"{key} = 1", occurrence)
    assert_line(text, line_of(DESIGN_EXAMPLE, after, occurrence) + 1, "unknown key", key)


def test_unknown_dotted_key():
    text = insert_after(DESIGN_EXAMPLE, 'energy = "6X"', "machine.name = 'linac'")
    assert_line(text, 10, "unknown key", "machine")


def test_missing_required_keys():
    assert_line(delete_line(DESIGN_EXAMPLE, 'metric = "V50Gy"'), 23, "metric")
    assert_line(delete_line(DESIGN_EXAMPLE, "fractions = 20"), 3, "fractions")
    assert_line(delete_line(DESIGN_EXAMPLE, 'energy = "6X"'), 8, "energy")
    assert_line(delete_line(DESIGN_EXAMPLE, "priority = 2"), 23, "priority")
    assert_line(delete_line(DESIGN_EXAMPLE, 'name = "Prostate'), 1, "name")


def test_missing_tables():
    text = DESIGN_EXAMPLE.replace('[beams]\nenergy = "6X"\ngantry_angles = [0, 51, 103, 154, 206, 257, 309]\nisocenter = "PTV"       # a structure\'s centroid, or [x, y, z] in mm (LPS)\nbixel_mm = 5.0\n', "")
    assert "[beams]" not in text
    assert_line(text, 1, "beams")
    no_goals = DESIGN_EXAMPLE.split("[[goals]]")[0]
    assert_line(no_goals, 1, "goals")


@pytest.mark.parametrize(
    "needle, new, words",
    [
        ("fractions = 20", "fractions = 20.0", ("fractions", "integer")),
        ("dose_gy = 60.0", 'dose_gy = "60"', ("dose_gy", "number")),
        ("dose_gy = 60.0", "dose_gy = true", ("dose_gy", "number")),
        ('target = "PTV"', "target = 3", ("target", "string")),
        ('energy = "6X"', 'energy = ""', ("energy", "empty")),
        ("gantry_angles", 'gantry_angles = ["0"]', ("gantry_angles", "number")),
        ("gantry_angles", "gantry_angles = []", ("gantry_angles",)),
        ("gantry_angles", "gantry_angles = [0, 360]", ("gantry_angles", "360")),
        ("gantry_angles", "gantry_angles = [0, 90, 90]", ("identical",)),
        ("isocenter", "isocenter = 5", ("isocenter",)),
        ("isocenter", "isocenter = [1, 2]", ("isocenter", "three")),
        ("bixel_mm", "bixel_mm = 0", ("bixel_mm",)),
        ("grid_mm", "grid_mm = -3", ("grid_mm",)),
        ("priority = 1 ", "priority = 1.5", ("priority", "integer")),
        ("priority = 1 ", 'priority = "1"', ("priority", "integer")),
        ("at_least = 57.0", 'at_least = "57"', ("at_least", "number")),
        ('metric = "D95%"', "metric = 95", ("metric", "string")),
    ],
)
def test_wrong_types_and_values(needle, new, words):
    text = replace_line(DESIGN_EXAMPLE, needle, new)
    assert_line(text, line_of(DESIGN_EXAMPLE, needle), *words)


def test_beam_extension_lengths():
    text = insert_after(DESIGN_EXAMPLE, "gantry_angles", "couch_angles = [0, 90]")
    assert_line(text, 11, "couch_angles", "one angle per gantry angle")


@pytest.mark.parametrize("metric", ["D95", "V50", "Dmedian", "D95%%", "V-5Gy", "D1e2%", "V20Gy[mm]", "D%", "DmaxGy", "95%"])
def test_unknown_metric(metric):
    text = replace_line(DESIGN_EXAMPLE, 'metric = "D95%"', f'metric = "{metric}"')
    assert_line(text, 19, "metric")


@pytest.mark.parametrize("value, line", [("-60.0", 5), ("0", 5), ("0.0", 5)])
def test_non_positive_prescription_dose(value, line):
    assert_line(replace_line(DESIGN_EXAMPLE, "dose_gy = 60.0", f"dose_gy = {value}"), line, "dose_gy", "positive")


@pytest.mark.parametrize("value", ["0", "-3"])
def test_fractions_below_one(value):
    assert_line(replace_line(DESIGN_EXAMPLE, "fractions = 20", f"fractions = {value}"), 6, "fractions", "at least 1")


def test_goal_dose_must_be_positive():
    assert_line(replace_line(DESIGN_EXAMPLE, "at_least = 57.0", "at_least = 0"), 20, "at_least", "positive")
    assert_line(replace_line(DESIGN_EXAMPLE, "at_least = 57.0", "at_least = -1.0"), 20, "at_least", "positive")


def test_at_least_above_at_most():
    text = insert_after(DESIGN_EXAMPLE, "at_least = 57.0", "at_most = 50.0")
    assert_line(text, 20, "at_least", "exceeds")


@pytest.mark.parametrize("value", ["120.0", "-1", "100.5"])
def test_v_metric_percentage_out_of_range(value):
    text = replace_line(DESIGN_EXAMPLE, "at_most = 20.0", f"at_most = {value}")
    assert_line(text, 26, "at_most", "0–100")


def test_v_metric_in_cc_may_exceed_100():
    text = replace_line(DESIGN_EXAMPLE, 'metric = "V50Gy"', 'metric = "V50Gy[cc]"')
    text = replace_line(text, "at_most = 20.0", "at_most = 250.0")
    assert parse_protocol(text).goals[1].at_most == 250.0
    text = replace_line(text, "at_most = 250.0", "at_most = -2.0")
    assert_line(text, 26, "at_most", "negative")


@pytest.mark.parametrize("metric", ["D100.5%", "D101%", "D250%"])
def test_d_percent_out_of_range(metric):
    text = replace_line(DESIGN_EXAMPLE, 'metric = "D95%"', f'metric = "{metric}"')
    assert_line(text, 19, "0–100")


@pytest.mark.parametrize("metric", ["D0cc", "V0Gy", "V0.0Gy[cc]"])
def test_zero_parameters(metric):
    text = replace_line(DESIGN_EXAMPLE, 'metric = "D95%"', f'metric = "{metric}"')
    assert_line(text, 19, "positive")


@pytest.mark.parametrize("value", ["0", "-2"])
def test_priority_below_one(value):
    assert_line(replace_line(DESIGN_EXAMPLE, "priority = 2", f"priority = {value}"), 27, "priority")


def test_goal_without_bounds():
    text = delete_line(DESIGN_EXAMPLE, "at_most = 20.0")
    assert_line(text, 23, "at_least", "at_most")


def test_stretch_wrong_side():
    text = insert_after(DESIGN_EXAMPLE, "at_least = 57.0", "stretch = 55.0")
    assert_line(text, 21, "stretch", "at least")
    text = insert_after(DESIGN_EXAMPLE, "at_most = 20.0", "stretch = 25.0")
    assert_line(text, 27, "stretch", "at most")
    text = insert_after(DESIGN_EXAMPLE, "at_least = 57.0", "at_most = 63.0\nstretch = 58.0")
    assert_line(text, 22, "stretch", "both")


def test_duplicate_identical_goals():
    dup = "\n[[goals]]\nstructure = \"rectum\"\nmetric = \"v50gy\"\nat_most = 20.0\npriority = 3\n"
    text = DESIGN_EXAMPLE + dup
    n = len(DESIGN_EXAMPLE.splitlines()) + 2
    err = assert_line(text, n, "repeats", "line 23")
    assert "#3" in str(err)
    # the same metric with another bound is a different goal
    parse_protocol(text.replace("at_most = 20.0\npriority = 3", "at_most = 30.0\npriority = 3"))


def test_error_in_third_goal_names_its_line():
    extra = "\n[[goals]]\nstructure = \"Bladder\"\nmetric = \"Dmean\"\nat_most = 40.0\npriority = 0\n"
    text = DESIGN_EXAMPLE + extra
    assert_line(text, len(text.splitlines()), "priority")


def test_check_structures():
    p = parse_protocol(DESIGN_EXAMPLE)
    p.check_structures(["PTV", "Rectum", "BODY"])
    p.check_structures(["ptv", "RECTUM"])  # case-insensitive as StructureSet.find
    with pytest.raises(ProtocolError) as info:
        p.check_structures(["PTV", "Bladder"])
    assert info.value.line == 24
    assert "Rectum" in str(info.value) and "line 24" in str(info.value)
    with pytest.raises(ProtocolError) as info:
        p.check_structures(["Rectum"])
    assert info.value.line == 4  # the prescription target comes first


def test_load_errors(tmp_path):
    with pytest.raises(ProtocolError, match="cannot read"):
        load_protocol(tmp_path / "missing.toml")
    f = tmp_path / "p.toml"
    f.write_text(replace_line(DESIGN_EXAMPLE, "fractions = 20", "fractions = 0"), encoding="utf-8")
    with pytest.raises(ProtocolError) as info:
        load_protocol(f)
    assert str(info.value).startswith(f"{f}: line 6: ")
    f.write_bytes(b'name = "x"\n# caf\xe9\n')
    with pytest.raises(ProtocolError) as info:
        load_protocol(f)
    assert info.value.line == 2 and "UTF-8" in str(info.value)


# ----------------------------------------------------------------- metric grammar
@pytest.mark.parametrize(
    "text, kind, parameter, unit, out, canonical",
    [
        ("D95%", "D", 95.0, "%", "Gy", "D95%"),
        ("d95%", "D", 95.0, "%", "Gy", "D95%"),
        ("D99.5%", "D", 99.5, "%", "Gy", "D99.5%"),
        ("D0%", "D", 0.0, "%", "Gy", "D0%"),
        ("D100%", "D", 100.0, "%", "Gy", "D100%"),
        ("D2cc", "D", 2.0, "cc", "Gy", "D2cc"),
        ("D0.03CC", "D", 0.03, "cc", "Gy", "D0.03cc"),
        ("D.5cc", "D", 0.5, "cc", "Gy", "D0.5cc"),
        ("Dmean", "mean", None, None, "Gy", "Dmean"),
        ("DMEAN", "mean", None, None, "Gy", "Dmean"),
        ("Dmax", "max", 0.03, "cc", "Gy", "Dmax"),
        ("dmin", "min", 0.03, "cc", "Gy", "Dmin"),
        ("V50Gy", "V", 50.0, "Gy", "%", "V50Gy"),
        ("v47.5gy", "V", 47.5, "Gy", "%", "V47.5Gy"),
        ("V20Gy[cc]", "V", 20.0, "Gy", "cc", "V20Gy[cc]"),
        ("V20GY[CC]", "V", 20.0, "Gy", "cc", "V20Gy[cc]"),
        ("V20Gy[%]", "V", 20.0, "Gy", "%", "V20Gy"),
        (" V5.25Gy ", "V", 5.25, "Gy", "%", "V5.25Gy"),
        ("V60.Gy", "V", 60.0, "Gy", "%", "V60Gy"),
    ],
)
def test_metric_grammar(text, kind, parameter, unit, out, canonical):
    m = parse_metric(text)
    assert (m.kind, m.parameter, m.unit, m.output_unit) == (kind, parameter, unit, out)
    assert m.text == canonical == str(m)
    assert parse_metric(m.text) == m
    assert m.is_dose == (out == "Gy")


def test_format_number():
    assert [format_number(x) for x in (60.0, 0.03, 1e-5, 47.5, 100.0)] == ["60", "0.03", "0.00001", "47.5", "100"]


_decimal = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False).map(float)


@settings(max_examples=200, deadline=None)
@given(x=_decimal, form=st.sampled_from(["D{}%", "D{}cc", "V{}Gy", "V{}Gy[cc]"]), upper=st.booleans())
def test_metric_round_trip(x, form, upper):
    text = form.format(format_number(x))
    if upper:
        text = text.upper()
    valid = (form == "D{}%" and 0 <= x <= 100) or (form != "D{}%" and x > 0)
    if not valid:
        with pytest.raises(ProtocolError):
            parse_metric(text)
        return
    m = parse_metric(text)
    assert m.parameter == x
    assert parse_metric(m.text) == m
    assert m.text == form.format(format_number(x))  # canonical case


@settings(max_examples=100, deadline=None)
@given(x=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False))
def test_metric_text_of_any_float_reads_back(x):
    m = Metric("D", x, "cc", "Gy")
    back = parse_metric(m.text)
    assert back == m and math.isclose(back.parameter, x, rel_tol=0, abs_tol=0)
