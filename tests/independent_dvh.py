"""An independent DVH of closed planar polygons in a dose grid, and a reader of exported RT Dose + RT Structure Set files.

Test-side reference for art's polygon DVH (tests/evaluate/test_polygon_dvh.py)
and for the commissioning harness (benchmarks/commissioning.py). It shares no
code with :mod:`art.evaluate` (nor with art's DICOM readers): the files are
read with pydicom directly, the geometry with NumPy, matplotlib and SciPy.

The method
----------
* Points on a regular grid (``step`` mm) in each contour plane, inside by
  ``matplotlib.path.Path.contains_points``; the polygons of a plane are
  combined by XOR (even-odd rule).
* The slab rule: each plane stands for the slab half-way to its neighbours,
  the first and last planes for half the spacing to their one neighbour
  beyond themselves (half-spacing end caps), sampled every ``zstep`` mm
  along z. Planes must be (about) evenly spaced: a gap over 1.5 times the
  median spacing (a structure in separate pieces) is refused, not bridged.
* The dose at every point by ``scipy.interpolate.RegularGridInterpolator``
  (linear) between the dose-voxel centres, held at the outermost centres up
  to the grid's edges; a point beyond the grid's edges is an error.
* Metrics read off the points sorted by dose: ``D<x>%`` / ``D<x>cc`` the dose
  of the point at which the hottest x % / x cc is reached, ``Dmax`` = D0.03cc,
  ``Dmin`` the same from the cold end, ``Dmean``, ``V<x>Gy`` (% of the
  volume, or cc with ``[cc]``) the volume of the points at or above x Gy.
* Large structures get a coarser step: ``step = zstep = max(0.25 mm,
  (V / max_points) ** (1/3))`` with V the structure's volume estimated from
  its polygon areas, so that about ``max_points`` (5e6) points are sampled
  (0.46 mm for 500 cc); in-plane sampling costs points × polygon vertices,
  a few seconds for 500 cc.

RT Dose: pixel data × DoseGridScaling (DoseUnits GY), ImagePositionPatient,
PixelSpacing (row, column spacing = dy, dx), GridFrameOffsetVector (relative
to the first frame, first value 0, or absolute, first value = its z);
ImageOrientationPatient must be the identity (1, 0, 0, 0, 1, 0), others are
refused. RT Structure Set: ROI names from StructureSetROISequence, their
CLOSED_PLANAR ContourData from ROIContourSequence (by ReferencedROINumber).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.path import Path as MplPath
from scipy.interpolate import RegularGridInterpolator

MAX_POINTS = 5_000_000
_EDGE_TOL_MM = 1e-3


@dataclass(frozen=True)
class DoseGrid:
    """A dose on an axis-aligned grid: ``array`` (z, y, x) in Gy, voxel centres ``z``, ``y``, ``x`` (mm, ascending)."""

    array: np.ndarray
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.z, self.y, self.x


def as_dose_grid(dose: Any) -> DoseGrid:
    """A :class:`DoseGrid` from itself or from an object with ``array`` and an identity-direction ``grid`` (origin, spacing, shape)."""
    if isinstance(dose, DoseGrid):
        return dose
    g = dose.grid
    if not np.allclose(np.asarray(g.direction, float).reshape(3, 3), np.eye(3), atol=1e-9):
        raise ValueError("the independent DVH supports identity-direction dose grids only")
    axes = [g.origin[2 - a] + g.spacing[a] * np.arange(g.shape[a]) for a in range(3)]  # z, y, x centres
    return DoseGrid(np.asarray(dose.array, np.float64), *axes)


# ----------------------------------------------------------------------------- files
def read_rtdose(path: str | Path) -> DoseGrid:
    """Read an RT Dose file (identity orientation only) into a :class:`DoseGrid` in Gy."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    if str(getattr(ds, "Modality", "")) != "RTDOSE":
        raise ValueError(f"{path}: not an RT Dose (Modality {getattr(ds, 'Modality', None)!r})")
    if str(getattr(ds, "DoseUnits", "")).upper() != "GY":
        raise ValueError(f"{path}: DoseUnits {getattr(ds, 'DoseUnits', None)!r}, expected GY")
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    if not np.allclose(iop, [1, 0, 0, 0, 1, 0], atol=1e-6):
        raise ValueError(f"{path}: ImageOrientationPatient {iop.tolist()} is not the identity (1, 0, 0, 0, 1, 0): not supported here")
    arr = np.asarray(ds.pixel_array, dtype=np.float64) * float(ds.DoseGridScaling)
    if arr.ndim == 2:
        arr = arr[None]
    x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    off = np.array([float(v) for v in ds.GridFrameOffsetVector]) if arr.shape[0] > 1 else np.zeros(1)
    if off.size != arr.shape[0]:
        raise ValueError(f"{path}: {off.size} frame offsets for {arr.shape[0]} frames")
    if off[0] == 0.0:
        z = z0 + off
    elif math.isclose(off[0], z0, abs_tol=1e-4):
        z = off
    else:
        raise ValueError(f"{path}: GridFrameOffsetVector starts at {off[0]} (neither 0 nor the first frame's z {z0})")
    if z.size > 1 and z[1] < z[0]:
        arr, z = arr[::-1], z[::-1]
    if np.any(np.diff(z) <= 0):
        raise ValueError(f"{path}: frame positions are not monotonic")
    return DoseGrid(arr, z, y0 + dy * np.arange(arr.shape[1]), x0 + dx * np.arange(arr.shape[2]))


