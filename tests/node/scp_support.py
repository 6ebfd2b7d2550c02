"""Helpers for the Storage SCP tests: throwaway certificates (openssl CLI), dcmtk's storescu, a pynetdicom sender.

Used by tests/node/test_tls.py, test_scp.py and test_receive.py. Certificates are made
with the ``openssl`` command line (the ``cryptography`` package is not a dependency):
a CA, a server certificate for 127.0.0.1/localhost and a client certificate signed by
it, and a client certificate signed by another CA.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

CALLING = "CBCT1"
CALLED = "ART"


def make_certificates(folder: Path) -> dict[str, Path]:
    """Test certificates (tests/node/tls_certs.py) by role: ``ca``, ``other_ca``, ``server``/``server_key``,
    ``client``/``client_key`` (signed by ca), ``stranger``/``stranger_key`` (signed by other_ca)."""
    from tests.node.tls_certs import make_certificates as make

    return make(folder).as_dict()


def dcmtk_storescu() -> str:
    """dcmtk's storescu (not pynetdicom's app of the same name in the virtual environment), else skip."""
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin", "/usr/local/bin"]:
        p = Path(d) / "storescu"
        if p.is_file() and os.access(p, os.X_OK):
            r = subprocess.run([str(p), "--version"], capture_output=True, text=True, timeout=10)
            if "dcmtk" in (r.stdout + r.stderr).lower():
                return str(p)
    pytest.skip("dcmtk's storescu is not installed: apt-get install dcmtk")


def storescu(port: int, files: list[Path] | Path, *, calling: str = CALLING, called: str = CALLED,
             timeout_s: float = 60) -> subprocess.CompletedProcess:  # fmt: skip
    """Send a folder (``+sd``) or files with dcmtk's storescu to 127.0.0.1:port (TCP_NODELAY: no delayed-ACK waits)."""
    targets = ["+sd", str(files)] if isinstance(files, Path) else [str(f) for f in files]
    cmd = [dcmtk_storescu(), "-aet", calling, "-aec", called, "127.0.0.1", str(port), *targets]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, "TCP_NODELAY": "1"})


def associate(port: int, contexts: list[tuple[str, list[str] | None]], *, calling: str = CALLING, called: str = CALLED,
              tls=None, timeout_s: float = 10):  # fmt: skip
    """A pynetdicom association to 127.0.0.1:port (``tls``: a client SSLContext); the caller releases it."""
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    for sop, syntaxes in contexts:
        if syntaxes:
            ae.add_requested_context(sop, syntaxes)
        else:
            ae.add_requested_context(sop)
    tls_args = (tls, "127.0.0.1") if tls is not None else None
    return ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)


def store_files(port: int, files: list[Path], *, tls=None, calling: str = CALLING, called: str = CALLED) -> list[int]:
    """C-STORE each file with pynetdicom; the status of each (raises when there is no association)."""
    import pydicom

    datasets = [pydicom.dcmread(f) for f in files]
    contexts = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets})
    assoc = associate(port, [(sop, [ts]) for sop, ts in contexts], tls=tls, calling=calling, called=called)
    if not assoc.is_established:
        raise ConnectionError(f"no association (rejected={assoc.is_rejected}, aborted={assoc.is_aborted})")
    try:
        statuses = []
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            statuses.append(int(rsp.Status) if "Status" in rsp else -1)
        return statuses
    finally:
        assoc.release()


_PHANTOM: dict[str, Path] = {}


def shared_phantom(tmp_path_factory) -> Path:
    """One small digital patient per test session (CT 5x4x4 mm, CBCT_01, RTSTRUCT), shared by the node tests."""
    if "root" not in _PHANTOM or not _PHANTOM["root"].is_dir():
        from art_phantoms.write import write_phantom

        out = tmp_path_factory.getbasetemp() / "node-phantom" / "patient"
        write_phantom(out, seed=1, fractions=1, spacing=(5.0, 4.0, 4.0))
        _PHANTOM["root"] = out
    return _PHANTOM["root"]
