"""Regenerate ``generic_6x.json`` (the generic 6 MV beam model shipped with art).

The generic machine is **synthetic**: not measured on any linac. Its reference
points are typical published values for a 6 MV Varian-class beam (central-axis
PDD at 5, 10 and 20 cm for square fields from 3x3 to 40x40 cm², surface and
build-up doses, output factors, penumbra). This script interpolates them into
full tables (log-TMR interpolation in depth, PCHIP), so that the shipped JSON is
smooth and self-consistent. Run ``python make_generic_6x.py`` to rewrite the
JSON next to it; the result is committed, the script is kept for provenance.
"""

import json
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator

FIELDS = [30, 40, 50, 60, 80, 100, 150, 200, 250, 300, 400]  # mm, square, defined at SSD 100 cm
# PDD (%) at 50, 100, 200 mm depth, SSD 1000 mm
REF = {
    30: (80.0, 58.7, 30.7),
    40: (82.4, 61.4, 33.0),
    50: (83.9, 63.2, 34.8),
    60: (84.8, 64.4, 35.9),
    80: (85.7, 65.8, 37.3),
    100: (86.3, 66.8, 38.5),
    150: (87.4, 68.8, 40.9),
    200: (88.0, 70.1, 42.5),
    250: (88.4, 71.0, 43.7),
    300: (88.7, 71.6, 44.6),
    400: (89.0, 72.3, 45.8),
}
SURFACE = {30: 36.0, 40: 38.0, 50: 40.0, 60: 42.0, 80: 44.5, 100: 47.0, 150: 52.0, 200: 56.0, 250: 59.5, 300: 62.5, 400: 67.0}
DEPTHS = [0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 120, 140, 160, 180, 200, 225, 250, 275, 300, 350, 400]
SSD, DREF = 1000.0, 15.0
SCP = [0.872, 0.906, 0.934, 0.954, 0.980, 1.000, 1.035, 1.058, 1.073, 1.084, 1.098]
SC = [0.952, 0.963, 0.972, 0.980, 0.991, 1.000, 1.016, 1.027, 1.035, 1.041, 1.049]


def pdd_table() -> list[list[float]]:
    rows = []
    for s in FIELDS:
        p5, p10, p20 = REF[s]
        # TMR-like quantity (PDD with the inverse square removed), log-interpolated beyond d_ref
        isq = lambda d: ((SSD + DREF) / (SSD + d)) ** 2  # noqa: E731
        d_known = np.array([15.0, 50.0, 100.0, 200.0])
        t_known = np.log(np.array([1.0, p5 / 100 / isq(50), p10 / 100 / isq(100), p20 / 100 / isq(200)]))
        # extend to 400 mm with the 100-200 mm slope, slightly hardened
        slope = (t_known[3] - t_known[2]) / 100.0
        d_known = np.append(d_known, [300.0, 400.0])
        t_known = np.append(t_known, [t_known[3] + 0.97 * slope * 100, t_known[3] + 0.95 * slope * 200])
        f = PchipInterpolator(d_known, t_known)
        surf = SURFACE[s]
        b2 = surf + (100 - surf) * 0.33
        b5 = surf + (100 - surf) * 0.70
        b10 = surf + (100 - surf) * 0.955
        row = []
        for d in DEPTHS:
            if d == 0:
                v = surf
            elif d == 2:
                v = b2
            elif d == 5:
                v = b5
            elif d == 10:
                v = b10
            else:
                v = 100.0 * float(np.exp(f(d))) * ((SSD + DREF) / (SSD + d)) ** 2
            row.append(round(v, 1))
        rows.append(row)
    return rows


def main() -> None:
    leaf_widths = [10.0] * 10 + [5.0] * 40 + [10.0] * 10
    data = {
        "format": "art-machine/1",
        "name": "Generic6X",
        "energy": "6X",
        "description": (
            "Generic 6 MV linac with a Millennium-120-like MLC. Synthetic beam data with typical published "
            "values for a 6 MV beam; NOT the commissioning data of any real machine."
        ),
        "sad_mm": 1000.0,
        "calibration": {
            "dose_per_mu_gy": 0.01,
            "field_size_mm": 100.0,
            "ssd_mm": 1000.0,
            "depth_mm": DREF,
            "note": "1 cGy/MU at d_max (15 mm) in water for a 10x10 cm2 field at SSD 100 cm",
        },
        "depth_dose": {
            "kind": "PDD",
            "ssd_mm": SSD,
            "normalisation_depth_mm": DREF,
            "field_sizes_mm": FIELDS,
            "depths_mm": DEPTHS,
            "values_percent": pdd_table(),
        },
        "output_factors": {
            "depth_mm": DREF,
            "ssd_mm": SSD,
            "field_sizes_mm": FIELDS,
            "total": SCP,
            "head_scatter": SC,
        },
        "profile": {
            "field_size_mm": 100.0,
            "ssd_mm": SSD,
            "depths_mm": [15.0, 50.0, 100.0, 200.0],
            "penumbra_80_20_mm": [4.6, 5.3, 6.0, 7.2],
        },
        "mlc": {
            "model": "Millennium-120-like",
            "n_pairs": 60,
            "leaf_widths_mm": leaf_widths,
            "first_boundary_mm": -200.0,
            "position_limits_mm": [-200.0, 200.0],
            "max_leaf_span_mm": 150.0,
            "min_gap_mm": 0.5,
            "interdigitation": True,
            "transmission": 0.015,
        },
        "jaws": {
            "x_limits_mm": [-200.0, 200.0],
            "y_limits_mm": [-200.0, 200.0],
            "transmission": 0.001,
        },
        "mu": {
            "min_per_segment": 1.0,
            "max_per_beam": 999.0,
            "dose_rate_mu_per_min": 600.0,
        },
    }
    out = Path(__file__).with_name("generic_6x.json")
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
