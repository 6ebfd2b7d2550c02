"""art.node.tls: the SSLContext builders, checked by real TLS handshakes over a socket pair.

Certificates are made by the test with the openssl command line (tests/node/scp_support.py).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from art.errors import InputError
from art.node.tls import client_context, server_context
from tests.node.scp_support import make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, *, hostname: str = "127.0.0.1") -> tuple[object, object]:
    """TLS handshake between the two contexts over a socket pair; each side's result: the peer certificate or the exception."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    out: dict[str, object] = {}

    def serve() -> None:
        try:
            with server.wrap_socket(a, server_side=True) as s:
                out["server"] = s.getpeercert()
                s.sendall(b"ok")
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            out["server"] = exc

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client.wrap_socket(b, server_hostname=hostname) as c:
            c.recv(2)  # a refused client certificate shows up on the first read (TLS 1.3)
            out["client"] = c.getpeercert()
    except Exception as exc:  # noqa: BLE001
        out["client"] = exc
    t.join(10)
    return out["server"], out["client"]


def _cn(cert: object) -> str:
    assert isinstance(cert, dict), cert
    return dict(x[0] for x in cert["subject"])["commonName"]


def test_mutual_tls_handshake_verifies_both_certificates(certs):
    server = server_context(certificate=certs["server"], private_key=certs["server_key"], ca_certificates=certs["ca"],
                            require_client_certificate=True)  # fmt: skip
    client = client_context(ca_certificates=certs["ca"], certificate=certs["client"], private_key=certs["client_key"])
    assert server.minimum_version == client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_REQUIRED and client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    seen_by_server, seen_by_client = _handshake(server, client)
    assert _cn(seen_by_server) == "CBCT1" and _cn(seen_by_client) == "localhost"


def test_client_without_certificate_or_from_another_ca_is_refused(certs):
    server = server_context(certificate=certs["server"], private_key=certs["server_key"], ca_certificates=certs["ca"],
                            require_client_certificate=True)  # fmt: skip
    for client in (client_context(ca_certificates=certs["ca"]),
                   client_context(ca_certificates=certs["ca"], certificate=certs["stranger"], private_key=certs["stranger_key"])):  # fmt: skip
        seen_by_server, seen_by_client = _handshake(server, client)
        assert isinstance(seen_by_server, ssl.SSLError), seen_by_server
        assert isinstance(seen_by_client, (ssl.SSLError, ConnectionError, OSError)), seen_by_client
    # optional client certificates: a client without one is served
    lenient = server_context(certificate=certs["server"], private_key=certs["server_key"], ca_certificates=certs["ca"])
    assert lenient.verify_mode == ssl.CERT_OPTIONAL
    seen_by_server, seen_by_client = _handshake(lenient, client_context(ca_certificates=certs["ca"]))
    assert seen_by_server is None and _cn(seen_by_client) == "localhost"  # served, no client certificate


def test_client_refuses_a_server_it_cannot_verify(certs):
    server = server_context(certificate=certs["server"], private_key=certs["server_key"])
    assert server.verify_mode == ssl.CERT_NONE
    _, wrong_ca = _handshake(server, client_context(ca_certificates=certs["other_ca"]))
    assert isinstance(wrong_ca, ssl.SSLCertVerificationError) and "certificate verify failed" in str(wrong_ca)
    _, wrong_host = _handshake(server, client_context(ca_certificates=certs["ca"]), hostname="10.1.2.3")
    assert isinstance(wrong_host, ssl.SSLCertVerificationError) and "mismatch" in str(wrong_host).lower()
    _, unchecked = _handshake(server, client_context(ca_certificates=certs["ca"], check_hostname=False), hostname="10.1.2.3")
    assert _cn(unchecked) == "localhost"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_older_than_1_2_is_refused(certs):
    server = server_context(certificate=certs["server"], private_key=certs["server_key"])
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    try:
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")  # let the client really offer TLS 1.1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    seen_by_server, _ = _handshake(server, old)
    assert isinstance(seen_by_server, ssl.SSLError) and "UNSUPPORTED_PROTOCOL" in str(seen_by_server)


def test_missing_unreadable_or_non_pem_files_are_named(certs, tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(InputError, match="TLS certificate not found") as e:
        server_context(certificate=missing, private_key=certs["server_key"])
    assert e.value.path == missing
    der = tmp_path / "server.der"
    subprocess.run(["openssl", "x509", "-in", str(certs["server"]), "-outform", "DER", "-out", str(der)], check=True, timeout=30)
    with pytest.raises(InputError, match="TLS certificate is not a PEM file") as e:
        server_context(certificate=der, private_key=certs["server_key"])
    assert e.value.path == der
    with pytest.raises(InputError, match="TLS private key is not a PEM file") as e:
        server_context(certificate=certs["server"], private_key=certs["server"])  # a certificate given as the key
    assert e.value.path == certs["server"]
    with pytest.raises(InputError, match="TLS CA certificates not found") as e:
        client_context(ca_certificates=tmp_path / "ca-missing.pem")
    assert e.value.path == tmp_path / "ca-missing.pem"
    with pytest.raises(InputError, match="TLS certificate cannot be read|TLS certificate not found"):
        server_context(certificate=tmp_path, private_key=certs["server_key"])  # a folder


def test_wrong_key_encrypted_key_and_incomplete_options(certs, tmp_path):
    with pytest.raises(InputError, match="private key does not belong to the certificate") as e:
        server_context(certificate=certs["server"], private_key=certs["client_key"])
    assert e.value.path == certs["client_key"] and str(certs["server"]) in str(e.value)
    locked = tmp_path / "locked.key"
    subprocess.run(["openssl", "pkey", "-in", str(certs["server_key"]), "-aes256", "-passout", "pass:secret", "-out", str(locked)],
                   check=True, timeout=30)  # fmt: skip
    with pytest.raises(InputError, match="encrypted and the password is missing or wrong"):
        server_context(certificate=certs["server"], private_key=locked)  # never a terminal prompt
    with pytest.raises(InputError, match="encrypted and the password is missing or wrong"):
        server_context(certificate=certs["server"], private_key=locked, password="wrong")
    assert server_context(certificate=certs["server"], private_key=locked, password="secret").verify_mode == ssl.CERT_NONE
    with pytest.raises(InputError, match="require_client_certificate needs ca_certificates"):
        server_context(certificate=certs["server"], private_key=certs["server_key"], require_client_certificate=True)
    with pytest.raises(InputError, match="both certificate and private_key, or neither"):
        client_context(ca_certificates=certs["ca"], certificate=certs["client"])
