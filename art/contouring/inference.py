"""Segment a daily CBCT with the contouring network: sliding window, test-time augmentation, post-processing, checks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from art.errors import InputError
from art.geometry import Grid, Volume, resample
from art.structures import Structure, StructureSet

from .labels import COLOURS, FLUID_FILLED, ROI_TYPES, VOLUME_RANGES_CC

__all__ = ["ContourResult", "segment", "predict_probabilities", "postprocess_mask", "intensity_consistent", "anatomical_checks", "CONFIDENCE_THRESHOLD"]

#: The confidence threshold (the one setting; docs/contouring.md): an AI contour whose confidence is
#: below it is flagged for review by :func:`segment`, and :func:`art.adapt.adapt` then uses the
#: propagated contour instead and does not let it guide the deformable registration.
CONFIDENCE_THRESHOLD = 0.85

# test-time augmentations: (grid shift in voxels (z, y, x), HU offset, HU scale about -1000, left-right mirror)
_TTA = (
    ((0.0, 0.0, 0.0), 0.0, 1.0, False),
    ((0.5, 0.5, 0.5), 40.0, 1.04, False),
    ((-0.5, 0.0, -0.5), -40.0, 0.96, False),
    ((0.0, 0.0, 0.0), 0.0, 1.0, True),
    ((0.5, 0.0, 0.5), -20.0, 1.0, True),
)


def _mirror_order(classes) -> list[int]:
    """Channel order that undoes a left-right mirror: ``*_L`` and ``*_R`` classes swap, the others stay."""
    idx = {c: i for i, c in enumerate(classes)}
    order = []
    for c in classes:
        twin = c[:-2] + "_R" if c.endswith("_L") else c[:-2] + "_L" if c.endswith("_R") else c
        order.append(idx.get(twin, idx[c]))
    return order


@dataclass
class ContourResult:
    """What :func:`segment` found.

    Attributes
    ----------
    structures : StructureSet
        Masks on the CBCT grid: ``BODY`` (EXTERNAL) and the organs (ORGAN).
    confidence : dict
        Name -> confidence in [0, 1] (see :func:`art.contouring.confidence.confidence`).
    flagged : list of str
        Names needing review: confidence below the threshold, or failing an
        anatomical sanity check (reasons in ``reasons``). Never use a flagged
        structure without review.
    reasons : dict
        Name -> list of human-readable reasons it was flagged.
    model : dict
        Model path, classes, spacing and card version fields.
    seconds : float
        Wall time of the segmentation.
    """

    structures: StructureSet
    confidence: dict
    flagged: list
    reasons: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> list[dict]:
        """One row per structure: name, volume_cc, confidence, flagged, reasons."""
        return [
            {
                "name": s.name,
                "volume_cc": round(s.volume_cc, 2),
                "confidence": round(float(self.confidence.get(s.name, float("nan"))), 3),
                "flagged": s.name in self.flagged,
                "reasons": list(self.reasons.get(s.name, [])),
            }
            for s in self.structures
        ]


def _window_weights(patch) -> np.ndarray:
    ax = []
    for p in patch:
        t = np.arange(p, dtype=np.float32) - (p - 1) / 2.0
        ax.append(np.exp(-0.5 * (t / (0.3 * p)) ** 2))
    w = ax[0][:, None, None] * ax[1][None, :, None] * ax[2][None, None, :]
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def _starts(n: int, p: int) -> list[int]:
    if n <= p:
        return [0]
    k = int(np.ceil((n - p) / (p / 2.0))) + 1
    return sorted({int(round(v)) for v in np.linspace(0, n - p, k)})


def predict_probabilities(model, image: np.ndarray) -> np.ndarray:
    """Class probabilities of a normalised image on the network grid (sliding window).

    Parameters
    ----------
    model : ContourModel
    image : ndarray, float32, (z, y, x)
        Already normalised (:func:`art.contouring.model.normalise`).

    Returns
    -------
    ndarray, float32, (C, z, y, x)
        Softmax probabilities, windows blended with Gaussian weights.
    """
    import torch

    card = model.card
    div = card["divisor"]
    pad_value = float(card["normalisation"]["clip"][0])
    shape = image.shape
    patch = card["patch"]
    if patch is None:
        patch = [int(np.ceil(n / div) * div) for n in shape]
    target = [max(int(np.ceil(n / div) * div), p) for n, p in zip(shape, patch)]
    pads = [(0, t - n) for t, n in zip(target, shape)]
    img = np.pad(image.astype(np.float32), pads, mode="constant", constant_values=pad_value)
    n_cls = len(card["classes"])
    acc = np.zeros((n_cls,) + tuple(target), dtype=np.float32)
    wsum = np.zeros(tuple(target), dtype=np.float32)
    w = _window_weights(patch)
    with torch.no_grad():
        for z0 in _starts(target[0], patch[0]):
            for y0 in _starts(target[1], patch[1]):
                for x0 in _starts(target[2], patch[2]):
                    sl = (slice(z0, z0 + patch[0]), slice(y0, y0 + patch[1]), slice(x0, x0 + patch[2]))
                    x = torch.from_numpy(np.ascontiguousarray(img[sl]))[None, None].to(model.device)
                    pr = torch.softmax(model.module(x), dim=1)[0].float().cpu().numpy()
                    acc[(slice(None),) + sl] += pr * w
                    wsum[sl] += w
    acc /= wsum[None]
    return acc[(slice(None), slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))]


def _shifted_grid(grid: Grid, shift_vox) -> Grid:
    d = np.asarray(grid.direction_matrix)
    off = d @ (np.asarray(shift_vox[::-1], dtype=np.float64) * np.asarray(grid.spacing[::-1]))
    return Grid(shape=grid.shape, spacing=grid.spacing, origin=tuple(np.asarray(grid.origin) + off), direction=grid.direction)


def postprocess_mask(mask: np.ndarray, *, fill: str = "3d") -> np.ndarray:
    """Keep the largest connected component (26-connected) and fill holes.

    Parameters
    ----------
    mask : ndarray of bool, (z, y, x)
    fill : {"3d", "axial"}, keyword-only
        Fill enclosed holes in 3D, or slice by slice (for BODY, whose gas and
        lumens may touch the grid edge).
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n > 1:
        counts = np.bincount(lab.ravel())
        counts[0] = 0
        mask = lab == int(np.argmax(counts))
    if fill == "axial":
        out = np.empty_like(mask)
        for k in range(mask.shape[0]):
            out[k] = ndimage.binary_fill_holes(mask[k])
        return out
    return ndimage.binary_fill_holes(mask)


