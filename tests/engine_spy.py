"""A registry entry for the wiring tests: the pencil beam itself, every call recorded.

Registered under another engine's name (``monkeypatch.setitem(art.dose.engines.ENGINES, "ccc",
"tests.engine_spy:dose")``), it shows which doses of a pipeline went through the engine an option
named, while computing them with the real pencil beam.
"""

from __future__ import annotations

CALLS: list[dict] = []


def dose(ct, plan, machine=None, **kwargs):
    """:func:`art.dose.calc.dose`, the call's keywords appended to :data:`CALLS`."""
    from art.dose.calc import dose as pencil_beam

    CALLS.append(dict(kwargs))
    return pencil_beam(ct, plan, machine, **kwargs)
