"""The node's integration tests: a configuration file, a node running in a thread, waiting for job states."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pydicom


def write_config(root: Path, *, orthanc: Any = None, quiet_period_s: float = 1.0, incomplete_timeout_s: float = 3.0,
                 workers: int = 1, threads: int = 1, extra: str = "") -> Path:  # fmt: skip
    """A node configuration under ``root`` (port 0: a free port), sending to ``orthanc`` when given."""
    text = f"""
[node]
ae_title = "ART"
port = 0
allowed_calling_aes = ["CBCT1"]
state_dir = "state"
output_dir = "results"
quiet_period_s = {quiet_period_s}
incomplete_timeout_s = {incomplete_timeout_s}

[dask]
workers = {workers}
threads_per_worker = {threads}

[replan]
final_grid_mm = 4.0
{extra}
"""
    if orthanc is not None:
        text += f'\n[[destination]]\nname = "pacs"\nae_title = "{orthanc.ae_title}"\nhost = "{orthanc.host}"\nport = {orthanc.port}\nattempts = 3\nbackoff_s = 1\n'
    path = root / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def running_node(config_path: Path, *, poll_s: float = 0.2) -> Iterator[Any]:
    """A started :class:`art.node.serve.Node` whose rounds run in a background thread; stopped on exit."""
    from art.node.config import load_config
    from art.node.serve import Node

    node = Node(load_config(config_path)).start()
    stop, errors = threading.Event(), []

    def loop() -> None:
        while not stop.is_set():
            try:
                node.step()
            except Exception as exc:  # pragma: no cover - surfaced by the test
                errors.append(exc)
                return
            stop.wait(poll_s)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        stop.set()
        thread.join(timeout=30)
        node.stop()
    assert not errors, f"the node's loop raised: {errors[0]!r}"


def wait_for(condition: Callable[[], Any], *, timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout_s} s: {what} (last: {value!r})")
        time.sleep(interval_s)


def jobs_of(node: Any, series_uid: str) -> list[dict]:
    return [j for j in node.store.jobs() if j["series_uid"] == series_uid]


def series_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(iter(sorted(folder.iterdir()))), stop_before_pixels=True).SeriesInstanceUID)


def rewritten_series(src: Path, dst: Path, **attributes: Any) -> Path:
    """A copy of a series with attributes changed in every file (new series and SOP instance UIDs)."""
    from pydicom.uid import generate_uid

    dst.mkdir(parents=True)
    series = generate_uid()
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for k, v in attributes.items():
            setattr(ds, k, v)
        ds.save_as(dst / f.name)
    return dst


def copy_series(src: Path, dst: Path, n: int | None = None) -> Path:
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir())[:n]:
        shutil.copy2(f, dst / f.name)
    return dst
