"""Sampling the digital patient from its seed: the anatomical parameters and the rectal gas.

:func:`_sample_anatomy` draws every parameter of the pelvis (positions and
sizes in LPS mm, volumes in cc, tilts in degrees, CT numbers in HU) from one
generator. The order of the draws *is* the patient: the stages run in the
order :func:`_sample_anatomy` calls them, each draws its numbers in the order
written, and the parameter dictionary keeps its key order (it is written to
``truth/planning.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .anatomy import _Pelvis
from .checks import _jsonify
from .deformation import rotation_about_x


@dataclass(frozen=True)
class _Prostate:
    """The sampled prostate: centre height ``zc`` (mm), volume (cc), semi-axes (mm, shape (3,)), tilt about +x (deg) and its half extents along y and z after the tilt (mm)."""

    zc: float
    volume_cc: float
    semi: np.ndarray
    tilt: float
    ext_y: float
    ext_z: float


@dataclass(frozen=True)
class _Chain:
    """Body fat (mm) and the antero-posterior chain at the midline, as depths ``d_*`` from the anterior skin (mm).

    Symphysis semi-axes ``sym_sy``, ``sym_sz``; rectal radii ``r_min``, ``r_extra``,
    wall ``r_wall``; sacrum shape ``depth``, ``th_gain``, ``w_gain`` and heights
    ``z_tip``, ``z_top``; ``half`` is half the body's AP extent (mm).
    """

    f_lat: float
    f_ant: float
    f_post: float
    sym_sy: float
    sym_sz: float
    d_sym: float
    d_p: float
    r_min: float
    r_extra: float
    r_wall: float
    d_r0: float
    d_tip: float
    depth: float
    th_gain: float
    w_gain: float
    z_tip: float
    z_top: float
    half: float

    def y_of(self, depth_mm: float) -> float:
        """LPS ``y`` (mm) of a depth from the anterior skin (mm)."""
        return depth_mm - self.half


@dataclass(frozen=True)
class _Hips:
    """Femoral heads (lateral offset ``x``, radius ``r``, ``y``, ``z``; mm) and the body's lateral semi-axis that holds them (mm)."""

    x: float
    r: float
    y: float
    z: float
    lateral_semi: float


@dataclass(frozen=True)
class _Bladder:
    """The sampled bladder: volume (cc), semi-axes (mm, shape (3,)), centre ``y`` and ``z`` (mm)."""

    volume_cc: float
    semi: np.ndarray
    y: float
    z: float


def _draw_prostate(rng: np.random.Generator) -> _Prostate:
    """Draw the prostate (height, volume, aspect, tilt); 1 normal then 5 uniform draws."""
    u = rng.uniform
    zc = float(np.clip(-15.0 + rng.normal(0.0, 4.0), -23.0, -7.0))
    vol = u(25.0, 55.0)
    asp = np.array([1.25, 0.95, 1.1]) * u(0.92, 1.08, 3)
    k = (vol * 1000.0 / (4.0 / 3.0 * math.pi * float(np.prod(asp)))) ** (1.0 / 3.0)
    semi_p = asp * k
    tilt = -u(10.0, 25.0)
    th = math.radians(tilt)
    ext_y = math.hypot(semi_p[1] * math.cos(th), semi_p[2] * math.sin(th))
    ext_z = math.hypot(semi_p[1] * math.sin(th), semi_p[2] * math.cos(th))
    return _Prostate(zc=zc, volume_cc=vol, semi=semi_p, tilt=tilt, ext_y=ext_y, ext_z=ext_z)


def _draw_ap_chain(rng: np.random.Generator, pr: _Prostate) -> _Chain:
    """Draw the body fat and the AP chain skin - symphysis - prostate - rectum - sacrum - skin (mm)."""
    u = rng.uniform
    zc, ext_y = pr.zc, pr.ext_y
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
    return _Chain(
        f_lat=f_lat, f_ant=f_ant, f_post=f_post, sym_sy=sym_sy, sym_sz=sym_sz, d_sym=d_sym, d_p=d_p,
        r_min=r_min, r_extra=r_extra, r_wall=r_wall, d_r0=d_r0, d_tip=d_tip,
        depth=depth, th_gain=th_gain, w_gain=w_gain, z_tip=z_tip, z_top=z_top, half=half,
    )


