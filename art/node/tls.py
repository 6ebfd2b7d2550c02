"""TLS for the node's DICOM associations: :class:`ssl.SSLContext` builders (PS3.15 B.9, the TLS secure transport profile).

:func:`server_context` is what :class:`art.node.scp.StorageSCP` accepts associations
with (its certificate and key, and optionally the CA certificates that sign the
clients' certificates, required when ``require_client_certificate``);
:func:`client_context` is what results are sent with (the CA certificates that sign
the destination's certificate, and optionally our own certificate for a destination
that asks for one). Both refuse protocols older than TLS 1.2.

Every file is checked before OpenSSL sees it: a missing, unreadable or non-PEM file,
or a private key that does not belong to its certificate, is an
:class:`~art.errors.InputError` naming the file. An encrypted private key needs its
``password``: OpenSSL is never left to prompt on the terminal.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from art.errors import InputError

__all__ = ["server_context", "client_context"]

_CERTIFICATE = (re.compile(r"-----BEGIN (?:TRUSTED |X509 )?CERTIFICATE-----"), "-----BEGIN CERTIFICATE-----")
_KEY = (re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"), "-----BEGIN PRIVATE KEY-----")


def _pem_file(path: str | Path | None, what: str, block: tuple[re.Pattern, str]) -> Path:
    """``path`` as a Path after checking it is a readable PEM file holding a ``block`` (pattern, name)."""
    if path is None or (isinstance(path, str) and not path.strip()):
        raise InputError(f"{what}: no file given")
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} not found (or not a file)", path=p)
    try:
        text = p.read_bytes().decode("ascii", errors="replace")
    except OSError as exc:
        raise InputError(f"{what} cannot be read: {exc.strerror or exc}", path=p) from exc
    if not block[0].search(text):
        raise InputError(f"{what} is not a PEM file (no '{block[1]}' block; a DER file must be converted to PEM)", path=p)
    return p


def _new_context(protocol: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _encrypted(private_key: Path) -> bool:
    """Whether a PEM private key file is encrypted (PKCS#8 or the older OpenSSL header)."""
    try:
        text = private_key.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return "-----BEGIN ENCRYPTED PRIVATE KEY-----" in text or "Proc-Type: 4,ENCRYPTED" in text


def _load_chain(ctx: ssl.SSLContext, certificate: Path, private_key: Path, password: str | None) -> None:
    """Load our certificate and key; refuse a wrong key or a missing password with the files' names."""

    def _password() -> str:
        return password or ""  # an encrypted key without a password fails here instead of prompting

    try:
        ctx.load_cert_chain(str(certificate), str(private_key), password=_password)
    except ssl.SSLError as exc:
        why = str(getattr(exc, "reason", "") or exc)
        if "KEY_VALUES_MISMATCH" in why.upper():
            problem = "the private key does not belong to the certificate"
        elif _encrypted(private_key):
            problem = "the private key is encrypted and the password is missing or wrong"
        else:
            problem = f"OpenSSL refused the certificate or the private key ({why})"
        raise InputError(f"{problem} (certificate {certificate}, private key {private_key})", path=private_key) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the certificate and private key (certificate {certificate}): {exc}", path=private_key) from exc


def _load_ca(ctx: ssl.SSLContext, ca_certificates: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=str(ca_certificates))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise InputError(f"CA certificates cannot be loaded: {exc}", path=ca_certificates) from exc


def server_context(
    *,
    certificate: str | Path,
    private_key: str | Path,
    ca_certificates: str | Path | None = None,
    require_client_certificate: bool = False,
    password: str | None = None,
) -> ssl.SSLContext:
    """The TLS context of the node's Storage SCP.

    Parameters
    ----------
    certificate : str or Path, keyword-only
        Our certificate (PEM; may hold the intermediate certificates after it).
    private_key : str or Path, keyword-only
        Its private key (PEM).
    ca_certificates : str or Path, optional, keyword-only
        CA certificates (PEM) that sign the clients' certificates. When given, a client
        certificate that is presented is verified against them.
    require_client_certificate : bool, keyword-only
        Refuse clients without a certificate signed by ``ca_certificates`` (mutual TLS;
        ``ca_certificates`` is then required).
    password : str, optional, keyword-only
        Password of an encrypted ``private_key``.

    Returns
    -------
    ssl.SSLContext
        ``PROTOCOL_TLS_SERVER``, TLS 1.2 or newer.

    Raises
    ------
    InputError
        A file missing, unreadable or not PEM, a key that does not match the certificate,
        or ``require_client_certificate`` without ``ca_certificates``; names the file.
    """
    cert = _pem_file(certificate, "TLS certificate", _CERTIFICATE)
    key = _pem_file(private_key, "TLS private key", _KEY)
    if require_client_certificate and ca_certificates is None:
        raise InputError("require_client_certificate needs ca_certificates (the CA that signs the clients' certificates)")
    ctx = _new_context(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(ctx, cert, key, password)
    if ca_certificates is not None:
        _load_ca(ctx, _pem_file(ca_certificates, "TLS CA certificates", _CERTIFICATE))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(
    *,
    ca_certificates: str | Path | None = None,
    certificate: str | Path | None = None,
    private_key: str | Path | None = None,
    check_hostname: bool = True,
    password: str | None = None,
) -> ssl.SSLContext:
    """The TLS context for sending to a destination (C-STORE SCU).

    Parameters
    ----------
    ca_certificates : str or Path, optional, keyword-only
        CA certificates (PEM) that sign the destination's certificate; default: the
        system's trusted CAs. The destination's certificate is always verified.
    certificate, private_key : str or Path, optional, keyword-only
        Our client certificate and its key (PEM), for a destination that requires one;
        both or neither.
    check_hostname : bool, keyword-only
        Check that the destination's certificate names the host connected to (its DNS
        name or IP address in subjectAltName). Default True; pynetdicom then needs the
        host name as ``tls_args=(context, host)``.
    password : str, optional, keyword-only
        Password of an encrypted ``private_key``.

    Returns
    -------
    ssl.SSLContext
        ``PROTOCOL_TLS_CLIENT``, TLS 1.2 or newer, certificates verified.

    Raises
    ------
    InputError
        A file missing, unreadable or not PEM, only one of ``certificate`` and
        ``private_key``, or a key that does not match the certificate; names the file.
    """
    if (certificate is None) != (private_key is None):
        raise InputError("client TLS: give both certificate and private_key, or neither")
    ctx = _new_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = bool(check_hostname)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_certificates is not None:
        _load_ca(ctx, _pem_file(ca_certificates, "TLS CA certificates", _CERTIFICATE))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if certificate is not None:
        cert = _pem_file(certificate, "TLS certificate", _CERTIFICATE)
        key = _pem_file(private_key, "TLS private key", _KEY)
        _load_chain(ctx, cert, key, password)
    return ctx
