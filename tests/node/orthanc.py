"""A real Orthanc PACS on loopback for the DICOM node's tests: start, query over REST, stop.

:class:`OrthancServer` runs the Debian package's ``Orthanc`` binary (``/usr/sbin/Orthanc``,
or ``Orthanc`` on ``PATH``) with a JSON configuration of its own in a temporary folder:

- storage and SQLite index in that folder, no plugins (``"Plugins": []``: the package's
  ``/etc/orthanc/orthanc.json`` loads every plugin in ``/usr/share/orthanc/plugins/``, but
  that file is read only when passed on the command line, and it never is here);
- DICOM and HTTP on free loopback ports (``RemoteAccessAllowed`` false), the called AE title
  checked (``DicomCheckCalledAet``), jobs neither saved nor restored (``--no-jobs``);
- ``TCP_NODELAY=1`` in its environment (dcmtk, its DICOM stack, then disables Nagle's
  algorithm: about 20 ms per C-STORE instead of 65 ms);
- REST authentication off, or on with one user (``user=("name", "password")``);
- DICOM TLS (Orthanc ≥ 1.9: ``DicomTlsEnabled`` ...) with ``tls=OrthancTLS(...)``.

Start-up (until ``GET /system`` answers) takes about 0.1 s; a graceful stop about 3 s
(Orthanc stops its HTTP and DICOM servers in turn). Tests skip, naming the missing
package, only when the binary is absent (``.ci/run`` installs ``orthanc``).

Use it as a context manager, or through :func:`orthanc_fixture` (a pytest fixture
factory, e.g. one server per module)::

    with OrthancServer(tmp_path) as pacs:
        send_folder(folder, host=pacs.host, port=pacs.port, ae_title=pacs.ae_title)
        assert pacs.count() == n
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

DEBIAN_BINARY = "/usr/sbin/Orthanc"


def orthanc_binary() -> str | None:
    """The Orthanc executable: ``Orthanc`` on ``PATH``, else the Debian package's, else None."""
    found = shutil.which("Orthanc")
    if found:
        return found
    return DEBIAN_BINARY if os.access(DEBIAN_BINARY, os.X_OK) else None


def require_orthanc() -> str:
    """The Orthanc executable, or skip the test saying how to install it."""
    exe = orthanc_binary()
    if exe is None:
        pytest.skip("Orthanc is not installed (no /usr/sbin/Orthanc, no Orthanc on PATH): apt-get install orthanc")
    return exe


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's pick; another process could take it before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class OrthancTLS:
    """DICOM TLS for Orthanc's DICOM port (PEM files).

    Attributes
    ----------
    certificate, private_key : Path
        Orthanc's certificate and its key (``DicomTlsCertificate``, ``DicomTlsPrivateKey``).
    trusted_certificates : Path
        The certificates Orthanc trusts for its peers (``DicomTlsTrustedCertificates``; a CA).
    remote_certificate_required : bool
        Refuse peers without a trusted client certificate (``DicomTlsRemoteCertificateRequired``).
    """

    certificate: Path
    private_key: Path
    trusted_certificates: Path
    remote_certificate_required: bool = True