def _draw_hips(rng: np.random.Generator, zc: float, yc_p: float, f_lat: float) -> _Hips:
    """Draw the femoral heads around the prostate (centre ``y`` ``yc_p``, height ``zc``; mm) and the body width."""
    u = rng.uniform
    fh_x, fh_r = u(84.0, 92.0), u(22.0, 25.0)
    fh_y = yc_p - u(0.0, 8.0)
    fh_z = zc + u(8.0, 18.0)
    lat = max(u(176.0, 192.0), fh_x + 60.0 + f_lat + u(8.0, 15.0))
    return _Hips(x=fh_x, r=fh_r, y=fh_y, z=fh_z, lateral_semi=lat)


def _draw_bladder(rng: np.random.Generator, pr: _Prostate, yc_p: float) -> _Bladder:
    """Draw the bladder (volume, aspect, position) on top of the prostate."""
    u = rng.uniform
    vol_b = u(150.0, 350.0)
    asp_b = np.array([1.3, 1.0, 0.95]) * u(0.92, 1.08, 3)
    kb = (vol_b * 1000.0 / (4.0 / 3.0 * math.pi * float(np.prod(asp_b)))) ** (1.0 / 3.0)
    semi_b = asp_b * kb
    yb = yc_p - u(6.0, 14.0)
    zb = pr.zc + pr.ext_z + semi_b[2] + u(0.5, 3.0)
    return _Bladder(volume_cc=vol_b, semi=semi_b, y=yb, z=zb)


def _draw_seminal_vesicles(rng: np.random.Generator, pr: _Prostate, yc_p: float) -> list[dict]:
    """Draw the left then the right seminal vesicle: base on the postero-superior prostate surface, direction (LPS), sizes (mm)."""
    u = rng.uniform
    semi_p, zc = pr.semi, pr.zc
    # seminal vesicles: base on the postero-superior prostate surface (prostate frame), direction in LPS
    rot = rotation_about_x(pr.tilt)
    sv = []
    for side in (1.0, -1.0):
        base_local = np.array([side * 0.3 * semi_p[0], 0.55 * semi_p[1], 0.75 * semi_p[2]])
        base = np.array([0.0, yc_p, zc]) + rot @ base_local
        d = np.array([side * 0.65, 0.5, 0.55]) + u(-0.1, 0.1, 3)
        d /= np.linalg.norm(d)
        sv.append({"base": base, "direction": d, "length": u(35.0, 50.0), "width": u(8.0, 11.0), "thickness": u(5.0, 7.0)})
    return sv


def _organ_params(rng: np.random.Generator, pr: _Prostate, ch: _Chain, bl: _Bladder, sv: list[dict], yc_p: float, x_p: float) -> dict:
    """Parameter entries ``prostate``, ``seminal_vesicles``, ``sv_proximal_mm``, ``bladder``, ``rectum``; draws the bladder wall, then the rectal curve and extent."""
    u = rng.uniform
    zc = pr.zc
    return {
        "prostate": {"centre": [x_p, yc_p, zc], "semi_axes": pr.semi, "tilt_deg": pr.tilt, "volume_cc": pr.volume_cc},
        "seminal_vesicles": sv,
        "sv_proximal_mm": 15.0,
        "bladder": {"centre": [x_p, bl.y, bl.z], "semi_axes": bl.semi, "wall": u(2.5, 4.0), "volume_cc": bl.volume_cc},
        "rectum": {
            "y0": ch.y_of(ch.d_r0),
            "radius_min": ch.r_min,
            "radius_extra": ch.r_extra,
            "wall": ch.r_wall,
            "x_amp": u(0.0, 6.0),
            "x_wavelength": u(35.0, 60.0),
            "z_low": zc - pr.ext_z - u(15.0, 25.0),
            "z_high": zc + u(65.0, 80.0),
        },
    }


