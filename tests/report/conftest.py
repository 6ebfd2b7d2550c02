"""Small synthetic patient for the report tests (20 x 40 x 40 voxels)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from art.geometry import Grid, Volume
from art.structures import Structure, StructureSet


def png_pixels(png: bytes) -> np.ndarray:
    """Decode PNG bytes to an (h, w, channels) float array in [0, 1]."""
    import matplotlib.image as mpimg

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(io.BytesIO(png), format="png")


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the PNG IHDR chunk."""
    assert png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


class Case:
    """CT, structures and a Gaussian dose centred on the PTV."""

    def __init__(self) -> None:
        g = Grid(shape=(20, 40, 40), spacing=(3.0, 2.0, 2.0), origin=(-39.0, -39.0, -28.5))
        x, y, z = g.lps_coordinates()
        body = np.broadcast_to((x / 36.0) ** 2 + (y / 30.0) ** 2 < 1, g.shape).copy()
        ct = np.where(body, 40.0, -1000.0).astype(np.float32)
        bone = np.broadcast_to((x - 10.0) ** 2 + (y - 20.0) ** 2 < 16, g.shape)  # asymmetric feature
        ct[bone] = 700.0
        r2 = x**2 + y**2 + z**2
        self.grid = g
        self.ct = Volume(ct, g)
        self.structures = StructureSet(
            g,
            [
                Structure("BODY", body, g, "EXTERNAL", (0, 255, 0)),
                Structure("PTV", r2 < 12.0**2, g, "PTV", (255, 0, 0)),
                Structure("Rectum", (x**2 + (y - 18.0) ** 2 < 36.0) & (np.abs(z) < 20), g, "ORGAN", (150, 75, 0)),
                Structure("Bladder", (x**2 + (y + 18.0) ** 2 + z**2 < 64.0), g, "ORGAN", (255, 255, 0)),
            ],
        )
        self.dose = Volume((60.0 * np.exp(-r2 / (2 * 15.0**2))).astype(np.float32), g)


@pytest.fixture(scope="session")
def case() -> Case:
    return Case()
