"""The dose engines a plan's dose can be computed by, by name.

Every engine has the signature of :func:`art.dose.calc.dose`::

    engine(ct, plan, machine=None, *, dose_grid_mm=3.0, structures=None, body=None, hu_table=None,
           patient_position=None, per_fraction=False, dose_grid=None, fluence_mm=1.25) -> Volume

(course dose in Gy, float32, on the dose grid). The registry holds import strings
(``"module:function"``), so naming an engine imports nothing until it is used: ``import art``
and the command line's ``--help`` stay light, and an engine whose module is not installed is
reported only when asked for.

========  ===============================================  =============================
name      engine                                           function
========  ===============================================  =============================
``pb``    pencil beam                                      :func:`art.dose.calc.dose`
``ccc``   collapsed-cone convolution/superposition         :func:`art.dose.ccc.dose`
========  ===============================================  =============================

The independent dose check of every plan uses, by default, the other algorithm than the one
that computed the evaluated dose (:func:`default_check_engine`).
"""

from __future__ import annotations

import importlib
from typing import Callable

from art.errors import InputError

__all__ = ["ENGINES", "ENGINE_LABELS", "DEFAULT_ENGINE", "engine_name", "get_engine", "engine_available", "default_check_engine",
           "other_engine", "MACHINE_CHECKS", "check_machine"]  # fmt: skip

#: Engine name → ``"module:function"`` (imported when first asked for).
ENGINES: dict[str, str] = {"pb": "art.dose.calc:dose", "ccc": "art.dose.ccc:dose"}

#: Engine name → ``"module:function"`` that validates a machine for it (raising MachineDataError naming the file),
#: so that a machine the engine cannot use is refused before any work (the pencil beam takes every valid machine).
MACHINE_CHECKS: dict[str, str] = {"ccc": "art.dose.ccc:ccc_model"}

#: Engine name → the algorithm in words (reports, summaries, help texts).
ENGINE_LABELS: dict[str, str] = {"pb": "pencil beam", "ccc": "collapsed-cone convolution/superposition"}

#: The engine of every final (evaluated, exported) dose unless another is asked for.
DEFAULT_ENGINE = "pb"


def engine_name(name: object, *, parameter: str = "engine") -> str:
    """The registry's name for ``name`` (case and surrounding blanks ignored); InputError listing the engines otherwise.

    Parameters
    ----------
    name : str
        e.g. ``"pb"`` or ``"CCC"``.
    parameter : str, keyword-only
        The option or argument named in the error (e.g. ``"--check-engine"``).

    Returns
    -------
    str
        A key of :data:`ENGINES`.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in ENGINES:
        listed = ", ".join(f"{k} ({ENGINE_LABELS[k]})" for k in ENGINES)
        raise InputError(f"{parameter}: unknown dose engine {name!r}; choose one of {listed}")
    return key


def _split(name: str) -> tuple[str, str]:
    module, _, function = ENGINES[name].partition(":")
    return module, function


def engine_available(name: str) -> bool:
    """Whether the engine's module is installed (imports it; False only when that module itself is missing)."""
    module, _ = _split(engine_name(name))
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            return False
        raise
    return True


def get_engine(name: str, *, parameter: str = "engine") -> Callable:
    """The dose function of engine ``name`` (see the module docstring for its signature).

    Parameters
    ----------
    name : str
        A key of :data:`ENGINES` (case ignored).
    parameter : str, keyword-only
        The option or argument named in an error.

    Returns
    -------
    callable
        ``engine(ct, plan, machine=None, *, dose_grid=…, structures=…, fluence_mm=…, …) -> Volume``.

    Raises
    ------
    InputError
        An unknown name (the message lists the engines), or an engine whose module is not
        installed in this copy of art.
    """
    key = engine_name(name, parameter=parameter)
    module, function = _split(key)
    if not engine_available(key):
        raise InputError(f"{parameter}: the {ENGINE_LABELS[key]} engine ({key!r}, module {module}) is not installed in this copy of art")
    return getattr(importlib.import_module(module), function)


def check_machine(name: str, machine: object) -> None:
    """Raise now if engine ``name`` cannot compute with ``machine`` (a Machine or a sequence of them).

    Raises
    ------
    MachineDataError
        From the engine's own check (:data:`MACHINE_CHECKS`), naming the machine file and the field,
        e.g. a machine without the collapsed cone's ``ccc`` section.
    """
    key = engine_name(name)
    if key not in MACHINE_CHECKS or machine is None:
        return
    module, function = MACHINE_CHECKS[key].split(":")
    validate = getattr(importlib.import_module(module), function)
    for m in machine if isinstance(machine, (list, tuple)) else [machine]:
        validate(m)


def other_engine(name: str) -> str:
    """The first engine of the registry that is not ``name``: the second algorithm that checks it."""
    key = engine_name(name)
    return next(k for k in ENGINES if k != key)


def default_check_engine(final_engine: str) -> str:
    """The engine of the independent check when none is asked for: the other algorithm than ``final_engine``.

    Where the other algorithm's module is not installed, the same algorithm (the check then says so:
    ``"same algorithm"`` in the summary and the report).
    """
    other = other_engine(final_engine)
    return other if engine_available(other) else engine_name(final_engine)
