"""``art check``: re-evaluate any RT Dose + RTSTRUCT (+ protocol) with art's polygon DVH.

:func:`check` reads an RT Dose (art's or another system's, :func:`art.io.rtdose.read_rtdose`)
and an RT Structure Set, and measures every structure by its **polygons** on
the dose (:mod:`art.evaluate.polygons`: in-plane sub-cells of 0.25 mm, the slab
rule with half-slice end caps, the dose interpolated trilinearly at the sample
points) — the code path of ``evaluate_goals(..., mode="polygons")``. It writes
no file.

* With a protocol: the goal table (structure, metric, goal, value, met), in
  protocol order; ``priority1_met`` tells whether every priority-1 goal is met.
* Without one: per structure (all with closed planar contours, or those named):
  volume (cc), Dmean, Dmax (D0.03cc), Dmin (coldest 0.03 cc), D98%, D95%,
  D50%, D2% (Gy).

Refused with an :class:`~art.errors.ArtError` naming the file or structure —
never a value computed on part of a structure: an RTSTRUCT whose frame of
reference is not the RT Dose's; a structure (named by a goal or asked for)
without closed planar contours; contours that are open, degenerate, off-plane
or self-intersecting; a structure reaching outside the dose grid; a dose grid
whose slices are not axial.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

from art.errors import GeometryError, InputError
from art.evaluate.goals import metric_label

__all__ = ["check", "format_check", "metric_label", "STRUCTURE_METRICS"]

#: The per-structure table without a protocol (Gy).
STRUCTURE_METRICS = ("Dmean", "Dmax", "Dmin", "D98%", "D95%", "D50%", "D2%")
def _value(v: float) -> float | None:
    return round(float(v), 4) if math.isfinite(float(v)) else None


def _frame_of_reference(path: Path, *, rtstruct: bool) -> set[str]:
    """The frame(s) of reference a file declares (empty when it declares none)."""
    from art.io.dicom_common import read_dataset, sequence_items

    ds = read_dataset(path, stop_before_pixels=True, what="RTSTRUCT file" if rtstruct else "RTDOSE file")
    if not rtstruct:
        uid = str(ds.get("FrameOfReferenceUID", "") or "")
        return {uid} if uid else set()
    fors = {str(it.get("FrameOfReferenceUID", "") or "") for it in sequence_items(ds, "ReferencedFrameOfReferenceSequence")}
    fors |= {str(it.get("ReferencedFrameOfReferenceUID", "") or "") for it in sequence_items(ds, "StructureSetROISequence")}
    fors.discard("")
    return fors


def _read(dose_path: Path, structures_path: Path) -> tuple[Any, Any, list[str]]:
    """The dose (Gy, Volume), the structures (read onto the dose grid, polygons kept) and warnings."""
    from art.io.rtdose import read_rtdose
    from art.io.rtstruct import read_rtstruct

    dose = read_rtdose(dose_path)
    dose_for = _frame_of_reference(dose_path, rtstruct=False)
    rs_for = _frame_of_reference(structures_path, rtstruct=True)
    notes: list[str] = []
    if dose_for and rs_for and not (dose_for & rs_for):
        raise GeometryError(
            f"the RTSTRUCT's frame of reference ({', '.join(sorted(rs_for))}) is not the RT Dose's "
            f"({', '.join(sorted(dose_for))}, {dose_path}): the contours belong to another image",
            path=structures_path,
        )
    if not dose_for or not rs_for:
        notes.append("frame of reference not checked: " + ("the RT Dose" if not dose_for else "the RTSTRUCT") + " declares none")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        structures = read_rtstruct(structures_path, dose.grid)
    # contours off the dose slices are only a rasterisation matter here; the polygon path checks coverage itself
    notes += [str(w.message) for w in caught if "skipped" not in str(w.message)]
    return dose, structures, notes


def _need_polygons(s: Any, structures_path: Path) -> None:
    if not s.contours:
        raise InputError(f"structure {s.name!r} has no closed planar contours: it cannot be evaluated", path=structures_path)


def _goal_rows(dose: Any, structures: Any, protocol: Any, structures_path: Path) -> list[dict]:
    """The protocol's goals evaluated on the polygons, as JSON rows (metric label spelled out)."""
    from art.evaluate import evaluate_goals

    protocol.check_structures(structures.names)
    for name in dict.fromkeys(g.structure for g in protocol.goals):
        _need_polygons(structures[name], structures_path)
    rows = []
    for r in evaluate_goals(dose, structures, protocol, mode="polygons"):
        row = r.to_dict()
        row["value"] = _value(r.value)
        row["label"] = metric_label(r.metric)
        rows.append(row)
    return rows


