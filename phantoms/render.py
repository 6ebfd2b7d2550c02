"""From the analytic anatomy to images: tissue labels at points, the HU image and the structure set.

:func:`_label_points` gives the tissue label at any LPS points (flat arrays,
mm), so the same anatomy is rendered on the planning grid and, for a daily
fraction, at the deformed positions of the CBCT grid. The organs are painted
one after the other in the order of increasing priority (a later organ
overwrites an earlier one), and only inside the muscle (below the fat layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from art.geometry import Grid
from art.structures import Structure, StructureSet

from .anatomy import _bbox_sphere, _cull, _Pelvis, _sd_ellipsoid, _sd_sphere
from .cbct import correlated_noise

# tissue labels (priority increases downwards in the rendering order)
AIR, FAT, MUSCLE, PELVIC_FAT, BOWEL, RECTUM_WALL, RECTUM_CONTENT, GAS, SV, SV_PROX, PROSTATE, BLADDER_WALL, URINE, CORTICAL, TRABECULAR = range(15)
LABELS = {
    "air": AIR,
    "fat": FAT,
    "muscle": MUSCLE,
    "pelvic_fat": PELVIC_FAT,
    "bowel": BOWEL,
    "rectum_wall": RECTUM_WALL,
    "rectum_content": RECTUM_CONTENT,
    "gas": GAS,
    "seminal_vesicles": SV,
    "seminal_vesicles_proximal": SV_PROX,
    "prostate": PROSTATE,
    "bladder_wall": BLADDER_WALL,
    "urine": URINE,
    "cortical_bone": CORTICAL,
    "trabecular_bone": TRABECULAR,
}

_COLOURS = {
    "BODY": (255, 224, 189),
    "PTV": (255, 0, 0),
    "CTV": (255, 128, 0),
    "Prostate": (255, 255, 0),
    "SeminalVesicles": (200, 200, 0),
    "Bladder": (0, 160, 255),
    "Rectum": (160, 82, 45),
    "FemoralHead_L": (0, 200, 0),
    "FemoralHead_R": (0, 140, 0),
    "Bones": (230, 230, 230),
}


@dataclass
class _Canvas:
    """Flat LPS points and their tissue labels, painted organ by organ.

    ``X``, ``Y``, ``Z``: float64, shape (n,), mm. ``lab``: uint8, shape (n,),
    tissue labels (:data:`LABELS`). ``muscle``: bool, shape (n,), the points
    inside the body below the subcutaneous fat, the only ones organs may take.
    """

    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    lab: np.ndarray
    muscle: np.ndarray

    def cull(self, lo, hi) -> np.ndarray:
        """Flat indices of the points inside the box ``lo``..``hi`` (x, y, z; mm)."""
        return _cull(self.X, self.Y, self.Z, lo, hi)

    def paint(self, idx: np.ndarray, cond: np.ndarray, label: int) -> None:
        """Set ``label`` at the points ``idx[cond]`` that lie in the muscle."""
        sel = idx[cond & self.muscle[idx]]
        self.lab[sel] = label


def _body_canvas(pel: _Pelvis, X, Y, Z) -> _Canvas:
    """Flatten the points (any shape, mm) to float64 and label air, the fat layer and the muscle."""
    X = np.asarray(X, dtype=np.float64).ravel()
    Y = np.asarray(Y, dtype=np.float64).ravel()
    Z = np.asarray(Z, dtype=np.float64).ravel()
    lab = np.zeros(X.shape, dtype=np.uint8)
    bsdf = pel.body_sdf(X, Y, Z)
    inside = bsdf <= 0.0
    lab[inside] = FAT
    muscle = inside & (bsdf <= -pel.fat_thickness(X, Y))
    lab[muscle] = MUSCLE
    return _Canvas(X, Y, Z, lab, muscle)


def _paint_pelvic_fat(cv: _Canvas, pel: _Pelvis, p: dict) -> None:
    """Pelvic fat: between the side walls, from the pelvic floor up."""
    X, Y, Z = cv.X, cv.Y, cv.Z
    lo = np.array([-200.0, p["pelvic_fat"]["y_front"] - 1, p["pelvic_fat"]["z_floor"] - 1])
    hi = np.array([200.0, 200.0, 1e4])
    idx = cv.cull(lo, hi)
    if idx.size:
        cv.paint(idx, pel.pelvic_fat_sdf(X[idx], Y[idx], Z[idx]) <= 0, PELVIC_FAT)


def _paint_bowel(cv: _Canvas, p: dict) -> None:
    """Bowel loops (spheres), only where the pelvic fat is."""
    X, Y, Z, lab = cv.X, cv.Y, cv.Z, cv.lab
    for lp in p["bowel"]:
        lo_, hi_ = _bbox_sphere(lp["centre"], lp["radius"])
        idx = cv.cull(lo_, hi_)
        if idx.size:
            cv.paint(idx, (_sd_sphere(X[idx], Y[idx], Z[idx], lp["centre"], lp["radius"]) <= 0) & (lab[idx] == PELVIC_FAT), BOWEL)


def _paint_rectum(cv: _Canvas, pel: _Pelvis, gas: Sequence[dict]) -> None:
    """Rectal wall, its content and the gas pockets (ellipsoids, mm) in the lumen."""
    lo_, hi_ = pel.rectum_bbox(1.0)
    idx = cv.cull(lo_, hi_)
    if idx.size:
        x, y, z = cv.X[idx], cv.Y[idx], cv.Z[idx]
        cv.paint(idx, pel.rectum_sdf(x, y, z) <= 0, RECTUM_WALL)
        lumen = pel.rectum_sdf(x, y, z, inner=True) <= 0
        cv.paint(idx, lumen, RECTUM_CONTENT)
        for g in gas:
            cv.paint(idx, lumen & (_sd_ellipsoid(x, y, z, g["centre"], g["semi_axes"]) <= 0), GAS)


def _paint_bladder(cv: _Canvas, p: dict) -> None:
    """Bladder wall and urine (an ellipsoid and its inner offset by the wall thickness)."""
    bl = p["bladder"]
    idx = cv.cull(np.asarray(bl["centre"]) - max(bl["semi_axes"]), np.asarray(bl["centre"]) + max(bl["semi_axes"]))
    if idx.size:
        x, y, z = cv.X[idx], cv.Y[idx], cv.Z[idx]
        d = _sd_ellipsoid(x, y, z, bl["centre"], bl["semi_axes"])
        cv.paint(idx, d <= 0, BLADDER_WALL)
        cv.paint(idx, d <= -bl["wall"], URINE)


def _paint_seminal_vesicles(cv: _Canvas, p: dict) -> None:
    """Seminal vesicles (rotated ellipsoids from their base), the proximal ``sv_proximal_mm`` labelled apart."""
    for sv in p["seminal_vesicles"]:
        base, d, length = np.asarray(sv["base"]), np.asarray(sv["direction"]), sv["length"]
        e2 = np.array([0.0, 0.0, 1.0]) - d[2] * d
        e2 /= np.linalg.norm(e2)
        rot = np.stack([d, e2, np.cross(d, e2)], axis=1)
        c = base + 0.5 * length * d
        semi = (0.5 * length, sv["width"], sv["thickness"])
        idx = cv.cull(c - max(semi), c + max(semi))
        if idx.size:
            x, y, z = cv.X[idx], cv.Y[idx], cv.Z[idx]
            inside_sv = _sd_ellipsoid(x, y, z, c, semi, rot) <= 0
            prox = ((x - base[0]) * d[0] + (y - base[1]) * d[1] + (z - base[2]) * d[2]) <= p["sv_proximal_mm"]
            cv.paint(idx, inside_sv & ~prox, SV)
            cv.paint(idx, inside_sv & prox, SV_PROX)


def _paint_prostate(cv: _Canvas, pel: _Pelvis, p: dict) -> None:
    """The prostate (a tilted ellipsoid)."""
    pr = p["prostate"]
    idx = cv.cull(np.asarray(pr["centre"]) - max(pr["semi_axes"]), np.asarray(pr["centre"]) + max(pr["semi_axes"]))
    if idx.size:
        cv.paint(idx, _sd_ellipsoid(cv.X[idx], cv.Y[idx], cv.Z[idx], pr["centre"], pr["semi_axes"], pel.rot_p) <= 0, PROSTATE)


def _paint_bones(cv: _Canvas, pel: _Pelvis, p: dict) -> np.ndarray:
    """Cortical shell (``cortex_mm`` thick) over trabecular bone; returns the bone points (bool, (n,))."""
    bone = pel.bone_sdf(cv.X, cv.Y, cv.Z, far=1.0)
    is_bone = (bone <= 0) & cv.muscle
    cv.lab[is_bone] = CORTICAL
    cv.lab[is_bone & (bone <= -p["cortex_mm"])] = TRABECULAR
    return is_bone


def _femoral_head_masks(cv: _Canvas, pel: _Pelvis, p: dict, is_bone: np.ndarray) -> list[np.ndarray]:
    """Left then right femoral head (head and the proximal neck) among the bone points; bool, (n,) each."""
    X, Y, Z = cv.X, cv.Y, cv.Z
    fh = []
    for side in (1.0, -1.0):
        m = np.zeros(X.shape, dtype=bool)
        fh_c = np.array([side * p["femoral_heads"]["offset_x"], p["femoral_heads"]["y"], p["femoral_heads"]["z"]])
        idx = _cull(X, Y, Z, fh_c - 60.0, fh_c + 60.0)
        if idx.size:
            m[idx] = (pel.femoral_head_region(X[idx], Y[idx], Z[idx], side) <= 0) & is_bone[idx]
        fh.append(m)
    return fh


def _label_points(p: dict, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, gas: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue labels (uint8) and left/right femoral-head masks at flat LPS point arrays.

    ``X, Y, Z``: LPS mm, any shape (flattened); ``gas``: gas pockets of the
    rectum (:func:`art_phantoms.sampling._sample_gas`). Returns three arrays of
    shape (n,): labels, left and right femoral head (bool).
    """
    pel = _Pelvis(p)
    cv = _body_canvas(pel, X, Y, Z)
    _paint_pelvic_fat(cv, pel, p)
    _paint_bowel(cv, p)
    _paint_rectum(cv, pel, gas)
    _paint_bladder(cv, p)
    _paint_seminal_vesicles(cv, p)
    _paint_prostate(cv, pel, p)
    is_bone = _paint_bones(cv, pel, p)
    fh = _femoral_head_masks(cv, pel, p, is_bone)
    return cv.lab, fh[0], fh[1]


