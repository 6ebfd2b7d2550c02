"""Regenerate the generic machine files shipped with art (beam models and MLC models).

Writes, next to this script:

* ``generic_6x.json``   — 6 MV flattened beam (the beam data every test and benchmark is calibrated on);
* ``generic_10x.json``  — 10 MV flattened beam;
* ``generic_6fff.json`` — 6 MV flattening-filter-free beam;
* ``mlc_millennium120.json`` — Millennium-120-like MLC model (60 pairs: 10 × 10 mm, 40 × 5 mm, 10 × 10 mm);
* ``mlc_agility80.json``     — Agility-like MLC model (80 pairs of 5 mm, ±200 mm).

The machines are **synthetic**: not measured on any linac. Their reference points are
typical published values (central-axis PDD at 5, 10 and 20 cm for square fields from
3×3 to 40×40 cm², surface doses, output factors, penumbra, off-axis profiles); this
script interpolates them into full tables (log-TMR interpolation in depth, PCHIP) so
that the shipped JSON is smooth and self-consistent. The values are chosen to be typical of
these sources, not copied from any one table of them:

* 6 MV and 10 MV flattened beams: *Central axis depth dose data for use in radiotherapy*,
  Br J Radiol Supplement 25 (1996), tables for 6 MV and 10 MV (SSD 100 cm); typical
  Varian Clinac/TrueBeam commissioning values (Beyer GP, JACMP 14(1), 2013;
  Glide-Hurst C et al., Med Phys 40(3):031719, 2013).
* 6 MV FFF: Varian *TrueBeam Representative Beam Data* (6X-FFF: d_max ≈ 1.3 cm,
  PDD(10) ≈ 63.5 % for 10×10 at SSD 100 cm); Glide-Hurst et al. 2013 (multi-institutional
  TrueBeam commissioning); Georg D, Knöös T, McClean B, *Current status and future
  perspective of flattening filter free photon beams*, Med Phys 38(3):1280–1293 (2011)
  (off-axis fall-off to ≈ 0.6–0.7 at 15–20 cm, mild off-axis softening).
* MLCs: Varian Millennium 120 leaf layout (40 central leaves of 5 mm, 20 outer of 10 mm per
  bank); Elekta Agility (160 leaves of 5 mm, transmission ≈ 0.4–0.5 %: Bedford JL et al.,
  JACMP 14(2), 2013).

Run ``python make_generic_machines.py`` to rewrite the files; they are committed, the
script is kept for provenance. A ``ccc`` section (collapsed-cone commissioning, written into
the files by ``art/dose/ccc/commission.py``) found in an existing file is kept as it is.
``generic_6x.json``'s beam data are those of the former ``make_generic_6x.py``, unchanged.
"""

import json
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator

FIELDS = [30, 40, 50, 60, 80, 100, 150, 200, 250, 300, 400]  # mm, square, defined at SSD 100 cm
SSD = 1000.0
MILLENNIUM_WIDTHS = [10.0] * 10 + [5.0] * 40 + [10.0] * 10
NOT_REAL = "NOT the commissioning data of any real machine."

# ----------------------------------------------------------------------------- 6 MV (flattened)
# PDD (%) at 50, 100, 200 mm depth, SSD 1000 mm
REF_6X = {
    30: (80.0, 58.7, 30.7), 40: (82.4, 61.4, 33.0), 50: (83.9, 63.2, 34.8), 60: (84.8, 64.4, 35.9),
    80: (85.7, 65.8, 37.3), 100: (86.3, 66.8, 38.5), 150: (87.4, 68.8, 40.9), 200: (88.0, 70.1, 42.5),
    250: (88.4, 71.0, 43.7), 300: (88.7, 71.6, 44.6), 400: (89.0, 72.3, 45.8),
}  # fmt: skip
SURFACE_6X = {30: 36.0, 40: 38.0, 50: 40.0, 60: 42.0, 80: 44.5, 100: 47.0, 150: 52.0, 200: 56.0, 250: 59.5, 300: 62.5, 400: 67.0}
DEPTHS_6X = [0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 120, 140, 160, 180, 200, 225, 250, 275, 300, 350, 400]

