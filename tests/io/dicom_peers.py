"""Real DICOM peers for the networking tests: dcmtk's ``storescp`` and ``dcmqrscp`` on loopback.

Used by ``tests/io/test_network.py`` and ``tests/cli/test_cli_export.py``.  Tests
that need a peer skip, naming the missing program, when dcmtk is not installed
(``.ci/run`` installs it).

``storescp`` runs with ``+B`` (bit-preserving: the received dataset is written
exactly as it arrived) and ``-uf`` (files named ``<modality>.<SOPInstanceUID>``),
and with the environment variable ``TCP_NODELAY=1`` (dcmtk then disables Nagle's
algorithm; without it every C-STORE waits for a delayed ACK, ~90 ms per file).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} (dcmtk) is not installed: apt-get install dcmtk")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Peer:
    port: int
    aet: str
    out_dir: Path
    proc: subprocess.Popen
    log: Path

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def received(self) -> list[Path]:
        return sorted(p for p in self.out_dir.rglob("*") if p.is_file())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _wait_listening(proc: subprocess.Popen, port: int, aet: str, log: Path, timeout: float = 10.0) -> None:
    """Wait until the peer answers an association request (accepted or rejected).

    A proper DICOM probe (C-ECHO association), not a bare TCP connect: dcmqrscp
    mishandles a connection closed without any PDU.
    """
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="PROBE")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.connection_timeout = 2
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"DICOM peer exited with code {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        assoc = ae.associate("127.0.0.1", port, ae_title=aet)
        if assoc.is_established:
            assoc.release()
            return
        if assoc.is_rejected:
            return
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"DICOM peer did not listen on port {port} within {timeout} s")


def _start(cmd: list[str], port: int, aet: str, out_dir: Path, log: Path, cwd: Path) -> Peer:
    env = dict(os.environ, TCP_NODELAY="1")
    fh = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    fh.close()
    _wait_listening(proc, port, aet, log)
    return Peer(port=port, aet=aet, out_dir=out_dir, proc=proc, log=log)


def start_storescp(workdir: Path, *, aet: str = "ART_TEST", options: tuple[str, ...] = (), config: str | None = None) -> Peer:
    """Start ``storescp`` writing into ``workdir/received``; ``config``: an association profile file text."""
    exe = require("storescp")
    out_dir = workdir / "received"
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [exe, "-aet", aet, "-od", str(out_dir), "+B", "-uf", "-ta", "10", "-td", "10", *options]
    if config is not None:
        cfg = workdir / "storescp.cfg"
        cfg.write_text(config)
        cmd += ["-xf", str(cfg), "Default"]
    cmd.append(str(port))
    return _start(cmd, port, aet, out_dir, workdir / "storescp.log", workdir)


def start_dcmqrscp(workdir: Path, *, aet: str = "ART_QR", quota: str = "(200, 1024mb)") -> Peer:
    """Start ``dcmqrscp``: it rejects associations whose called AE title is not ``aet``.

    ``quota`` is the AETable storage area limit ``(max studies, max bytes per study)``.
    """
    exe = require("dcmqrscp")
    db = workdir / "db"
    db.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = workdir / "dcmqrscp.cfg"
    cfg.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n\n"
        "HostTable BEGIN\nHostTable END\n\nVendorTable BEGIN\nVendorTable END\n\n"
        f"AETable BEGIN\n{aet}  {db}  RW  {quota}  ANY\nAETable END\n"
    )
    cmd = [exe, "-c", str(cfg), "--fork"]
    return _start(cmd, port, aet, db, workdir / "dcmqrscp.log", workdir)


# a storescp association profile accepting CT images only (and Verification): RT objects are refused
CT_ONLY_PROFILE = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[CTOnly]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = CTImageStorage\\Uncompressed

[[Profiles]]
[Default]
PresentationContexts = CTOnly
"""


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a PS3.10 file: everything after the file meta information group.

    The file meta (group 0002) is written by each side itself (implementation
    class UID, source AE title), so it is not part of what was transferred.
    """
    import struct

    data = Path(path).read_bytes()
    if data[128:132] != b"DICM":
        raise AssertionError(f"{path}: not a PS3.10 file")
    group, elem, vr = struct.unpack("<HH2s", data[132:138])
    if (group, elem, vr) != (0x0002, 0x0000, b"UL"):
        raise AssertionError(f"{path}: file meta lacks its group length")
    (length,) = struct.unpack("<I", data[140:144])
    return data[144 + length:]
