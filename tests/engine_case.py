"""A small water cylinder with two open fields: a plan whose dose any engine computes in seconds (issue 19 wiring tests)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from art.geometry import Grid, Volume
from art.plan import Beam, Plan, Segment
from art.structures import Structure, StructureSet

#: Course prescription (Gy) the tests measure dose differences against.
PRESCRIPTION_GY = 40.0


@dataclass(frozen=True)
class EngineCase:
    ct: Volume
    structures: StructureSet
    plan: Plan
    machine: object
    grid: Grid  # the export grid (4 mm)


@functools.lru_cache(maxsize=1)
def engine_case() -> EngineCase:
    """Water cylinder (radius 70 mm, HU 0) in air on a 4 mm CT, BODY and PTV; beams at 0° and 90°, 60 × 60 mm, 100 MU, 20 fractions."""
    from art.dose import load_machine
    from art.final_dose import final_grid

    machine = load_machine()
    g = Grid((24, 48, 48), (4.0, 4.0, 4.0), (-94.0, -94.0, -46.0))
    x, y, z = g.lps_coordinates(np.float64)
    body = np.broadcast_to(x**2 + y**2 < 70.0**2, g.shape).copy()
    ct = Volume(np.where(body, 0.0, -1000.0).astype(np.float32), g)
    ptv = (x**2 + y**2 + z**2) < 25.0**2
    ss = StructureSet(g, [Structure("BODY", body, g, "EXTERNAL"), Structure("PTV", ptv, g, "PTV")])
    lo, hi = machine.mlc.position_limits_mm
    leaves = np.array([np.full(machine.mlc.n_pairs, lo), np.full(machine.mlc.n_pairs, hi)], dtype=np.float64)
    beams = [Beam(f"B{k}", gantry, segments=[Segment(leaves.copy(), (-30.0, 30.0, -30.0, 30.0), 100.0)]) for k, gantry in enumerate((0.0, 90.0))]
    plan = Plan(beams=beams, fractions=20, machine_name=machine.name)
    return EngineCase(ct=ct, structures=ss, plan=plan, machine=machine, grid=final_grid(g, 4.0))
