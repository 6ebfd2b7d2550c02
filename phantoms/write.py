"""Write a digital patient to disk as DICOM, with its ground truth, and read the truth back.

Layout of the folder written by :func:`write_phantom` (and ``art phantom``)::

    CT/                     planning CT series (CT Image Storage)
    RTSTRUCT.dcm            planning structures on the CT
    protocol.toml           the clinical protocol (prescription, beams, goals)
    CBCT_01/ ... CBCT_NN/   daily cone-beam CT series (Modality CT, same frame of reference)
    truth/
      planning.json         sampled anatomical parameters of the patient
      fraction_01/          ground truth of fraction 1
        daily_ct.mha            true anatomy of the day in HU, on the CBCT grid (no CBCT artefacts)
        daily_to_planning.mha   displacement field on the CBCT grid, (dx, dy, dz) mm LPS:
                                point y of the day lies at y + d(y) in the planning CT
        planning_to_daily.mha   displacement field on the planning grid: x -> x + u(x) in the day
        masks/<name>.mha        true daily structure masks on the CBCT grid (uint8)
        truth.json              set-up shift (mm, LPS), parameters, structure types and colours
    manifest.json           provenance: software version, seed, parameters, file hashes

The patient's name and ID are synthetic ("ART^Phantom", "ARTPH<seed>"); UIDs are
derived from the seed, so the same seed gives identical files.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import InputError
from art.geometry import Grid, Volume
from art.outputs import atomic_output_dir
from art.provenance import provenance, sha256_file
from art.structures import Structure, StructureSet

from .cases import DailyCase, DailyTruth, PlanningCase

PHANTOM_NAME = "ART^Phantom"


def _patient(seed: int):
    from art.io.series import PatientInfo

    return PatientInfo(name=PHANTOM_NAME, id=f"ARTPH{seed:05d}", birth_date="19600101", sex="M")


def _write_vector_field(field: np.ndarray, grid: Grid, path: Path) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(field, dtype=np.float32), isVector=True)
    img.SetSpacing(grid.spacing_xyz)
    img.SetOrigin(grid.origin)
    img.SetDirection(grid.direction)
    sitk.WriteImage(img, str(path), useCompression=True)


def _read_vector_field(path: Path) -> tuple[np.ndarray, Grid]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError("expected a 3-D displacement field with 3 components", path=path)
    sx, sy, sz = img.GetSpacing()
    grid = Grid(shape=arr.shape[:3], spacing=(sz, sy, sx), origin=img.GetOrigin(), direction=img.GetDirection())
    return arr, grid


def _write_volume(volume: Volume, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(volume.to_sitk(), str(path), useCompression=True)


def _read_volume(path: Path) -> Volume:
    import SimpleITK as sitk

    if not path.is_file():
        raise InputError("missing ground-truth file", path=path)
    return Volume.from_sitk(sitk.ReadImage(str(path)))


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_phantom(
    out: str | Path,
    *,
    seed: int = 0,
    fractions: int = 1,
    spacing: tuple[float, float, float] = (3.0, 2.0, 2.0),
    fraction_options: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Generate a digital pelvis patient and write it as DICOM with ground truth.

    Parameters
    ----------
    out : str or Path
        Result folder; written atomically (nothing is left on failure).
    seed : int, keyword-only
        Random seed of the patient and of its daily variation.
    fractions : int, keyword-only
        Number of daily CBCTs (0–40).
    spacing : (dz, dy, dx) mm, keyword-only
        Voxel size of the planning CT.
    fraction_options : dict, optional
        Per fraction number, keyword arguments for :func:`art_phantoms.make_fraction`
        (e.g. ``{1: {"bladder_filling": 0.5, "rectal_gas": True}}``).

    Returns
    -------
    dict
        The manifest (also written as ``manifest.json``), with ``n_files``.
    """
    with atomic_output_dir(out) as tmp:
        return start_phantom(tmp, seed=seed, fractions=fractions, spacing=spacing, fraction_options=fraction_options, background=False).finish()


