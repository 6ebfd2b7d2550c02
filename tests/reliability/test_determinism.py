"""Determinism (issue 9, item 6): the same inputs and seeds give byte-identical results on the CPU.

* The plan: :func:`art.workflow.make_plan` on the seeded digital patient gives
  bit-identical beamlet weights, influence matrix, segments (leaf positions,
  jaws, MU), dose arrays and goal values, in another process with another
  string-hash seed (``PYTHONHASHSEED``: catches set/dict-order dependence,
  time- or entropy-seeded random numbers) and, in the slow test, twice in one
  process with the shipped protocol (catches state carried between calls) and
  in a process with single-threaded BLAS (thread-count-dependent reductions).
* The files: the phantom writer gives byte-identical DICOM, ground truth and
  protocol files for the same seed (only ``manifest.json``'s creation time and
  timings differ), and the RT exporters give identical objects up to a
  consistent renaming of their own new UIDs and the creation dates/times.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = Path(__file__).resolve().parents[2]

#: The shipped protocol made cheap: 3 beams, 10 mm bixels, 6 mm dose grid (same stages, fewer numbers).
FAST_PROTOCOL = {
    "gantry_angles = [0, 51, 103, 154, 206, 257, 309]": "gantry_angles = [0, 120, 240]",
    "grid_mm = 3.0": "grid_mm = 6.0",
    "bixel_mm = 5.0": "bixel_mm = 10.0",
}


# ----------------------------------------------------------------------------- the plan
def protocol(fast: bool):
    from art.protocol import parse_protocol
    from art_phantoms import default_protocol_text

    text = default_protocol_text()
    if fast:
        for a, b in FAST_PROTOCOL.items():
            assert a in text, a
            text = text.replace(a, b)
        return parse_protocol(text)
    return dataclasses.replace(parse_protocol(text), dose_grid_mm=5.0)


def run_plan(*, fast: bool):
    """make_plan on ``make_pelvis(seed=1, spacing=(5, 4, 4))``."""
    from art.workflow import make_plan
    from art_phantoms import make_pelvis

    case = make_pelvis(seed=1, spacing=(5.0, 4.0, 4.0))
    return make_plan(case.ct, case.structures, protocol(fast))


def _h(a) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()


def plan_digests(result) -> dict[str, str]:
    """SHA-256 of every number that defines the result (exact bytes; floats via repr)."""
    im = result.influence
    d = {
        "weights": _h(result.weights),
        "influence.data": _h(im.matrix.data),
        "influence.indices": _h(im.matrix.indices),
        "influence.indptr": _h(im.matrix.indptr),
        "dose": _h(result.dose.array),
        "fluence_dose": _h(result.fluence_dose.array),
        "dose_grid": repr((result.dose.grid.shape, result.dose.grid.spacing, result.dose.grid.origin)),
        "isocenter": _h(np.asarray(result.isocenter_lps)),
        "goals": repr([(g.structure, g.metric, float(g.value)) for g in result.goals]),
    }
    for i, b in enumerate(result.plan.beams):
        h = hashlib.sha256(repr((b.name, b.gantry_deg, b.collimator_deg, b.couch_deg, tuple(map(float, b.isocenter_lps)))).encode())
        for s in b.segments:
            h.update(_h(np.asarray(s.leaf_positions)).encode())
            h.update(repr((tuple(map(float, s.jaws)), float(s.mu))).encode())
        d[f"beam {i} segments"] = f"{len(b.segments)}:{h.hexdigest()}"
    return d


def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    parent = os.environ.get("PYTHONHASHSEED")
    env["PYTHONHASHSEED"] = "4242" if parent != "4242" else "17"  # always differs from ours (ours is random if unset)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def start_child(fast: bool, **env: str) -> subprocess.Popen:
    code = (
        "import json, warnings; warnings.simplefilter('ignore');"
        "from tests.reliability.test_determinism import plan_digests, run_plan;"
        f"print(json.dumps(plan_digests(run_plan(fast={fast!r}))))"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=_child_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_digests(proc: subprocess.Popen) -> dict[str, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def assert_same(a: dict[str, str], b: dict[str, str]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"not bit-identical: {differ}"


@pytest.fixture(scope="module")
def fast_plan_and_child():
    """The cheap plan in this process, and its digests from another process (run concurrently)."""
    proc = start_child(fast=True)
    try:
        result = run_plan(fast=True)
    except BaseException:
        proc.kill()
        raise
    return result, child_digests(proc)


def test_plan_is_bit_identical_in_another_process(fast_plan_and_child):
    result, theirs = fast_plan_and_child
    ours = plan_digests(result)
    # the result is not trivial (a test of equality between empty plans proves nothing)
    assert result.weights.size > 50 and np.count_nonzero(result.weights) > 10
    assert sum(len(b.segments) for b in result.plan.beams) >= 6
    assert float(result.dose.array.max()) > 50.0
    assert_same(ours, theirs)


@pytest.mark.slow
def test_plan_is_bit_identical_twice_in_one_process_shipped_protocol():
    """The shipped protocol (7 beams, 5 mm bixels; 5 mm dose grid), twice in this process and once in another.

    The other process also runs BLAS/OpenMP single-threaded: the result must not
    depend on the thread count either (reductions split across threads would).
    """
    proc = start_child(fast=False, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    a = run_plan(fast=False)
    b = run_plan(fast=False)
    assert np.array_equal(a.weights, b.weights)
    assert np.array_equal(a.dose.array, b.dose.array) and np.array_equal(a.fluence_dose.array, b.fluence_dose.array)
    for ba, bb in zip(a.plan.beams, b.plan.beams, strict=True):
        assert len(ba.segments) == len(bb.segments)
        for sa, sb in zip(ba.segments, bb.segments):
            assert np.array_equal(sa.leaf_positions, sb.leaf_positions) and sa.jaws == sb.jaws and sa.mu == sb.mu
    assert_same(plan_digests(a), plan_digests(b))
    assert_same(plan_digests(a), child_digests(proc))


# ----------------------------------------------------------------------------- the files
def test_phantom_files_are_byte_identical(coarse_patient, tmp_path):
    """``write_phantom`` with the same seed: every file identical except manifest.json's time and timings."""
    from art_phantoms.write import write_phantom

    again = tmp_path / "again"
    write_phantom(again, seed=1, fractions=1, spacing=(5.0, 4.0, 4.0))  # as the coarse_patient fixture
    files = sorted(p.relative_to(coarse_patient) for p in coarse_patient.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert sum(1 for f in files if f.suffix == ".dcm") > 20 and any(f.suffix == ".mha" for f in files)
    differ = [str(f) for f in files if (coarse_patient / f).read_bytes() != (again / f).read_bytes()]
    assert differ in ([], ["manifest.json"]), differ
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (coarse_patient, again))
    for m in (ma, mb):
        m.pop("created_utc")
        m.pop("timings_s")
    assert ma == mb  # includes the SHA-256 of every file