def _bone_params(rng: np.random.Generator, pr: _Prostate, ch: _Chain, hips: _Hips) -> dict:
    """Parameter entries ``sacrum``, ``symphysis``, ``femoral_heads``, ``ilium``, ``ischium``; draws the symphysis height, then the ischial tuberosity."""
    u = rng.uniform
    zc, y_of = pr.zc, ch.y_of
    fh_x, fh_r, fh_y, fh_z = hips.x, hips.r, hips.y, hips.z
    return {
        "sacrum": {"y_tip": y_of(ch.d_tip), "depth": ch.depth, "thickness_gain": ch.th_gain, "width_gain": ch.w_gain, "z_tip": ch.z_tip, "z_top": ch.z_top},
        "symphysis": {"y": y_of(ch.d_sym), "z": zc - u(8.0, 14.0), "semi_y": ch.sym_sy, "semi_z": ch.sym_sz},
        "femoral_heads": {"offset_x": fh_x, "radius": fh_r, "y": fh_y, "z": fh_z},
        "ilium": {"y_centre": fh_y + 10.0, "z_low": fh_z + 15.0, "z_high": zc + 160.0, "a0": fh_x - 30.0, "a_gain": 55.0},
        "ischium": {"tuber_x": u(48.0, 56.0), "tuber_y": y_of(ch.d_r0) + u(0.0, 8.0), "tuber_z": zc - u(35.0, 42.0)},
    }


def _body_params(rng: np.random.Generator, pr: _Prostate, ch: _Chain, hips: _Hips) -> dict:
    """Parameter entries ``pelvic_fat`` and ``body`` (outline and fat layer, mm); draws the pelvic-fat width, then the outline's exponent and thigh split."""
    u = rng.uniform
    zc = pr.zc
    return {
        "pelvic_fat": {"half_width": u(40.0, 46.0), "y_front": ch.y_of(ch.f_ant + 10.0), "z_floor": zc - pr.ext_z - 3.0},
        "body": {
            "lateral_semi": hips.lateral_semi,
            "ap_semi": ch.half,
            "exponent": u(2.2, 2.7),
            "fat_lateral": ch.f_lat,
            "fat_anterior": ch.f_ant,
            "fat_posterior": ch.f_post,
            "z_widest": hips.z - 30.0,
            "z_split": zc - u(50.0, 60.0),
        },
    }


def _tissue_params(rng: np.random.Generator) -> dict:
    """Parameter entries ``hu`` (CT number per tissue label name, HU), ``cortex_mm`` and ``ct_noise_hu``; the pelvic-fat HU is drawn last."""
    u = rng.uniform
    hu = {
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
    }
    out = {"hu": hu, "cortex_mm": u(2.0, 3.0), "ct_noise_hu": u(10.0, 15.0)}
    hu["pelvic_fat"] = hu["fat"] + u(-5.0, 5.0)
    hu["seminal_vesicles_proximal"] = hu["seminal_vesicles"]
    return out


def _draw_bowel_loops(rng: np.random.Generator, zc: float, bl: _Bladder) -> list[dict]:
    """Draw 6 to 11 bowel loops (spheres: centre, radius; mm) above the bladder."""
    u = rng.uniform
    loops = []
    for _ in range(int(rng.integers(6, 12))):
        loops.append({"centre": [u(-60.0, 60.0), bl.y + u(-20.0, 25.0), u(bl.z + 0.4 * bl.semi[2], zc + 140.0)], "radius": u(9.0, 16.0)})
    return loops


def _sample_anatomy(rng: np.random.Generator) -> dict:
    """The anatomical parameter dictionary of one patient (JSON-friendly; LPS mm, cc, degrees, HU).

    The stages draw from ``rng`` in this order; changing it changes every patient.
    """
    pr = _draw_prostate(rng)
    ch = _draw_ap_chain(rng, pr)
    yc_p = ch.y_of(ch.d_p)
    hips = _draw_hips(rng, pr.zc, yc_p, ch.f_lat)
    bl = _draw_bladder(rng, pr, yc_p)
    sv = _draw_seminal_vesicles(rng, pr, yc_p)
    x_p = rng.uniform(-2.0, 2.0)
    p = _organ_params(rng, pr, ch, bl, sv, yc_p, x_p)
    p.update(_bone_params(rng, pr, ch, hips))
    p.update(_body_params(rng, pr, ch, hips))
    p.update(_tissue_params(rng))
    # bowel loops above the bladder
    p["bowel"] = _draw_bowel_loops(rng, pr.zc, bl)
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