def _render(p: dict, labels: np.ndarray, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """HU image from labels: tissue values, a light blur (CT resolution), correlated CT noise."""
    lut = np.zeros(len(LABELS), dtype=np.float32)
    for name, lab in LABELS.items():
        lut[lab] = p["hu"][name]
    img = lut[labels].reshape(grid.shape)
    sigma = [s_mm / sp for s_mm, sp in zip((1.0, 0.7, 0.7), grid.spacing)]
    if max(sigma) >= 0.15:
        img = ndimage.gaussian_filter(img, sigma=[s if s >= 0.15 else 0.0 for s in sigma], truncate=3.0)
    img = img + correlated_noise(rng, grid.shape, p["ct_noise_hu"], corr_voxels=(0.0, 0.5, 0.5))
    return np.clip(img, -1024.0, 3071.0).astype(np.float32)


def _structure_set(grid: Grid, lab: np.ndarray, fh_l: np.ndarray, fh_r: np.ndarray, ptv: np.ndarray) -> StructureSet:
    """The ten structures on ``grid`` from the labels and femoral-head masks (flat, ``grid.size``) and the PTV mask (``grid.shape``)."""
    lab = lab.reshape(grid.shape)
    body = lab != AIR
    prostate = lab == PROSTATE
    ctv = prostate | (lab == SV_PROX)
    masks = [
        ("BODY", body, "EXTERNAL"),
        ("PTV", ptv & body, "PTV"),
        ("CTV", ctv, "CTV"),
        ("Prostate", prostate, "ORGAN"),
        ("SeminalVesicles", (lab == SV) | (lab == SV_PROX), "ORGAN"),
        ("Bladder", (lab == BLADDER_WALL) | (lab == URINE), "ORGAN"),
        ("Rectum", (lab == RECTUM_WALL) | (lab == RECTUM_CONTENT) | (lab == GAS), "ORGAN"),
        ("FemoralHead_L", fh_l.reshape(grid.shape), "ORGAN"),
        ("FemoralHead_R", fh_r.reshape(grid.shape), "ORGAN"),
        ("Bones", (lab == CORTICAL) | (lab == TRABECULAR), "ORGAN"),
    ]
    return StructureSet(grid, [Structure(n, m, grid, roi_type=t, color=_COLOURS[n]) for n, m, t in masks])