def test_phantom_started_in_the_background_gives_the_same_files(coarse_patient, tmp_path):
    """``start_phantom`` (``art demo``: the fractions on a thread while other work runs on the calling
    thread) writes the files ``write_phantom`` writes, byte for byte, manifest included up to its
    time and timings."""
    from art_phantoms.write import start_phantom

    from art_phantoms import make_pelvis

    folder = tmp_path / "started"
    started = start_phantom(folder, seed=1, fractions=1, spacing=(5.0, 4.0, 4.0))
    make_pelvis(seed=4, spacing=(5.0, 4.0, 4.0))  # other NumPy work meanwhile, as the reference plan in art demo
    manifest = started.finish()
    files = sorted(p.relative_to(coarse_patient) for p in coarse_patient.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    differ = [str(f) for f in files if (coarse_patient / f).read_bytes() != (folder / f).read_bytes()]
    assert differ in ([], ["manifest.json"]), differ
    expected = json.loads((coarse_patient / "manifest.json").read_text())
    for m in (expected, manifest):
        m.pop("created_utc")
        m.pop("timings_s")
    assert manifest == expected


def test_phantom_fraction_error_is_raised_by_finish_and_dropped_by_abandon(tmp_path):
    """A fraction that fails on the background thread fails ``finish`` with its own error (no
    manifest written); ``abandon`` waits for it and drops it (the caller raises its own)."""
    from art.errors import InputError
    from art_phantoms.write import start_phantom

    bad = {1: {"bladder_filling": 7.0}}
    started = start_phantom(tmp_path / "a", seed=1, fractions=1, spacing=(5.0, 4.0, 4.0), fraction_options=bad)
    with pytest.raises(InputError, match="bladder_filling"):
        started.finish()
    assert not (tmp_path / "a" / "manifest.json").exists()
    started = start_phantom(tmp_path / "b", seed=1, fractions=1, spacing=(5.0, 4.0, 4.0), fraction_options=bad)
    started.abandon()
    assert not (tmp_path / "b" / "CBCT_01").exists()
    with pytest.raises(InputError, match="empty"):
        start_phantom(tmp_path / "b", seed=1, fractions=0, spacing=(5.0, 4.0, 4.0))


def dicom_equal_up_to_uids_and_dates(path_a: Path, path_b: Path, *, fixed_uids: set[str]) -> dict[str, str]:
    """Compare two DICOM files element by element (file meta included).

    UIDs may differ only by a one-to-one renaming, and UIDs in ``fixed_uids`` (of
    the inputs) must not change; DA/TM/DT values and group lengths are skipped; everything else
    (numbers, text, pixel data) must be equal. Returns the UID renaming.
    """
    import pydicom

    a, b = pydicom.dcmread(path_a), pydicom.dcmread(path_b)
    ea = list(a.file_meta.iterall()) + list(a.iterall())
    eb = list(b.file_meta.iterall()) + list(b.iterall())
    assert [(e.tag, e.VR) for e in ea] == [(e.tag, e.VR) for e in eb], f"{path_a.name}: different elements"
    ab: dict[str, str] = {}
    ba: dict[str, str] = {}
    for x, y in zip(ea, eb):
        if x.VR == "SQ" or x.VR in ("DA", "TM", "DT"):
            continue
        if x.tag.element == 0x0000:
            # group length (e.g. FileMetaInformationGroupLength): follows the lengths of the new UIDs,
            # which vary by a digit or two (a generated UID's number has no leading zeros)
            continue
        if x.VR == "UI":
            u, v = str(x.value), str(y.value)
            assert ab.setdefault(u, v) == v and ba.setdefault(v, u) == u, f"{path_a.name} {x.keyword}: UIDs not renamed consistently"
            if u in fixed_uids:
                assert u == v, f"{path_a.name} {x.keyword}: an input UID changed"
            continue
        assert x.value == y.value, f"{path_a.name} {x.keyword}: {x.value!r} != {y.value!r}"
    return ab


def test_rt_exports_identical_up_to_new_uids_and_dates(fast_plan_and_child, coarse_patient, tmp_path):
    from art.dose import load_machine
    from art.io import read_image_series, read_rtstruct
    from art.results import write_plan_files

    result, _ = fast_plan_and_child
    ct = read_image_series(coarse_patient / "CT")
    structures = read_rtstruct(coarse_patient / "RTSTRUCT.dcm", ct)
    machine = load_machine()
    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        write_plan_files(folder, plan=result.plan, dose=result.dose, ct=ct, structures=structures, protocol=protocol(True),
                         machine=machine, label="REFERENCE")  # fmt: skip
        folders.append(folder)
    fixed = set(ct.sop_instance_uids) | {ct.series_instance_uid, ct.study_instance_uid, ct.frame_of_reference_uid, ct.sop_class_uid}
    renamed = {}
    for f in ("RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm"):
        renaming = dicom_equal_up_to_uids_and_dates(folders[0] / f, folders[1] / f, fixed_uids=fixed)
        for u, v in renaming.items():  # one renaming across the three files (references stay consistent)
            assert renamed.setdefault(u, v) == v
    assert any(u != v for u, v in renamed.items()), "no new UID at all: the comparison did not see the objects' own UIDs"
    # and the exported objects of a real (optimised, sequenced) plan reference each other and the CT correctly
    from art.io.references import check_result_references

    assert check_result_references(folders[0], images=[ct]) == []
