"""Machine library: which machine file (and MLC model) each beam of a plan is computed with.

A :class:`MachineLibrary` holds machine files (:func:`art.dose.load_machine`) and MLC
models (``art-mlc/1`` files, :func:`load_mlc`). :meth:`MachineLibrary.for_beam` picks
the machine whose energy and fluence mode are the beam's (``"6FFF"`` is not ``"6X"``),
preferring one whose ``name`` or ``aliases`` match the plan's TreatmentMachineName, and
gives it the MLC model whose leaf boundaries are the beam's. :func:`resolve_machines`
turns what a caller passes as ``machine`` (a Machine, one per beam, or a library) into
one checked Machine per beam; both dose engines call it. The shipped library
(:func:`load_library` without paths) is the generic 6X, 10X and 6FFF machines and the
Millennium-120-like and Agility-like MLC models of ``art/dose/data`` (docs/machine_data.md).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from art.dose.machine import DATA_DIR, Machine, MLCGeometry, _read_json, _read_mlc, _Reader, load_machine
from art.errors import InputError, MachineDataError

__all__ = ["MachineLibrary", "energy_key", "load_library", "load_mlc", "resolve_machines", "SHIPPED_MACHINES", "SHIPPED_MLC_MODELS"]

#: the machine files and MLC models of the shipped library (in ``art/dose/data``)
SHIPPED_MACHINES = ("generic_6x.json", "generic_10x.json", "generic_6fff.json")
SHIPPED_MLC_MODELS = ("mlc_millennium120.json", "mlc_agility80.json")

#: leaf boundaries closer than this (mm) are the same MLC
BOUNDARY_TOL_MM = 0.01
_SAD_TOL_MM = 0.5


def energy_key(energy: str, fluence_mode: str | None = None) -> tuple[float, str]:
    """``(nominal MV, fluence mode)`` of an energy label: ``"6X"``/``"6MV"`` → (6.0, "STANDARD"),
    ``"6FFF"`` → (6.0, "FFF"), ``"6SRS"`` → (6.0, "SRS"); ``fluence_mode`` (a machine file's) overrides
    the label's mode. Raises :class:`InputError` for a label that is not an energy."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(X|MV|FFF|SRS)?\s*", str(energy), flags=re.IGNORECASE)
    if not m:
        raise InputError(f"energy must look like '6X' or '6FFF', got {energy!r}")
    suffix = (m.group(2) or "X").upper()
    mode = fluence_mode or ("STANDARD" if suffix in ("X", "MV") else suffix)
    return float(m.group(1)), mode


def _label(key: tuple[float, str]) -> str:
    mv = f"{key[0]:g}"
    return f"{mv}X" if key[1] == "STANDARD" else f"{mv}{key[1]}"


def _machine_key(machine: Machine) -> tuple[float, str]:
    return energy_key(machine.energy, machine.fluence_mode)


def _same_boundaries(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0.0, atol=BOUNDARY_TOL_MM))


def _describe_mlc(bnd: np.ndarray) -> str:
    return f"{bnd.size - 1} leaf pairs, {bnd[0]:g} to {bnd[-1]:g} mm"


def load_mlc(path: str | Path) -> MLCGeometry:
    """Load and validate an MLC model file (``format: "art-mlc/1"``, ``name`` and the keys of a
    machine file's ``mlc`` section, docs/machine_data.md).

    Raises
    ------
    MachineDataError
        Naming the file and the field.
    """
    p = Path(path)
    data, digest = _read_json(p, MachineDataError)
    r = _Reader(data, p)
    if r.get("format") != "art-mlc/1":
        raise r.fail("format", f"must be 'art-mlc/1', got {data.get('format')!r}")
    name = r.get("name")
    if not isinstance(name, str) or not name.strip():
        raise r.fail("name", "must be a non-empty string")
    return dataclasses.replace(_read_mlc(r, prefix=""), name=name.strip(), source=str(p), digest=digest)


