"""Named, timed pipeline stages with progress on stderr (rich).

Every long workflow (``art plan``, ``art replan``, ``art demo``) runs as a
sequence of stages; :class:`Stages` times each one (wall seconds, recorded in
``summary.json``) and shows its name on the terminal while it runs.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator


class Stages:
    """Time and announce the stages of a workflow.

    Parameters
    ----------
    show : bool, keyword-only
        Show progress on stderr (default True). Off in tests and library use.
    prefix : str, keyword-only
        Prepended to stage names (e.g. ``"reference: "``).

    Attributes
    ----------
    timings : dict of str to float
        Wall-clock seconds per finished stage, in order.
    """

    def __init__(self, *, show: bool = True, prefix: str = "") -> None:
        self.show = bool(show)
        self.prefix = prefix
        self.timings: dict[str, float] = {}
        self._console = None

    def _out(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=sys.stderr, highlight=False)
        return self._console

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run a stage: ``with stages.stage("dose influence"): ...``."""
        label = f"{self.prefix}{name}"
        t = time.perf_counter()
        status = None
        if self.show:
            status = self._out().status(f"[bold]{label}[/bold] …", spinner="dots")
            status.__enter__()
        try:
            yield
        finally:
            dt = time.perf_counter() - t
            if status is not None:
                status.__exit__(None, None, None)
            self.timings[label] = round(dt, 3)
        if self.show:
            self._out().print(f"  [green]✓[/green] {label} ({dt:.1f} s)")

    def note(self, message: str) -> None:
        """Print a line of progress (stderr) when shown."""
        if self.show:
            self._out().print(f"    {message}")

    def child(self, prefix: str) -> "Stages":
        """A tracker sharing this one's timings with names prefixed by ``prefix``."""
        c = Stages(show=self.show, prefix=self.prefix + prefix)
        c.timings = self.timings
        c._console = self._console
        return c

    @property
    def total_s(self) -> float:
        """Sum of the stage times, seconds."""
        return round(sum(self.timings.values()), 3)
