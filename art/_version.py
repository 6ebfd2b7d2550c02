"""The software version, recorded in every output's provenance."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("art-radiotherapy")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0+src"
