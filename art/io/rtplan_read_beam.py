"""Reading one beam of an RT Plan: its devices and control points into the segments of a :class:`~art.plan.Beam`.

Used by :mod:`art.io.rtplan_read`.  The state of each control point is the
previous one's updated with what it lists (DICOM lists only changes).  Every
interval between consecutive control points with a positive meterset increment
becomes segments: one for a static aperture; for leaves or jaws moving
(``DYNAMIC`` beams only) equal-meterset sub-intervals with at most
``_MAX_TRAVEL_MM`` of travel, each a segment at its mid-positions.  Gantry,
collimator or couch moving while the beam is on (arcs) is refused.  Every
refusal is a :class:`~art.errors.DicomError` naming the file and the beam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import DicomError, InputError
from art.io.dicom_common import sequence_items
from art.io.rtplan_common import energy_from_dicom
from art.plan import Beam, Segment

_MAX_TRAVEL_MM = 1.0  # dynamic intervals are cut so no leaf/jaw moves more than this per segment


@dataclass(frozen=True)
class _BeamDevices:
    """What one beam's apertures are read against.

    Attributes
    ----------
    name : str
        The beam's name (in the errors).
    path : Path
        The file (in the errors).
    mlc_kw : str or None
        ``"MLCX"`` when the beam declares an MLC, else None (leaves put at the X jaws).
    bnd : ndarray of float64, shape (n_pairs + 1,)
        Leaf boundaries, mm (the plan's, or the machine's when the plan has no MLC).
    """

    name: str
    path: Path
    mlc_kw: str | None
    bnd: np.ndarray

    @property
    def n_pairs(self) -> int:
        """Number of leaf pairs."""
        return self.bnd.size - 1


def _floats(value: Any, what: str, path: Path, beam: str) -> np.ndarray:
    try:
        seq = [value] if isinstance(value, (int, float, str)) else list(value)
        a = np.array([float(v) for v in seq], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"beam {beam!r}: {what} is not numeric", path=path) from exc
    if not np.all(np.isfinite(a)):
        raise DicomError(f"beam {beam!r}: {what} has non-finite values", path=path)
    return a


def _number(item: Any, keyword: str, path: Path, beam: str, default: float | None = None) -> float | None:
    v = item.get(keyword, None)
    if v is None or v == "":
        return default
    return float(_floats(v, keyword, path, beam)[0])


def _segment(lp: np.ndarray, x: np.ndarray, y: np.ndarray, mu: float, name: str, i: int, path: Path) -> Segment | None:
    """A segment; None when the jaws are closed (no open area, nothing delivered through the aperture)."""
    if x[1] - x[0] <= 1e-6 or y[1] - y[0] <= 1e-6:
        return None
    try:
        return Segment(lp, (x[0], x[1], y[0], y[1]), mu)
    except InputError as exc:
        raise DicomError(f"beam {name!r} control points {i}-{i + 1}: {exc}", path=path) from exc


def machine_boundaries(machine: Any, item: Any, name: str, machine_name: str, path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The leaf boundaries (mm) a beam's MLC is checked against and those its leaves get without an MLC.

    Parameters
    ----------
    machine : Machine, MachineLibrary or None
        A machine (``mlc.boundaries_mm``) or a library (duck-typed by ``for_beam``: the beam's own
        MLC is checked after reading, and a beam without an MLC gets the boundaries of the library's
        machine for its energy, fluence mode, SAD and ``machine_name``).
    item : pydicom Dataset
        The BeamSequence item.
    name, machine_name : str
        The beam's name and its TreatmentMachineName.
    path : Path
        The file (named in the errors).

    Returns
    -------
    check, default : ndarray of shape (n_pairs + 1,), or None
        ``check``: the boundaries a declared MLCX must have (None: not checked here);
        ``default``: the boundaries of a beam without an MLC (None: refused).
    """
    if machine is None:
        return None, None
    if not hasattr(machine, "for_beam"):
        bnd = np.asarray(machine.mlc.boundaries_mm, dtype=np.float64)
        return bnd, bnd
    devices = [str(d.get("RTBeamLimitingDeviceType", "")) for d in sequence_items(item, "BeamLimitingDeviceSequence")]
    cps = sequence_items(item, "ControlPointSequence")
    energy = _number(cps[0], "NominalBeamEnergy", path, name, None) if cps else None
    if "MLCX" in devices or energy is None:
        return None, None  # a missing energy is refused when the control points are read
    sad = _number(item, "SourceAxisDistance", path, name, 1000.0)
    probe = Beam(name=name, gantry_deg=0.0, energy=energy_from_dicom(energy, _fluence_mode_id(item)), sad_mm=sad)
    return None, np.asarray(machine.for_beam(probe, machine_name=machine_name, path=path).mlc.boundaries_mm, dtype=np.float64)


