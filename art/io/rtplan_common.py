"""What the RT Plan reader and writer share: the SOP class and the beam energy <-> DICOM conversion.

Re-exported by :mod:`art.io.rtplan` (the public entry).
"""

from __future__ import annotations

import re

from art.errors import InputError

__all__ = ["RT_PLAN_STORAGE", "energy_to_dicom", "energy_from_dicom"]

RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"


def energy_to_dicom(energy: str) -> tuple[float, str | None]:
    """``"6X"`` -> (6.0, None); ``"10FFF"`` -> (10.0, "FFF") (NominalBeamEnergy in MV, fluence mode ID)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(X|MV|FFF|SRS)?\s*", str(energy), flags=re.IGNORECASE)
    if not m:
        raise InputError(f"beam energy must look like '6X' or '10FFF', got {energy!r}")
    mode = (m.group(2) or "X").upper()
    return float(m.group(1)), (None if mode in ("X", "MV") else mode)


def energy_from_dicom(nominal_mv: float, fluence_mode_id: str | None = None) -> str:
    """NominalBeamEnergy (MV) and fluence mode ID back to ``"6X"`` / ``"10FFF"``."""
    v = float(nominal_mv)
    num = str(int(v)) if v == int(v) else f"{v:g}"
    return f"{num}{fluence_mode_id.upper()}" if fluence_mode_id else f"{num}X"