def intensity_consistent(mask: np.ndarray, image: np.ndarray, spacing, *, below_hu: float, smooth_mm: float = 2.0) -> np.ndarray:
    """Remove the voxels of a fluid-filled organ's contour that are clearly darker than its content.

    Parameters
    ----------
    mask : ndarray of bool, (z, y, x)
        The organ's contour (post-processed).
    image : ndarray, (z, y, x)
        The CBCT, HU-like, on the same grid.
    spacing : (dz, dy, dx)
        Voxel size, mm.
    below_hu : float, keyword-only
        A voxel whose smoothed intensity lies more than this below the
        organ's median smoothed intensity is removed (fat or gas taken in by
        the network); the rest keeps its largest component, holes filled.
    smooth_mm : float, keyword-only
        Gaussian sigma (mm) of the smoothing (CBCT noise). Relative to the
        organ's own median, so a global HU offset does not matter.

    Returns
    -------
    ndarray of bool
        The trimmed mask (the input when nothing would remain).
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    sm = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), [float(smooth_mm) / float(s) for s in spacing])
    keep = mask & (sm >= float(np.median(sm[mask])) - float(below_hu))
    return postprocess_mask(keep) if keep.any() else mask


def anatomical_checks(structures: StructureSet) -> dict[str, list[str]]:
    """Sanity checks of a pelvic structure set; returns name -> reasons (empty when all pass).

    Checks: each structure non-empty and within :data:`VOLUME_RANGES_CC`;
    bladder centroid superior to the prostate's and anterior to the rectum's;
    prostate anterior to the rectum; FemoralHead_L to the patient's left
    (+x) of FemoralHead_R; organs inside BODY.
    """
    reasons: dict[str, list[str]] = {}

    def add(name, why):
        reasons.setdefault(name, []).append(why)

    cent = {}
    for s in structures:
        if s.is_empty:
            add(s.name, "empty")
            continue
        cent[s.name] = s.centroid_lps()
        lo, hi = VOLUME_RANGES_CC.get(s.name, (0.0, float("inf")))
        v = s.volume_cc
        if not lo <= v <= hi:
            add(s.name, f"volume {v:.1f} cc outside the plausible {lo:g}-{hi:g} cc")
    if "Bladder" in cent and "Prostate" in cent and cent["Bladder"][2] <= cent["Prostate"][2]:
        add("Bladder", "bladder not superior to the prostate")
        add("Prostate", "prostate not inferior to the bladder")
    if "Bladder" in cent and "Rectum" in cent and cent["Bladder"][1] >= cent["Rectum"][1]:
        add("Bladder", "bladder not anterior to the rectum")
        add("Rectum", "rectum not posterior to the bladder")
    if "Prostate" in cent and "Rectum" in cent and cent["Prostate"][1] >= cent["Rectum"][1]:
        add("Prostate", "prostate not anterior to the rectum")
        add("Rectum", "rectum not posterior to the prostate")
    if "FemoralHead_L" in cent and "FemoralHead_R" in cent and cent["FemoralHead_L"][0] <= cent["FemoralHead_R"][0]:
        add("FemoralHead_L", "left femoral head not to the left (+x) of the right one")
        add("FemoralHead_R", "right femoral head not to the right (-x) of the left one")
    body = structures.find("BODY")
    if body is not None and not body.is_empty:
        for s in structures:
            if s.name != "BODY" and not s.is_empty:
                inside = np.count_nonzero(s.mask & body.mask) / s.voxel_count
                if inside < 0.95:
                    add(s.name, f"only {100 * inside:.0f} % inside BODY")
    return reasons


def _check_cbct(cbct) -> None:
    if not isinstance(cbct, Volume):
        raise InputError(f"cbct must be a Volume, got {type(cbct).__name__}")
    a = np.asarray(cbct.array)
    if a.ndim != 3 or min(a.shape) < 2:
        raise InputError(f"cbct must be a 3D volume, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise InputError("cbct must hold finite numbers (HU)")


def segment(
    cbct: Volume,
    *,
    model=None,
    propagated: StructureSet | None = None,
    tta: bool = True,
    threshold: float = CONFIDENCE_THRESHOLD,
) -> ContourResult:
    """Segment the organs on a daily CBCT.

    Parameters
    ----------
    cbct : Volume
        Daily CBCT in HU (any voxel size and field of view; axial).
    model : ContourModel, str, Path or None, keyword-only
        A loaded model, a TorchScript path with its card, or None for the
        shipped model.
    propagated : StructureSet or None, keyword-only
        Contours propagated from planning by registration (any grid); when
        given, agreement with them enters the confidence.
    tta : bool, keyword-only
        Test-time augmentation (5 passes: sub-voxel grid shifts, HU offsets
        and two left-right mirrored passes with the ``*_L``/``*_R`` classes
        swapped back); its disagreement gives the confidence. False: one pass,
        confidence only from ``propagated`` (1.0 without it).
    threshold : float, keyword-only
        Structures with confidence below this are flagged (default :data:`CONFIDENCE_THRESHOLD`).

    Returns
    -------
    ContourResult
        Structures on ``cbct.grid`` (BODY EXTERNAL, organs ORGAN), confidence,
        flagged structures with reasons.

    Notes
    -----
    The CBCT is resampled (linear) to the network grid (same extent, the
    card's voxel size; the CBCT's outer voxels are replicated one voxel
    outwards, so a shifted network grid never sees air at the CBCT's edges), normalised (:func:`~art.contouring.model.normalise`),
    segmented window by window; the class probabilities are resampled back
    (linear) to the CBCT grid and averaged over the test-time augmentations;
    each voxel takes the most probable class. Each organ keeps its largest
    connected component with holes filled; fluid-filled organs
    (``labels.FLUID_FILLED``: the bladder) lose the voxels clearly darker than
    their content (:func:`intensity_consistent`); BODY is the union of all
    non-background classes (largest component, axial holes filled).
    """
    from .model import ContourModel, load_model

    t0 = time.perf_counter()
    _check_cbct(cbct)
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise InputError(f"threshold must be in [0, 1], got {threshold!r}")
    if model is None or not isinstance(model, ContourModel):
        model = load_model(model)
    classes = model.classes
    grid = cbct.grid
    src = Volume(np.asarray(cbct.array, dtype=np.float32), grid)
    # the network on every test-time variant; the most probable class of their mean, and of each
    # (on the CBCT as stored for an HFS patient: a feet-first or prone CBCT is flipped for it, and back)
    oriented, flips = _patient_oriented(src)
    labels, variant_labels = _tta_labels(model, oriented, oriented.grid, tta)
    if flips:
        labels, variant_labels = np.ascontiguousarray(np.flip(labels, flips)), [np.ascontiguousarray(np.flip(v, flips)) for v in variant_labels]
    masks = _structure_masks(labels, classes, src.array, grid)
    ss = StructureSet(grid, [Structure(n, m, grid, roi_type=ROI_TYPES.get(n, "ORGAN"), color=COLOURS.get(n, (255, 128, 0))) for n, m in masks.items()])
    conf, reasons, flagged = _review(ss, list(masks), classes, variant_labels, tta, propagated, threshold)
    info = {"path": str(model.path), "classes": classes, "spacing_mm": list(model.spacing_mm), "tta_passes": len(variant_labels)}
    return ContourResult(structures=ss, confidence=conf, flagged=flagged, reasons=reasons, model=info, seconds=time.perf_counter() - t0)


def _patient_oriented(image: Volume) -> tuple[Volume, tuple[int, ...]]:
    """The image with its array flipped so that columns, rows and slices grow towards L, P and S.

    The network was trained on head-first-supine axial images (identity orientation); a CBCT of a
    feet-first or prone patient is stored with axes running the other way (e.g. ImageOrientationPatient
    −1\\0\\0\\0\\1\\0 for FFS). Flipping is exact (no resampling). Returns the image and the array
    axes flipped (empty when none, or when the orientation is not axis-aligned: left as it is).
    """
    d = np.asarray(image.grid.direction_matrix)
    if not np.allclose(np.abs(d), np.eye(3), atol=1e-6):
        return image, ()
    flips = tuple(axis for axis in range(3) if d[2 - axis, 2 - axis] < 0)  # array axis (z, y, x) <-> column 2 - axis
    if not flips:
        return image, ()
    far = np.array([image.grid.shape[a] - 1 if a in flips else 0 for a in range(3)], dtype=np.float64)
    grid = Grid(shape=image.grid.shape, spacing=image.grid.spacing, origin=tuple(image.grid.index_to_lps(far)), direction=tuple(np.abs(d).reshape(-1)))
    return Volume(np.ascontiguousarray(np.flip(image.array, flips)), grid), flips


def _tta_labels(model, src: Volume, grid: Grid, tta: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """The class of each CBCT voxel from the probabilities summed over the test-time passes (``_TTA``, or its first alone).

    Parameters
    ----------
    model : ContourModel
    src : Volume, float32 (z, y, x)
        The CBCT, HU, on ``grid``.
    grid : Grid
        The CBCT grid.
    tta : bool
        All passes of ``_TTA``, or the plain first one.

    Returns
    -------
    labels : ndarray of int, ``grid.shape``
        The most probable class of the summed probabilities.
    variant_labels : list of ndarray, uint8, ``grid.shape``
        Each pass's own most probable class, in pass order.
    """
    from .dataset import network_grid

    classes = model.classes
    # one voxel of edge replication around the CBCT, so the network grid (and its sub-voxel shifts) sees the
    # CBCT's last slices continued rather than air, and the probabilities map back onto the CBCT's outer voxels
    src_edge = Volume(np.pad(src.array, 1, mode="edge"), grid.pad(1))
    base = network_grid(grid, model.card["spacing_mm"])
    acc = np.zeros((len(classes),) + tuple(grid.shape), dtype=np.float32)
    variant_labels = []
    mirror = _mirror_order(classes)
    for variant in _TTA if tta else _TTA[:1]:
        up = _pass_probabilities(model, src, src_edge, base, grid, variant, mirror)
        acc += up
        variant_labels.append(np.argmax(up, axis=0).astype(np.uint8))
    return np.argmax(acc, axis=0), variant_labels


def _pass_probabilities(model, src: Volume, src_edge: Volume, base: Grid, grid: Grid, variant, mirror: list[int]) -> np.ndarray:
    """One test-time pass: the class probabilities, float32 ``(C,) + grid.shape``, on the CBCT grid.

    Parameters
    ----------
    model : ContourModel
    src, src_edge : Volume
        The CBCT (HU) on ``grid``, and with one voxel of edge replication.
    base : Grid
        The network grid.
    grid : Grid
        The CBCT grid.
    variant : (shift, offset, scale, flip)
        An entry of ``_TTA``: network-grid shift (voxels, (z, y, x)), HU
        offset, HU scale about -1000, left-right mirror.
    mirror : list of int
        Channel order undoing a mirror (:func:`_mirror_order`).
    """
    from .model import normalise

    shift, off, scale, flip = variant
    g = _shifted_grid(base, shift) if any(shift) else base
    img = src.array if g.same_as(grid) else resample(src_edge, g, order=1, fill_value=-1000.0).array
    img = (img + 1000.0) * scale - 1000.0 + off
    # a mirrored pass sees the patient mirrored left-right (array x axis); its prediction is mirrored back
    # with the _L/_R classes swapped
    prob = predict_probabilities(model, normalise(np.ascontiguousarray(img[:, :, ::-1]) if flip else img, model.card["normalisation"]))
    if flip:
        prob = np.ascontiguousarray(prob[mirror][:, :, :, ::-1])
    if g.same_as(grid):
        return prob
    gp = g.pad(1)

    def back(c: int) -> np.ndarray:  # class c's probabilities on the CBCT grid
        return resample(Volume(np.pad(prob[c], 1, mode="edge"), gp), grid, order=1, fill_value=1.0 if c == 0 else 0.0).array

    from art.threads import parallel

    return np.stack(parallel(back, range(len(model.classes)), most=2))  # SciPy releases the GIL: the same arrays, sooner


def _structure_masks(labels: np.ndarray, classes, image: np.ndarray, grid: Grid) -> dict[str, np.ndarray]:
    """Post-processed masks (bool, (z, y, x)) from the label map: BODY first (when a class), then the organs in class order.

    Each organ keeps its largest component with holes filled; fluid-filled
    organs are trimmed by :func:`intensity_consistent` against ``image``
    (the CBCT, HU, on ``grid``); BODY is all non-background (largest
    component, axial holes filled) united with the organs.
    """
    masks: dict[str, np.ndarray] = {}
    for i, name in enumerate(classes):
        if i == 0 or name == "BODY":
            continue
        masks[name] = postprocess_mask(labels == i)
        if name in FLUID_FILLED:
            masks[name] = intensity_consistent(masks[name], image, grid.spacing, below_hu=FLUID_FILLED[name])
    body_idx = classes.index("BODY") if "BODY" in classes else None
    if body_idx is not None:
        body = postprocess_mask(labels > 0, fill="axial")
        for m in masks.values():
            body |= m
        masks = {"BODY": body, **masks}
    return masks


def _review(ss: StructureSet, names: list[str], classes, variant_labels: list, tta: bool, propagated: StructureSet | None, threshold: float) -> tuple[dict, dict, list]:
    """Confidence, reasons and the flagged names of the segmented structures.

    Parameters
    ----------
    ss : StructureSet
        The segmented structures.
    names : list of str
        Their names (BODY first, then the organs).
    classes : list of str
        The model's classes (label values).
    variant_labels : list of ndarray, uint8, (z, y, x)
        Each test-time pass's labels.
    tta : bool
        Whether the passes' disagreement enters the confidence.
    propagated : StructureSet or None
        Registration contours (agreement enters the confidence).
    threshold : float
        Confidence below it flags a structure.

    Returns
    -------
    conf : dict
        Name -> confidence in [0, 1].
    reasons : dict
        Name -> reasons (low confidence first, then the anatomical checks).
    flagged : list of str
        Names with a reason, in structure order.
    """
    from .confidence import confidence as _confidence

    tta_masks = {}
    for n in names:
        if n == "BODY":
            tta_masks[n] = [v > 0 for v in variant_labels]
        else:
            i = classes.index(n)
            tta_masks[n] = [v == i for v in variant_labels]
    conf = _confidence(ss, tta_masks=tta_masks if tta else None, propagated=propagated)
    reasons = anatomical_checks(ss)
    for n, c in conf.items():
        if c < threshold:
            reasons.setdefault(n, []).insert(0, f"confidence {c:.2f} below {threshold:.2f}")
    flagged = [s.name for s in ss if s.name in reasons]
    return conf, reasons, flagged