def _fluence_mode_id(item: Any) -> str | None:
    """The beam's fluence mode ID (``"FFF"``, ``"SRS"``, ...) from PrimaryFluenceModeSequence; None when STANDARD."""
    for fm in sequence_items(item, "PrimaryFluenceModeSequence")[:1]:
        if str(fm.get("FluenceMode", "")) == "NON_STANDARD":
            return str(fm.get("FluenceModeID", "") or "FFF")
    return None


def _read_beam(item: Any, name: str, beam_mu: float, path: Path, bnd_machine: np.ndarray | None, bnd_default: np.ndarray | None = None) -> Beam:
    """One BeamSequence item as a :class:`~art.plan.Beam` with step-and-shoot segments.

    Parameters
    ----------
    item : pydicom Dataset
        The BeamSequence item.
    name : str
        The beam's name.
    beam_mu : float
        BeamMeterset of the beam (MU per fraction).
    path : Path
        The file (named in the errors).
    bnd_machine : ndarray of shape (n_pairs + 1,), or None
        The leaf boundaries (mm) the beam's MLC must have, when a machine was given.
    bnd_default : ndarray of shape (n_pairs + 1,), or None
        The leaf boundaries (mm) of a beam without an MLC (its leaves are put at the X jaws); None: such
        a beam is refused.

    Returns
    -------
    Beam
        Angles (degrees), isocentre (LPS mm), energy, SAD (mm, default 1000), segments (MU per
        fraction) and ``leaf_boundaries_mm`` (the plan's MLC, or ``bnd_default``) of the beam.
    """
    dev = _beam_devices(item, name, path, bnd_machine, bnd_default)
    cps = sequence_items(item, "ControlPointSequence")
    if len(cps) < 2:
        raise DicomError(f"beam {name!r}: needs at least two control points, has {len(cps)}", path=path)
    final_w = _number(item, "FinalCumulativeMetersetWeight", path, name, None)
    beam_type = str(item.get("BeamType", "STATIC") or "STATIC")
    states, wa = _control_point_states(item, cps, dev)
    final_w = _check_metersets(wa, final_w, beam_mu, name, path)
    segments = _beam_segments(states, wa, beam_mu, final_w, beam_type, dev)
    st0 = states[0]
    sad = _number(item, "SourceAxisDistance", path, name, 1000.0)
    return Beam(
        name=name,
        gantry_deg=st0["gantry"],
        collimator_deg=st0.get("coll", 0.0),
        couch_deg=st0.get("couch", 0.0),
        isocenter_lps=st0["iso"],
        energy=energy_from_dicom(st0["energy"], st0.get("mode")),
        segments=segments,
        sad_mm=sad,
        leaf_boundaries_mm=dev.bnd,
    )


