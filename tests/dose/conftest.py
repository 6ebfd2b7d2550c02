"""Water/slab phantoms for the dose tests (built directly on art.geometry grids)."""

import json

import numpy as np
import pytest

from art.dose import load_machine
from art.dose.machine import DEFAULT_MACHINE
from art.geometry import Grid, Volume
from art.plan import Segment


@pytest.fixture(scope="session")
def machine():
    return load_machine()


def water_phantom(*, spacing=(4.0, 2.0, 2.0), half_xz=150.0, depth=320.0, air_mm=20.0, hu_fn=None) -> Volume:
    """Water box, beam from anterior (gantry 0): surface at y = 0, water for 0 < y < depth,
    air (-1000 HU) for -air_mm < y < 0. Voxel faces lie on y = 0."""
    dz, dy, dx = spacing
    nx = int(round(2 * half_xz / dx)) + 1
    nz = int(round(2 * half_xz / dz)) + 1
    ny = int(round((depth + air_mm) / dy))
    g = Grid((nz, ny, nx), spacing, (-half_xz, -air_mm + dy / 2, -half_xz))
    _, y, _ = g.axis_positions()
    hu = np.zeros(g.shape, np.float32)
    hu[:, y < 0, :] = -1000.0
    if hu_fn is not None:
        hu = hu_fn(hu, g)
    return Volume(hu, g)


def open_segment(machine, x, y=None, mu=100.0, *, leaves_at_jaws=False) -> Segment:
    """Open rectangular field: jaws x × y (mm at iso), MLC retracted (or at the jaws)."""
    y = x if y is None else y
    n = machine.mlc.n_pairs
    lp = np.zeros((2, n))
    if leaves_at_jaws:
        lp[0], lp[1] = -x / 2, x / 2
    else:
        lp[0], lp[1] = machine.mlc.position_limits_mm[0], machine.mlc.position_limits_mm[1]
    return Segment(lp, (-x / 2, x / 2, -y / 2, y / 2), mu)


def machine_with_ccc(path, section):
    """The generic 6X machine with its ``ccc`` section replaced by ``section``, written to ``path`` and loaded."""
    data = json.loads(DEFAULT_MACHINE.read_text(encoding="utf-8"))
    data["ccc"] = section
    path.write_text(json.dumps(data))
    return load_machine(path)
