"""Property-based tests (hypothesis) of the readers, the protocol parser and geometry round trips (issue 9).

A reader may refuse any input, but only with an :class:`art.errors.ArtError` that
names the file; no other exception may escape. Regressions found by
``benchmarks/fuzz_readers.py`` are pinned as explicit cases.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from art.errors import ArtError, DicomError, ProtocolError
from art.geometry import Grid, Volume
from art.io import PatientInfo, read_image_series, read_rtstruct, write_image_series, write_rtstruct
from art.structures import Structure, StructureSet

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-slice CT and an RTSTRUCT on it."""
    root = tmp_path_factory.mktemp("tiny")
    grid = Grid((4, 16, 16), (3.0, 2.0, 2.0), (-15.0, -15.0, -4.5))
    z, y, x = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    body = (x - 7.5) ** 2 + (y - 7.5) ** 2 < 49
    ct = Volume(np.where(body, 40.0, -1000.0).astype(np.float32), grid)
    series = write_image_series(ct, root / "CT", patient=PatientInfo(name="Prop^Test", id="PROP"))
    ss = StructureSet(grid, [Structure("BODY", body, grid, "EXTERNAL"), Structure("PTV", body & (x > 6), grid, "PTV")])
    write_rtstruct(ss, series, root / "RS.dcm")
    return root, series


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        b[pos % len(b)] = val
    if cut is not None:
        b = b[: max(1, cut % len(b))]
    return bytes(b)


edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=12)


@SETTINGS
@given(edits=edits, cut=st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_series_reader_refuses_mutated_slices_only_with_art_errors(tiny, tmp_path_factory, edits, cut):
    root, series = tiny
    folder = tmp_path_factory.mktemp("series")
    shutil.copy(series.files[0], folder / "a.dcm")
    (folder / "b.dcm").write_bytes(_mutate(series.files[1].read_bytes(), edits, cut))
    try:
        back = read_image_series(folder)
    except ArtError as exc:
        assert str(folder) in str(exc) or "b.dcm" in str(exc) or "a.dcm" in str(exc)
    else:
        assert back.volume.array.shape[0] == 2 and np.all(np.isfinite(back.volume.array))


@SETTINGS
@given(edits=edits, cut=st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_rtstruct_reader_refuses_mutated_files_only_with_art_errors(tiny, tmp_path_factory, edits, cut):
    root, series = tiny
    path = tmp_path_factory.mktemp("rs") / "RS.dcm"
    path.write_bytes(_mutate((root / "RS.dcm").read_bytes(), edits, cut))
    try:
        ss = read_rtstruct(path, series)
    except ArtError as exc:
        assert "RS.dcm" in str(exc)
    else:
        for s in ss:
            assert s.mask.shape == series.grid.shape


def test_unknown_vr_in_a_nested_sequence_is_a_dicom_error(tiny, tmp_path):
    """Fuzzing found pydicom's lazy NotImplementedError escaping from a contour sequence."""
    root, series = tiny
    data = bytearray((root / "RS.dcm").read_bytes())
    i = data.find(b"\x06\x30\x24\x00")  # (3006,0024) ReferencedFrameOfReferenceUID, explicit VR 'UI'
    assert i > 0
    data[i + 4 : i + 6] = b"YI"
    path = tmp_path / "RS.dcm"
    path.write_bytes(bytes(data))
    with pytest.raises(DicomError, match="RS.dcm"):
        read_rtstruct(path, series)


def test_slice_without_columns_is_a_dicom_error_naming_the_file(tiny, tmp_path):
    """Fuzzing found an AttributeError for a slice whose Columns element was damaged."""
    import pydicom

    root, series = tiny
    for k, f in enumerate(series.files[:2]):
        ds = pydicom.dcmread(f)
        if k == 1:
            del ds.Columns
        ds.save_as(tmp_path / f"s{k}.dcm")
    with pytest.raises(DicomError, match="s1.dcm"):
        read_image_series(tmp_path)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=400))
def test_protocol_parser_refuses_arbitrary_text_only_with_protocol_errors(text):
    from art.protocol import parse_protocol

    try:
        parse_protocol(text, source="p.toml")
    except ArtError as exc:
        assert isinstance(exc, ProtocolError) or "p.toml" in str(exc)


@settings(max_examples=100, deadline=None)
@given(
    key=st.sampled_from(["at_least", "at_most", "priority", "metric", "structure", "stretch", "bogus"]),
    value=st.one_of(st.integers(-5, 200), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
)
def test_protocol_goal_values_are_validated(key, value):
    """Any value in a goal either parses to a sane goal or is refused with the line named."""
    from art.protocol import parse_protocol
    from art_phantoms import default_protocol_text

    text = default_protocol_text()
    lit = repr(value) if not isinstance(value, float) else ("nan" if value != value else ("inf" if value > 0 else "-inf") if abs(value) == float("inf") else repr(value))
    if isinstance(value, str):
        lit = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    text += f'\n[[goals]]\nstructure = "PTV"\nmetric = "Dmax"\nat_most = 64.0\npriority = 2\n{key} = {lit}\n'
    try:
        p = parse_protocol(text, source="p.toml")
    except ProtocolError as exc:
        assert "p.toml" in str(exc)
    else:
        for g in p.goals:
            for v in (g.at_least, g.at_most):
                assert v is None or (np.isfinite(v) and v >= 0)
            assert g.priority >= 1


@settings(max_examples=100, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-180, 180) for _ in range(3)]),
    spacing=st.tuples(*[st.floats(0.3, 5.0) for _ in range(3)]),
    origin=st.tuples(*[st.floats(-500, 500) for _ in range(3)]),
    idx=st.lists(st.tuples(*[st.floats(-10, 100) for _ in range(3)]), min_size=1, max_size=20),
)
def test_grid_index_lps_round_trip_any_rotation(angles, spacing, origin, idx):
    from scipy.spatial.transform import Rotation

    direction = Rotation.from_euler("xyz", angles, degrees=True).as_matrix().ravel().tolist()
    g = Grid((50, 60, 70), spacing, origin, direction)
    i = np.asarray(idx, dtype=np.float64)
    back = g.lps_to_index(g.index_to_lps(i))
    assert np.allclose(back, i, atol=1e-6)
    assert g.same_as(Grid.from_dict(g.to_dict()))


def test_rtplan_with_a_malformed_number_is_a_dicom_error(tmp_path):
    """Fuzzing found int('1\\x02') escaping from the RT Plan reader (ReferencedPatientSetupNumber)."""
    import pydicom
    import pydicom.data

    from art.io.rtplan import read_rtplan

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("rtplan.dcm"), force=True)
    ds.BeamSequence[0].add_new(0x300C006A, "LO", "1x")  # ReferencedPatientSetupNumber, not a number
    path = tmp_path / "RP.dcm"
    ds.save_as(path)
    with pytest.raises(DicomError, match=r"RP.dcm: malformed RT Plan \(ValueError"):
        read_rtplan(path)
