"""Exceptions raised by ``art``.

Every error a user can provoke with bad input is an :class:`ArtError`; the
command line turns it into a one-line message on stderr and exit code 1.
Messages name the file (or parameter) and the problem, and never contain
patient names or IDs.
"""

from __future__ import annotations

from pathlib import Path


class ArtError(Exception):
    """Base class of every error ``art`` raises on purpose."""


class InputError(ArtError, ValueError):
    """Bad input data: a file, a folder, an array or a parameter.

    Parameters
    ----------
    message : str
        What is wrong, in words a physicist understands.
    path : str or Path, optional
        The file or folder concerned; it is prefixed to the message.
    """

    def __init__(self, message: str, *, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class DicomError(InputError):
    """A DICOM file or series that cannot be read or is inconsistent."""


class GeometryError(InputError):
    """Grids, frames of reference or coordinates that do not fit together."""


class ProtocolError(InputError):
    """A protocol (clinical goals) file that is invalid; names file and line."""


class MachineDataError(InputError):
    """A machine (beam model) file that is invalid."""


class BackendError(ArtError, RuntimeError):
    """A requested array backend (e.g. CuPy on a machine without GPU) is unavailable."""


class NotBuiltError(ArtError, NotImplementedError):
    """A command or feature that is specified but not built yet."""


class NetworkError(ArtError, RuntimeError):
    """A DICOM network operation (association, C-ECHO, C-STORE) that failed.

    Parameters
    ----------
    message : str
        What failed, naming the peer (``AE@host:port``) and the files concerned.
    report : object, optional
        The :class:`art.io.network.StoreReport` of a C-STORE: what was and
        was not stored.
    """

    def __init__(self, message: str, *, report: object | None = None):
        self.report = report
        super().__init__(message)