def start_phantom(
    folder: str | Path,
    *,
    seed: int = 0,
    fractions: int = 1,
    spacing: tuple[float, float, float] = (3.0, 2.0, 2.0),
    fraction_options: dict[int, dict[str, Any]] | None = None,
    background: bool = True,
) -> "PhantomInProgress":
    """:func:`write_phantom` in two steps: the planning files now, the daily fractions on a thread.

    Writes ``CT/``, ``RTSTRUCT.dcm``, ``protocol.toml`` and ``truth/planning.json`` into
    ``folder`` (which the caller makes atomic, e.g. inside an :func:`art.outputs.atomic_output_dir`),
    then simulates and writes the fractions on a background thread of the lowest priority
    (:func:`art.threads.lower_this_threads_priority`), so that a plan can be made on the planning
    CT meanwhile (``art demo``) and the fractions take only the CPU time it leaves idle.
    :meth:`PhantomInProgress.finish` waits for them and writes ``manifest.json``; the files are
    those :func:`write_phantom` writes, byte for byte (the fractions depend only on the seed and
    the planning case, not on what runs beside them).

    Parameters
    ----------
    folder : str or Path
        An empty or new folder.
    seed, fractions, spacing, fraction_options : keyword-only
        As :func:`write_phantom`.
    background : bool, keyword-only
        False: simulate the fractions on the calling thread, before returning.

    Returns
    -------
    PhantomInProgress
    """
    from art_phantoms import make_pelvis

    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(fractions, (int, np.integer)) or not 0 <= fractions <= 40:
        raise InputError(f"fractions must be an integer from 0 to 40, got {fractions!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise InputError("the phantom's folder must be empty", path=folder)
    started = PhantomInProgress(folder, int(seed), int(fractions), tuple(spacing), dict(fraction_options or {}))
    t0 = time.perf_counter()
    case = make_pelvis(seed=int(seed), spacing=tuple(spacing))
    started.timings["phantom_s"] = time.perf_counter() - t0
    ids = _series_ids(int(seed))
    t0 = time.perf_counter()
    _write_planning(folder, case, ids)
    started.timings["write_planning_s"] = time.perf_counter() - t0
    started.start(case, ids, background=background)
    return started


class PhantomInProgress:
    """A phantom whose planning files are written and whose fractions are being simulated (:func:`start_phantom`)."""

    def __init__(self, folder: Path, seed: int, fractions: int, spacing: tuple, fraction_options: dict) -> None:
        self.folder = folder
        self.seed, self.fractions, self.spacing, self.fraction_options = seed, fractions, spacing, fraction_options
        self.timings: dict[str, float] = {}
        self._future: Any = None

    def start(self, case: PlanningCase, ids: "_SeriesIds", *, background: bool) -> None:
        """Simulate and write the fractions, on a background thread when ``background``."""
        if not background:
            self._write_fractions(case, ids)
            return
        from art.threads import in_background

        self._future = in_background(self._write_fractions, case, ids, True, name="art-phantom-fractions")

    def _write_fractions(self, case: PlanningCase, ids: "_SeriesIds", background: bool = False) -> None:
        from art_phantoms import make_fraction

        if background:  # only the CPU time the caller's work leaves idle (the files do not depend on it)
            from art.threads import lower_this_threads_priority

            lower_this_threads_priority()
        for k in range(1, self.fractions + 1):
            t0 = time.perf_counter()
            daily = make_fraction(case, fraction=k, **self.fraction_options.get(k, {}))
            _write_cbct(self.folder, daily, k, ids)
            _write_fraction_truth(self.folder / "truth" / f"fraction_{k:02d}", case, daily.truth, k)
            self.timings[f"fraction_{k:02d}_s"] = time.perf_counter() - t0

    def _wait(self) -> None:
        future, self._future = self._future, None
        if future is not None:
            future.result()

    def finish(self) -> dict[str, Any]:
        """Wait for the fractions (their error, if any, is raised here), write ``manifest.json``
        and return the manifest (with ``n_files``)."""
        self._wait()
        return _write_manifest(self.folder, self.seed, self.fractions, self.spacing, self.timings)

    def abandon(self) -> None:
        """Wait for the fractions and drop their result or error (the caller failed and removes the folder)."""
        try:
            self._wait()
        except Exception:  # noqa: BLE001 - the caller's own error is the one raised
            pass


@dataclass(frozen=True)
class _SeriesIds:
    """The synthetic patient and the UIDs every series of the phantom shares, derived from ``seed``."""

    seed: int
    patient: Any
    study_uid: str
    for_uid: str


def _series_ids(seed: int) -> _SeriesIds:
    """Patient (``ART^Phantom``, ``ARTPH<seed>``), study and frame-of-reference UIDs of the phantom ``seed``."""
    from art.io.uids import new_uid

    patient = _patient(seed)
    study_uid = new_uid(entropy=("art-phantom", "study", seed))
    for_uid = new_uid(entropy=("art-phantom", "frame-of-reference", seed))
    return _SeriesIds(seed=seed, patient=patient, study_uid=study_uid, for_uid=for_uid)


def _write_planning(tmp: Path, case: PlanningCase, ids: _SeriesIds) -> None:
    """Write the planning CT series (``CT/``), ``RTSTRUCT.dcm``, ``protocol.toml`` and ``truth/planning.json`` into ``tmp``."""
    from art.io.rtstruct import write_rtstruct
    from art.io.series import write_image_series
    from art.io.uids import new_uid
    from art_phantoms import default_protocol_text

    seed = ids.seed
    ct = write_image_series(
        case.ct,
        tmp / "CT",
        patient=ids.patient,
        frame_of_reference_uid=ids.for_uid,
        study_instance_uid=ids.study_uid,
        series_instance_uid=new_uid(entropy=("art-phantom", "ct", seed)),
        series_description="Planning CT (art phantom)",
        series_number=1,
    )
    write_rtstruct(
        case.structures,
        ct,
        tmp / "RTSTRUCT.dcm",
        label="art phantom",
        series_instance_uid=new_uid(entropy=("art-phantom", "rtstruct-series", seed)),
        sop_instance_uid=new_uid(entropy=("art-phantom", "rtstruct", seed)),
    )
    (tmp / "protocol.toml").write_text(default_protocol_text(), encoding="utf-8")
    truth_dir = tmp / "truth"
    truth_dir.mkdir()
    (truth_dir / "planning.json").write_text(json.dumps({"seed": seed, "params": case.params}, indent=2, default=_json_default))


def _write_cbct(tmp: Path, daily: DailyCase, k: int, ids: _SeriesIds) -> None:
    """Write the CBCT of fraction ``k`` as the series ``CBCT_<kk>/`` (same patient, study and frame of reference)."""
    from art.io.series import write_image_series
    from art.io.uids import new_uid

    write_image_series(
        daily.cbct,
        tmp / f"CBCT_{k:02d}",
        patient=ids.patient,
        frame_of_reference_uid=ids.for_uid,
        study_instance_uid=ids.study_uid,
        series_instance_uid=new_uid(entropy=("art-phantom", "cbct", ids.seed, k)),
        series_description=f"CBCT fraction {k}",
        series_number=100 + k,
        is_cbct=True,
    )


def _write_fraction_truth(fdir: Path, case: PlanningCase, t: DailyTruth, k: int) -> None:
    """Write the ground truth of fraction ``k`` (a ``DailyTruth``) into ``fdir``: daily CT, both displacement fields, masks, ``truth.json``."""
    (fdir / "masks").mkdir(parents=True)
    _write_volume(t.daily_ct, fdir / "daily_ct.mha")
    _write_vector_field(t.daily_to_planning, t.daily_ct.grid, fdir / "daily_to_planning.mha")
    _write_vector_field(t.planning_to_daily, case.ct.grid, fdir / "planning_to_daily.mha")
    structures = []
    for s in t.structures:
        fname = f"{_safe_name(s.name)}.mha"
        _write_volume(Volume(s.mask.astype(np.uint8), s.grid), fdir / "masks" / fname)
        structures.append({"name": s.name, "roi_type": s.roi_type, "color": list(s.color), "file": f"masks/{fname}"})
    info = {
        "fraction": k,
        "setup_shift_mm": [float(v) for v in np.asarray(t.setup_shift_mm, dtype=float).reshape(-1)],
        "params": t.params,
        "structures": structures,
    }
    (fdir / "truth.json").write_text(json.dumps(info, indent=2, default=_json_default))


def _write_manifest(tmp: Path, seed: Any, fractions: Any, spacing: Any, timings: dict[str, float]) -> dict[str, Any]:
    """Write ``manifest.json`` (provenance, SHA-256 of every file, timings in s, ``n_files``) into ``tmp`` and return it."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = provenance(
        inputs={},
        parameters={"site": "prostate", "seed": int(seed), "fractions": int(fractions), "spacing_mm": list(spacing)},
    )
    manifest["files"] = {str(p.relative_to(tmp)): sha256_file(p) for p in files}
    manifest["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    manifest["n_files"] = len(files) + 1
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass
class FractionTruth:
    """Ground truth of one fraction, as read back from ``truth/fraction_NN``."""

    daily_ct: Volume
    structures: StructureSet
    daily_to_planning: np.ndarray
    daily_grid: Grid
    planning_to_daily: np.ndarray
    planning_grid: Grid
    setup_shift_mm: np.ndarray
    params: dict


def load_truth(folder: str | Path, fraction: int) -> FractionTruth:
    """Read the ground truth of ``fraction`` from a folder written by :func:`write_phantom`."""
    fdir = Path(folder) / "truth" / f"fraction_{int(fraction):02d}"
    info_path = fdir / "truth.json"
    if not info_path.is_file():
        raise InputError(f"no ground truth for fraction {fraction}", path=fdir)
    info = json.loads(info_path.read_text())
    daily_ct = _read_volume(fdir / "daily_ct.mha")
    d2p, dgrid = _read_vector_field(fdir / "daily_to_planning.mha")
    p2d, pgrid = _read_vector_field(fdir / "planning_to_daily.mha")
    sset = StructureSet(grid=daily_ct.grid)
    for s in info["structures"]:
        mask = _read_volume(fdir / s["file"])
        sset.add(Structure(s["name"], mask.array.astype(bool), daily_ct.grid, roi_type=s["roi_type"], color=tuple(s["color"])))
    return FractionTruth(
        daily_ct=daily_ct,
        structures=sset,
        daily_to_planning=d2p,
        daily_grid=dgrid,
        planning_to_daily=p2d,
        planning_grid=pgrid,
        setup_shift_mm=np.asarray(info["setup_shift_mm"], dtype=float),
        params=info["params"],
    )