class OrthancServer:
    """An Orthanc process on loopback with its own configuration, storage and log in ``workdir``.

    Parameters
    ----------
    workdir : Path
        Folder for ``orthanc.json``, ``storage/`` and ``orthanc.log`` (created).
    ae_title : str, keyword-only
        Orthanc's AE title; associations calling another title are rejected.
    dicom_port, http_port : int, optional, keyword-only
        Ports to listen on (127.0.0.1); free ports are picked when not given.
    tls : OrthancTLS, optional, keyword-only
        Serve DICOM over TLS only.
    user : (str, str), optional, keyword-only
        Turn REST authentication on with this user and password (the harness uses them).
    config : dict, optional, keyword-only
        More configuration options (e.g. ``DicomModalities``), applied last.
    start_timeout_s : float, keyword-only
        How long to wait for the REST API to answer.
    """

    host = "127.0.0.1"

    def __init__(self, workdir: Path, *, ae_title: str = "ORTHANC", dicom_port: int | None = None, http_port: int | None = None,
                 tls: OrthancTLS | None = None, user: tuple[str, str] | None = None, config: dict | None = None,
                 start_timeout_s: float = 20.0):  # fmt: skip
        self.workdir = Path(workdir)
        self.ae_title = ae_title
        self.port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.tls = tls
        self.user = user
        self.start_timeout_s = start_timeout_s
        self._extra = dict(config or {})
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self._study_uids: dict[str, str] = {}

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def log(self) -> Path:
        return self.workdir / "orthanc.log"

    def configuration(self) -> dict:
        """The JSON configuration Orthanc is started with."""
        storage = self.workdir / "storage"
        cfg: dict[str, Any] = {
            "Name": "art-test-orthanc",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [],
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.port,
            "DicomCheckCalledAet": True,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": self.user is not None,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
            "DicomThreadsCount": 4,
            "LuaScripts": [],
        }
        if self.user is not None:
            cfg["RegisteredUsers"] = {self.user[0]: self.user[1]}
        if self.tls is not None:
            cfg.update({
                "DicomTlsEnabled": True,
                "DicomTlsCertificate": str(self.tls.certificate),
                "DicomTlsPrivateKey": str(self.tls.private_key),
                "DicomTlsTrustedCertificates": str(self.tls.trusted_certificates),
                "DicomTlsRemoteCertificateRequired": bool(self.tls.remote_certificate_required),
            })  # fmt: skip
        cfg.update(self._extra)
        return cfg

    def start(self) -> OrthancServer:
        """Write the configuration, start Orthanc and wait until its REST API answers; returns self."""
        exe = require_orthanc()
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("Orthanc is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "orthanc.json"
        cfg_path.write_text(json.dumps(self.configuration(), indent=2))
        t0 = time.monotonic()
        # TCP_NODELAY=1: dcmtk (Orthanc's DICOM server) then disables Nagle's algorithm; without it every
        # C-STORE response waits for our delayed ACK (45 instances: 2.9 s instead of 0.85 s)
        env = dict(os.environ, TCP_NODELAY="1")
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([exe, "--no-jobs", str(cfg_path)], stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir, env=env)  # fmt: skip
        try:
            self._wait_started(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_started(self, t0: float) -> None:
        while time.monotonic() - t0 < self.start_timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with code {self.proc.returncode} at start-up:\n{self.log_tail()}")
            try:
                system = self.rest("/system")
            except (OSError, urllib.error.URLError):
                time.sleep(0.02)
                continue
            if int(system.get("DicomPort", -1)) != self.port:
                raise RuntimeError(f"another Orthanc answers on HTTP port {self.http_port} (DICOM port {system.get('DicomPort')})")
            return
        raise RuntimeError(f"Orthanc's REST API did not answer within {self.start_timeout_s} s:\n{self.log_tail()}")

    def stop(self, *, timeout_s: float = 10.0, graceful: bool = True) -> None:
        """Stop Orthanc: SIGTERM, wait up to ``timeout_s`` (a graceful stop takes about 3 s), then SIGKILL.

        ``graceful=False``: SIGKILL at once (its storage is thrown away anyway). Idempotent.
        """
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if graceful:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n_chars: int = 3000) -> str:
        """The end of Orthanc's log (its stdout and stderr)."""
        try:
            return self.log.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no log)"

    def destination(self, *, calling_ae: str = "ART", tls: Any = None) -> SimpleNamespace:
        """This server as a send destination (``ae_title``, ``host``, ``port``, ``calling_ae``, ``tls``)."""
        return SimpleNamespace(name="orthanc", ae_title=self.ae_title, host=self.host, port=self.port, calling_ae=calling_ae, tls=tls)

    # -- REST -----------------------------------------------------------------------------

    def _request(self, path: str, *, method: str = "GET", data: bytes | None = None, timeout_s: float = 10.0) -> bytes:
        req = urllib.request.Request(self.url + path, method=method, data=data)
        if self.user is not None:
            token = base64.b64encode(f"{self.user[0]}:{self.user[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=timeout_s) as rsp:
            return rsp.read()

    def rest(self, path: str, *, method: str = "GET", data: bytes | None = None) -> Any:
        """A REST call answered with JSON (``path`` from the root, e.g. ``/system``)."""
        body = self._request(path, method=method, data=data)
        return json.loads(body) if body else None

    def instances(self) -> list[dict]:
        """Every stored instance: ``ID`` (Orthanc's), ``SOPClassUID``, ``SOPInstanceUID``, ``Modality``,
        ``SeriesInstanceUID``, ``StudyInstanceUID``, sorted by SOP Instance UID."""
        series = {s["ID"]: s for s in self.rest("/series?expand")}
        out = []
        for inst in self.rest("/instances?expand"):
            s = series.get(inst["ParentSeries"], {})
            tags = s.get("MainDicomTags", {})
            sop_class = self._request(f"/instances/{inst['ID']}/metadata/SopClassUid").decode().strip()
            out.append({
                "ID": inst["ID"],
                "SOPClassUID": sop_class,
                "SOPInstanceUID": inst["MainDicomTags"].get("SOPInstanceUID", ""),
                "Modality": tags.get("Modality", ""),
                "SeriesInstanceUID": tags.get("SeriesInstanceUID", ""),
                "StudyInstanceUID": self._study_uid(s.get("ParentStudy")),
            })  # fmt: skip
        return sorted(out, key=lambda d: d["SOPInstanceUID"])

    def _study_uid(self, study_id: str | None) -> str:
        if not study_id:
            return ""
        if study_id not in self._study_uids:
            tags = self.rest(f"/studies/{study_id}").get("MainDicomTags", {})
            self._study_uids[study_id] = tags.get("StudyInstanceUID", "")
        return self._study_uids[study_id]

    def count(self) -> int:
        """The number of stored instances (``GET /statistics``)."""
        return int(self.rest("/statistics")["CountInstances"])

    def find(self, *, modality: str | None = None, **equal: str) -> list[dict]:
        """The stored instances (as :meth:`instances`) of this ``modality`` and with these field values."""
        want = dict(equal, **({"Modality": modality} if modality is not None else {}))
        return [d for d in self.instances() if all(d.get(k) == v for k, v in want.items())]

    def orthanc_id(self, sop_instance_uid: str) -> str:
        """Orthanc's identifier of the instance with this SOP Instance UID (KeyError if none)."""
        hits = self.rest("/tools/lookup", method="POST", data=sop_instance_uid.encode())
        for hit in hits or []:
            if hit.get("Type") == "Instance":
                return hit["ID"]
        raise KeyError(f"no instance {sop_instance_uid} in Orthanc")

    def file(self, sop_instance_uid: str) -> bytes:
        """The stored DICOM file (PS3.10 bytes) of the instance with this SOP Instance UID."""
        return self._request(f"/instances/{self.orthanc_id(sop_instance_uid)}/file")

    def wait_for(self, predicate: Callable[[OrthancServer], Any], timeout_s: float = 10.0, *, interval_s: float = 0.1) -> Any:
        """Call ``predicate(self)`` until it returns something true; return that, or raise TimeoutError."""
        t_end = time.monotonic() + timeout_s
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() >= t_end:
                raise TimeoutError(f"Orthanc: condition not met within {timeout_s} s (last value {value!r})")
            time.sleep(interval_s)


def orthanc_fixture(*, scope: str = "module", name: str | None = None, graceful_stop: bool = True, **options: Any) -> Any:
    """A pytest fixture giving a started :class:`OrthancServer` (``options``: its keywords), stopped after ``scope``.

    Example: ``pacs = orthanc_fixture(scope="module")`` at module level of a test file.
    ``graceful_stop=False`` kills it at the end (saves the 3 s of a graceful stop).
    """

    @pytest.fixture(scope=scope, name=name)
    def _orthanc(tmp_path_factory: pytest.TempPathFactory) -> Any:
        server = OrthancServer(tmp_path_factory.mktemp("orthanc"), **options)
        server.start()
        try:
            yield server
        finally:
            server.stop(graceful=graceful_stop)

    return _orthanc