SPEC_6X = {
    "name": "Generic6X",
    "energy": "6X",
    "fluence_mode": "STANDARD",
    "description": (
        "Generic 6 MV linac with a Millennium-120-like MLC. Synthetic beam data with typical published "
        "values for a 6 MV beam; NOT the commissioning data of any real machine."
    ),
    "dref": 15.0,
    "ref": REF_6X,
    "surface": SURFACE_6X,
    "depths": DEPTHS_6X,
    "buildup": {2: 0.33, 5: 0.70, 10: 0.955},  # fraction of (100 - surface) gained at these depths
    "scp": [0.872, 0.906, 0.934, 0.954, 0.980, 1.000, 1.035, 1.058, 1.073, 1.084, 1.098],
    "sc": [0.952, 0.963, 0.972, 0.980, 0.991, 1.000, 1.016, 1.027, 1.035, 1.041, 1.049],
    "penumbra": ([15.0, 50.0, 100.0, 200.0], [4.6, 5.3, 6.0, 7.2]),
    "off_axis": None,  # flat: horns/softening of the 6X beam are not modelled (its data stay unchanged)
    "dose_rate": 600.0,
}

# ---------------------------------------------------------------------------- 10 MV (flattened)
REF_10X = {
    30: (88.0, 68.6, 40.2), 40: (89.0, 69.7, 41.5), 50: (89.7, 70.5, 42.5), 60: (90.2, 71.1, 43.3),
    80: (90.8, 72.1, 44.6), 100: (91.3, 73.0, 45.7), 150: (91.9, 74.4, 47.6), 200: (92.2, 75.2, 48.8),
    250: (92.4, 75.7, 49.7), 300: (92.5, 76.0, 50.3), 400: (92.6, 76.4, 51.0),
}  # fmt: skip
SURFACE_10X = {30: 17.0, 40: 18.0, 50: 19.0, 60: 20.0, 80: 22.0, 100: 24.0, 150: 28.5, 200: 33.0, 250: 37.0, 300: 41.0, 400: 47.0}
DEPTHS_10X = [0, 2, 5, 10, 15, 20, 23, 25, 30, 40, 50, 60, 70, 80, 90, 100, 120, 140, 160, 180, 200, 225, 250, 275, 300, 350, 400]

SPEC_10X = {
    "name": "Generic10X",
    "energy": "10X",
    "fluence_mode": "STANDARD",
    "description": (
        "Generic 10 MV flattened linac beam with a Millennium-120-like MLC. Synthetic beam data with typical "
        "published values (BJR Supplement 25 10 MV depth doses: d_max 23 mm, PDD(10 cm) 73 % for 10x10 cm2 at "
        "SSD 100 cm; Varian-class output factors and penumbra; horns of a flattened beam with off-axis softening); "
        + NOT_REAL
    ),
    "dref": 23.0,
    "ref": REF_10X,
    "surface": SURFACE_10X,
    "depths": DEPTHS_10X,
    "buildup": None,  # from _buildup_fraction
    "scp": [0.889, 0.918, 0.941, 0.959, 0.983, 1.000, 1.030, 1.049, 1.061, 1.069, 1.080],
    "sc": [0.955, 0.966, 0.975, 0.982, 0.992, 1.000, 1.014, 1.024, 1.031, 1.036, 1.042],
    "penumbra": ([23.0, 50.0, 100.0, 200.0], [5.4, 5.9, 6.6, 7.8]),
    "off_axis": {
        "radii_mm": [0.0, 25.0, 50.0, 75.0, 100.0, 125.0, 150.0, 175.0, 200.0, 250.0],
        "fluence_ratio": [1.0, 1.004, 1.012, 1.022, 1.031, 1.038, 1.043, 1.042, 1.030, 0.990],
        "mu_ratio": [1.0, 1.003, 1.010, 1.019, 1.029, 1.039, 1.049, 1.059, 1.069, 1.090],
    },
    "dose_rate": 600.0,
}

