"""The DICOM node's configuration: one TOML file (docs/deployment.md lists every key).

Example::

    [node]
    ae_title = "ART"
    host = "127.0.0.1"                 # the address to bind: loopback unless told otherwise
    port = 11112
    allowed_calling_aes = ["CBCT1"]    # associations from other calling AE titles are rejected
    allowed_hosts = []                 # optional: peer addresses accepted (empty: any)
    state_dir = "/var/lib/art"         # art-node.sqlite, incoming/, jobs/
    output_dir = "/srv/art/reports"    # each job's result folder (with report.html) lands here
    quiet_period_s = 30                # a series is complete this long after its last instance ...
    incomplete_timeout_s = 600         # ... or, with a known instance count not reached, fails after this

    [node.tls]                         # optional: DICOM over TLS
    certificate = "node.crt"
    private_key = "node.key"
    ca_certificates = "clinic-ca.pem"  # the CA that signs the senders' certificates
    require_client_certificate = true

    [dask]
    scheduler = ""                     # "tcp://HOST:8786": an existing cluster; empty: an embedded LocalCluster
    workers = 0                        # 0: sized to the machine
    threads_per_worker = 0
    retries = 2

    [replan]
    final_grid_mm = 2.5

    [[destination]]
    name = "tms"
    ae_title = "TMS"
    host = "10.0.0.5"
    port = 104
    calling_ae = "ART"
    attempts = 5
    backoff_s = 10

Relative paths are relative to the configuration file's folder. Every problem is an
:class:`~art.errors.InputError` naming the file and the key.
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from art.errors import InputError

__all__ = ["NodeConfig", "Destination", "TLSFiles", "load_config", "DEFAULT_PORT"]

DEFAULT_PORT = 11112


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for DICOM over TLS (paths absolute).

    As the node's server side: ``certificate`` + ``private_key`` present it to senders,
    ``ca_certificates`` verifies theirs (required when ``require_client_certificate``).
    As a client (a destination): ``ca_certificates`` verifies the destination, and
    ``certificate`` + ``private_key``, when given, identify the node to it.
    """

    certificate: Path | None = None
    private_key: Path | None = None
    ca_certificates: Path | None = None
    require_client_certificate: bool = False

    def server_context(self) -> Any:
        """``ssl.SSLContext`` for the node's Storage SCP."""
        from art.node.tls import server_context

        return server_context(certificate=self.certificate, private_key=self.private_key, ca_certificates=self.ca_certificates,
                              require_client_certificate=self.require_client_certificate)  # fmt: skip

    def client_context(self) -> Any:
        """``ssl.SSLContext`` for sending to a destination."""
        from art.node.tls import client_context

        return client_context(ca_certificates=self.ca_certificates, certificate=self.certificate, private_key=self.private_key)