def _beam_devices(item: Any, name: str, path: Path, bnd_machine: np.ndarray | None, bnd_default: np.ndarray | None) -> _BeamDevices:
    """The beam's MLC and leaf boundaries (BeamLimitingDeviceSequence).

    Parameters
    ----------
    item : pydicom Dataset
        The BeamSequence item.
    name : str
        The beam's name.
    path : Path
        The file.
    bnd_machine : ndarray of shape (n_pairs + 1,), or None
        The leaf boundaries (mm) a declared MLC must have.
    bnd_default : ndarray of shape (n_pairs + 1,), or None
        The leaf boundaries (mm) of a beam without an MLC.

    Returns
    -------
    _BeamDevices

    Raises
    ------
    DicomError
        MLCY, an MLCX without increasing LeafPositionBoundaries or unlike
        ``bnd_machine``, or no MLC and no ``bnd_default``.
    """
    devices = {}
    for d in sequence_items(item, "BeamLimitingDeviceSequence"):
        devices[str(d.get("RTBeamLimitingDeviceType", ""))] = d
    if "MLCY" in devices:
        raise DicomError(f"beam {name!r}: MLCY (leaves moving along Y) is not supported", path=path)
    mlc_kw = "MLCX" if "MLCX" in devices else None
    bnd = None
    if mlc_kw:
        if "LeafPositionBoundaries" not in devices[mlc_kw]:
            raise DicomError(f"beam {name!r}: MLCX lacks LeafPositionBoundaries", path=path)
        bnd = _floats(devices[mlc_kw].LeafPositionBoundaries, "LeafPositionBoundaries", path, name)
        if bnd.size < 2 or np.any(np.diff(bnd) <= 0):
            raise DicomError(f"beam {name!r}: LeafPositionBoundaries must increase", path=path)
        if bnd_machine is not None and (bnd.size != bnd_machine.size or not np.allclose(bnd, bnd_machine, atol=0.01)):
            raise DicomError(
                f"beam {name!r}: its MLC ({bnd.size - 1} leaf pairs) is not the machine model's "
                f"({bnd_machine.size - 1} pairs); the dose cannot be computed with this machine",
                path=path,
            )
    elif bnd_default is None:
        raise DicomError(f"beam {name!r} has no MLC: give the machine (its leaves are opened to the jaws)", path=path)
    else:
        bnd = bnd_default
    return _BeamDevices(name, path, mlc_kw, bnd)