# ------------------------------------------------------------------------------------- 6 MV FFF
REF_6FFF = {
    30: (78.0, 56.5, 28.9), 40: (80.0, 58.7, 30.7), 50: (81.4, 60.2, 32.1), 60: (82.3, 61.3, 33.0),
    80: (83.3, 62.8, 34.5), 100: (84.0, 63.7, 35.6), 150: (85.0, 65.4, 37.6), 200: (85.6, 66.4, 38.9),
    250: (85.9, 67.0, 39.7), 300: (86.1, 67.4, 40.3), 400: (86.3, 67.9, 41.0),
}  # fmt: skip
SURFACE_6FFF = {30: 42.0, 40: 44.0, 50: 46.0, 60: 48.0, 80: 50.5, 100: 53.0, 150: 57.0, 200: 60.0, 250: 62.5, 300: 64.5, 400: 67.0}
DEPTHS_6FFF = [0, 2, 5, 10, 13, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 120, 140, 160, 180, 200, 225, 250, 275, 300, 350, 400]

SPEC_6FFF = {
    "name": "Generic6FFF",
    "energy": "6FFF",
    "fluence_mode": "FFF",
    "description": (
        "Generic 6 MV flattening-filter-free beam (TrueBeam-class) with a Millennium-120-like MLC. Synthetic beam "
        "data with typical published values (Varian TrueBeam representative data, Glide-Hurst et al. Med Phys 2013: "
        "d_max 13 mm, PDD(10 cm) 63.7 % for 10x10 cm2 at SSD 100 cm; Georg et al. Med Phys 2011: off-axis fluence "
        "falling to about 0.73 at 15 cm and 0.64 at 20 cm from the axis, mild off-axis softening); " + NOT_REAL
    ),
    "dref": 13.0,
    "ref": REF_6FFF,
    "surface": SURFACE_6FFF,
    "depths": DEPTHS_6FFF,
    "buildup": None,
    "scp": [0.894, 0.921, 0.943, 0.960, 0.984, 1.000, 1.025, 1.040, 1.049, 1.055, 1.061],
    "sc": [0.970, 0.977, 0.983, 0.987, 0.994, 1.000, 1.009, 1.015, 1.019, 1.022, 1.025],
    "penumbra": ([13.0, 50.0, 100.0, 200.0], [4.3, 5.0, 5.8, 7.0]),
    "off_axis": {
        "radii_mm": [0.0, 25.0, 50.0, 75.0, 100.0, 125.0, 150.0, 175.0, 200.0, 250.0],
        "fluence_ratio": [1.0, 0.985, 0.945, 0.895, 0.840, 0.785, 0.730, 0.680, 0.635, 0.560],
        "mu_ratio": [1.0, 1.002, 1.006, 1.012, 1.020, 1.028, 1.036, 1.044, 1.052, 1.065],
    },
    "dose_rate": 1400.0,
}

MLC_MILLENNIUM = {
    "name": "Millennium120-like",
    "description": "Millennium-120-like MLC: 60 leaf pairs, 10 x 10 mm outer, 40 x 5 mm central, 10 x 10 mm outer pairs "
    "(Varian Millennium 120 layout); generic values, " + NOT_REAL,
    "model": "Millennium-120-like",
    "n_pairs": 60,
    "leaf_widths_mm": MILLENNIUM_WIDTHS,
    "first_boundary_mm": -200.0,
    "position_limits_mm": [-200.0, 200.0],
    "max_leaf_span_mm": 150.0,
    "min_gap_mm": 0.5,
    "interdigitation": True,
    "transmission": 0.015,
}

MLC_AGILITY = {
    "name": "Agility80-like",
    "description": "Agility-like MLC: 80 leaf pairs of 5 mm at the isocentre (-200 to +200 mm), no X jaws in the plan "
    "(ASYMY diaphragms only), transmission 0.5 % (Elekta Agility; Bedford et al. JACMP 2013); generic values, " + NOT_REAL,
    "model": "Agility-like",
    "n_pairs": 80,
    "leaf_widths_mm": [5.0] * 80,
    "first_boundary_mm": -200.0,
    "position_limits_mm": [-200.0, 200.0],
    "max_leaf_span_mm": 350.0,
    "min_gap_mm": 0.5,
    "interdigitation": True,
    "transmission": 0.005,
}


def _buildup_fraction(d: float, dref: float) -> float:
    """Fraction of (100 − surface) reached at depth ``d`` < ``dref``: 1 − (1 − d/dref)^2.8 (zero slope at d_ref;
    the shape of the generic 6X build-up points)."""
    return 1.0 - (1.0 - d / dref) ** 2.8


