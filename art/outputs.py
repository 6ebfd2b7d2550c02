"""Atomic result folders: results appear completely or not at all.

Every command writes into a temporary sibling folder of ``--out`` and moves it
into place only when everything succeeded. A failure or an interruption
(SIGINT, SIGTERM) removes the temporary folder and leaves any previous result
in ``--out`` untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterator

from art.errors import InputError


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", path=out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the parent folder: {exc.strerror}", path=parent) from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError("permission denied: cannot write here", path=parent)


def check_output_dir(out: str | Path) -> Path:
    """Check up front that a result folder can be written (before long work starts).

    Raises
    ------
    InputError
        ``out`` exists and is not a folder, or its parent cannot be created or written.
    """
    out = Path(out).absolute()
    _check_target(out)
    return out


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so clean-up runs (main thread only)."""
    try:
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):  # pragma: no cover - exercised by the interruption test
            raise KeyboardInterrupt("SIGTERM")

        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the result folders are swapped; deliver them afterwards.

    Python runs signal handlers in the main thread only, so replacing the handlers
    (rather than masking the signal in one thread) covers signals delivered to any thread.
    """
    pending: list[int] = []

    def record(signum, frame):  # pragma: no cover - exercised by the interruption test
        pending.append(signum)

    try:
        previous = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: no Python handler can interrupt this thread
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)


@contextlib.contextmanager
def atomic_output_dir(out: str | Path) -> Iterator[Path]:
    """Write a result folder atomically.

    Parameters
    ----------
    out : str or Path
        The final folder. If it exists, it is replaced only once the new
        result is complete.

    Yields
    ------
    Path
        A temporary folder on the same file system to write into.
    """
    out = Path(out).absolute()
    _check_target(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise InputError(f"cannot create a temporary folder: {exc.strerror}", path=out.parent) from exc
    try:
        with _sigterm_as_interrupt():
            yield tmp
        with _signals_deferred():  # an interrupt between the two moves would lose both results
            old = None
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old / "previous")
            try:
                os.replace(tmp, out)
            except OSError:
                if old is not None:  # put the previous result back
                    os.replace(old / "previous", out)
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
