"""The house rules (issue 14), read from the source itself with :mod:`ast`.

* Imports run downward only: a module of ``art`` imports only its own subpackage
  and subpackages of a lower layer (``LAYERS``; docs/architecture.md draws them).
  Every ``import``/``from … import`` counts, also those inside functions.
* ``art`` never imports the command line (``art_cli``) and imports the phantoms
  only where a job needs a digital patient (``PHANTOM_USERS``).
* No file in ``art/``, ``cli/``, ``phantoms/`` is longer than ``MAX_FILE_LINES``.
* No function is longer than ``MAX_FUNCTION_LINES`` (docstring included) unless
  it is listed in ``KEPT_LONG`` with the reason.

Run alone: ``.venv/bin/python -m pytest tests/test_architecture.py -q``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: art's subpackages and top-level modules by layer, lowest first. A module may import
#: its own entry and the entries of lower layers, never a sibling of its own layer or above
#: (the core's small modules, layer 0, may use each other).
LAYERS: list[set[str]] = [
    # core data model and utilities
    {"errors", "_version", "backend", "blas", "threads", "content_cache", "geometry", "structures", "plan", "outputs", "provenance", "progress", "privacy", "summary"},
    # the clinical protocol (a domain concept used by every stage)
    {"protocol"},
    # stage packages that need only the core and the protocol
    {"io", "dose", "registration", "contouring", "evaluate"},
    # stage packages built on a lower stage: optimise and report on evaluated dose, sequence on the dose engine's model
    {"optimize", "delivery", "report"},
    # the evaluated dose: the final dose on the export grid, its normalisation, goals and correction stage
    {"final_dose"},
    # the pipeline: the stages in order, and writing/recalculating/checking their results (incl. the independent dose check)
    {"workflow", "reference", "results", "recalculate", "check", "independent_check"},
    # the daily adaptation (uses the planning pipeline), and the course: each fraction's dose accumulated on the planning CT
    {"adapt", "course"},
    # jobs: what a command does, with inputs, outputs, provenance and the report
    {"jobs"},
    # the DICOM node and batch engine: receives series, queues jobs on Dask, sends results
    {"node"},
]

#: The only modules of art that may import the digital phantoms (lazily): the demo job
#: and the contouring training set.
PHANTOM_USERS = {"art.jobs", "art.contouring.dataset"}

MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80

#: Functions kept longer than MAX_FUNCTION_LINES, with the reason (qualified name → why).
KEPT_LONG: dict[str, str] = {}


def _layer_of(entry: str) -> int:
    for i, layer in enumerate(LAYERS):
        if entry in layer:
            return i
    raise AssertionError(f"art.{entry} is in no layer of tests/test_architecture.py: add it to LAYERS (and to docs/architecture.md)")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names of every module ``path`` imports, with the line."""
    mod = _module_name(path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, node.lineno))
            # ``from art import dose`` imports the subpackage art.dose
            if name == "art":
                out += [(f"art.{a.name}", node.lineno) for a in node.names]
    return out


def _py_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (REPO / f).rglob("*.py"))


def test_layers_cover_every_entry_once():
    entries = {p.stem if p.parent == REPO / "art" else p.relative_to(REPO / "art").parts[0] for p in _py_files("art")}
    entries.discard("__init__")
    listed = [e for layer in LAYERS for e in layer]
    assert len(listed) == len(set(listed)), "an entry is in two layers"
    assert entries == set(listed), f"missing from LAYERS: {sorted(entries - set(listed))}; gone from art: {sorted(set(listed) - entries)}"