def read_rtstruct(path: str | Path, names: Iterable[str] | None = None) -> dict[str, list[np.ndarray]]:
    """Read the CLOSED_PLANAR contours (LPS mm, (n, 3) each) of an RT Structure Set by ROI name (only ``names`` if given)."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    if str(getattr(ds, "Modality", "")) != "RTSTRUCT":
        raise ValueError(f"{path}: not an RT Structure Set (Modality {getattr(ds, 'Modality', None)!r})")
    roi_names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    wanted = None if names is None else set(names)
    out: dict[str, list[np.ndarray]] = {}
    for rc in ds.ROIContourSequence:
        name = roi_names.get(int(rc.ReferencedROINumber))
        if name is None or (wanted is not None and name not in wanted):
            continue
        polys = []
        for c in getattr(rc, "ContourSequence", []):
            if str(c.ContourGeometricType) != "CLOSED_PLANAR":
                continue
            polys.append(np.array([float(v) for v in c.ContourData]).reshape(-1, 3))
        out[name] = polys
    missing = (wanted or set()) - set(out)
    if missing:
        raise ValueError(f"{path}: no ROI named {', '.join(sorted(missing))}")
    return out


# ----------------------------------------------------------------------------- sampling
def by_plane(polys) -> list[tuple[float, list[np.ndarray]]]:
    """Polygons grouped by their plane's z (mm, rounded to 1 µm), ascending."""
    planes: dict[float, list[np.ndarray]] = {}
    for p in polys:
        if float(np.ptp(p[:, 2])) > 0.01:
            raise ValueError(f"contour at z = {float(np.mean(p[:, 2])):.2f} mm is not axial")
        planes.setdefault(round(float(p[0, 2]), 3), []).append(p)
    return sorted(planes.items())


