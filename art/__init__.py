"""art: an adaptive radiotherapy planning engine.

Conventions (see ``docs/coordinates.md``): dose in Gy, lengths in mm, angles in
degrees (IEC 61217), points in DICOM patient coordinates (LPS), arrays indexed
(z, y, x), images and dose float32.

``import art`` is light: heavy dependencies (torch, SimpleITK, CuPy, cvxpy)
are imported only by the modules that need them.
"""

from art._version import __version__
from art.errors import ArtError, DicomError, GeometryError, InputError
from art.geometry import Grid, Volume
from art.structures import Structure, StructureSet

__all__ = [
    "__version__",
    "ArtError",
    "DicomError",
    "GeometryError",
    "InputError",
    "Grid",
    "Volume",
    "Structure",
    "StructureSet",
]
