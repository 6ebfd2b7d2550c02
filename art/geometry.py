"""Image grids and volumes in DICOM patient coordinates.

Conventions
-----------
* Arrays are indexed ``(z, y, x)``: ``array[k, j, i]`` with ``k`` the slice,
  ``j`` the row and ``i`` the column.
* :attr:`Grid.spacing` is given in the **array order** ``(dz, dy, dx)``, in mm.
* Points are DICOM patient coordinates (LPS), given as ``(x, y, z)`` in mm:
  ``x`` towards the patient's left, ``y`` posterior, ``z`` superior.
* :attr:`Grid.origin` is the LPS position of the **centre** of voxel
  ``[0, 0, 0]`` (as DICOM ImagePositionPatient and ITK's origin).
* :attr:`Grid.direction` is a 3 x 3 matrix, stored row-major as nine numbers
  exactly like SimpleITK's ``GetDirection()``; its columns are the LPS unit
  vectors along increasing ``i`` (column), ``j`` (row) and ``k`` (slice).

So the centre of voxel ``[k, j, i]`` lies at::

    p = origin + direction @ (i * dx, j * dy, k * dz)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from art.errors import GeometryError, InputError

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _triple(value: Sequence[float], name: str, *, positive: bool = False) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be three numbers, got {value!r}") from exc
    if len(out) != 3:
        raise InputError(f"{name} must be three numbers, got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise InputError(f"{name} must be finite, got {out}")
    if positive and not all(v > 0 for v in out):
        raise InputError(f"{name} must be positive, got {out}")
    return out  # type: ignore[return-value]


def _linear_map(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``v @ m.T`` for points ``v`` (..., 3): column by column when ``m`` is diagonal and ``v`` finite
    (axis-aligned grids: each result is the one non-zero product, bit for bit what the matrix product
    gives, without a BLAS call on millions of rows, whose threads cost more than the work)."""
    if np.count_nonzero(m - np.diag(np.diag(m))) == 0 and v.size and np.isfinite(v).all():
        return v * np.diag(m)
    return v @ m.T