def _slabs(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if z.size < 2:
        raise ValueError("a structure drawn on a single plane has no thickness here")
    gaps = np.diff(z)
    if gaps.max() > 1.5 * float(np.median(gaps)):
        raise ValueError(f"planes are not evenly spaced (gap {gaps.max():.2f} mm, median {np.median(gaps):.2f} mm): not handled here")
    lo = z - np.concatenate([[gaps[0]], gaps]) / 2.0  # half-way below; the first plane: half the gap above
    hi = z + np.concatenate([gaps, [gaps[-1]]]) / 2.0
    return lo, hi


def auto_step(polys, max_points: int = MAX_POINTS, minimum: float = 0.25) -> float:
    """The sampling step (mm) giving about ``max_points`` points: ``max(minimum, (V / max_points) ** (1/3))``."""
    planes = by_plane(polys)
    z = np.array([zp for zp, _ in planes])
    lo, hi = _slabs(z)
    area = [sum(abs(0.5 * float(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(np.roll(p[:, 0], -1), p[:, 1]))) for p in ps) for _, ps in planes]
    volume_mm3 = float(np.dot(area, hi - lo))
    return max(minimum, (volume_mm3 / max_points) ** (1.0 / 3.0))


def reference_samples(polys, dose: Any, *, step: float = 0.25, zstep: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Doses (Gy) and volumes (cc) of points filling the structure drawn by ``polys`` (module notes).

    Parameters
    ----------
    polys : sequence of ndarray (n, 3)
        Closed axial polygons, LPS mm.
    dose : DoseGrid or Volume-like
        Identity-direction dose grid (see :func:`as_dose_grid`).
    step, zstep : float, keyword-only
        In-plane and along-z sample spacing, mm (``zstep`` defaults to ``step``).
    """
    zstep = step if zstep is None else zstep
    grid = as_dose_grid(dose)
    planes = by_plane(polys)
    lo, hi = _slabs(np.array([zp for zp, _ in planes]))
    axes = grid.axes
    interp = RegularGridInterpolator(axes, grid.array, method="linear")
    edges = [(ax[0] - (ax[1] - ax[0]) / 2, ax[-1] + (ax[-1] - ax[-2]) / 2) if ax.size > 1 else (ax[0], ax[0]) for ax in axes]
    doses, vols = [], []
    for (zp, ps), a, b in zip(planes, lo, hi):
        pts = _inside_points(ps, step)
        if pts.size == 0:
            continue
        nzp = max(1, math.ceil((b - a) / zstep - 1e-9))
        dz = (b - a) / nzp
        for zz in a + dz * (np.arange(nzp) + 0.5):
            q = np.column_stack([np.full(len(pts), zz), pts[:, 1], pts[:, 0]])
            for ax in range(3):
                if q[:, ax].min() < edges[ax][0] - _EDGE_TOL_MM or q[:, ax].max() > edges[ax][1] + _EDGE_TOL_MM:
                    raise ValueError(f"the structure reaches beyond the dose grid (axis {'zyx'[ax]}, plane z = {zp:.2f} mm)")
                q[:, ax] = np.clip(q[:, ax], axes[ax][0], axes[ax][-1])
            doses.append(interp(q))
            vols.append(np.full(len(pts), step * step * dz / 1000.0))
    if not doses:
        raise ValueError("the polygons enclose no sample point")
    return np.concatenate(doses), np.concatenate(vols)


def _inside_points(ps: list[np.ndarray], step: float) -> np.ndarray:
    """Grid points (x, y), ``step`` apart, inside the polygons of one plane (even-odd)."""
    pts2 = np.concatenate(ps)[:, :2]
    xs = np.arange(math.floor(pts2[:, 0].min()) - 1, pts2[:, 0].max() + 1, step) + step / 2
    ys = np.arange(math.floor(pts2[:, 1].min()) - 1, pts2[:, 1].max() + 1, step) + step / 2
    xx, yy = np.meshgrid(xs, ys)
    pts = np.column_stack([xx.ravel(), yy.ravel()])
    inside = np.zeros(len(pts), bool)
    for p in ps:
        inside ^= MplPath(p[:, :2]).contains_points(pts)
    return pts[inside]


# ----------------------------------------------------------------------------- metrics
def reference_metrics(d: np.ndarray, v: np.ndarray) -> dict[str, float]:
    """D98%, D95%, D50%, D2%, Dmax, Dmin, Dmean (Gy) and volume_cc of samples."""
    out = {m: metric_value(m, d, v) for m in ("D98%", "D95%", "D50%", "D2%", "Dmax", "Dmin", "Dmean")}
    out["volume_cc"] = float(np.sum(v))
    return out


_D = re.compile(r"^D(\d+(?:\.\d*)?)(%|CC)$")
_V = re.compile(r"^V(\d+(?:\.\d*)?)GY(\[CC\])?$")


def metric_value(metric: str, d: np.ndarray, v: np.ndarray) -> float:
    """The value of ``metric`` (D<x>%, D<x>cc, Dmax, Dmin, Dmean: Gy; V<x>Gy: %, V<x>Gy[cc]: cc) of samples."""
    order = np.argsort(-d, kind="stable")
    d, v = d[order], v[order]
    cum = np.cumsum(v)
    total = float(cum[-1])

    def hot(vol: float) -> float:  # the dose of the point at which the hottest `vol` cc is reached
        return float(d[min(int(np.searchsorted(cum, vol)), d.size - 1)])

    t = metric.strip().upper()
    if t == "DMEAN":
        return float(np.dot(d, v) / total)
    if t == "DMAX":
        return hot(0.03)
    if t == "DMIN":
        return hot(total - 0.03)
    m = _D.match(t)
    if m:
        x = float(m.group(1))
        return hot(x / 100.0 * total if m.group(2) == "%" else x)
    m = _V.match(t)
    if m:
        above = float(v[d >= float(m.group(1))].sum())
        return above if m.group(2) else 100.0 * above / total
    raise ValueError(f"unknown metric {metric!r}")


def evaluate_files(rtdose: str | Path, rtstruct: str | Path, goals: list[dict], *, max_points: int = MAX_POINTS) -> list[dict]:
    """Evaluate goals on an RT Dose with the polygons of an RT Structure Set.

    Parameters
    ----------
    rtdose, rtstruct : path
    goals : list of dict
        Each with ``structure``, ``metric`` and ``at_least`` or ``at_most`` (as in protocol.toml).
    max_points : int, keyword-only
        Sample budget per structure (module notes).

    Returns
    -------
    list of dict
        Per goal: ``structure``, ``metric``, ``value``, ``met``, ``step_mm``, ``volume_cc``.
    """
    dose = read_rtdose(rtdose)
    polys = read_rtstruct(rtstruct, {g["structure"] for g in goals})
    samples: dict[str, tuple] = {}
    out = []
    for g in goals:
        name = g["structure"]
        if name not in samples:
            step = auto_step(polys[name], max_points)
            samples[name] = (*reference_samples(polys[name], dose, step=step), step)
        d, v, step = samples[name]
        value = metric_value(g["metric"], d, v)
        met = value >= g["at_least"] if "at_least" in g else value <= g["at_most"]
        out.append({"structure": name, "metric": g["metric"], "value": value, "met": bool(met), "step_mm": step, "volume_cc": float(v.sum())})
    return out
