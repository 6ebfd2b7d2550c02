"""The digital male pelvis: planning CT, structures, daily anatomy and CBCT.

The anatomy is analytic: a set of simple solids (ellipsoids, capsules, lofted
super-ellipses, a curved tube, spherical shells) described by a JSON-friendly
parameter dictionary sampled from the seed. :func:`_label_points` gives the
tissue label at any LPS points, so the same anatomy is rendered on the
planning grid and, for a daily fraction, at the deformed positions
``y + d(y)`` of the CBCT grid without resampling blur.

Coordinates are LPS mm: ``x`` to the patient's left, ``y`` posterior, ``z``
superior; left structures have ``x > 0``. Arrays are ``(z, y, x)``.

Daily variation (:func:`make_fraction`)
---------------------------------------
A stationary velocity field ``v`` (mm) is built on an internal grid around the
pelvic organs from localised components:

* bladder filling: scaling about a point at the bladder base
  (``v_i = a_i (p - c0)_i``, ``sum a_i = ln(1 + filling)``, shared 25 / 30 /
  45 % between x, y, z so that the bladder fills mostly cranially) inside a
  flat-top region enclosing the bladder before and after, with a Gaussian
  fall-off (15 mm); the rate is calibrated (on a coarse grid, at most three
  tries) so that the mean Jacobian determinant over the bladder matches the
  requested volume ratio, and the achieved ratio is reported in the params;
* rectal filling: radial scaling about the rectal axis (``a_r = ln(1 + r)``,
  ``r`` the relative change in rectal radius) in a window from 25 mm below to
  45 mm above the prostate centre;
* prostate motion: the rigid motion ``p -> R (p - c) + c + t`` about the
  prostate centre ``c`` (``R`` a rotation about the left-right axis) written as
  a stationary field (a rotation about a shifted axis plus the translation along
  it), with weight 1 on a region that contains the prostate along its path; the
  prostate region overrides the bladder and rectal components
  (``v = w_p v_p + (1 - w_p)(v_b + v_r)``) so the prostate moves exactly;
* bone: ``v`` is multiplied by a ramp of the (Gaussian-smoothed, 3 mm)
  distance to bone that is 0 within 7 mm of bone and 1 beyond 15 mm (prostate
  component) or 23 mm (bladder and rectal components), so bones do not deform
  and the tissue next to them is not sheared too hard. The prostate moves
  exactly as requested while it stays about 15 mm clear of bone (the sampled
  motions do; the symphysis lies 20-26 mm in front of it).

The fields are smooth on the scale of the grids: for the sampled daily
variations, ``exp(-v) o exp(v)`` sampled on the output grids (3 x 2 x 2 mm)
is the identity within 0.5 mm everywhere in the body (typically < 0.05 mm at
the 99th percentile), and the Jacobian determinant stays above about 0.4.
Extreme requests (prostate shifts towards bone of 7 mm or more, rectal
filling > 30 %, bladder filling > 60 %) compress the tissue more and the
residual grows beyond 1 mm; very large bladder fillings are limited by the
bone and fall short of the request (see ``bladder_volume_ratio_achieved``).

The deformation ``phi = exp(v)`` and its inverse ``exp(-v)`` come from scaling
and squaring (:mod:`art_phantoms.deformation`). A rigid set-up error
``s(p) = R_s (p - iso) + iso + t_s`` (``iso`` = planned isocentre, the PTV
centroid) follows. So the planning point ``x`` appears in the CBCT at
``s(phi(x))`` and the CBCT voxel ``y`` shows the planning tissue at
``phi^-1(s^-1(y))``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from art.errors import InputError
from art.geometry import Grid, Volume
from art.structures import Structure, StructureSet

from .cases import DailyCase, DailyTruth, PlanningCase
from .cbct import CbctArtefacts, apply_artefacts, cbct_grid, correlated_noise
from .deformation import (
    ellipsoid_excess,
    exponentiate,
    flat_top,
    grid_points,
    jacobian_determinant,
    rigid_apply,
    rigid_inverse_apply,
    rotation_about_x,
    rotation_matrix,
    sample_field,
    smoothstep,
)

__all__ = ["make_pelvis", "make_fraction", "LABELS", "PTV_MARGIN_MM"]

PTV_MARGIN_MM = 7.0

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

_BONE_PAD_MM = 7.0  # velocity is exactly zero this close to bone (smoothed distance)
_BONE_SMOOTH_MM = 3.0  # Gaussian smoothing of the distance to bone
_BONE_RAMP_MM = 8.0  # ... and the prostate motion reaches full strength this much further out
_BONE_RAMP_SOFT_MM = 16.0  # ... and the bladder / rectal components (softer: less shear next to bone)
_BLADDER_AXIS_SHARE = (0.25, 0.30, 0.45)  # share of the log volume change along x, y, z (fills mostly cranially)
_WORK_SPACING_MM = (2.5, 3.0)  # internal grid of the velocity field: CT spacing clipped to this range


# ---------------------------------------------------------------- utilities
def _jsonify(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonify(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonify(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonify(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def _check_seed(seed: Any, name: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise InputError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def _triple(value: Any, name: str, *, positive: bool = False) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be three numbers, got {value!r}") from exc
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise InputError(f"{name} must be three finite numbers, got {value!r}")
    if positive and not all(v > 0 for v in out):
        raise InputError(f"{name} must be positive, got {value!r}")
    return out  # type: ignore[return-value]


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{name} must be between {lo} and {hi}, got {value!r}")
    return v


def _cull(X, Y, Z, lo, hi) -> np.ndarray:
    m = (X >= lo[0]) & (X <= hi[0]) & (Y >= lo[1]) & (Y <= hi[1]) & (Z >= lo[2]) & (Z <= hi[2])
    return np.flatnonzero(m)


# ------------------------------------------------------- signed distances
# All are approximate signed distances in mm (negative inside), float64 in, float64 out.
def _sd_sphere(x, y, z, c, r):
    return np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) - r


def _sd_capsule(x, y, z, a, b, r):
    a = np.asarray(a, dtype=np.float64)
    ab = np.asarray(b, dtype=np.float64) - a
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / float(ab @ ab), 0.0, 1.0)
    return np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2) - r


def _sd_ellipsoid(x, y, z, c, semi, rot=None):
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    if rot is not None:
        m = np.asarray(rot, dtype=np.float64)
        dx, dy, dz = (m[0, 0] * dx + m[1, 0] * dy + m[2, 0] * dz, m[0, 1] * dx + m[1, 1] * dy + m[2, 1] * dz, m[0, 2] * dx + m[1, 2] * dy + m[2, 2] * dz)
    rho = np.sqrt((dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2)
    r = np.sqrt(dx * dx + dy * dy + dz * dz)
    small = rho < 1e-9
    return np.where(small, -min(semi), r - r / np.where(small, 1.0, rho))


def _sd_superellipse2d(dx, dy, a, b, n):
    rho = (np.abs(dx / a) ** n + np.abs(dy / b) ** n) ** (1.0 / n)
    r = np.sqrt(dx * dx + dy * dy)
    small = rho < 1e-9
    return np.where(small, -np.minimum(a, b), r - r / np.where(small, 1.0, rho))


def _bbox_sphere(c, r):
    c = np.asarray(c, dtype=np.float64)
    return c - r, c + r


def _bbox_capsule(a, b, r):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.minimum(a, b) - r, np.maximum(a, b) + r


# ------------------------------------------------------------ the anatomy
class _Pelvis:
    """Geometry built from the parameter dictionary (all positions LPS mm)."""

    def __init__(self, p: dict):
        self.p = p
        self.rot_p = rotation_about_x(p["prostate"]["tilt_deg"])

    # ---- body
    def body_axes(self, z):
        b = self.p["body"]
        lat = b["lateral_semi"] * (1.0 - 0.04 * ((z - b["z_widest"]) / 120.0) ** 2)
        ap = b["ap_semi"] * (1.0 + 0.03 * (z - self.p["prostate"]["centre"][2]) / 120.0)
        return lat, ap

    def body_sdf(self, x, y, z):
        b = self.p["body"]
        lat, ap = self.body_axes(z)
        pelvis = _sd_superellipse2d(x, y, lat, ap, b["exponent"])
        lam = np.clip((z - (b["z_split"] - 30.0)) / 30.0, 0.0, 1.0)
        if np.all(lam >= 1.0):
            return pelvis
        xt, at, bt = 0.5 * lat + 4.0, 0.5 * lat - 8.0, 0.9 * ap
        thighs = np.minimum(_sd_superellipse2d(x - xt, y, at, bt, 2.0), _sd_superellipse2d(x + xt, y, at, bt, 2.0))
        return lam * pelvis + (1.0 - lam) * thighs

    def fat_thickness(self, x, y):
        b = self.p["body"]
        r2 = x * x + y * y + 1e-9
        ap = np.where(y < 0, b["fat_anterior"], b["fat_posterior"])
        return b["fat_lateral"] * (x * x) / r2 + ap * (y * y) / r2

    # ---- rectum axis and radius
    def rectum_radius(self, z):
        r = self.p["rectum"]
        zp = self.p["prostate"]["centre"][2]
        return r["radius_min"] + r["radius_extra"] * np.exp(-(((z - zp - 25.0) / 30.0) ** 2))

    def sacrum_front(self, z):
        s = self.p["sacrum"]
        u = np.clip((z - s["z_tip"]) / (s["z_top"] - s["z_tip"]), 0.0, 1.0)
        return s["y_tip"] + 4.0 * s["depth"] * u * (1.0 - u)

    def rectum_axis(self, z):
        r = self.p["rectum"]
        zp = self.p["prostate"]["centre"][2]
        zz = zp + 10.0 * np.logaddexp(0.0, (z - zp) / 10.0) - 10.0 * math.log(2.0)  # smooth max(z, zp)
        y = r["y0"] + (self.sacrum_front(zz) - self.sacrum_front(zp)) + 0.12 * (zz - z)
        x = self.p["prostate"]["centre"][0] + r["x_amp"] * np.sin((z - zp) / r["x_wavelength"])
        return x, y

    def rectum_sdf(self, x, y, z, *, inner: bool = False):
        r = self.p["rectum"]
        ax, ay = self.rectum_axis(z)
        rad = self.rectum_radius(z) - (r["wall"] if inner else 0.0)
        d = np.sqrt((x - ax) ** 2 + (y - ay) ** 2) - rad
        cap = np.maximum(r["z_low"] - z, z - r["z_high"])
        return np.maximum(d, cap)

    def rectum_bbox(self, margin=0.0):
        r = self.p["rectum"]
        zs = np.linspace(r["z_low"], r["z_high"], 64)
        ax, ay = self.rectum_axis(zs)
        rr = float(np.max(self.rectum_radius(zs))) + margin
        return np.array([ax.min() - rr, ay.min() - rr, r["z_low"] - margin]), np.array([ax.max() + rr, ay.max() + rr, r["z_high"] + margin])

    # ---- pelvic fat (loft between the side walls, from the pelvic floor up)
    def pelvic_fat_sdf(self, x, y, z):
        f = self.p["pelvic_fat"]
        w = f["half_width"] + 0.45 * np.maximum(0.0, z - self.p["femoral_heads"]["z"])
        front = f["y_front"]
        back = self.sacrum_front(z) - 2.0
        ax, ay = self.rectum_axis(z)
        back = np.where(z < self.p["sacrum"]["z_tip"], ay + self.rectum_radius(z) + 12.0, back)
        cy, h = 0.5 * (front + back), 0.5 * (back - front)
        d = _sd_superellipse2d(x, y - cy, w, h, 3.0)
        return np.maximum(d, f["z_floor"] - z)

    # ---- sacrum
    def sacrum_sdf(self, x, y, z):
        s = self.p["sacrum"]
        u = np.clip((z - s["z_tip"]) / (s["z_top"] - s["z_tip"]), 0.0, 1.0)
        h = 4.0 + s["thickness_gain"] * u
        w = 10.0 + s["width_gain"] * u**0.7
        cy = self.sacrum_front(z) + h
        d = _sd_superellipse2d(x, y - cy, w, h, 2.2)
        return np.maximum(d, np.maximum(s["z_tip"] - z, z - s["z_top"]))

    def sacrum_bbox(self):
        s = self.p["sacrum"]
        w = 10.0 + s["width_gain"]
        yb = s["y_tip"] + s["depth"] + 2 * (4.0 + s["thickness_gain"]) + 5
        return np.array([-w, s["y_tip"] - 2, s["z_tip"]]), np.array([w, yb, s["z_top"]])

    # ---- ilium (curved plate above the acetabulum)
    def _ilium_shape(self, z):
        il = self.p["ilium"]
        u = np.clip((z - il["z_low"]) / 110.0, 0.0, 1.0)
        a = il["a0"] + il["a_gain"] * u**0.8
        b = 0.65 * a + 8.0
        t = 14.0 - 6.0 * u
        th0 = np.radians(-(15.0 + 30.0 * u))
        th1 = np.radians(25.0 + 35.0 * u)
        return a, b, t, th0, th1

    def ilium_sdf(self, x, y, z, side):
        il = self.p["ilium"]
        a, b, t, th0, th1 = self._ilium_shape(z)
        xs, dy = side * x, y - il["y_centre"]
        d = _sd_superellipse2d(xs, dy, a, b, 2.0)
        ring = np.abs(d) - 0.5 * t
        theta = np.arctan2(dy, xs)
        rr = np.sqrt(xs * xs + dy * dy) - d
        ang = np.maximum(th0 - theta, theta - th1) * rr
        return np.maximum(np.maximum(ring, ang), np.maximum(il["z_low"] - z, z - il["z_high"]))

    def ilium_bbox(self, side):
        il = self.p["ilium"]
        amax = il["a0"] + il["a_gain"] + 8.0
        bmax = 0.65 * amax + 8.0 + 8.0
        lo = np.array([0.0 if side > 0 else -amax, il["y_centre"] - bmax, il["z_low"]])
        hi = np.array([amax if side > 0 else 0.0, il["y_centre"] + bmax, il["z_high"]])
        return lo, hi

    # ---- femoral heads & co (per side)
    def femur_parts(self, side):
        fh = self.p["femoral_heads"]
        c = np.array([side * fh["offset_x"], fh["y"], fh["z"]])
        r = fh["radius"]
        troch = np.array([side * (fh["offset_x"] + 36.0), fh["y"] + 8.0, fh["z"] - 30.0])
        shaft_end = np.array([side * (fh["offset_x"] + 22.0), fh["y"] + 14.0, fh["z"] - 260.0])
        n = np.array([-side * 1.0, 0.0, 0.7])
        n /= np.linalg.norm(n)
        return c, r, troch, shaft_end, n

    def bone_primitives(self):
        """List of (sdf callable(x, y, z), (lo, hi) bbox, name) for every bone piece."""
        prims = []
        p = self.p
        for side, tag in ((1.0, "L"), (-1.0, "R")):
            c, r, troch, shaft_end, n = self.femur_parts(side)
            prims.append((lambda x, y, z, c=c, r=r: _sd_sphere(x, y, z, c, r), _bbox_sphere(c, r), f"femoral_head_{tag}"))
            prims.append((lambda x, y, z, c=c, t=troch: _sd_capsule(x, y, z, c, t, 14.0), _bbox_capsule(c, troch, 14.0), f"femoral_neck_{tag}"))
            gt = troch + np.array([side * 6.0, 4.0, 0.0])
            prims.append((lambda x, y, z, g=gt: _sd_sphere(x, y, z, g, 17.0), _bbox_sphere(gt, 17.0), f"trochanter_{tag}"))
            prims.append((lambda x, y, z, a=troch, b=shaft_end: _sd_capsule(x, y, z, a, b, 14.0), _bbox_capsule(troch, shaft_end, 14.0), f"femoral_shaft_{tag}"))
            r_in, r_out = r + 2.5, r + 11.5

            def acetabulum(x, y, z, c=c, n=n, r_in=r_in, r_out=r_out, r=r):
                d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
                shell = np.abs(d - 0.5 * (r_in + r_out)) - 0.5 * (r_out - r_in)
                s = (x - c[0]) * n[0] + (y - c[1]) * n[1] + (z - c[2]) * n[2]
                return np.maximum(shell, -(s + 0.35 * r))

            prims.append((acetabulum, _bbox_sphere(c, r_out), f"acetabulum_{tag}"))
            prims.append((lambda x, y, z, s=side: self.ilium_sdf(x, y, z, s), self.ilium_bbox(side), f"ilium_{tag}"))
            isc = p["ischium"]
            a_isc = c + 40.0 * np.array([-side * 0.39, 0.58, -0.68]) / np.linalg.norm([0.39, 0.58, 0.68])
            b_isc = np.array([side * isc["tuber_x"], isc["tuber_y"], isc["tuber_z"]])
            prims.append((lambda x, y, z, a=a_isc, b=b_isc: _sd_capsule(x, y, z, a, b, 11.0), _bbox_capsule(a_isc, b_isc, 11.0), f"ischium_{tag}"))
            sy = p["symphysis"]
            a_sup = c + 38.0 * np.array([-side * 0.55, -0.75, 0.1]) / np.linalg.norm([0.55, 0.75, 0.1])
            b_sup = np.array([side * 15.0, sy["y"], sy["z"] + 12.0])
            prims.append((lambda x, y, z, a=a_sup, b=b_sup: _sd_capsule(x, y, z, a, b, 9.0), _bbox_capsule(a_sup, b_sup, 9.0), f"superior_ramus_{tag}"))
            a_inf = np.array([side * 14.0, sy["y"] + 4.0, sy["z"] - 14.0])
            prims.append((lambda x, y, z, a=a_inf, b=b_isc: _sd_capsule(x, y, z, a, b, 8.0), _bbox_capsule(a_inf, b_isc, 8.0), f"inferior_ramus_{tag}"))
            cs = np.array([side * 10.5, sy["y"], sy["z"]])
            semi = (9.5, sy["semi_y"], sy["semi_z"])
            prims.append((lambda x, y, z, c=cs, s=semi: _sd_ellipsoid(x, y, z, c, s), _bbox_sphere(cs, max(semi)), f"symphysis_{tag}"))
        prims.append((self.sacrum_sdf, self.sacrum_bbox(), "sacrum"))
        return prims

    def bone_sdf(self, X, Y, Z, *, far: float = 30.0) -> np.ndarray:
        """Approximate distance to the nearest bone (mm, <= 0 inside), capped at ``far``."""
        out = np.full(X.shape, far, dtype=np.float64)
        for sdf, (lo, hi), _ in self.bone_primitives():
            idx = _cull(X, Y, Z, np.asarray(lo) - far, np.asarray(hi) + far)
            if idx.size:
                out[idx] = np.minimum(out[idx], sdf(X[idx].astype(np.float64), Y[idx].astype(np.float64), Z[idx].astype(np.float64)))
        return out

    def femoral_head_region(self, x, y, z, side):
        c, r, troch, _, _ = self.femur_parts(side)
        neck_end = c + 0.75 * (troch - c)
        return np.minimum(_sd_sphere(x, y, z, c, r), _sd_capsule(x, y, z, c, neck_end, 14.0))


# -------------------------------------------------------------- sampling
def _sample_anatomy(rng: np.random.Generator) -> dict:
    u = rng.uniform
    # prostate
    zc = float(np.clip(-15.0 + rng.normal(0.0, 4.0), -23.0, -7.0))
    vol = u(25.0, 55.0)
    asp = np.array([1.25, 0.95, 1.1]) * u(0.92, 1.08, 3)
    k = (vol * 1000.0 / (4.0 / 3.0 * math.pi * float(np.prod(asp)))) ** (1.0 / 3.0)
    semi_p = asp * k
    tilt = -u(10.0, 25.0)
    th = math.radians(tilt)
    ext_y = math.hypot(semi_p[1] * math.cos(th), semi_p[2] * math.sin(th))
    ext_z = math.hypot(semi_p[1] * math.sin(th), semi_p[2] * math.cos(th))
    # body fat
    f_lat, f_ant, f_post = u(12.0, 28.0), u(15.0, 38.0), u(15.0, 32.0)
    # antero-posterior chain, as depth from the anterior skin at the midline
    sym_sy, sym_sz = u(10.0, 12.0), u(19.0, 23.0)
    d_sym = f_ant + u(6.0, 12.0) + sym_sy
    d_p = d_sym + sym_sy + u(20.0, 26.0) + ext_y
    r_min, r_extra, r_wall = u(11.0, 14.0), u(3.0, 7.0), u(2.5, 3.5)
    r_at_p = r_min + r_extra * math.exp(-((25.0 / 30.0) ** 2))
    d_r0 = d_p + ext_y + u(1.5, 3.0) + r_at_p
    d_tip = d_r0 + r_min + u(10.0, 16.0)
    depth, th_gain, w_gain = u(15.0, 24.0), u(12.0, 16.0), u(38.0, 48.0)
    z_tip = zc - u(15.0, 25.0)
    z_top = zc + 140.0
    uu = np.linspace(0.0, 1.0, 201)
    sac_post = d_tip + float(np.max(4 * depth * uu * (1 - uu) + 2 * (4.0 + th_gain * uu)))
    ap_total = max(u(220.0, 250.0), sac_post + u(12.0, 22.0) + f_post)
    half = ap_total / 2.0

    def y_of(depth_mm: float) -> float:
        return depth_mm - half

    yc_p = y_of(d_p)
    # femoral heads
    fh_x, fh_r = u(84.0, 92.0), u(22.0, 25.0)
    fh_y = yc_p - u(0.0, 8.0)
    fh_z = zc + u(8.0, 18.0)
    lat = max(u(176.0, 192.0), fh_x + 60.0 + f_lat + u(8.0, 15.0))
    # bladder
    vol_b = u(150.0, 350.0)
    asp_b = np.array([1.3, 1.0, 0.95]) * u(0.92, 1.08, 3)
    kb = (vol_b * 1000.0 / (4.0 / 3.0 * math.pi * float(np.prod(asp_b)))) ** (1.0 / 3.0)
    semi_b = asp_b * kb
    yb = yc_p - u(6.0, 14.0)
    zb = zc + ext_z + semi_b[2] + u(0.5, 3.0)
    # seminal vesicles: base on the postero-superior prostate surface (prostate frame), direction in LPS
    rot = rotation_about_x(tilt)
    sv = []
    for side in (1.0, -1.0):
        base_local = np.array([side * 0.3 * semi_p[0], 0.55 * semi_p[1], 0.75 * semi_p[2]])
        base = np.array([0.0, yc_p, zc]) + rot @ base_local
        d = np.array([side * 0.65, 0.5, 0.55]) + u(-0.1, 0.1, 3)
        d /= np.linalg.norm(d)
        sv.append({"base": base, "direction": d, "length": u(35.0, 50.0), "width": u(8.0, 11.0), "thickness": u(5.0, 7.0)})
    x_p = u(-2.0, 2.0)
    p = {
        "prostate": {"centre": [x_p, yc_p, zc], "semi_axes": semi_p, "tilt_deg": tilt, "volume_cc": vol},
        "seminal_vesicles": sv,
        "sv_proximal_mm": 15.0,
        "bladder": {"centre": [x_p, yb, zb], "semi_axes": semi_b, "wall": u(2.5, 4.0), "volume_cc": vol_b},
        "rectum": {
            "y0": y_of(d_r0),
            "radius_min": r_min,
            "radius_extra": r_extra,
            "wall": r_wall,
            "x_amp": u(0.0, 6.0),
            "x_wavelength": u(35.0, 60.0),
            "z_low": zc - ext_z - u(15.0, 25.0),
            "z_high": zc + u(65.0, 80.0),
        },
        "sacrum": {"y_tip": y_of(d_tip), "depth": depth, "thickness_gain": th_gain, "width_gain": w_gain, "z_tip": z_tip, "z_top": z_top},
        "symphysis": {"y": y_of(d_sym), "z": zc - u(8.0, 14.0), "semi_y": sym_sy, "semi_z": sym_sz},
        "femoral_heads": {"offset_x": fh_x, "radius": fh_r, "y": fh_y, "z": fh_z},
        "ilium": {"y_centre": fh_y + 10.0, "z_low": fh_z + 15.0, "z_high": zc + 160.0, "a0": fh_x - 30.0, "a_gain": 55.0},
        "ischium": {"tuber_x": u(48.0, 56.0), "tuber_y": y_of(d_r0) + u(0.0, 8.0), "tuber_z": zc - u(35.0, 42.0)},
        "pelvic_fat": {"half_width": u(40.0, 46.0), "y_front": y_of(f_ant + 10.0), "z_floor": zc - ext_z - 3.0},
        "body": {
            "lateral_semi": lat,
            "ap_semi": half,
            "exponent": u(2.2, 2.7),
            "fat_lateral": f_lat,
            "fat_anterior": f_ant,
            "fat_posterior": f_post,
            "z_widest": fh_z - 30.0,
            "z_split": zc - u(50.0, 60.0),
        },
        "hu": {
            "air": -1000.0,
            "fat": u(-110.0, -85.0),
            "muscle": u(38.0, 50.0),
            "bowel": u(20.0, 40.0),
            "rectum_wall": u(35.0, 45.0),
            "rectum_content": u(5.0, 25.0),
            "gas": -1000.0,
            "seminal_vesicles": u(28.0, 38.0),
            "prostate": u(35.0, 45.0),
            "bladder_wall": u(30.0, 40.0),
            "urine": u(5.0, 15.0),
            "cortical_bone": u(1000.0, 1200.0),
            "trabecular_bone": u(200.0, 300.0),
        },
        "cortex_mm": u(2.0, 3.0),
        "ct_noise_hu": u(10.0, 15.0),
    }
    p["hu"]["pelvic_fat"] = p["hu"]["fat"] + u(-5.0, 5.0)
    p["hu"]["seminal_vesicles_proximal"] = p["hu"]["seminal_vesicles"]
    # bowel loops above the bladder
    loops = []
    for _ in range(int(rng.integers(6, 12))):
        loops.append({"centre": [u(-60.0, 60.0), yb + u(-20.0, 25.0), u(zb + 0.4 * semi_b[2], zc + 140.0)], "radius": u(9.0, 16.0)})
    p["bowel"] = loops
    return _jsonify(p)


def _sample_gas(rng: np.random.Generator, p: dict) -> list[dict]:
    """One or two gas pockets in the rectal lumen (planning frame), towards the anterior wall (supine)."""
    pel = _Pelvis(p)
    zc = p["prostate"]["centre"][2]
    out = []
    for _ in range(int(rng.integers(1, 3))):
        zg = rng.uniform(zc - 10.0, zc + 45.0)
        rl = float(pel.rectum_radius(np.array(zg))) - p["rectum"]["wall"]
        ax, ay = pel.rectum_axis(np.array(zg))
        sx, sy, sz = rng.uniform(0.45, 0.8) * rl, rng.uniform(0.35, 0.6) * rl, rng.uniform(6.0, 15.0)
        cy = float(ay) - (rl - sy) * rng.uniform(0.3, 0.9)
        out.append({"centre": [float(ax), cy, zg], "semi_axes": [sx, sy, sz]})
    return _jsonify(out)


# ------------------------------------------------------------- rendering
def _label_points(p: dict, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, gas: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue labels (uint8) and left/right femoral-head masks at flat LPS point arrays."""
    pel = _Pelvis(p)
    X = np.asarray(X, dtype=np.float64).ravel()
    Y = np.asarray(Y, dtype=np.float64).ravel()
    Z = np.asarray(Z, dtype=np.float64).ravel()
    lab = np.zeros(X.shape, dtype=np.uint8)
    bsdf = pel.body_sdf(X, Y, Z)
    inside = bsdf <= 0.0
    lab[inside] = FAT
    muscle = inside & (bsdf <= -pel.fat_thickness(X, Y))
    lab[muscle] = MUSCLE

    def paint(idx, cond, label):
        sel = idx[cond & muscle[idx]]
        lab[sel] = label

    # pelvic fat
    lo = np.array([-200.0, p["pelvic_fat"]["y_front"] - 1, p["pelvic_fat"]["z_floor"] - 1])
    hi = np.array([200.0, 200.0, 1e4])
    idx = _cull(X, Y, Z, lo, hi)
    if idx.size:
        paint(idx, pel.pelvic_fat_sdf(X[idx], Y[idx], Z[idx]) <= 0, PELVIC_FAT)
    # bowel loops
    for lp in p["bowel"]:
        lo_, hi_ = _bbox_sphere(lp["centre"], lp["radius"])
        idx = _cull(X, Y, Z, lo_, hi_)
        if idx.size:
            paint(idx, (_sd_sphere(X[idx], Y[idx], Z[idx], lp["centre"], lp["radius"]) <= 0) & (lab[idx] == PELVIC_FAT), BOWEL)
    # rectum, its content and gas
    lo_, hi_ = pel.rectum_bbox(1.0)
    idx = _cull(X, Y, Z, lo_, hi_)
    if idx.size:
        x, y, z = X[idx], Y[idx], Z[idx]
        paint(idx, pel.rectum_sdf(x, y, z) <= 0, RECTUM_WALL)
        lumen = pel.rectum_sdf(x, y, z, inner=True) <= 0
        paint(idx, lumen, RECTUM_CONTENT)
        for g in gas:
            paint(idx, lumen & (_sd_ellipsoid(x, y, z, g["centre"], g["semi_axes"]) <= 0), GAS)
    # bladder
    bl = p["bladder"]
    idx = _cull(X, Y, Z, np.asarray(bl["centre"]) - max(bl["semi_axes"]), np.asarray(bl["centre"]) + max(bl["semi_axes"]))
    if idx.size:
        x, y, z = X[idx], Y[idx], Z[idx]
        d = _sd_ellipsoid(x, y, z, bl["centre"], bl["semi_axes"])
        paint(idx, d <= 0, BLADDER_WALL)
        paint(idx, d <= -bl["wall"], URINE)
    # seminal vesicles
    for sv in p["seminal_vesicles"]:
        base, d, length = np.asarray(sv["base"]), np.asarray(sv["direction"]), sv["length"]
        e2 = np.array([0.0, 0.0, 1.0]) - d[2] * d
        e2 /= np.linalg.norm(e2)
        rot = np.stack([d, e2, np.cross(d, e2)], axis=1)
        c = base + 0.5 * length * d
        semi = (0.5 * length, sv["width"], sv["thickness"])
        idx = _cull(X, Y, Z, c - max(semi), c + max(semi))
        if idx.size:
            x, y, z = X[idx], Y[idx], Z[idx]
            inside_sv = _sd_ellipsoid(x, y, z, c, semi, rot) <= 0
            prox = ((x - base[0]) * d[0] + (y - base[1]) * d[1] + (z - base[2]) * d[2]) <= p["sv_proximal_mm"]
            paint(idx, inside_sv & ~prox, SV)
            paint(idx, inside_sv & prox, SV_PROX)
    # prostate
    pr = p["prostate"]
    idx = _cull(X, Y, Z, np.asarray(pr["centre"]) - max(pr["semi_axes"]), np.asarray(pr["centre"]) + max(pr["semi_axes"]))
    if idx.size:
        paint(idx, _sd_ellipsoid(X[idx], Y[idx], Z[idx], pr["centre"], pr["semi_axes"], pel.rot_p) <= 0, PROSTATE)
    # bones
    bone = pel.bone_sdf(X, Y, Z, far=1.0)
    is_bone = (bone <= 0) & muscle
    lab[is_bone] = CORTICAL
    lab[is_bone & (bone <= -p["cortex_mm"])] = TRABECULAR
    fh = []
    for side in (1.0, -1.0):
        m = np.zeros(X.shape, dtype=bool)
        fh_c = np.array([side * p["femoral_heads"]["offset_x"], p["femoral_heads"]["y"], p["femoral_heads"]["z"]])
        idx = _cull(X, Y, Z, fh_c - 60.0, fh_c + 60.0)
        if idx.size:
            m[idx] = (pel.femoral_head_region(X[idx], Y[idx], Z[idx], side) <= 0) & is_bone[idx]
        fh.append(m)
    return lab, fh[0], fh[1]


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


