"""Structures (regions of interest) as boolean masks on a grid.

Inside ``art`` a structure is a boolean mask of shape (z, y, x) on a
:class:`~art.geometry.Grid`, with its name, RT ROI Interpreted Type and colour.
A structure read from an RTSTRUCT also keeps the closed planar polygons it was
drawn with (``contours``), so that it can be exported as given and measured from
its polygons; a structure made or changed as a mask has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from art.errors import GeometryError, InputError
from art.geometry import Grid, Volume

#: RT ROI Interpreted Types of targets (the treated volumes): the one list the stages use
#: (voxel sampling keeps them whole, today's targets are always propagated, the report centres on them).
TARGET_TYPES = ("PTV", "CTV", "GTV")

ROI_TYPES = ("EXTERNAL", "PTV", "CTV", "GTV", "ORGAN", "AVOIDANCE", "BOLUS", "SUPPORT", "CONTROL", "MARKER", "CAVITY", "TREATED_VOLUME", "IRRAD_VOLUME", "FIXATION", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "DOSE_REGION", "BRACHY_CHANNEL", "BRACHY_ACCESSORY", "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD", "")


@dataclass
class Structure:
    """One region of interest.

    Parameters
    ----------
    name : str
        ROI name as written in the RTSTRUCT (case kept).
    mask : ndarray of bool, shape (z, y, x)
        Voxels inside the structure.
    grid : Grid
        The grid of ``mask``.
    roi_type : str
        RT ROI Interpreted Type (EXTERNAL, PTV, CTV, GTV, ORGAN, AVOIDANCE, ...).
    color : (r, g, b) ints 0-255
        Display colour.
    contours : tuple of ndarray, each of shape (n, 3), optional
        The closed planar polygons (LPS mm, first point not repeated) the structure
        was drawn with, as read from an RTSTRUCT; polygons on one plane combine by
        the even-odd rule. None for a structure made as a mask (AI, propagated,
        phantom). ``mask`` is their rasterisation on ``grid``: whoever changes the
        mask makes a new Structure without them.
    frame_of_reference_uid : str, optional
        The DICOM frame of reference the ``contours`` are in (that of the RTSTRUCT
        they were read from); the polygons are only ever written into that frame.
        None when unknown or without contours.
    """

    name: str
    mask: np.ndarray
    grid: Grid
    roi_type: str = "ORGAN"
    color: tuple[int, int, int] = (255, 0, 0)
    contours: tuple[np.ndarray, ...] | None = field(default=None, repr=False, compare=False)
    frame_of_reference_uid: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError("structure name must be a non-empty string")
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.shape != self.grid.shape:
            raise GeometryError(f"structure {self.name!r}: mask shape {self.mask.shape} does not match grid {self.grid.shape}")
        self.roi_type = (self.roi_type or "").upper()
        if self.roi_type not in ROI_TYPES:
            raise InputError(f"structure {self.name!r}: unknown RT ROI interpreted type {self.roi_type!r}")
        c = tuple(int(v) for v in self.color)
        if len(c) != 3 or not all(0 <= v <= 255 for v in c):
            raise InputError(f"structure {self.name!r}: colour must be three integers 0-255, got {self.color!r}")
        self.color = c  # type: ignore[assignment]
        if self.contours is not None:
            polys = tuple(np.asarray(p, dtype=np.float64) for p in self.contours)
            for p in polys:
                if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] < 3 or not np.all(np.isfinite(p)):
                    raise InputError(f"structure {self.name!r}: each contour must be an (n >= 3, 3) array of finite LPS points, got shape {p.shape}")
            self.contours = polys

    @property
    def volume(self) -> Volume:
        """The mask as a :class:`Volume`."""
        return Volume(self.mask, self.grid)

    @property
    def voxel_count(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def volume_cc(self) -> float:
        """Volume in cm³ (voxel count × voxel volume)."""
        return self.voxel_count * self.grid.voxel_volume_cc

    @property
    def is_empty(self) -> bool:
        return not self.mask.any()

    def centroid_lps(self) -> np.ndarray:
        """Centre of mass in LPS mm, shape (3,); raises for an empty structure."""
        if self.is_empty:
            raise InputError(f"structure {self.name!r} is empty: it has no centroid")
        idx = np.argwhere(self.mask).mean(axis=0)
        return self.grid.index_to_lps(idx)


@dataclass
class StructureSet:
    """An ordered collection of structures on one grid.

    Names are unique (compared case-insensitively); look-up by exact name
    first, then case-insensitively.
    """

    grid: Grid
    structures: list[Structure] = field(default_factory=list)

    def __post_init__(self) -> None:
        items = list(self.structures)
        self.structures = []
        for s in items:
            self.add(s)

    def add(self, structure: Structure) -> None:
        if not structure.grid.same_as(self.grid):
            raise GeometryError(f"structure {structure.name!r} is on another grid than the structure set")
        if any(s.name.lower() == structure.name.lower() for s in self.structures):
            raise InputError(f"duplicate structure name {structure.name!r}")
        self.structures.append(structure)

    def __iter__(self) -> Iterator[Structure]:
        return iter(self.structures)

    def __len__(self) -> int:
        return len(self.structures)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def find(self, name: str) -> Structure | None:
        for s in self.structures:
            if s.name == name:
                return s
        for s in self.structures:
            if s.name.lower() == name.lower():
                return s
        return None

    def __getitem__(self, name: str) -> Structure:
        s = self.find(name)
        if s is None:
            raise InputError(f"no structure named {name!r}; available: {', '.join(self.names) or 'none'}")
        return s

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.structures]

    def external(self) -> Structure | None:
        """The EXTERNAL (body) structure, if any."""
        for s in self.structures:
            if s.roi_type == "EXTERNAL":
                return s
        return None