@dataclass(frozen=True)
class Grid:
    """A regular 3-D voxel grid placed in patient space.

    Parameters
    ----------
    shape : (nz, ny, nx) ints
        Number of voxels along z (slices), y (rows) and x (columns).
    spacing : (dz, dy, dx) floats
        Voxel size in mm, in array order.
    origin : (x, y, z) floats
        LPS position in mm of the centre of voxel ``[0, 0, 0]``.
    direction : nine floats, optional
        Row-major 3 x 3 direction cosine matrix (SimpleITK order); columns are
        the LPS directions of increasing column, row and slice index.
        Defaults to the identity (axial, head-first-supine orientation).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = field(default=_IDENTITY)

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(s) for s in self.shape)
        except (TypeError, ValueError) as exc:
            raise InputError(f"shape must be three integers, got {self.shape!r}") from exc
        if len(shape) != 3 or any(s < 1 for s in shape):
            raise InputError(f"shape must be three positive integers (nz, ny, nx), got {shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", _triple(self.spacing, "spacing", positive=True))
        object.__setattr__(self, "origin", _triple(self.origin, "origin"))
        d = np.asarray(self.direction, dtype=np.float64).reshape(-1)
        if d.size != 9 or not np.all(np.isfinite(d)):
            raise InputError(f"direction must be nine finite numbers, got {self.direction!r}")
        m = d.reshape(3, 3)
        if not np.allclose(m.T @ m, np.eye(3), atol=1e-4):
            raise GeometryError(f"direction must be orthonormal, got {tuple(d)}")
        object.__setattr__(self, "direction", tuple(float(v) for v in d))

    # ------------------------------------------------------------------ basics
    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.shape))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return float(np.prod(self.spacing))

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel in cm³ (cc)."""
        return self.voxel_volume_mm3 / 1000.0

    @property
    def direction_matrix(self) -> np.ndarray:
        """The 3 x 3 direction cosine matrix (columns: i, j, k axes in LPS)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        """Spacing in (dx, dy, dz) order (ITK order), mm."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def is_axis_aligned(self) -> bool:
        """True when the direction is the identity."""
        return bool(np.allclose(self.direction_matrix, np.eye(3), atol=1e-6))

    @property
    def affine(self) -> np.ndarray:
        """4 x 4 matrix mapping ``(i, j, k, 1)`` (ITK index order) to ``(x, y, z, 1)`` LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix @ np.diag(self.spacing_xyz)
        a[:3, 3] = self.origin
        return a

    @property
    def slice_normal(self) -> np.ndarray:
        """LPS unit vector of increasing slice index."""
        return self.direction_matrix[:, 2].copy()

    # ------------------------------------------------------------ conversions
    def index_to_lps(self, index_zyx: Any) -> np.ndarray:
        """Voxel index (continuous allowed) to patient position.

        Parameters
        ----------
        index_zyx : array_like, shape (..., 3)
            Indices in array order ``(k, j, i)``.

        Returns
        -------
        ndarray, shape (..., 3)
            LPS points ``(x, y, z)`` in mm.
        """
        idx = np.asarray(index_zyx, dtype=np.float64)
        if idx.shape[-1:] != (3,):
            raise InputError(f"index_zyx must have a last axis of length 3, got shape {idx.shape}")
        ijk = idx[..., ::-1]
        a = self.affine
        return _linear_map(ijk, a[:3, :3]) + a[:3, 3]

    def lps_to_index(self, points: Any) -> np.ndarray:
        """Patient position to continuous voxel index.

        Parameters
        ----------
        points : array_like, shape (..., 3)
            LPS points ``(x, y, z)`` in mm.

        Returns
        -------
        ndarray, shape (..., 3)
            Continuous indices in array order ``(k, j, i)``; integers at voxel centres.
        """
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise InputError(f"points must have a last axis of length 3, got shape {p.shape}")
        a = self.affine
        inv = np.linalg.inv(a[:3, :3])
        ijk = _linear_map(p - a[:3, 3], inv)
        return ijk[..., ::-1]

    def lps_coordinates(self, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LPS coordinates of every voxel centre.

        Returns
        -------
        x, y, z : ndarrays, each of shape ``shape``
            Positions in mm; for an axis-aligned grid they are broadcast views
            (cheap); otherwise full arrays.
        """
        k = np.arange(self.shape[0], dtype=np.float64)[:, None, None]
        j = np.arange(self.shape[1], dtype=np.float64)[None, :, None]
        i = np.arange(self.shape[2], dtype=np.float64)[None, None, :]
        a = self.affine
        out = []
        for r in range(3):
            c = a[r, 3] + a[r, 0] * i + a[r, 1] * j + a[r, 2] * k
            out.append(np.broadcast_to(c, self.shape).astype(dtype, copy=False) if c.shape != self.shape else c.astype(dtype))
        return out[0], out[1], out[2]

    def axis_positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For an axis-aligned grid: the 1-D LPS positions (z, y, x) of the voxel centres, mm."""
        if not self.is_axis_aligned:
            raise GeometryError("axis_positions needs an axis-aligned grid (identity direction)")
        z = self.origin[2] + self.spacing[0] * np.arange(self.shape[0])
        y = self.origin[1] + self.spacing[1] * np.arange(self.shape[1])
        x = self.origin[0] + self.spacing[2] * np.arange(self.shape[2])
        return z, y, x

    def corners_lps(self) -> np.ndarray:
        """LPS positions of the 8 corner voxel centres, shape (8, 3)."""
        nz, ny, nx = (s - 1 for s in self.shape)
        idx = np.array([[k, j, i] for k in (0, nz) for j in (0, ny) for i in (0, nx)], dtype=np.float64)
        return self.index_to_lps(idx)

    def contains(self, points: Any, *, margin_voxels: float = 0.5) -> np.ndarray:
        """Whether LPS points lie inside the grid (within ``margin_voxels`` of the outer voxel centres)."""
        idx = self.lps_to_index(points)
        hi = np.asarray(self.shape, dtype=np.float64) - 1 + margin_voxels
        return np.all((idx >= -margin_voxels) & (idx <= hi), axis=-1)

    # --------------------------------------------------------- derived grids
    def with_spacing(self, spacing: Sequence[float]) -> "Grid":
        """A grid with the same orientation covering (at least) the same extent with a new spacing.

        Parameters
        ----------
        spacing : (dz, dy, dx) floats
            The new voxel size in mm.
        """
        new = _triple(spacing, "spacing", positive=True)
        extent = [(n - 1) * s for n, s in zip(self.shape, self.spacing)]
        shape = tuple(max(1, int(math.ceil(e / s - 1e-6)) + 1) for e, s in zip(extent, new))
        # centre the new grid on the old one
        centre_idx = np.array([(n - 1) / 2 for n in self.shape])
        centre = self.index_to_lps(centre_idx)
        half = np.array([(n - 1) * s / 2 for n, s in zip(shape, new)])[::-1]  # x, y, z
        origin = centre - self.direction_matrix @ half
        return Grid(shape=shape, spacing=new, origin=tuple(origin), direction=self.direction)

    def covering(self, spacing: Sequence[float]) -> "Grid":
        """A grid with the same orientation whose voxels cover this grid's voxels to their outer edges.

        Unlike :meth:`with_spacing` (which spans the outermost voxel *centres*), the new
        grid's outer voxel edges reach at least this grid's outer voxel edges, so that
        anything drawn on the outermost slices with half-slice end caps (a BODY contour)
        lies inside it. Centred on this grid.

        Parameters
        ----------
        spacing : (dz, dy, dx) floats
            The new voxel size in mm.
        """
        new = _triple(spacing, "spacing", positive=True)
        shape = tuple(max(1, int(math.ceil(n * s / t - 1e-6))) for n, s, t in zip(self.shape, self.spacing, new))
        centre = self.index_to_lps(np.array([(n - 1) / 2 for n in self.shape]))
        half = np.array([(n - 1) * s / 2 for n, s in zip(shape, new)])[::-1]  # x, y, z
        origin = centre - self.direction_matrix @ half
        return Grid(shape=shape, spacing=new, origin=tuple(origin), direction=self.direction)

    def crop(self, index_slices: tuple[slice, slice, slice]) -> "Grid":
        """The sub-grid selected by ``array[index_slices]`` (steps of 1 only)."""
        starts, shape = [], []
        for sl, n in zip(index_slices, self.shape):
            start, stop, step = sl.indices(n)
            if step != 1 or stop <= start:
                raise InputError(f"crop needs non-empty slices with step 1, got {index_slices}")
            starts.append(start)
            shape.append(stop - start)
        origin = self.index_to_lps(np.array(starts, dtype=np.float64))
        return Grid(shape=tuple(shape), spacing=self.spacing, origin=tuple(origin), direction=self.direction)

    def pad(self, voxels) -> "Grid":
        """The grid grown by ``voxels`` (one int, or (nz, ny, nx) ints >= 0) on both sides of each axis.

        Same spacing and orientation; voxel ``[k, j, i]`` of ``self`` is voxel
        ``[k + nz, j + ny, i + nx]`` of the result (the inverse of :meth:`crop`).
        """
        n = np.broadcast_to(np.asarray(voxels), (3,))
        if not np.issubdtype(n.dtype, np.integer) or (n < 0).any():
            raise InputError(f"voxels must be one or three integers >= 0, got {voxels!r}")
        n = [int(v) for v in n]
        origin = self.index_to_lps(-np.array(n, dtype=np.float64))
        return Grid(shape=tuple(s + 2 * k for s, k in zip(self.shape, n)), spacing=self.spacing, origin=tuple(origin), direction=self.direction)

    def same_as(self, other: "Grid", *, tol_mm: float = 1e-3) -> bool:
        """True when both grids have the same shape and place every voxel within ``tol_mm``."""
        if self.shape != other.shape:
            return False
        c1, c2 = self.corners_lps(), other.corners_lps()
        if not np.allclose(c1, c2, atol=tol_mm):
            return False
        return bool(np.allclose(self.spacing, other.spacing, atol=tol_mm))

    def to_dict(self) -> dict:
        """JSON-friendly description (keys: shape, spacing, origin, direction)."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(shape=d["shape"], spacing=d["spacing"], origin=d["origin"], direction=d.get("direction", _IDENTITY))
        except KeyError as exc:
            raise InputError(f"grid description lacks {exc.args[0]!r}") from exc