def _expand(mask: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """Isotropic expansion by ``margin_mm`` (exact Euclidean distance, anisotropic voxels)."""
    if margin_mm <= 0 or not mask.any():
        return mask.copy()
    pad = [int(math.ceil(margin_mm / s)) + 1 for s in spacing]
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    dist = ndimage.distance_transform_edt(~mask[sl], sampling=spacing)
    out = np.zeros_like(mask)
    out[sl] = dist <= margin_mm + 1e-6
    return out


def _planning_grid(spacing, field_mm) -> Grid:
    shape = tuple(max(1, int(round(f / s))) for f, s in zip(field_mm, spacing))
    origin = tuple(-(n - 1) * s / 2.0 for n, s in zip(shape[::-1], spacing[::-1]))
    return Grid(shape=shape, spacing=spacing, origin=origin)


def make_pelvis(
    *,
    seed: int = 0,
    spacing: Sequence[float] = (3.0, 2.0, 2.0),
    field_mm: Sequence[float] = (250.0, 300.0, 400.0),
    rectal_gas: bool = False,
    ptv_margin_mm: float = PTV_MARGIN_MM,
) -> PlanningCase:
    """A digital male pelvis for prostate planning.

    Parameters
    ----------
    seed : int, keyword-only
        Non-negative seed; the same seed gives identical arrays.
    spacing : (dz, dy, dx), keyword-only
        Voxel size of the planning CT, mm.
    field_mm : (z, y, x), keyword-only
        Extent of the planning CT, mm (default 25 x 30 x 40 cm), centred on
        LPS (0, 0, 0).
    rectal_gas : bool, keyword-only
        Put one or two gas pockets in the rectum of the planning CT.
    ptv_margin_mm : float, keyword-only
        Isotropic CTV-to-PTV margin (Euclidean distance), mm.

    Returns
    -------
    PlanningCase
        CT (HU, float32, (z, y, x)), structures (BODY, PTV, CTV, Prostate,
        SeminalVesicles, Bladder, Rectum, FemoralHead_L, FemoralHead_R,
        Bones) and the sampled parameters.

    Notes
    -----
    The anatomy: elliptical body (~35-39 cm lateral, ~22-27 cm AP) with a
    subcutaneous fat layer (-85 ... -110 HU) over muscle (38-50 HU); pelvic fat
    around the organs; bony pelvis (cortical shell 1000-1200 HU over
    trabecular 200-300 HU): symphysis, pubic rami, ischia, acetabula, iliac
    wings, sacrum and coccyx, femoral heads (diameter 44-50 mm) with necks,
    trochanters and shafts; prostate (25-55 cc, 35-45 HU), seminal vesicles,
    bladder (150-350 cc, 3 mm wall, urine 5-15 HU), rectum (tube with a 3 mm
    wall, curving with the sacrum) and bowel loops. The CT is blurred lightly
    (1 mm in z, 0.7 mm in-plane) and carries correlated Gaussian noise of
    10-15 HU. The CTV is the prostate and the proximal 15 mm (from their
    base) of the seminal vesicles; the PTV is the CTV expanded by
    ``ptv_margin_mm`` in every direction, cut to the body.
    """
    seed = _check_seed(seed, "seed")
    spacing = _triple(spacing, "spacing", positive=True)
    field_mm = _triple(field_mm, "field_mm", positive=True)
    margin = _number(ptv_margin_mm, "ptv_margin_mm", 0.0, 30.0)
    if field_mm[0] < 120 or field_mm[1] < 260 or field_mm[2] < 300:
        raise InputError(f"field_mm must be at least (120, 260, 300) mm to hold the pelvis, got {field_mm}")
    ss_anat, ss_gas, ss_noise = np.random.SeedSequence(seed).spawn(3)
    p = _sample_anatomy(np.random.default_rng(ss_anat))
    gas = _sample_gas(np.random.default_rng(ss_gas), p) if rectal_gas else []
    grid = _planning_grid(spacing, field_mm)
    x, y, z = grid_points(grid, dtype=np.float32)
    lab, fh_l, fh_r = _label_points(p, x, y, z, gas)
    del x, y, z
    ct = _render(p, lab, grid, np.random.default_rng(ss_noise))
    lab3 = lab.reshape(grid.shape)
    ctv = (lab3 == PROSTATE) | (lab3 == SV_PROX)
    ptv = _expand(ctv, grid.spacing, margin)
    structures = _structure_set(grid, lab, fh_l, fh_r, ptv)
    iso = structures["PTV"].centroid_lps()
    params = {
        "site": "prostate",
        "seed": seed,
        "spacing": list(spacing),
        "field_mm": list(field_mm),
        "rectal_gas": bool(rectal_gas),
        "gas": gas,
        "ptv_margin_mm": margin,
        "isocenter_mm": iso,
        "volumes_cc": {s.name: s.volume_cc for s in structures},
        "anatomy": p,
    }
    return PlanningCase(ct=Volume(ct, grid), structures=structures, seed=seed, params=_jsonify(params))


# ------------------------------------------------------ daily variation
def _fraction_seed(case_seed: int, fraction: int) -> int:
    return int(np.random.SeedSequence([int(case_seed), int(fraction) & 0xFFFFFFFF, 0x5EED]).generate_state(1)[0])


def _work_grid(p: dict, pel: _Pelvis, a_b: float, a_r: float, flat_margin_p: float, *, spacing: float) -> Grid:
    """Internal grid that holds every non-zero velocity (fall-offs included, plus a taper margin)."""
    pad = 50.0
    bl, pr = p["bladder"], p["prostate"]
    boxes = []
    grow = math.exp(3.0 * max(a_b, 0.0) * max(_BLADDER_AXIS_SHARE))
    sb = np.asarray(bl["semi_axes"]) * grow + 5.0
    boxes.append((np.asarray(bl["centre"]) - sb, np.asarray(bl["centre"]) + sb + np.array([0.0, 0.0, 2.0 * sb[2] * (grow - 1.0) + 10.0])))
    sp = max(pr["semi_axes"]) + 2.0 * flat_margin_p
    boxes.append((np.asarray(pr["centre"]) - sp, np.asarray(pr["centre"]) + sp))
    lo_r, hi_r = pel.rectum_bbox(10.0 * max(1.0, math.exp(a_r)))
    zc = pr["centre"][2]
    lo_r[2], hi_r[2] = max(lo_r[2], zc - 25.0), min(hi_r[2], zc + 45.0)
    boxes.append((lo_r, hi_r))
    lo = np.min([b[0] for b in boxes], axis=0) - pad
    hi = np.max([b[1] for b in boxes], axis=0) + pad
    h = float(spacing)
    shape = tuple(int(math.ceil((hi[i] - lo[i]) / h)) + 1 for i in (2, 1, 0))
    return Grid(shape=shape, spacing=(h, h, h), origin=tuple(lo))


def _work_fields(p: dict, pel: _Pelvis, work: Grid):
    """Coordinates, bone ramps (hard, soft) and the bladder mask on the work grid."""
    X, Y, Z = grid_points(work)
    far = _BONE_PAD_MM + _BONE_RAMP_SOFT_MM + 4.0 * _BONE_SMOOTH_MM
    bone = pel.bone_sdf(X.ravel(), Y.ravel(), Z.ravel(), far=far).reshape(work.shape)
    # the union of approximate distances has creases: smooth it so that v is smooth
    bone = ndimage.gaussian_filter(bone, sigma=_BONE_SMOOTH_MM / work.spacing[0], mode="nearest", truncate=3.0)
    att = smoothstep((bone - _BONE_PAD_MM) / _BONE_RAMP_MM)
    att_soft = smoothstep((bone - _BONE_PAD_MM) / _BONE_RAMP_SOFT_MM)
    bl = p["bladder"]
    in_bladder = ellipsoid_excess(X, Y, Z, bl["centre"], bl["semi_axes"]) <= 0
    return X, Y, Z, att, att_soft, in_bladder


def _mean_jacobian(disp: np.ndarray, grid: Grid, mask: np.ndarray) -> float:
    if not mask.any():
        return 1.0
    return float(jacobian_determinant(disp, grid.spacing)[mask].mean())


def _velocity(p: dict, pel: _Pelvis, grid: Grid, X, Y, Z, att: np.ndarray, att_soft: np.ndarray, in_bladder=None, *, a_b: float, a_r: float, shift, angle_deg: float, flat_margin_p: float) -> np.ndarray:
    """Stationary velocity field (mm) on the work grid, shape grid.shape + (3,)."""
    v = np.zeros(grid.shape + (3,), dtype=np.float64)
    # bladder: scaling about the base point c0, by exp(3 a_b share_i) along axis i
    bl = p["bladder"]
    cb, sb = np.asarray(bl["centre"]), np.asarray(bl["semi_axes"])
    c0 = cb + np.array([0.0, 0.2 * sb[1], -0.7 * sb[2]])
    rates = 3.0 * a_b * np.asarray(_BLADDER_AXIS_SHARE)
    s = np.maximum(1.0, np.exp(rates))
    w_b = flat_top(ellipsoid_excess(X, Y, Z, c0 + s * (cb - c0), sb * s + 3.0), 15.0)
    vb = np.stack([rates[0] * (X - c0[0]), rates[1] * (Y - c0[1]), rates[2] * (Z - c0[2])], axis=-1) * w_b[..., None]
    # rectum: radial scaling about the axis, in a window around the prostate
    zc = p["prostate"]["centre"][2]
    ax, ay = pel.rectum_axis(Z)
    rad = np.sqrt((X - ax) ** 2 + (Y - ay) ** 2)
    w_r = flat_top(rad - (pel.rectum_radius(Z) * max(1.0, math.exp(a_r)) + 3.0), 10.0)
    w_r = w_r * flat_top(np.maximum(zc - 25.0 - Z, Z - zc - 45.0), 15.0)
    vr = np.stack([a_r * (X - ax), a_r * (Y - ay), np.zeros_like(X)], axis=-1) * w_r[..., None]
    # prostate: rigid motion about its centre
    pr = p["prostate"]
    c = np.asarray(pr["centre"])
    t = np.asarray(shift, dtype=np.float64)
    # flat region: the prostate along its path (centre halfway) plus 2 mm
    w_p = flat_top(ellipsoid_excess(X, Y, Z, c + 0.5 * t, np.asarray(pr["semi_axes"]) + flat_margin_p, pel.rot_p), 10.0)
    theta = math.radians(angle_deg)
    if abs(theta) < 1e-9:
        vp = np.broadcast_to(t, X.shape + (3,))
    else:
        rot = rotation_about_x(angle_deg)
        t_perp = t[1:]
        dc = np.linalg.solve(np.eye(2) - rot[1:, 1:], t_perp)
        cp = c + np.array([0.0, dc[0], dc[1]])
        vp = np.stack([np.full_like(X, t[0]), -theta * (Z - cp[2]), theta * (Y - cp[1])], axis=-1)
    v = (w_p * att)[..., None] * vp + ((1.0 - w_p) * att_soft)[..., None] * (vb + vr)
    # taper to zero at the work-grid border
    zs, ys, xs = grid.axis_positions()
    taper = 1.0
    for axis_pos, shape_axis in ((xs, (1, 1, -1)), (ys, (1, -1, 1)), (zs, (-1, 1, 1))):
        dist = np.minimum(axis_pos - axis_pos[0], axis_pos[-1] - axis_pos)
        taper = taper * smoothstep(dist / 25.0).reshape(shape_axis)
    return v * taper[..., None]


def make_fraction(
    case: PlanningCase,
    *,
    fraction: int,
    seed: int | None = None,
    bladder_filling: float | None = None,
    rectal_gas: bool | None = None,
    rectal_filling: float | None = None,
    prostate_shift_mm: Sequence[float] | None = None,
    prostate_rotation_deg: float | None = None,
    setup_shift_mm: Sequence[float] | None = None,
    setup_rotation_deg: Sequence[float] | None = None,
    artefacts: CbctArtefacts | None = None,
) -> DailyCase:
    """Simulate one treatment fraction: the anatomy of the day and its CBCT.

    Parameters
    ----------
    case : PlanningCase
        From :func:`make_pelvis`.
    fraction : int, keyword-only
        Fraction number (>= 0).
    seed : int or None, keyword-only
        Seed of the day; None derives it from ``(case.seed, fraction)``.
    bladder_filling : float or None, keyword-only
        Relative bladder volume change (-0.2 = 20 % smaller, 0.6 = 60 % larger);
        sampled from N(0.1, 0.25) clipped to [-0.2, 0.6] when None.
    rectal_gas : bool or None, keyword-only
        Gas pockets in the rectum of the day (streak sources in the CBCT);
        drawn with probability 0.3 when None.
    rectal_filling : float or None, keyword-only
        Relative change of the rectal radius near the prostate; sampled from
        U(-0.1, 0.25) (+0.15 with gas) when None.
    prostate_shift_mm : (x, y, z) or None, keyword-only
        Prostate translation in LPS mm; sampled (sd 0.7 / 2.5 / 2 mm LR/AP/SI,
        plus an anterior push from rectal filling and a posterior-inferior one
        from bladder filling; at most 5 mm anterior, 6 mm otherwise) when None.
    prostate_rotation_deg : float or None, keyword-only
        Prostate rotation about the left-right axis through its centre (right
        hand about +x: positive turns posterior towards superior); sampled
        N(0, 3) clipped to +-8 degrees when None.
    setup_shift_mm : (x, y, z) or None, keyword-only
        Rigid set-up translation, LPS mm; N(0, 3 mm) per axis when None.
    setup_rotation_deg : (rx, ry, rz) or None, keyword-only
        Rigid set-up rotation about LPS x, y, z through the isocentre
        (``R = Rz Ry Rx``); N(0, 0.4) clipped to +-1 degree when None.
    artefacts : CbctArtefacts or None, keyword-only
        CBCT degradations and geometry; defaults to ``CbctArtefacts()``.

    Returns
    -------
    DailyCase
        The CBCT and the truth (daily CT and masks on the CBCT grid, the
        deformation both ways, set-up error, parameters).

    Notes
    -----
    The CBCT grid is axial, centred on the planned isocentre (the planning
    PTV centroid, ``case.params["isocenter_mm"]``), ``fov_diameter_mm`` wide
    and ``length_mm`` long, in the planning frame of reference: the anatomy
    appears displaced by the deformation and the set-up error.

    The daily CT re-synthesises the analytic anatomy at ``y + d(y)`` (no
    resampling blur), with the gas of the day in the rectal lumen and fresh CT
    noise. The daily masks are the same analytic shapes at ``y + d(y)``, i.e.
    the planning shapes warped exactly; the daily PTV is the planning PTV
    pulled through ``daily_to_planning`` (linear interpolation, >= 0.5) and
    cut to the daily body.
    """
    if not isinstance(case, PlanningCase):
        raise InputError(f"case must be a PlanningCase, got {type(case).__name__}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, np.integer)) or fraction < 0:
        raise InputError(f"fraction must be a non-negative integer, got {fraction!r}")
    if "anatomy" not in case.params:
        raise InputError("case.params lacks 'anatomy': make the case with make_pelvis")
    fraction = int(fraction)
    day_seed = _fraction_seed(case.seed, fraction) if seed is None else _check_seed(seed, "seed")
    if artefacts is None:
        artefacts = CbctArtefacts()
    elif not isinstance(artefacts, CbctArtefacts):
        raise InputError(f"artefacts must be a CbctArtefacts, got {type(artefacts).__name__}")
    p = case.params["anatomy"]
    pel = _Pelvis(p)
    ss_var, ss_gas, ss_ct, ss_cbct = np.random.SeedSequence(day_seed).spawn(4)
    rng = np.random.default_rng(ss_var)
    # sample everything in a fixed order, then apply the requested values
    s_fill = float(np.clip(rng.normal(0.1, 0.25), -0.2, 0.6))
    s_gas = bool(rng.random() < 0.3)
    s_rect = float(rng.uniform(-0.1, 0.2))
    s_shift = rng.normal(0.0, [0.7, 2.5, 2.0])
    s_rot = float(np.clip(rng.normal(0.0, 2.5), -6.0, 6.0))
    s_setup = np.clip(rng.normal(0.0, 3.0, 3), -9.0, 9.0)
    s_setup_rot = np.clip(rng.normal(0.0, 0.4, 3), -1.0, 1.0)

    fill = s_fill if bladder_filling is None else _number(bladder_filling, "bladder_filling", -0.8, 3.0)
    gas_on = s_gas if rectal_gas is None else bool(rectal_gas)
    if rectal_filling is None:
        rect = s_rect + (0.1 if gas_on else 0.0)
    else:
        rect = _number(rectal_filling, "rectal_filling", -0.5, 1.0)
    if prostate_shift_mm is None:
        shift = np.clip(s_shift + np.array([0.0, -4.0 * rect + 1.0 * fill, -1.5 * fill]), [-3.0, -5.0, -6.0], [3.0, 6.0, 6.0])
    else:
        shift = np.asarray(_triple(prostate_shift_mm, "prostate_shift_mm"))
        if np.linalg.norm(shift) > 20.0:
            raise InputError(f"prostate_shift_mm must be at most 20 mm long, got {tuple(shift)}")
    angle = s_rot if prostate_rotation_deg is None else _number(prostate_rotation_deg, "prostate_rotation_deg", -20.0, 20.0)
    setup = s_setup if setup_shift_mm is None else np.asarray(_triple(setup_shift_mm, "setup_shift_mm"))
    setup_rot = s_setup_rot if setup_rotation_deg is None else np.asarray(_triple(setup_rotation_deg, "setup_rotation_deg"))
    if np.any(np.abs(setup_rot) > 10.0):
        raise InputError(f"setup_rotation_deg must be within +-10 degrees, got {tuple(setup_rot)}")
    gas = _sample_gas(np.random.default_rng(ss_gas), p) if gas_on else []

    # ---- deformation
    a_b = math.log1p(fill) / 3.0
    a_r = math.log1p(rect)
    flat_margin_p = float(0.5 * np.linalg.norm(shift) + 2.0 * abs(math.sin(math.radians(angle) / 2.0)) * max(p["prostate"]["semi_axes"]) + 2.0)
    target = 1.0 + fill
    kw = dict(a_r=a_r, shift=shift, angle_deg=angle, flat_margin_p=flat_margin_p)
    # calibrate the bladder rate on a coarse grid, then build the fields on the fine one
    a_used = a_b
    h = float(np.clip(min(case.ct.grid.spacing), *_WORK_SPACING_MM))
    coarse = _work_grid(p, pel, a_b, a_r, flat_margin_p, spacing=2.0 * h)
    fields = _work_fields(p, pel, coarse)
    for _ in range(3):
        v = _velocity(p, pel, coarse, *fields, a_b=a_used, **kw)
        achieved = _mean_jacobian(exponentiate(v, coarse), coarse, fields[-1])
        if abs(achieved - target) <= 0.005 * abs(fill) + 0.001:
            break
        a_used += (math.log(target) - math.log(achieved)) / 3.0
    work = _work_grid(p, pel, a_b, a_r, flat_margin_p, spacing=h)
    fields = _work_fields(p, pel, work)
    v = _velocity(p, pel, work, *fields, a_b=a_used, **kw)
    fwd = exponentiate(v, work)
    inv = exponentiate(-v, work)
    jac = jacobian_determinant(fwd, work.spacing)
    achieved = float(jac[fields[-1]].mean()) if fields[-1].any() else 1.0
    jac_min = float(jac.min())
    del fields, jac, v

    iso = np.asarray(case.params["isocenter_mm"], dtype=np.float64)
    rs = rotation_matrix(setup_rot)
    pg = case.ct.grid
    # planning grid -> daily: s(phi(x)) - x
    px, py, pz = grid_points(pg)
    f = sample_field(fwd, work, px, py, pz)
    qx, qy, qz = rigid_apply(px + f[..., 0], py + f[..., 1], pz + f[..., 2], rs, setup, iso)
    p2d = np.stack([qx - px, qy - py, qz - pz], axis=-1).astype(np.float32)
    del px, py, pz, f, qx, qy, qz
    # CBCT grid -> planning: phi^-1(s^-1(y)) - y
    spacing = artefacts.spacing if artefacts.spacing is not None else pg.spacing
    cg = cbct_grid(iso, spacing, fov_diameter_mm=artefacts.fov_diameter_mm, length_mm=artefacts.length_mm)
    yx, yy, yz = grid_points(cg)
    qx, qy, qz = rigid_inverse_apply(yx, yy, yz, rs, setup, iso)
    b = sample_field(inv, work, qx, qy, qz)
    Px, Py, Pz = qx + b[..., 0], qy + b[..., 1], qz + b[..., 2]
    d2p = np.stack([Px - yx, Py - yy, Pz - yz], axis=-1).astype(np.float32)
    del yx, yy, yz, qx, qy, qz, b

    # ---- the anatomy of the day, re-synthesised at the deformed positions
    lab, fh_l, fh_r = _label_points(p, Px, Py, Pz, gas)
    daily = _render(p, lab, cg, np.random.default_rng(ss_ct))
    ptv_plan = case.structures["PTV"].mask.astype(np.float32)
    kji = pg.lps_to_index(np.stack([Px.ravel(), Py.ravel(), Pz.ravel()], axis=-1))
    ptv_day = ndimage.map_coordinates(ptv_plan, kji.T, order=1, mode="constant", cval=0.0, prefilter=False).reshape(cg.shape) >= 0.5
    del Px, Py, Pz, kji
    structures = _structure_set(cg, lab, fh_l, fh_r, ptv_day)

    # ---- CBCT
    cbct_seed = int(ss_cbct.generate_state(1)[0])
    cbct, info = apply_artefacts(daily, cg, artefacts=artefacts, isocenter_mm=iso, seed=cbct_seed, gas_mask=(lab == GAS).reshape(cg.shape))
    params = {
        "fraction": fraction,
        "seed": day_seed,
        "bladder_filling": fill,
        "bladder_volume_ratio_achieved": achieved,
        "rectal_gas": gas_on,
        "gas": gas,
        "rectal_filling": rect,
        "prostate_shift_mm": shift,
        "prostate_rotation_deg": angle,
        "prostate_rotation_axis": "LR (+x), about the prostate centre",
        "setup_shift_mm": setup,
        "setup_rotation_deg": setup_rot,
        "setup_rotation_convention": "R = Rz Ry Rx about LPS axes through isocenter_mm; p -> R (p - iso) + iso + t",
        "isocenter_mm": iso,
        "jacobian_min": jac_min,
        "work_grid": work.to_dict(),
        "artefacts": artefacts.to_dict(),
        "artefacts_applied": info,
        "cbct_seed": cbct_seed,
        "volumes_cc": {s.name: s.volume_cc for s in structures},
    }
    truth = DailyTruth(
        daily_ct=Volume(daily, cg),
        structures=structures,
        daily_to_planning=d2p,
        planning_to_daily=p2d,
        setup_shift_mm=tuple(float(v) for v in setup),
        params=_jsonify(params),
    )
    return DailyCase(fraction=fraction, cbct=Volume(cbct, cg), truth=truth)
