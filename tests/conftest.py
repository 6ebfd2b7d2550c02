"""Shared test fixtures."""

import numpy as np
import pytest

from art.geometry import Grid


def rotation_direction(angle_deg: float = 30.0, axis: str = "z") -> tuple[float, ...]:
    """A proper rotation matrix (row-major, 9 numbers) about one LPS axis."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "z":
        m = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    elif axis == "x":
        m = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    else:
        m = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return tuple(m.reshape(-1))


@pytest.fixture
def small_grid() -> Grid:
    return Grid(shape=(10, 20, 30), spacing=(3.0, 2.0, 1.5), origin=(-20.0, -15.0, 40.0))


@pytest.fixture
def rotated_grid() -> Grid:
    d = np.array(rotation_direction(25.0, "z")).reshape(3, 3) @ np.array(rotation_direction(10.0, "x")).reshape(3, 3)
    return Grid(shape=(8, 16, 12), spacing=(2.5, 1.25, 2.0), origin=(5.0, -30.0, 12.5), direction=tuple(d.reshape(-1)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print how many bad-input corpus cases ran (issue 9), also under xdist."""
    counts = {}
    for outcome in ("passed", "failed", "skipped"):
        for rep in terminalreporter.stats.get(outcome, []):
            if getattr(rep, "when", "call") in ("call", "setup") and "test_bad_input_corpus" in getattr(rep, "nodeid", ""):
                if outcome == "skipped" or rep.when == "call":
                    counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        total = sum(counts.values())
        detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        terminalreporter.write_line(f"bad-input corpus: {total} cases tried ({detail})")