def pdd_table(spec: dict) -> list[list[float]]:
    """PDD rows (%) for every field of ``FIELDS`` at the spec's depths, 100 at its d_ref."""
    dref = spec["dref"]
    rows = []
    for s in FIELDS:
        p5, p10, p20 = spec["ref"][s]
        # TMR-like quantity (PDD with the inverse square removed), log-interpolated beyond d_ref
        isq = lambda d: ((SSD + dref) / (SSD + d)) ** 2  # noqa: E731
        d_known = np.array([dref, 50.0, 100.0, 200.0])
        t_known = np.log(np.array([1.0, p5 / 100 / isq(50), p10 / 100 / isq(100), p20 / 100 / isq(200)]))
        # extend to 400 mm with the 100-200 mm slope, slightly hardened
        slope = (t_known[3] - t_known[2]) / 100.0
        d_known = np.append(d_known, [300.0, 400.0])
        t_known = np.append(t_known, [t_known[3] + 0.97 * slope * 100, t_known[3] + 0.95 * slope * 200])
        f = PchipInterpolator(d_known, t_known)
        surf = spec["surface"][s]
        buildup = spec["buildup"] or {d: _buildup_fraction(d, dref) for d in spec["depths"] if 0 < d < dref}
        row = []
        for d in spec["depths"]:
            if d == 0:
                v = surf
            elif d in buildup:
                v = surf + (100 - surf) * buildup[d]
            else:
                v = 100.0 * float(np.exp(f(d))) * ((SSD + dref) / (SSD + d)) ** 2
            row.append(round(v, 1))
        rows.append(row)
    return rows


def machine_data(spec: dict) -> dict:
    """The ``art-machine/1`` document of one machine spec (docs/machine_data.md)."""
    dref = spec["dref"]
    data = {
        "format": "art-machine/1",
        "name": spec["name"],
        "energy": spec["energy"],
        "fluence_mode": spec["fluence_mode"],
        "aliases": [],
        "description": spec["description"],
        "sad_mm": 1000.0,
        "calibration": {
            "dose_per_mu_gy": 0.01,
            "field_size_mm": 100.0,
            "ssd_mm": 1000.0,
            "depth_mm": dref,
            "note": f"1 cGy/MU at d_max ({dref:g} mm) in water for a 10x10 cm2 field at SSD 100 cm",
        },
        "depth_dose": {
            "kind": "PDD",
            "ssd_mm": SSD,
            "normalisation_depth_mm": dref,
            "field_sizes_mm": FIELDS,
            "depths_mm": spec["depths"],
            "values_percent": pdd_table(spec),
        },
        "output_factors": {"depth_mm": dref, "ssd_mm": SSD, "field_sizes_mm": FIELDS, "total": spec["scp"], "head_scatter": spec["sc"]},
        "profile": {"field_size_mm": 100.0, "ssd_mm": SSD, "depths_mm": spec["penumbra"][0], "penumbra_80_20_mm": spec["penumbra"][1]},
    }
    if spec["off_axis"] is not None:
        data["off_axis"] = dict(spec["off_axis"])
    mlc = {k: v for k, v in MLC_MILLENNIUM.items() if k not in ("name", "description")}
    data["mlc"] = mlc
    data["jaws"] = {"x_limits_mm": [-200.0, 200.0], "y_limits_mm": [-200.0, 200.0], "transmission": 0.001}
    data["mu"] = {"min_per_segment": 1.0, "max_per_beam": 999.0, "dose_rate_mu_per_min": spec["dose_rate"]}
    return data


def _write(out: Path, data: dict) -> None:
    """Write ``data`` (keeping the ``ccc`` section of an existing file) as indented JSON."""
    if out.exists():
        old = json.loads(out.read_text())
        if "ccc" in old:
            data["ccc"] = old["ccc"]
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    here = Path(__file__).parent
    for fname, spec in (("generic_6x.json", SPEC_6X), ("generic_10x.json", SPEC_10X), ("generic_6fff.json", SPEC_6FFF)):
        _write(here / fname, machine_data(spec))
    for fname, mlc in (("mlc_millennium120.json", MLC_MILLENNIUM), ("mlc_agility80.json", MLC_AGILITY)):
        _write(here / fname, {"format": "art-mlc/1", **mlc})


if __name__ == "__main__":
    main()