def _control_point_states(item: Any, cps: list, dev: _BeamDevices) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The full state at each control point (each one updates the previous one's) and the meterset weights.

    Parameters
    ----------
    item : pydicom Dataset
        The BeamSequence item (its PrimaryFluenceModeSequence gives the fluence mode).
    cps : list of pydicom Dataset
        Its ControlPointSequence items (at least two).
    dev : _BeamDevices
        The beam's devices.

    Returns
    -------
    states : list of dict
        Per control point: ``gantry``, ``coll``, ``couch`` (degrees), ``energy``
        (MV), ``iso`` (LPS mm, shape (3,)), ``mode`` (fluence mode ID), ``x``
        and ``y`` jaws (mm, shape (2,)), ``mlc`` (mm, shape (2, n_pairs)), as
        far as given so far (copies).
    weights : ndarray of float64, shape (n_control_points,)
        CumulativeMetersetWeight of each control point.
    """
    name, path = dev.name, dev.path
    state: dict[str, Any] = {}
    states = []
    weights = []
    for i, cp in enumerate(cps):
        where = f"control point {i}"
        for kw, key in (("GantryAngle", "gantry"), ("BeamLimitingDeviceAngle", "coll"), ("PatientSupportAngle", "couch"), ("NominalBeamEnergy", "energy")):
            v = _number(cp, kw, path, name, None)
            if v is not None:
                state[key] = v
        if cp.get("IsocenterPosition", None) not in (None, ""):
            iso = _floats(cp.IsocenterPosition, "IsocenterPosition", path, name)
            if iso.size != 3:
                raise DicomError(f"beam {name!r} {where}: IsocenterPosition must have 3 values", path=path)
            state["iso"] = iso
        if _fluence_mode_id(item) is not None:
            state["mode"] = _fluence_mode_id(item)
        _update_device_positions(state, cp, where, dev)
        w = _number(cp, "CumulativeMetersetWeight", path, name, None)
        if w is None:
            raise DicomError(f"beam {name!r} {where}: no CumulativeMetersetWeight", path=path)
        if i == 0:
            for key, what in (("gantry", "GantryAngle"), ("energy", "NominalBeamEnergy"), ("iso", "IsocenterPosition")):
                if key not in state:
                    raise DicomError(f"beam {name!r}: first control point lacks {what}", path=path)
        weights.append(w)
        states.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()})
    wa = np.array(weights)
    return states, wa


def _update_device_positions(state: dict[str, Any], cp: Any, where: str, dev: _BeamDevices) -> None:
    """Update the jaws (``x``, ``y``) and leaves (``mlc``) of ``state`` with what control point ``cp`` lists.

    Parameters
    ----------
    state : dict
        The running control point state (updated in place).
    cp : pydicom Dataset
        The control point.
    where : str
        ``"control point <i>"`` (in the errors).
    dev : _BeamDevices
        The beam's devices (number of leaf pairs).

    Raises
    ------
    DicomError
        A jaw pair without two positions or crossed, an MLCX with the wrong
        number of positions, or a leaf beyond its opposite leaf.
    """
    name, path, n_pairs = dev.name, dev.path, dev.n_pairs
    for p in sequence_items(cp, "BeamLimitingDevicePositionSequence"):
        kind = str(p.get("RTBeamLimitingDeviceType", ""))
        vals = _floats(p.get("LeafJawPositions", []), f"{kind} positions at {where}", path, name)
        if kind in ("ASYMX", "X", "ASYMY", "Y"):
            if vals.size != 2:
                raise DicomError(f"beam {name!r} {where}: {kind} needs two positions, got {vals.size}", path=path)
            if vals[0] > vals[1]:
                raise DicomError(f"beam {name!r} {where}: {kind} jaw 1 ({vals[0]} mm) is beyond jaw 2 ({vals[1]} mm)", path=path)
            state["x" if kind in ("ASYMX", "X") else "y"] = vals
        elif kind == "MLCX":
            if vals.size != 2 * n_pairs:
                raise DicomError(f"beam {name!r} {where}: MLCX has {vals.size} positions for {n_pairs} leaf pairs", path=path)
            lp = vals.reshape(2, n_pairs)
            if np.any(lp[0] > lp[1] + 1e-6):
                k = int(np.argmax(lp[0] > lp[1] + 1e-6))
                raise DicomError(
                    f"beam {name!r} {where}: leaf pair {k + 1}: bank X1 ({lp[0, k]} mm) is beyond bank X2 ({lp[1, k]} mm)", path=path
                )
            state["mlc"] = lp


def _check_metersets(wa: np.ndarray, final_w: float | None, beam_mu: float, name: str, path: Path) -> float:
    """Refuse meterset weights that decrease or do not run from 0 to the final weight, and a non-positive BeamMeterset.

    Parameters
    ----------
    wa : ndarray of float64, shape (n_control_points,)
        CumulativeMetersetWeight of each control point.
    final_w : float or None
        FinalCumulativeMetersetWeight (None: the last weight).
    beam_mu : float
        BeamMeterset (MU per fraction).
    name : str
        The beam's name.
    path : Path
        The file.

    Returns
    -------
    float
        The final cumulative meterset weight.
    """
    if np.any(np.diff(wa) < 0):
        k = int(np.argmax(np.diff(wa) < 0))
        raise DicomError(f"beam {name!r}: CumulativeMetersetWeight decreases at control point {k + 1} ({wa[k]} -> {wa[k + 1]})", path=path)
    if final_w is None:
        final_w = float(wa[-1])
    if final_w <= 0:
        raise DicomError(f"beam {name!r}: FinalCumulativeMetersetWeight must be positive", path=path)
    if abs(wa[-1] - final_w) > 1e-6 * max(1.0, final_w) or wa[0] != 0:
        raise DicomError(f"beam {name!r}: meterset weights must run from 0 to FinalCumulativeMetersetWeight ({final_w})", path=path)
    if beam_mu <= 0 or not math.isfinite(beam_mu):
        raise DicomError(f"beam {name!r}: BeamMeterset must be positive, got {beam_mu}", path=path)
    return final_w


def _aperture(st: dict, dev: _BeamDevices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leaves and jaws of one control point state.

    Parameters
    ----------
    st : dict
        A control point state (see :func:`_control_point_states`).
    dev : _BeamDevices
        The beam's devices.

    Returns
    -------
    lp : ndarray, shape (2, n_pairs)
        Leaf positions, mm (at the X jaws when the beam has no MLC).
    x, y : ndarray, shape (2,)
        Jaws, mm: without X jaws, just outside the leaf envelope; without Y
        jaws, the MLC's outer boundaries.
    """
    name, path, mlc_kw, n_pairs, bnd = dev.name, dev.path, dev.mlc_kw, dev.n_pairs, dev.bnd
    if "mlc" in st:
        lp = st["mlc"]
    elif mlc_kw is not None:
        raise DicomError(f"beam {name!r}: MLCX declared but no leaf positions given", path=path)
    else:
        if "x" not in st:
            raise DicomError(f"beam {name!r}: no MLC and no X jaws: the field is undefined", path=path)
        lp = np.vstack([np.full(n_pairs, st["x"][0]), np.full(n_pairs, st["x"][1])])
    x = st.get("x")
    if x is None:  # no X jaws: just outside the leaf envelope
        x = np.array([float(lp[0].min()) - 1.0, float(lp[1].max()) + 1.0])
    y = st.get("y")
    if y is None:
        y = np.array([bnd[0], bnd[-1]])
    return lp, x, y


def _beam_segments(
    states: list[dict[str, Any]], wa: np.ndarray, beam_mu: float, final_w: float, beam_type: str, dev: _BeamDevices
) -> list[Segment]:
    """The segments delivered between consecutive control points.

    Parameters
    ----------
    states : list of dict
        The control point states (see :func:`_control_point_states`).
    wa : ndarray of float64, shape (n_control_points,)
        Cumulative meterset weights (checked).
    beam_mu : float
        BeamMeterset (MU per fraction).
    final_w : float
        Final cumulative meterset weight.
    beam_type : str
        BeamType: moving leaves or jaws are allowed in ``DYNAMIC`` beams only.
    dev : _BeamDevices
        The beam's devices.

    Returns
    -------
    list of Segment
        MU per fraction; apertures with closed jaws left out.

    Raises
    ------
    DicomError
        Gantry, collimator or couch moving while the beam is on; energy or
        isocentre changing; leaves or jaws moving in a non-dynamic beam; no
        meterset through an open aperture.
    """
    name, path = dev.name, dev.path
    segments = []
    for i in range(len(states) - 1):
        dw = wa[i + 1] - wa[i]
        if dw <= 0:
            continue
        a, b = states[i], states[i + 1]
        for key, what in (("gantry", "gantry"), ("coll", "collimator"), ("couch", "couch")):
            if abs(a.get(key, 0.0) - b.get(key, 0.0)) > 1e-6:
                raise DicomError(
                    f"beam {name!r}: the {what} angle moves while the beam is on (control points {i}-{i + 1}): arcs are not supported",
                    path=path,
                )
        if abs(a["energy"] - b["energy"]) > 1e-9 or np.any(np.abs(a["iso"] - b["iso"]) > 1e-6):
            raise DicomError(f"beam {name!r}: energy or isocentre changes within the beam", path=path)
        lp0, x0, y0 = _aperture(a, dev)
        lp1, x1, y1 = _aperture(b, dev)
        travel = max(np.max(np.abs(lp1 - lp0)), np.max(np.abs(x1 - x0)), np.max(np.abs(y1 - y0)))
        mu = beam_mu * dw / final_w
        if travel <= 1e-6:
            segments.append(_segment(lp0, x0, y0, mu, name, i, path))
            continue
        if beam_type != "DYNAMIC":
            raise DicomError(
                f"beam {name!r}: leaves or jaws move while the beam is on (control points {i}-{i + 1}) in a {beam_type} beam", path=path
            )
        n_sub = int(math.ceil(travel / _MAX_TRAVEL_MM))
        for j in range(n_sub):
            t = (j + 0.5) / n_sub
            lp = (1 - t) * lp0 + t * lp1
            x = (1 - t) * x0 + t * x1
            y = (1 - t) * y0 + t * y1
            segments.append(_segment(lp, x, y, mu / n_sub, name, i, path))
    segments = [s for s in segments if s is not None]
    if not segments:
        raise DicomError(f"beam {name!r}: no meterset is delivered through an open aperture", path=path)
    return segments
