"""The ``ccc`` section of a machine file: the collapsed-cone engine's beam model.

::

    "ccc": {
      "spectrum": {"energies_mev": [0.2, …, 6.0], "fluence": [0.001, …, 0.005]},
      "source_sigma_mm": 0.9,
      "extra_focal": {"fraction": 0.0, "sigma_mm": 20.0},
      "electron_contamination": {"fraction": 0.02, "depth_mm": 8.0},
      "output_correction": {"field_sizes_mm": [30, …, 400], "factor": [0.95, …, 1.01]},
      "commissioning": { … }
    }

* ``spectrum``: relative photon fluence per energy bin (energies must be kernel energies:
  0.2–6 MeV tabulated, 8, 10, 15, 20 MeV extrapolated, see ``art/dose/data/make_ccc_kernels.py``);
* ``source_sigma_mm``: Gaussian σ of the focal spot projected to the isocentre plane (0–5 mm);
* ``extra_focal`` (optional): a fraction (0–0.3) of the fluence spread by a broad Gaussian
  (σ at the isocentre plane, mm) — head scatter outside the aperture;
* ``electron_contamination`` (optional): dose added without transport, ``fraction`` (0–0.5) of the
  unattenuated TERMA at the surface, falling as ``exp(−d / depth_mm)`` with the radiological depth
  (contaminant electrons from the head: they set the build-up and the depth of the maximum);
* ``output_correction`` (optional; absent = 1): a factor by equivalent square (mm, isocentre
  plane), the machine's dose per MU of a square field over the engine's, applied to the TERMA of
  each segment by its aperture's equivalent square (interpolated, clamped to the table's ends;
  :mod:`art.dose.ccc.output`); ``field_sizes_mm`` increasing, ``factor`` in 0.5–1.5;
* ``depth_correction`` (optional; absent = 1): a factor by equivalent square and radiological depth,
  ``field_sizes_mm`` (n, increasing), ``depths_mm`` (m, increasing, mm of water) and ``factor`` (n rows
  of m, 0.5–1.5), applied to the TERMA of each segment at each voxel (bilinear, clamped to the table's
  ends): what makes the engine's central-axis PDD of each square field the machine's beyond the
  calibration depth, where the kernels' field-size dependence is not the table's
  (:mod:`art.dose.ccc.output`, fitted by :mod:`art.dose.ccc.commission`);
* ``commissioning`` (optional, not read): the record the fit left (what was fitted, to what).

:func:`ccc_model` validates it and raises :class:`~art.errors.MachineDataError` naming the
machine file and the field (:class:`~art.dose.machine.Machine` carries the raw section as ``machine.ccc``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from art.dose.ccc.kernels import load_tables
from art.dose.machine import Machine, _Reader
from art.errors import MachineDataError

COMMISSION_HINT = "fit one with: python -m art.dose.ccc.commission MACHINE_FILE"


@dataclass(frozen=True)
class CCCModel:
    """A validated ``ccc`` section.

    Attributes
    ----------
    energies_mev, fluence : (n,) float64
        The spectrum (fluence as given, not normalised).
    source_sigma_mm : float
    extra_focal_fraction, extra_focal_sigma_mm : float
    contamination_fraction, contamination_depth_mm : float
    source : str
        The machine file.
    output_field_mm, output_factor : (k,) float64
        The output correction table (empty: none, factor 1).
    depth_field_mm : (n,) float64 ; depth_mm : (m,) float64 ; depth_factor : (n, m) float64
        The depth correction table (empty: none, factor 1).
    """

    energies_mev: np.ndarray
    fluence: np.ndarray
    source_sigma_mm: float
    extra_focal_fraction: float
    extra_focal_sigma_mm: float
    contamination_fraction: float
    contamination_depth_mm: float
    source: str
    output_field_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    output_factor: np.ndarray = field(default_factory=lambda: np.zeros(0))
    depth_field_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    depth_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    depth_factor: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def key(self) -> tuple:
        """A hashable identity of the model's numbers (for caches)."""
        return (tuple(self.energies_mev.tolist()), tuple(self.fluence.tolist()), self.source_sigma_mm,
                self.extra_focal_fraction, self.extra_focal_sigma_mm, self.contamination_fraction, self.contamination_depth_mm,
                tuple(self.output_field_mm.tolist()), tuple(self.output_factor.tolist()),
                tuple(self.depth_field_mm.tolist()), tuple(self.depth_mm.tolist()), tuple(map(tuple, self.depth_factor.tolist())))  # fmt: skip


def ccc_model(machine: Machine) -> CCCModel:
    """The validated collapsed-cone model of a machine.

    Raises
    ------
    MachineDataError
        When the machine has no ``ccc`` section or a field is invalid (naming the file and field).
    """
    section = machine.ccc
    path = Path(machine.source)
    if section is None:
        raise MachineDataError(f"field 'ccc': missing; the collapsed-cone engine needs the machine's spectrum and source size ({COMMISSION_HINT})", path=path)
    return parse_section(section, path)