def _structure_rows(dose: Any, structures: Any, names: Sequence[str] | None, structures_path: Path) -> tuple[list[dict], list[dict]]:
    """Per structure: type, volume (cc) and :data:`STRUCTURE_METRICS` (Gy); and the structures skipped (no polygons)."""
    from art.evaluate import structure_samples
    from art.evaluate.metrics import evaluate_metric

    if names:
        chosen = [structures[n] for n in dict.fromkeys(names)]
        for s in chosen:
            _need_polygons(s, structures_path)
    else:
        chosen = list(structures)
    rows, skipped = [], []
    for s in chosen:
        if not s.contours:
            skipped.append({"structure": s.name, "reason": "no closed planar contours"})
            continue
        d, v, _ = structure_samples(dose, s, mode="polygons")
        row: dict[str, Any] = {"structure": s.name, "type": s.roi_type, "volume_cc": round(float(v.sum()), 3)}
        row.update({m: _value(evaluate_metric(m, d, v, name=s.name)) for m in STRUCTURE_METRICS})
        rows.append(row)
    if not rows:
        raise InputError("no structure with closed planar contours to evaluate", path=structures_path)
    return rows, skipped


def check(
    dose_path: str | Path,
    structures_path: str | Path,
    *,
    protocol_path: str | Path | None = None,
    structure_names: Sequence[str] | None = None,
) -> dict:
    """Evaluate an RT Dose on an RTSTRUCT's polygons (``art check``); writes nothing.

    Parameters
    ----------
    dose_path : str or Path
        RT Dose file (Gy; any system's; axial dose slices).
    structures_path : str or Path
        RTSTRUCT file in the RT Dose's frame of reference.
    protocol_path : str or Path, optional, keyword-only
        Protocol TOML: evaluate its goals. Without it, the per-structure table.
    structure_names : sequence of str, optional, keyword-only
        Without a protocol: only these structures (default: every structure
        with closed planar contours; the others are listed as skipped).

    Returns
    -------
    dict
        JSON-ready: ``command``, ``provenance`` (version, input SHA-256),
        ``dose`` (file, grid, max Gy), ``structures_file``, ``method``,
        ``warnings``; with a protocol ``protocol``, ``goals`` (rows of
        :meth:`GoalResult.to_dict` plus ``label``) and ``priority1_met``;
        without, ``structures`` (rows) and ``skipped``.

    Raises
    ------
    ArtError
        Unreadable files, frame-of-reference mismatch, a missing structure, bad
        contours, a structure outside the dose grid (each naming file or structure).
    """
    from art.protocol import load_protocol
    from art.provenance import provenance, sha256_file

    dose_path, structures_path = Path(dose_path), Path(structures_path)
    protocol = load_protocol(protocol_path) if protocol_path is not None else None
    dose, structures, notes = _read(dose_path, structures_path)
    inputs = {"rtdose": sha256_file(dose_path), "rtstruct": sha256_file(structures_path)}
    if protocol_path is not None:
        inputs["protocol"] = sha256_file(protocol_path)
    out: dict[str, Any] = {
        "command": "check",
        "provenance": provenance(inputs=inputs, parameters={"mode": "polygons", "step_mm": 0.25}),
        "dose": {"file": str(dose_path), "units": "Gy", "grid": dose.grid.to_dict(), "max_gy": round(float(dose.array.max()), 4)},
        "structures_file": str(structures_path),
        "method": (
            "structures from their RTSTRUCT polygons (even-odd, 0.25 mm in-plane sub-cells, each contour plane a slab "
            "half-way to its neighbours with half-spacing end caps), dose interpolated trilinearly at the sample points; "
            "metrics on the exact samples; Dmax = D0.03cc, Dmin = dose to the coldest 0.03 cc"
        ),
        "warnings": notes,
    }
    if protocol is not None:
        goals = _goal_rows(dose, structures, protocol, structures_path)
        out.update(protocol=protocol.name, goals=goals, priority1_met=all(g["met"] for g in goals if g["priority"] == 1))
    else:
        rows, skipped = _structure_rows(dose, structures, structure_names, structures_path)
        out.update(structures=rows, skipped=skipped)
    return out


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]
    fmt = lambda r: "  ".join(v.rjust(w) if c in right else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths))).rstrip()  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def format_check(result: dict) -> str:
    """The result of :func:`check` as a plain-text table (goal table, or per-structure metrics)."""
    from art.protocol import format_number

    if "goals" in result:
        rows = [
            [f"P{g['priority']}", g["structure"], g["label"], g["goal"],
             "n/a" if g["value"] is None else f"{g['value']:.2f} {g['unit']}", "met" if g["met"] else "NOT MET"]
            for g in result["goals"]
        ]  # fmt: skip
        text = _table(["priority", "structure", "metric", "goal", "value", "met"], rows, {4})
        verdict = "all priority-1 goals met" if result["priority1_met"] else "a priority-1 goal is NOT met"
        text += f"\n\nprotocol {result['protocol']!r}: {verdict}"
    else:
        header = ["structure", "volume cc"] + [metric_label(m) + " Gy" for m in STRUCTURE_METRICS]
        rows = [
            [r["structure"], f"{r['volume_cc']:.2f}"] + ["n/a" if r[m] is None else f"{r[m]:.2f}" for m in STRUCTURE_METRICS]
            for r in result["structures"]
        ]
        text = _table(header, rows, set(range(1, len(header))))
        if result.get("skipped"):
            text += "\n\nskipped (no closed planar contours): " + ", ".join(s["structure"] for s in result["skipped"])
    text += f"\n\ndose: {result['dose']['file']} (max {format_number(round(result['dose']['max_gy'], 2))} Gy)"
    for w in result.get("warnings", []):
        text += f"\nnote: {w}"
    return text