@dataclass(frozen=True)
class Destination:
    """A DICOM peer the results are sent to by C-STORE (the TMS, a PACS)."""

    name: str
    ae_title: str
    host: str
    port: int
    calling_ae: str = "ART"
    attempts: int = 5
    backoff_s: float = 10.0
    tls_files: TLSFiles | None = None

    @property
    def tls(self) -> Any:
        """``ssl.SSLContext`` or None (built when asked, so a config can be read without the files)."""
        return None if self.tls_files is None else self.tls_files.client_context()


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``art serve`` needs; see the module docstring for the TOML keys."""

    state_dir: Path
    output_dir: Path
    allowed_calling_aes: tuple[str, ...]
    ae_title: str = "ART"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    allowed_hosts: tuple[str, ...] = ()
    quiet_period_s: float = 30.0
    incomplete_timeout_s: float = 600.0
    tls: TLSFiles | None = None
    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    retries: int = 2
    final_grid_mm: float | None = None
    destinations: tuple[Destination, ...] = field(default_factory=tuple)
    source: Path | None = None

    @property
    def database(self) -> Path:
        """The SQLite file holding the patient registry and the job states."""
        return self.state_dir / "art-node.sqlite"

    @property
    def incoming_dir(self) -> Path:
        return self.state_dir / "incoming"

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"


_KEYS = {
    "node": {"ae_title", "host", "port", "allowed_calling_aes", "allowed_hosts", "state_dir", "output_dir", "quiet_period_s",
             "incomplete_timeout_s", "tls"},
    "tls": {"certificate", "private_key", "ca_certificates", "require_client_certificate"},
    "dask": {"scheduler", "workers", "threads_per_worker", "retries"},
    "replan": {"final_grid_mm"},
    "destination": {"name", "ae_title", "host", "port", "calling_ae", "attempts", "backoff_s", "tls"},
}  # fmt: skip


class _Reader:
    """Typed access to one TOML table with errors naming the file and the key."""

    def __init__(self, path: Path, table: dict, where: str, known: set[str]):
        self.path, self.table, self.where = path, table, where
        unknown = sorted(set(table) - known)
        if unknown:
            self.fail(unknown[0], f"unknown key (known: {', '.join(sorted(known))})")

    def fail(self, key: str, problem: str) -> None:
        raise InputError(f"{self.where}.{key}: {problem}", path=self.path)

    def get(self, key: str, kind: type | tuple, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.table:
            if required:
                self.fail(key, "missing")
            return default
        value = self.table[key]
        if isinstance(value, bool) and kind is not bool:
            self.fail(key, f"expected {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            self.fail(key, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def strings(self, key: str, default: list | None = None, *, required: bool = False) -> list[str]:
        values = self.get(key, list, default, required=required)
        for v in values:
            if not isinstance(v, str):
                self.fail(key, f"expected strings, got {v!r}")
        return values

    def number(self, key: str, default: float, *, low: float, high: float = math.inf) -> float:
        value = float(self.get(key, (int, float), default))
        if not (low <= value <= high) or not math.isfinite(value):
            self.fail(key, f"must be between {low:g} and {high:g}, got {value:g}")
        return value

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        value = self.get(key, int, default)
        if not low <= value <= high:
            self.fail(key, f"must be between {low} and {high}, got {value}")
        return value

    def ae(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        return _ae(self, key, self.get(key, str, default, required=required))

    def path_of(self, key: str, default: str | None = None, *, required: bool = False) -> Path | None:
        value = self.get(key, str, default, required=required)
        if value is None:
            return None
        if not value.strip():
            self.fail(key, "empty path")
        p = Path(value).expanduser()
        return (p if p.is_absolute() else self.path.parent / p).absolute()


def _kind_name(kind: type | tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _ae(reader: _Reader, key: str, value: str) -> str:
    from art.io.network_association import check_ae_title

    try:
        return check_ae_title(value, "AE title")
    except InputError:
        reader.fail(key, f"not a valid AE title (1–16 printable ASCII characters, no backslash): {value!r}")


def _host(reader: _Reader, key: str, value: str) -> str:
    text = value.strip()
    if not text or any(c.isspace() for c in text):
        reader.fail(key, f"not a host name or address: {value!r}")
    return text


def _tls(reader: _Reader, key: str, *, server: bool) -> TLSFiles | None:
    table = reader.get(key, dict)
    if table is None:
        return None
    r = _Reader(reader.path, table, f"{reader.where}.{key}", _KEYS["tls"])
    files = TLSFiles(certificate=r.path_of("certificate", required=server), private_key=r.path_of("private_key", required=server),
                     ca_certificates=r.path_of("ca_certificates"),
                     require_client_certificate=bool(r.get("require_client_certificate", bool, False)))  # fmt: skip
    if (files.certificate is None) != (files.private_key is None):
        r.fail("private_key" if files.private_key is None else "certificate", "certificate and private_key go together")
    if files.require_client_certificate and files.ca_certificates is None:
        r.fail("ca_certificates", "needed to verify the senders' certificates (require_client_certificate = true)")
    return files


def _node(path: Path, data: dict) -> dict:
    r = _Reader(path, data.get("node", {}), "node", _KEYS["node"])
    aes = r.strings("allowed_calling_aes", required=True)
    if not aes:
        r.fail("allowed_calling_aes", "empty: name the imaging systems allowed to send (calling AE titles)")
    hosts = r.strings("allowed_hosts", [])
    for h in hosts:
        try:
            ipaddress.ip_address(h)
        except ValueError:
            r.fail("allowed_hosts", f"not an IP address: {h!r}")
    quiet = r.number("quiet_period_s", 30.0, low=0.0, high=3600.0)
    timeout = r.number("incomplete_timeout_s", 600.0, low=0.0, high=86400.0)
    if timeout < quiet:
        r.fail("incomplete_timeout_s", f"shorter than quiet_period_s ({timeout:g} < {quiet:g})")
    return {
        "ae_title": r.ae("ae_title", "ART"), "host": _host(r, "host", r.get("host", str, "127.0.0.1")),
        "port": r.integer("port", DEFAULT_PORT, low=0, high=65535),
        "allowed_calling_aes": tuple(_ae(r, "allowed_calling_aes", a) for a in aes),
        "allowed_hosts": tuple(hosts), "state_dir": r.path_of("state_dir", required=True), "output_dir": r.path_of("output_dir", required=True),
        "quiet_period_s": quiet, "incomplete_timeout_s": timeout, "tls": _tls(r, "tls", server=True),
    }  # fmt: skip


def _dask(path: Path, data: dict) -> dict:
    r = _Reader(path, data.get("dask", {}), "dask", _KEYS["dask"])
    scheduler = r.get("scheduler", str, "").strip() or None
    if scheduler is not None and "://" not in scheduler:
        r.fail("scheduler", f"expected an address like tcp://HOST:8786, got {scheduler!r}")
    workers = r.integer("workers", 0, low=0, high=1024)
    threads = r.integer("threads_per_worker", 0, low=0, high=1024)
    return {"scheduler": scheduler, "workers": workers or None, "threads_per_worker": threads or None,
            "retries": r.integer("retries", 2, low=0, high=20)}  # fmt: skip


def _destinations(path: Path, data: dict) -> tuple[Destination, ...]:
    rows = data.get("destination", [])
    if not isinstance(rows, list):
        raise InputError("destination: expected [[destination]] tables", path=path)
    out = []
    for i, row in enumerate(rows):
        r = _Reader(path, row, f"destination[{i}]", _KEYS["destination"])
        name = r.get("name", str, f"destination{i + 1}")
        out.append(Destination(
            name=name, ae_title=r.ae("ae_title", required=True), host=_host(r, "host", r.get("host", str, required=True)),
            port=r.integer("port", 104, low=1, high=65535), calling_ae=r.ae("calling_ae", "ART"),
            attempts=r.integer("attempts", 5, low=1, high=100), backoff_s=r.number("backoff_s", 10.0, low=0.0, high=3600.0),
            tls_files=_tls(r, "tls", server=False),
        ))  # fmt: skip
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise InputError(f"destination: two destinations are named {next(n for n in names if names.count(n) > 1)!r}", path=path)
    return tuple(out)


def load_config(path: str | Path) -> NodeConfig:
    """Read and check a node configuration file.

    Parameters
    ----------
    path : str or Path
        The TOML file (module docstring; docs/deployment.md).

    Returns
    -------
    NodeConfig

    Raises
    ------
    InputError
        The file is missing or not TOML, or a key is unknown, missing or invalid; the
        message names the file and the key (``node.port: must be between 0 and 65535``).
    """
    path = Path(path).absolute()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("configuration file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the configuration: {exc}", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", path=path) from None
    unknown = sorted(set(data) - {"node", "dask", "replan", "destination"})
    if unknown:
        raise InputError(f"unknown table [{unknown[0]}] (known: node, dask, replan, destination)", path=path)
    for table in ("node", "dask", "replan"):
        if table in data and not isinstance(data[table], dict):
            raise InputError(f"{table}: expected a table [{table}]", path=path)
    replan = _Reader(path, data.get("replan", {}), "replan", _KEYS["replan"])
    grid = replan.get("final_grid_mm", (int, float))
    if grid is not None:
        grid = replan.number("final_grid_mm", 2.5, low=0.5, high=5.0)
    return NodeConfig(**_node(path, data), **_dask(path, data), final_grid_mm=grid, destinations=_destinations(path, data), source=path)