@dataclass
class Volume:
    """An array on a :class:`Grid`.

    Parameters
    ----------
    array : ndarray, shape ``grid.shape`` (z, y, x)
        Voxel values (HU for images, Gy for dose, bool for masks).
    grid : Grid
        Where the voxels are.
    """

    array: np.ndarray
    grid: Grid

    def __post_init__(self) -> None:
        if not isinstance(self.grid, Grid):
            raise InputError(f"grid must be a Grid, got {type(self.grid).__name__}")
        shape = tuple(self.array.shape)
        if shape != self.grid.shape:
            raise GeometryError(f"array shape {shape} does not match grid shape {self.grid.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.grid.shape

    def copy(self) -> "Volume":
        return Volume(self.array.copy(), self.grid)

    def to_sitk(self):
        """A SimpleITK image with the same voxels and geometry (imports SimpleITK)."""
        import SimpleITK as sitk

        arr = np.asarray(self.array)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(self.grid.spacing_xyz)
        img.SetOrigin(self.grid.origin)
        img.SetDirection(self.grid.direction)
        return img

    @classmethod
    def from_sitk(cls, image) -> "Volume":
        """A Volume from a 3-D scalar SimpleITK image (geometry kept)."""
        import SimpleITK as sitk

        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError("from_sitk needs a 3-D scalar image")
        arr = sitk.GetArrayFromImage(image)
        sx, sy, sz = image.GetSpacing()
        grid = Grid(shape=arr.shape, spacing=(sz, sy, sx), origin=image.GetOrigin(), direction=image.GetDirection())
        return cls(arr, grid)


def _index_map(source: Grid, target: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Affine map from target array indices (k, j, i) to source array indices."""
    a_s, a_t = source.affine, target.affine
    m = np.linalg.inv(a_s) @ a_t  # ijk_t -> ijk_s (homogeneous)
    perm = np.eye(4)[[2, 1, 0, 3]]  # reverses the first three axes
    m_zyx = perm @ m @ perm
    return m_zyx[:3, :3], m_zyx[:3, 3]


def resample(
    volume: Volume,
    grid: Grid,
    *,
    order: int = 1,
    fill_value: float = 0.0,
    dtype: Any = None,
) -> Volume:
    """Resample a volume onto another grid.

    Parameters
    ----------
    volume : Volume
        The source; any orientation.
    grid : Grid
        The target grid.
    order : int, keyword-only
        Interpolation order: 0 nearest neighbour (labels, masks), 1 linear
        (images, dose), 3 cubic.
    fill_value : float, keyword-only
        Value outside the source (use -1000 for CT in HU, 0 for dose).
    dtype : dtype, keyword-only
        Output dtype; defaults to float32 for ``order > 0`` and the source dtype
        for ``order == 0``.

    Returns
    -------
    Volume
        On ``grid``.
    """
    from scipy import ndimage

    if order not in (0, 1, 3):
        raise InputError(f"order must be 0, 1 or 3, got {order}")
    src = np.asarray(volume.array)
    if dtype is None:
        dtype = src.dtype if order == 0 else np.float32
    if src.dtype == bool:
        src = src.astype(np.uint8)
    elif order > 0 and src.dtype not in (np.float32, np.float64):
        src = src.astype(np.float32)
    matrix, offset = _index_map(volume.grid, grid)
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-9):
        matrix = np.diag(matrix)  # faster axis-aligned path
    out = ndimage.affine_transform(
        src, matrix, offset=offset, output_shape=grid.shape, order=order, mode="constant", cval=fill_value, prefilter=order > 1
    )
    return Volume(out.astype(dtype, copy=False), grid)


def resample_mask(mask: Volume, grid: Grid, *, mode: str = "linear") -> Volume:
    """Resample a boolean mask onto another grid.

    Parameters
    ----------
    mask : Volume
        Boolean (or 0/1) mask.
    grid : Grid
        Target grid.
    mode : {"linear", "nearest", "fraction"}, keyword-only
        ``"linear"`` (default) interpolates the 0/1 mask linearly and keeps
        voxels at >= 0.5 (smooth boundaries, volume-preserving on average);
        ``"nearest"`` takes the nearest source voxel; both give a boolean
        mask. ``"fraction"`` gives the float32 occupancy in [0, 1].
    """
    if mode == "nearest":
        out = resample(Volume(np.asarray(mask.array, dtype=bool), mask.grid), grid, order=0, fill_value=0)
        return Volume(out.array.astype(bool), grid)
    if mode == "linear":
        out = resample(Volume(np.asarray(mask.array).astype(np.float32), mask.grid), grid, order=1, fill_value=0.0)
        return Volume(out.array >= 0.5, grid)
    if mode == "fraction":
        out = resample(Volume(np.asarray(mask.array).astype(np.float32), mask.grid), grid, order=1, fill_value=0.0)
        return Volume(np.clip(out.array, 0.0, 1.0), grid)
    raise InputError(f"mode must be 'linear', 'nearest' or 'fraction', got {mode!r}")
