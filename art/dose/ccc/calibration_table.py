"""The collapsed cone's calibration factors of the shipped machines, computed once and shipped.

:func:`art.dose.ccc.calibration.calibration_factor` computes a machine's Gy per TERMA unit in a
water phantom on the dose grid's voxel size (about 3 s on 2 cores, once per process and grid).
For the shipped machine files, the voxel sizes art uses by default (2.0, 2.5 and 3.0 mm isotropic)
and both fluence pixels (1.0 mm: the independent check, 1.25 mm: the final dose) the factors are
kept in ``art/dose/data/ccc_calibration.json``, each under the SHA-256 of the machine file, a
digest of the collapsed-cone model's numbers and a digest of the engine's numerics (kernel file,
transport directions, kernel exponents and energy groups), with the factor the engine computed
itself. A machine file edited by one byte, another model, kernel set, direction set or grouping
finds no entry and is computed as before, so a stale entry cannot be used; ``tests/dose/test_ccc_calibration_table.py`` recomputes one entry on
every run (all of them with ``-m slow``) to catch a change of the engine's code.

Regenerate after re-commissioning a machine or changing the engine::

    python -m art.dose.ccc.calibration_table            # rewrite the table
    python -m art.dose.ccc.calibration_table --check    # recompute every entry and compare
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from art.dose.ccc.kernels import KERNEL_FILE

TABLE = KERNEL_FILE.parent / "ccc_calibration.json"
#: The isotropic voxel sizes (mm) and fluence pixels (mm) the table holds.
SPACINGS_MM = (2.0, 2.5, 3.0)
FLUENCE_MM = (1.0, 1.25)


@functools.lru_cache(maxsize=1)
def _kernel_file_hash() -> Any:
    """The SHA-256 state after the shipped kernel file (read once per process: every beam of every dose looks its factor up)."""
    return hashlib.sha256(KERNEL_FILE.read_bytes())


def engine_digest() -> str:
    """A digest of what the factor depends on in the engine besides the machine: the kernel file, the
    transport directions, the kernel's exponents, its energy groups (hardening) and the transport's
    entry correction (its medium density)."""
    from art.dose.ccc import core, kernels, transport

    h = _kernel_file_hash().copy()
    h.update(repr((core.REACH, core.FINE_REACH, core.FINE_ANGLE_DEG)).encode())
    h.update(repr(("entry", transport.MEDIUM_DENSITY)).encode())
    h.update(repr((tuple(kernels.SCALES_MM), tuple(kernels.GROUP_EDGES_MEV))).encode())
    return h.hexdigest()[:16]


def model_digest(model: Any) -> str:
    """A digest of a collapsed-cone model's numbers (:meth:`art.dose.ccc.model.CCCModel.key`)."""
    return hashlib.sha256(repr(model.key()).encode()).hexdigest()[:16]


def _entry_key(machine_sha256: str, model: str, engine: str, spacing: tuple, fluence_mm: float) -> str:
    return "|".join([machine_sha256, model, engine, ",".join(f"{float(s):g}" for s in spacing), f"{float(fluence_mm):g}"])


@functools.lru_cache(maxsize=1)
def _entries() -> dict[str, float]:
    try:
        data = json.loads(TABLE.read_text(encoding="utf-8"))
        return {str(e["key"]): float(e["gy_per_terma"]) for e in data["entries"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no (readable) table: every factor is computed


def lookup(machine: Any, model: Any, spacing: tuple, fluence_mm: float) -> float | None:
    """The shipped factor of ``machine`` with ``model`` on ``spacing`` (dz, dy, dx) mm and ``fluence_mm``, or None."""
    if not machine.digest:
        return None
    return _entries().get(_entry_key(machine.digest, model_digest(model), engine_digest(), tuple(spacing), fluence_mm))


def compute_entries(machines: list | None = None) -> list[dict]:
    """The table's entries, computed by the engine (every shipped machine with a ``ccc`` section by default)."""
    from art.dose.ccc.calibration import computed_factor
    from art.dose.ccc.model import ccc_model
    from art.dose.library import load_library

    machines = machines if machines is not None else [m for m in load_library().machines if m.ccc is not None]
    out = []
    for m in machines:
        model = ccc_model(m)
        for s in SPACINGS_MM:
            for f in FLUENCE_MM:
                value = computed_factor(m, model, (s, s, s), fluence_mm=f)
                out.append({"machine": Path(m.source).name, "spacing_mm": s, "fluence_mm": f, "gy_per_terma": value,
                            "key": _entry_key(m.digest, model_digest(model), engine_digest(), (s, s, s), f)})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m art.dose.ccc.calibration_table [--check]``."""
    args = sys.argv[1:] if argv is None else argv
    entries = compute_entries()
    if "--check" in args:
        shipped = _entries()
        bad = [e for e in entries if shipped.get(e["key"]) != e["gy_per_terma"]]
        for e in bad:
            print(f"{e['machine']} {e['spacing_mm']} mm, fluence {e['fluence_mm']} mm: shipped {shipped.get(e['key'])}, engine {e['gy_per_terma']}")
        print(f"{len(entries) - len(bad)} of {len(entries)} entries agree with the engine")
        return 1 if bad else 0
    doc = {"what": "collapsed-cone calibration factors (Gy per TERMA unit) of the shipped machines; written by "
                   "python -m art.dose.ccc.calibration_table (see art/dose/ccc/calibration_table.py)", "entries": entries}  # fmt: skip
    TABLE.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    _entries.cache_clear()
    print(f"wrote {len(entries)} entries to {TABLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
