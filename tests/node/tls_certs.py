"""Throw-away TLS certificates for the node's tests, made with the ``openssl`` command (about 0.3 s).

A test CA signs a server certificate (subject alternative names ``IP:127.0.0.1`` and
``DNS:localhost``) and a client certificate; a second, unrelated CA stands for "someone
else's". Tests skip, naming the package, when ``openssl`` is not installed (``.ci/run``
installs it).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Certificates:
    """PEM files in one folder."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    stranger_cert: Path
    stranger_key: Path

    def as_dict(self) -> dict[str, Path]:
        """The files by role: ``ca``, ``other_ca``, ``server``/``server_key``, ``client``/``client_key``, ``stranger``/``stranger_key``."""
        return {"ca": self.ca, "other_ca": self.other_ca, "server": self.server_cert, "server_key": self.server_key,
                "client": self.client_cert, "client_key": self.client_key, "stranger": self.stranger_cert, "stranger_key": self.stranger_key}  # fmt: skip

    def client_context(self, *, with_certificate: bool = True, trust: Path | None = None) -> ssl.SSLContext:
        """A client-side context trusting ``trust`` (default: the test CA), with the client certificate or without."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(trust or self.ca))
        if with_certificate:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> Certificates:
    """Write a test CA, a server and a client certificate it signs, another CA and a client certificate it signs ("stranger")."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make test certificates): apt-get install openssl")
    folder.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other_ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                 "-days", "2", "-subj", f"/CN=art test {ca}", cwd=folder)  # fmt: skip
    for name, ca, cn in (("server", "ca", "localhost"), ("client", "ca", "CBCT1"), ("stranger", "other_ca", "CBCT1")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=folder)  # fmt: skip
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)  # fmt: skip
    return Certificates(
        ca=folder / "ca.crt", server_cert=folder / "server.crt", server_key=folder / "server.key",
        client_cert=folder / "client.crt", client_key=folder / "client.key", other_ca=folder / "other_ca.crt",
        stranger_cert=folder / "stranger.crt", stranger_key=folder / "stranger.key",
    )  # fmt: skip