@dataclass(frozen=True, eq=False)
class MachineLibrary:
    """Machine files and MLC models to compute plans of several energies and MLCs.

    Attributes
    ----------
    machines : tuple of Machine
        In order of preference (files given by the user first).
    mlc_models : tuple of MLCGeometry
        MLC models (their ``name``, ``source`` and ``digest`` set).
    """

    machines: tuple[Machine, ...]
    mlc_models: tuple[MLCGeometry, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "machines", tuple(self.machines))
        object.__setattr__(self, "mlc_models", tuple(self.mlc_models))
        if not self.machines or not all(isinstance(m, Machine) for m in self.machines):
            raise InputError("a MachineLibrary needs at least one Machine (see load_machine)")
        if not all(isinstance(m, MLCGeometry) for m in self.mlc_models):
            raise InputError("MachineLibrary.mlc_models must be MLCGeometry objects (see load_mlc)")

    @property
    def energies(self) -> list[str]:
        """The energies the library serves (``"6X"``, ``"10X"``, ``"6FFF"``, ...), each once, in order."""
        out: list[str] = []
        for m in self.machines:
            lab = _label(_machine_key(m))
            if lab not in out:
                out.append(lab)
        return out

    def mlc_for(self, boundaries_mm: Any) -> MLCGeometry | None:
        """The first MLC model whose leaf boundaries equal ``boundaries_mm`` (±0.01 mm), else None."""
        bnd = np.asarray(boundaries_mm, dtype=np.float64)
        return next((m for m in self.mlc_models if _same_boundaries(m.boundaries_mm, bnd)), None)

    def for_beam(self, beam: Any, *, machine_name: str = "", path: str | Path | None = None) -> Machine:
        """The machine a beam is computed with.

        Parameters
        ----------
        beam : art.plan.Beam
            Its ``energy`` (with the fluence mode), ``sad_mm`` and ``leaf_boundaries_mm`` (None: the machine's).
        machine_name : str, keyword-only
            The plan's TreatmentMachineName (several comma-separated names allowed): among the machines of
            the beam's energy, one whose ``name`` or ``aliases`` match (case-insensitive) is preferred.
        path : str or Path, optional, keyword-only
            The plan file, named in the errors.

        Returns
        -------
        Machine
            With its MLC replaced (``dataclasses.replace``) by the library's MLC model of the beam's
            leaf boundaries when they are not the machine's own.

        Raises
        ------
        InputError
            Naming the beam and ``path``: no machine of the beam's energy, several and none named by
            ``machine_name``, a SAD unlike the machine's, leaf boundaries no MLC of the library has.
        """
        where = f"beam {beam.name!r}"
        try:
            key = energy_key(beam.energy)
        except InputError as exc:
            raise InputError(f"{where}: {exc.problem}", path=path) from None
        cands = [m for m in self.machines if _machine_key(m) == key]
        if not cands:
            raise InputError(
                f"{where}: energy {beam.energy} has no machine file in the library ({', '.join(self.energies)}); give one with --machine FILE",
                path=path,
            )
        names = {n.strip().casefold() for n in str(machine_name or "").split(",") if n.strip()}
        named = [m for m in cands if names & {m.name.casefold(), *(a.casefold() for a in m.aliases)}]
        if not named and len(cands) > 1:
            files = ", ".join(f"{m.name} ({Path(m.source).name})" for m in cands)
            raise InputError(
                f"{where}: energy {beam.energy} is served by several machine files ({files}) and the plan's TreatmentMachineName "
                f"{machine_name!r} names none of them; add it to one file's aliases or give only one with --machine FILE",
                path=path,
            )
        machine = (named or cands)[0]
        _check_sad(beam, machine, path)
        return self._with_beam_mlc(beam, machine, path)

    def _with_beam_mlc(self, beam: Any, machine: Machine, path: str | Path | None) -> Machine:
        """``machine`` with the MLC of the beam's leaf boundaries (its own, or the library's model)."""
        bnd = getattr(beam, "leaf_boundaries_mm", None)
        if bnd is None or _same_boundaries(np.asarray(bnd, dtype=np.float64), machine.mlc.boundaries_mm):
            _check_pairs(beam, machine, path)
            return machine
        model = self.mlc_for(bnd)
        if model is None:
            known = ", ".join(f"{m.name} ({m.n_pairs} pairs)" for m in self.mlc_models) or "none"
            raise InputError(
                f"beam {beam.name!r}: its MLC ({_describe_mlc(np.asarray(bnd))}) is neither machine {machine.name!r}'s "
                f"({Path(machine.source).name}) nor an MLC model of the library ({known}); give an MLC model file with --machine FILE",
                path=path,
            )
        out = dataclasses.replace(machine, mlc=model)
        _check_pairs(beam, out, path)
        return out


def _check_sad(beam: Any, machine: Machine, path: str | Path | None) -> None:
    if abs(float(beam.sad_mm) - float(machine.sad_mm)) > _SAD_TOL_MM:
        raise InputError(
            f"beam {beam.name!r}: SAD {beam.sad_mm:g} mm is not machine {machine.name!r}'s ({machine.sad_mm:g} mm, {Path(machine.source).name})",
            path=path,
        )


def _check_pairs(beam: Any, machine: Machine, path: str | Path | None) -> None:
    for s in getattr(beam, "segments", []):
        if s.leaf_positions.shape[1] != machine.mlc.n_pairs:
            raise InputError(
                f"beam {beam.name!r}: {s.leaf_positions.shape[1]} leaf pairs, machine {machine.name!r} ({Path(machine.source).name}) "
                f"has {machine.mlc.n_pairs}",
                path=path,
            )


