"""The analytic anatomy of the digital pelvis: simple solids and the pelvis geometry.

Signed distances of simple solids (sphere, capsule, ellipsoid, super-ellipse)
and :class:`_Pelvis`, the geometry built from the sampled parameter
dictionary (:mod:`art_phantoms.sampling`): the body outline, the rectum, the
pelvic fat and the bones, each as an (approximate) signed distance in mm,
negative inside, at LPS points (``x`` left, ``y`` posterior, ``z`` superior).
"""

from __future__ import annotations

import math

import numpy as np

from .deformation import rotation_about_x


def _cull(X, Y, Z, lo, hi) -> np.ndarray:
    """Flat indices of the points (flat arrays ``X, Y, Z``, mm) inside the box ``lo``..``hi`` (x, y, z)."""
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
