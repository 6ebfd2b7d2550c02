"""Count the calls of a real function while it keeps running (a monkeypatched pass-through)."""

from __future__ import annotations

from typing import Any


def count_calls(monkeypatch: Any, owner: Any, name: str) -> list[int]:
    """Replace ``owner.name`` by a wrapper that counts its calls into the returned one-element list."""
    calls = [0]
    real = getattr(owner, name)

    def counting(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(owner, name, counting)
    return calls