def parse_section(section, path) -> CCCModel:
    """Validate a raw ``ccc`` section (``path``: the file, for the messages)."""
    r = _Reader({"ccc": section}, Path(path))
    if not isinstance(section, dict):
        raise r.fail("ccc", "must be an object/table")
    e = r.array("ccc.spectrum.energies_mev", increasing=True, positive=True)
    f = r.array("ccc.spectrum.fluence", nonneg=True)
    if f.shape != e.shape:
        raise r.fail("ccc.spectrum.fluence", f"must have one value per energy ({e.size}), got {f.size}")
    if f.sum() <= 0:
        raise r.fail("ccc.spectrum.fluence", "must not be all zero")
    try:
        load_tables().energy_index(e)
    except ValueError as exc:
        raise r.fail("ccc.spectrum.energies_mev", str(exc)) from None
    sigma = r.number("ccc.source_sigma_mm", lo=0.0, hi=5.0)
    frac, ef_sigma = 0.0, 0.0
    if "extra_focal" in section:
        frac = r.number("ccc.extra_focal.fraction", lo=0.0, hi=0.3)
        ef_sigma = r.number("ccc.extra_focal.sigma_mm", positive=True, hi=200.0)
    ce, ce_depth = 0.0, 1.0
    if "electron_contamination" in section:
        ce = r.number("ccc.electron_contamination.fraction", lo=0.0, hi=0.5)
        ce_depth = r.number("ccc.electron_contamination.depth_mm", positive=True, hi=50.0)
    oc_field, oc_factor = _output_correction(r, section)
    dc_field, dc_depth, dc_factor = _depth_correction(r, section)
    return CCCModel(energies_mev=e, fluence=f, source_sigma_mm=sigma, extra_focal_fraction=frac, extra_focal_sigma_mm=ef_sigma,
                    contamination_fraction=ce, contamination_depth_mm=ce_depth, source=str(path),
                    output_field_mm=oc_field, output_factor=oc_factor,
                    depth_field_mm=dc_field, depth_mm=dc_depth, depth_factor=dc_factor)  # fmt: skip


def spectrum_model(energies_mev, fluence, *, source_sigma_mm: float = 1.0, contamination: tuple[float, float] = (0.0, 10.0)) -> CCCModel:
    """A model of a trial spectrum for the commissioning fits (:mod:`art.dose.ccc.commission`,
    :mod:`art.dose.ccc.field_basis`): ``energies_mev`` (MeV) with relative ``fluence``, the source
    σ (mm) and the electron contamination ``(fraction, depth mm)``; validated as a machine file's section."""
    return parse_section({"spectrum": {"energies_mev": list(map(float, energies_mev)), "fluence": list(map(float, fluence))},
                          "source_sigma_mm": source_sigma_mm,
                          "electron_contamination": {"fraction": contamination[0], "depth_mm": contamination[1]}}, "<fit>")  # fmt: skip


def _output_correction(r: _Reader, section: dict) -> tuple[np.ndarray, np.ndarray]:
    """The optional ``output_correction`` table: (field sizes mm, factors), empty when absent."""
    if "output_correction" not in section:
        return np.zeros(0), np.zeros(0)
    if not isinstance(section["output_correction"], dict):
        raise r.fail("ccc.output_correction", "must be an object/table with field_sizes_mm and factor")
    s = r.array("ccc.output_correction.field_sizes_mm", increasing=True, positive=True)
    k = r.array("ccc.output_correction.factor", positive=True)
    if k.shape != s.shape:
        raise r.fail("ccc.output_correction.factor", f"must have one value per field size ({s.size}), got {k.size}")
    if np.any(k < 0.5) or np.any(k > 1.5):
        raise r.fail("ccc.output_correction.factor", "must lie within 0.5-1.5")
    return s, k


def _depth_correction(r: _Reader, section: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The optional ``depth_correction`` table: (field sizes mm, depths mm, factors (n, m)), empty when absent."""
    if "depth_correction" not in section:
        return np.zeros(0), np.zeros(0), np.zeros((0, 0))
    if not isinstance(section["depth_correction"], dict):
        raise r.fail("ccc.depth_correction", "must be an object/table with field_sizes_mm, depths_mm and factor")
    s = r.array("ccc.depth_correction.field_sizes_mm", increasing=True, positive=True)
    d = r.array("ccc.depth_correction.depths_mm", increasing=True, nonneg=True)
    k = r.array("ccc.depth_correction.factor", ndim=2)
    if k.shape != (s.size, d.size):
        raise r.fail("ccc.depth_correction.factor", f"must have {s.size} rows (field sizes) of {d.size} values (depths), got shape {k.shape}")
    if np.any(k < 0.5) or np.any(k > 1.5):
        raise r.fail("ccc.depth_correction.factor", "must lie within 0.5-1.5")
    return s, d, k
