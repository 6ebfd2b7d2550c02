"""The ``ccc`` section of a machine file: the collapsed-cone engine's beam model.

::

    "ccc": {
      "spectrum": {"energies_mev": [0.2, …, 6.0], "fluence": [0.001, …, 0.005]},
      "source_sigma_mm": 0.9,
      "extra_focal": {"fraction": 0.0, "sigma_mm": 20.0},
      "electron_contamination": {"fraction": 0.02, "depth_mm": 8.0},
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
* ``commissioning`` (optional, not read): the record the fit left (what was fitted, to what).

:func:`ccc_model` validates it and raises :class:`~art.errors.MachineDataError` naming the
machine file and the field (:class:`~art.dose.machine.Machine` carries the raw section as ``machine.ccc``).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """

    energies_mev: np.ndarray
    fluence: np.ndarray
    source_sigma_mm: float
    extra_focal_fraction: float
    extra_focal_sigma_mm: float
    contamination_fraction: float
    contamination_depth_mm: float
    source: str

    def key(self) -> tuple:
        """A hashable identity of the model's numbers (for caches)."""
        return (tuple(self.energies_mev.tolist()), tuple(self.fluence.tolist()), self.source_sigma_mm,
                self.extra_focal_fraction, self.extra_focal_sigma_mm, self.contamination_fraction, self.contamination_depth_mm)  # fmt: skip


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
    return CCCModel(energies_mev=e, fluence=f, source_sigma_mm=sigma, extra_focal_fraction=frac, extra_focal_sigma_mm=ef_sigma,
                    contamination_fraction=ce, contamination_depth_mm=ce_depth, source=str(path))  # fmt: skip
