"""Training data for the contouring network: digital patients' daily CBCTs and label maps.

A case is one daily CBCT of one digital patient (:func:`art_phantoms.make_fraction`
with every variation and artefact switched on, strengths drawn per case)
resampled to the network grid, with the true daily masks turned into a label
map (indices into :data:`art.contouring.labels.CLASSES`). Cases are cached as
``.npz`` files so that repeated training runs do not regenerate them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from art.errors import InputError
from art.geometry import Grid, Volume, resample, resample_mask
from art.structures import StructureSet

from .labels import CLASSES

__all__ = ["network_grid", "label_map", "make_case", "load_case", "default_cache_dir"]


def default_cache_dir() -> Path:
    """Cache folder for generated cases: ``$ART_CONTOUR_CACHE`` or ``<tmp>/art-contour-cache``."""
    return Path(os.environ.get("ART_CONTOUR_CACHE") or Path(tempfile.gettempdir()) / "art-contour-cache")


def network_grid(grid: Grid, spacing_mm) -> Grid:
    """The grid the network sees: same extent and orientation as ``grid`` at ``spacing_mm`` (dz, dy, dx)."""
    sp = tuple(float(s) for s in spacing_mm)
    if np.allclose(sp, grid.spacing, atol=1e-6):
        return grid
    return grid.with_spacing(sp)


def label_map(structures: StructureSet, grid: Grid, classes=CLASSES) -> np.ndarray:
    """Label map (uint8, shape ``grid.shape``) from a structure set.

    Each class's mask is resampled to ``grid`` as an occupancy fraction; a
    voxel takes the organ with the largest occupancy where that reaches 0.5,
    else BODY where the body occupancy reaches 0.5, else background.
    """
    frac = np.zeros((len(classes),) + tuple(grid.shape), dtype=np.float32)
    for i, name in enumerate(classes):
        if i == 0:
            continue
        s = structures.find(name)
        if s is None:
            raise InputError(f"structure set lacks {name!r}")
        v = Volume(s.mask, s.grid)
        frac[i] = v.array if s.grid.same_as(grid) else resample_mask(v, grid, mode="fraction").array
    organs = frac[2:]
    best = np.argmax(organs, axis=0)
    lab = np.where(frac[1] >= 0.5, 1, 0).astype(np.uint8)
    inside = np.take_along_axis(organs, best[None], axis=0)[0] >= 0.5
    lab[inside] = (best[inside] + 2).astype(np.uint8)
    return lab


def _artefacts(rng: np.random.Generator, spacing):
    from art_phantoms import CbctArtefacts

    return CbctArtefacts(
        noise_hu=float(rng.uniform(15.0, 70.0)),
        shading_hu=float(rng.uniform(20.0, 150.0)),
        hu_offset=float(rng.uniform(-100.0, 80.0)),
        streaks=True,
        truncation=True,
        spacing=spacing,
    )


def make_case(seed: int, fraction: int, *, spacing_mm=(4.0, 4.0, 4.0), native: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Generate one training case.

    Parameters
    ----------
    seed : int
        Digital patient seed (:func:`art_phantoms.make_pelvis`).
    fraction : int
        Fraction number (its daily variation is drawn from ``(seed, fraction)``).
    spacing_mm : (dz, dy, dx), keyword-only
        Network grid spacing, mm.
    native : bool, keyword-only
        Simulate the CBCT at the planning CT spacing (3, 2, 2) mm and resample
        it to the network grid (the deployment path); otherwise simulate
        directly at ``spacing_mm`` (faster).

    Returns
    -------
    image : ndarray, float32, (z, y, x)
        CBCT in HU on the network grid.
    labels : ndarray, uint8, (z, y, x)
        Label map (indices into ``CLASSES``).
    """
    from art_phantoms import make_fraction, make_pelvis

    rng = np.random.default_rng([int(seed), int(fraction), 7])
    if native:
        case = make_pelvis(seed=int(seed))
        day = make_fraction(case, fraction=int(fraction), artefacts=_artefacts(rng, None))
    else:
        case = make_pelvis(seed=int(seed), spacing=tuple(spacing_mm))
        day = make_fraction(case, fraction=int(fraction), artefacts=_artefacts(rng, tuple(spacing_mm)))
    grid = network_grid(day.cbct.grid, spacing_mm)
    img = day.cbct if day.cbct.grid.same_as(grid) else resample(day.cbct, grid, order=1, fill_value=-1000.0)
    lab = label_map(day.truth.structures, grid)
    return np.asarray(img.array, dtype=np.float32), lab


def load_case(seed: int, fraction: int, *, spacing_mm=(4.0, 4.0, 4.0), native: bool = False, cache_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`make_case` through the ``.npz`` cache in ``cache_dir`` (default :func:`default_cache_dir`)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tag = "x".join(f"{s:g}" for s in spacing_mm)
    path = cache / f"case_s{int(seed)}_f{int(fraction)}_{tag}{'_n' if native else ''}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return z["image"], z["labels"]
        except Exception:  # a truncated cache file: regenerate
            pass
    img, lab = make_case(seed, fraction, spacing_mm=spacing_mm, native=native)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, image=img, labels=lab)
    os.replace(tmp, path)
    return img, lab