def test_art_imports_run_downward_only():
    bad = []
    for path in _py_files("art"):
        mod = _module_name(path)
        own = mod.split(".")[1] if mod.count(".") else None
        for name, line in _imports(path):
            where = f"{path.relative_to(REPO)}:{line} imports {name}"
            if name.split(".")[0] == "art_cli":
                bad.append(f"{where} (the library never imports the command line)")
            elif name.split(".")[0] == "art_phantoms" and mod not in PHANTOM_USERS:
                bad.append(f"{where} (only {sorted(PHANTOM_USERS)} may use the phantoms)")
            elif name.startswith("art.") and own is not None:
                target = name.split(".")[1]
                core_to_core = _layer_of(target) == _layer_of(own) == 0  # the core's small modules use each other
                if target != own and _layer_of(target) >= _layer_of(own) and not core_to_core:
                    bad.append(f"{where} (layer {_layer_of(own)} → layer {_layer_of(target)}: upward or sideways)")
            elif name.startswith("art.") and own is None:  # art/__init__.py: keep `import art` light
                if _layer_of(name.split(".")[1]) > 0:
                    bad.append(f"{where} (`import art` loads the core only)")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The import reader finds relative, lazy and ``from art import x`` imports (else the rule above proves nothing)."""
    fake = REPO / "art" / "evaluate" / "_probe_for_test.py"
    src = "def f():\n    from art.optimize import fmo\n    from ..jobs import demo_job\n    from art import workflow\n"
    fake.write_text(src, encoding="utf-8")
    try:
        names = [n for n, _ in _imports(fake)]
    finally:
        fake.unlink()
    assert names == ["art.optimize", "art.jobs", "art", "art.workflow"]
    assert _layer_of("optimize") > _layer_of("evaluate") and _layer_of("jobs") > _layer_of("evaluate")


def test_protocol_imports_neither_optimize_nor_evaluate():
    for path in _py_files("art/protocol"):
        for name, line in _imports(path):
            assert not name.startswith(("art.optimize", "art.evaluate", "art.report")), f"{path.name}:{line} imports {name}"
    for path in _py_files("art/evaluate"):
        for name, line in _imports(path):
            assert not name.startswith("art.optimize"), f"{path.name}:{line} imports {name}"


def test_cli_and_phantoms_stay_outside_the_library():
    for path in _py_files("phantoms"):
        for name, line in _imports(path):
            assert name.split(".")[0] != "art_cli", f"{path.relative_to(REPO)}:{line} imports the command line"


@pytest.mark.parametrize("folder", ["art", "cli", "phantoms"])
def test_no_file_over_the_limit(folder):
    long = {str(p.relative_to(REPO)): n for p in _py_files(folder) if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines (split them along their seams): {long}"


def _long_functions(folder: str) -> dict[str, int]:
    out = {}
    for path in _py_files(folder):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        stack: list[tuple[ast.AST, str]] = [(tree, _module_name(path))]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}.{child.name}"
                    if not isinstance(child, ast.ClassDef) and (n := child.end_lineno - child.lineno + 1) > MAX_FUNCTION_LINES:
                        out[name] = n
                    stack.append((child, name))
    return out


@pytest.mark.parametrize("folder", ["art", "cli", "phantoms"])
def test_no_function_over_the_limit_unless_kept_with_a_reason(folder):
    long = _long_functions(folder)
    unlisted = {k: v for k, v in long.items() if k not in KEPT_LONG}
    assert not unlisted, f"functions over {MAX_FUNCTION_LINES} lines (split into named steps, or list in KEPT_LONG with the reason): {unlisted}"


def test_kept_long_list_is_current():
    long = {k for f in ("art", "cli", "phantoms") for k in _long_functions(f)}
    stale = sorted(set(KEPT_LONG) - long)
    assert not stale, f"KEPT_LONG names functions that are no longer long (or gone): {stale}"


def test_every_package_is_installed():
    """``pip install .`` (not only editable) installs every package folder: each is listed in pyproject.toml."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    names = {"art": "art", "cli": "art_cli", "phantoms": "art_phantoms"}
    found = set()
    for folder, name in names.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"not listed in pyproject.toml: {sorted(found - listed)}; listed but gone: {sorted(listed - found)}"