def check_beam_machine(beam: Any, machine: Machine, *, path: str | Path | None = None) -> None:
    """Refuse (:class:`InputError` naming the beam, the machine file and ``path``) a beam whose energy
    (with fluence mode), SAD or MLC (leaf boundaries, number of leaf pairs) is not ``machine``'s."""
    try:
        key = energy_key(beam.energy)
    except InputError as exc:
        raise InputError(f"beam {beam.name!r}: {exc.problem}", path=path) from None
    if key != _machine_key(machine):
        raise InputError(
            f"beam {beam.name!r}: energy {beam.energy} is not machine {machine.name!r}'s ({_label(_machine_key(machine))}, "
            f"{Path(machine.source).name})",
            path=path,
        )
    _check_sad(beam, machine, path)
    bnd = getattr(beam, "leaf_boundaries_mm", None)
    if bnd is not None and not _same_boundaries(np.asarray(bnd, dtype=np.float64), machine.mlc.boundaries_mm):
        raise InputError(
            f"beam {beam.name!r}: its MLC ({_describe_mlc(np.asarray(bnd))}) is not machine {machine.name!r}'s "
            f"({_describe_mlc(machine.mlc.boundaries_mm)}, {Path(machine.source).name})",
            path=path,
        )
    _check_pairs(beam, machine, path)


def _format_of(path: Path) -> str:
    data, _ = _read_json(path, MachineDataError)
    fmt = data.get("format")
    if fmt not in ("art-machine/1", "art-mlc/1"):
        raise MachineDataError(f"field 'format': must be 'art-machine/1' (a machine) or 'art-mlc/1' (an MLC model), got {fmt!r}", path=path)
    return fmt


def load_library(paths: Sequence[str | Path] | None = None) -> MachineLibrary:
    """The shipped machine files and MLC models, plus (or instead of) the files given.

    Parameters
    ----------
    paths : sequence of str or Path, optional
        Machine files (``art-machine/1``) and MLC model files (``art-mlc/1``), e.g. from
        ``art dose --machine FILE``. A machine file replaces the shipped machines of its energy
        (and a given file of the same name and energy given earlier); given machines of one energy
        with different names stay side by side (chosen by TreatmentMachineName). An MLC model
        replaces the models of the same leaf boundaries.

    Returns
    -------
    MachineLibrary
        The given machines first, then the shipped ones left.

    Raises
    ------
    MachineDataError
        An invalid file (named, with the field).
    """
    if not paths:
        return _default_library()
    user: list[Machine] = []
    mlcs = list(_default_library().mlc_models)
    for p in map(Path, paths):
        if _format_of(p) == "art-mlc/1":
            model = load_mlc(p)
            mlcs = [m for m in mlcs if not _same_boundaries(m.boundaries_mm, model.boundaries_mm)] + [model]
        else:
            m = load_machine(p)
            user = [u for u in user if not (u.name == m.name and _machine_key(u) == _machine_key(m))] + [m]
    keys = {_machine_key(m) for m in user}
    shipped = [m for m in _default_library().machines if _machine_key(m) not in keys]
    return MachineLibrary(tuple(user + shipped), tuple(mlcs))


_DEFAULT: list[MachineLibrary] = []


def _default_library() -> MachineLibrary:
    """The shipped library, read once per process."""
    if not _DEFAULT:
        machines = tuple(load_machine(DATA_DIR / n) for n in SHIPPED_MACHINES)
        _DEFAULT.append(MachineLibrary(machines, tuple(load_mlc(DATA_DIR / n) for n in SHIPPED_MLC_MODELS)))
    return _DEFAULT[0]


def resolve_machines(plan: Any, machine: Machine | Sequence[Machine] | MachineLibrary | None = None, *, path: str | Path | None = None) -> list[Machine]:
    """One checked Machine per beam of ``plan``.

    Parameters
    ----------
    plan : art.plan.Plan
    machine : Machine, sequence of Machine, MachineLibrary or None
        A Machine for every beam (energy, SAD and MLC checked); one Machine per beam (each checked);
        a library (:meth:`MachineLibrary.for_beam` with the plan's ``machine_name``); None: the shipped
        library (:func:`load_library`).
    path : str or Path, optional, keyword-only
        The plan file, named in the errors.

    Returns
    -------
    list of Machine
        In beam order.

    Raises
    ------
    InputError
        A beam the machine(s) cannot compute (naming the beam, the machine file and ``path``), or a
        ``machine`` of another type or length.
    """
    beams = list(plan.beams)
    if machine is None:
        machine = load_library()
    if isinstance(machine, MachineLibrary):
        return [machine.for_beam(b, machine_name=getattr(plan, "machine_name", ""), path=path) for b in beams]
    if isinstance(machine, Machine):
        machines = [machine] * len(beams)
    elif isinstance(machine, (list, tuple)):
        machines = list(machine)
        if len(machines) != len(beams) or not all(isinstance(m, Machine) for m in machines):
            raise InputError(f"machine: a list must hold one Machine per beam ({len(beams)}), got {len(machines)} items")
    else:
        raise InputError(f"machine must be a Machine, a list of Machines (one per beam) or a MachineLibrary, got {type(machine).__name__}")
    for b, m in zip(beams, machines):
        check_beam_machine(b, m, path=path)
    return machines
