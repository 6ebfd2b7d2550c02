"""Convert the opentps-core 2.0.0 6 MV kernel tables into ``ccc_kernels.npz`` (run once).

Source: the ``Kernels_6MV`` folder of the opentps-core 2.0.0 wheel
(``opentps/core/processing/doseCalculation/photons/Kernels_6MV``; Apache-2.0,
the OpenTPS consortium, UCLouvain/IBA; see NOTICE at the repository root). Its files are
raw little-endian float32 arrays:

* ``energies.bin`` (14) MeV, 0.2–6; ``fluence.bin`` (14) the 6 MV spectrum (relative
  photon fluence per energy bin); ``mu.bin``, ``mu_en.bin`` (14) cm²/g in water;
* ``radii.bin`` (24) the outer radii of the radial shells, cm (0.05 … 60);
* ``angles.bin`` (48) the upper edges of the zenith bins, degrees (3.75 … 180; 0 = the
  incident photon's direction);
* ``primary.bin``, ``first_scatter.bin``, ``second_scatter.bin``, ``multiple_scatter.bin``,
  ``brem_annih.bin``, ``total.bin``: (14 energies, 48 angles, 24 radii), the fraction of
  the energy of a photon interacting at the origin that is deposited in each
  (zenith bin, radial shell) voxel of an infinite water medium.

The npz keeps ``total`` and ``primary`` (scatter = total − primary) and adds four
energies above 6 MeV (8, 10, 15, 20 MeV) for 10 MV spectra: μ/ρ and μ_en/ρ for water
from NIST XCOM (Hubbell & Seltzer, NISTIR 5632) and, for lack of tabulated kernels, the
6 MeV kernel stretched radially by the ratio of the electrons' CSDA ranges in water at
the photon energy (NIST ESTAR), ``C_E(r) = C_6(r · R_6 / R_E)`` for the cumulative
fraction; ``extrapolated`` marks them.

Run: ``python art/dose/data/make_ccc_kernels.py PATH/TO/Kernels_6MV`` (writes the npz next
to this script).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

#: NIST XCOM, water (liquid): E (MeV) → μ/ρ, μ_en/ρ (cm²/g)
NIST_WATER = {8.0: (2.429e-02, 1.658e-02), 10.0: (2.219e-02, 1.566e-02), 15.0: (1.941e-02, 1.441e-02), 20.0: (1.813e-02, 1.382e-02)}
#: NIST ESTAR, water (liquid): electron CSDA range (g/cm²) at the photon energy (MeV)
CSDA_WATER = {6.0: 3.052, 8.0: 4.030, 10.0: 4.975, 15.0: 7.219, 20.0: 9.320}
CATEGORIES = ("primary", "first_scatter", "second_scatter", "multiple_scatter", "brem_annih", "total")


def read_tables(folder: Path) -> dict[str, np.ndarray]:
    """The raw tables of a ``Kernels_6MV`` folder, checked for the expected sizes."""
    out = {}
    for name, n in (("energies", 14), ("fluence", 14), ("mu", 14), ("mu_en", 14), ("radii", 24), ("angles", 48)):
        a = np.fromfile(folder / f"{name}.bin", dtype="<f4")
        if a.size != n:
            raise SystemExit(f"{folder / name}.bin: {a.size} values, expected {n}")
        out[name] = a.astype(np.float64)
    for name in CATEGORIES:
        a = np.fromfile(folder / f"{name}.bin", dtype="<f4")
        if a.size != 14 * 48 * 24:
            raise SystemExit(f"{folder / name}.bin: {a.size} values, expected {14 * 48 * 24}")
        out[name] = a.reshape(14, 48, 24).astype(np.float64)
    parts = sum(out[c] for c in CATEGORIES[:-1])
    if not np.allclose(parts, out["total"], atol=1e-5):
        raise SystemExit("total.bin is not the sum of the categories")
    return out


def stretched(kernel: np.ndarray, radii_cm: np.ndarray, factor: float) -> np.ndarray:
    """A (48, 24) shell kernel stretched radially by ``factor`` (cumulative fraction
    interpolated linearly in log radius; 0 at r = 0; the total kept)."""
    cum = np.cumsum(kernel, axis=1)
    r = np.concatenate([[1e-4], radii_cm])
    out = np.empty_like(cum)
    for i in range(cum.shape[0]):
        c = np.concatenate([[0.0], cum[i]])
        out[i] = np.interp(np.log(radii_cm / factor), np.log(r), c)
    out[:, -1] = cum[:, -1]  # the energy beyond the last shell is not invented
    return np.diff(np.concatenate([np.zeros((cum.shape[0], 1)), out], axis=1), axis=1)


def convert(folder: Path) -> dict[str, np.ndarray]:
    """The npz content (see the module docstring)."""
    t = read_tables(folder)
    energies, mu, mu_en = list(t["energies"]), list(t["mu"]), list(t["mu_en"])
    total, primary = list(t["total"]), list(t["primary"])
    flags = [False] * len(energies)
    for e, (m, men) in NIST_WATER.items():
        f = CSDA_WATER[e] / CSDA_WATER[6.0]
        energies.append(e)
        mu.append(m)
        mu_en.append(men)
        total.append(stretched(t["total"][-1], t["radii"], f))
        primary.append(stretched(t["primary"][-1], t["radii"], f))
        flags.append(True)
    return {
        "energies_mev": np.asarray(energies, np.float64),
        "mu_cm2_g": np.asarray(mu, np.float64),
        "mu_en_cm2_g": np.asarray(mu_en, np.float64),
        "extrapolated": np.asarray(flags),
        "fluence_6mv": t["fluence"],
        "radii_cm": t["radii"],
        "angles_deg": t["angles"],
        "total": np.asarray(total, np.float32),
        "primary": np.asarray(primary, np.float32),
    }


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    data = convert(Path(argv[0]))
    out = Path(__file__).with_name("ccc_kernels.npz")
    np.savez_compressed(out, **data)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
