"""The node's TOML configuration: every key read, defaults, and errors naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from art.errors import InputError
from art.node.config import DEFAULT_PORT, load_config

FULL = """
[node]
ae_title = "ARTNODE"
host = "0.0.0.0"
port = 11113
allowed_calling_aes = ["CBCT1", "CBCT2"]
allowed_hosts = ["10.1.2.3"]
state_dir = "state"
output_dir = "/srv/out"
quiet_period_s = 5
incomplete_timeout_s = 120

[node.tls]
certificate = "node.crt"
private_key = "node.key"
ca_certificates = "ca.pem"
require_client_certificate = true

[dask]
scheduler = "tcp://10.0.0.9:8786"
workers = 4
threads_per_worker = 2
retries = 3

[replan]
final_grid_mm = 3.0

[[destination]]
name = "tms"
ae_title = "TMS"
host = "10.0.0.5"
port = 104
attempts = 7
backoff_s = 2.5

[[destination]]
name = "pacs"
ae_title = "PACS"
host = "pacs.local"
[destination.tls]
ca_certificates = "pacs-ca.pem"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "node.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_every_key_is_read(tmp_path):
    c = load_config(write(tmp_path, FULL))
    assert (c.ae_title, c.host, c.port) == ("ARTNODE", "0.0.0.0", 11113)
    assert c.allowed_calling_aes == ("CBCT1", "CBCT2") and c.allowed_hosts == ("10.1.2.3",)
    assert c.state_dir == tmp_path / "state" and c.output_dir == Path("/srv/out")  # relative to the file's folder
    assert c.database == tmp_path / "state" / "art-node.sqlite"
    assert (c.quiet_period_s, c.incomplete_timeout_s) == (5.0, 120.0)
    assert c.tls.certificate == tmp_path / "node.crt" and c.tls.ca_certificates == tmp_path / "ca.pem" and c.tls.require_client_certificate
    assert (c.scheduler, c.workers, c.threads_per_worker, c.retries) == ("tcp://10.0.0.9:8786", 4, 2, 3)
    assert c.final_grid_mm == 3.0
    tms, pacs = c.destinations
    assert (tms.name, tms.ae_title, tms.host, tms.port, tms.attempts, tms.backoff_s, tms.tls_files) == ("tms", "TMS", "10.0.0.5", 104, 7, 2.5, None)
    assert (pacs.port, pacs.calling_ae) == (104, "ART") and pacs.tls_files.ca_certificates == tmp_path / "pacs-ca.pem"


def test_defaults_bind_loopback(tmp_path):
    c = load_config(write(tmp_path, '[node]\nallowed_calling_aes = ["CBCT1"]\nstate_dir = "s"\noutput_dir = "o"\n'))
    assert c.host == "127.0.0.1" and c.port == DEFAULT_PORT and c.ae_title == "ART"
    assert c.tls is None and c.scheduler is None and c.workers is None and c.destinations == ()
    assert (c.quiet_period_s, c.incomplete_timeout_s, c.retries, c.final_grid_mm) == (30.0, 600.0, 2, None)


BASE = '[node]\nallowed_calling_aes = ["CBCT1"]\nstate_dir = "s"\noutput_dir = "o"\n'


@pytest.mark.parametrize(
    "text, message",
    [
        ("[node]\nstate_dir = 's'\noutput_dir = 'o'\n", "node.allowed_calling_aes: missing"),
        ("[node]\nallowed_calling_aes = []\nstate_dir = 's'\noutput_dir = 'o'\n", "node.allowed_calling_aes: empty"),
        ('[node]\nallowed_calling_aes = ["CBCT1"]\noutput_dir = "o"\n', "node.state_dir: missing"),
        (BASE + "port = 70000\n", "node.port: must be between 0 and 65535"),
        (BASE + "port = '104'\n", "node.port: expected an integer"),
        (BASE + "portt = 104\n", "node.portt: unknown key"),
        (BASE + 'ae_title = "MUCH_TOO_LONG_AE_TITLE"\n', "node.ae_title: not a valid AE title"),
        (BASE + 'allowed_hosts = ["pacs.local"]\n', "node.allowed_hosts: not an IP address"),
        (BASE + "quiet_period_s = 60\nincomplete_timeout_s = 10\n", "node.incomplete_timeout_s: shorter than quiet_period_s"),
        (BASE + '[node.tls]\ncertificate = "a.crt"\n', "node.tls.private_key: missing"),
        (BASE + '[node.tls]\ncertificate = "a"\nprivate_key = "b"\nrequire_client_certificate = true\n', "node.tls.ca_certificates: needed"),
        (BASE + '[dask]\nscheduler = "10.0.0.9:8786"\n', "dask.scheduler: expected an address like tcp://"),
        (BASE + "[replan]\nfinal_grid_mm = 9\n", "replan.final_grid_mm: must be between 0.5 and 5"),
        (BASE + '[[destination]]\nhost = "h"\n', "destination[0].ae_title: missing"),
        (BASE + '[[destination]]\nname = "a"\nae_title = "X"\nhost = "h"\n[[destination]]\nname = "a"\nae_title = "Y"\nhost = "h"\n',
         "two destinations are named 'a'"),
        (BASE + "[nodes]\n", "unknown table [nodes]"),
        ("[node\n", "not valid TOML"),
    ],
)
def test_bad_configurations_name_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="configuration file not found"):
        load_config(tmp_path / "nope.toml")
