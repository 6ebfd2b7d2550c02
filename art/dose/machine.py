"""Machine (beam model) data and CT calibration: loading, validation, look-ups.

The file formats are documented in ``docs/machine_data.md``. Default files live in
``art/dose/data/``: ``generic_6x.json`` (a generic 6 MV linac, synthetic data; also
``generic_10x.json`` and ``generic_6fff.json``, used through :mod:`art.dose.library`) and
``hu_to_density.json`` (HU → relative electron density).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from art.errors import InputError, MachineDataError

DATA_DIR = Path(__file__).with_name("data")
DEFAULT_MACHINE = DATA_DIR / "generic_6x.json"
DEFAULT_HU_TABLE = DATA_DIR / "hu_to_density.json"


@dataclass(frozen=True)
class MLCGeometry:
    """Multi-leaf collimator geometry at the isocentre plane (mm)."""

    boundaries_mm: np.ndarray  # (n_pairs + 1,), increasing along Y_b
    position_limits_mm: tuple[float, float]
    max_leaf_span_mm: float
    min_gap_mm: float
    interdigitation: bool
    transmission: float
    name: str = ""  # the MLC model's name ("" for a machine file's own MLC section)
    source: str = ""  # the MLC model file it came from, "" for a machine's own MLC
    digest: str = ""  # SHA-256 of that file

    @property
    def n_pairs(self) -> int:
        return int(self.boundaries_mm.size - 1)

    @property
    def widths_mm(self) -> np.ndarray:
        return np.diff(self.boundaries_mm)


@dataclass(frozen=True)
class Machine:
    """A validated machine model.

    Attributes
    ----------
    name, energy : str
    sad_mm : float
    dose_per_mu_gy : float
        Calibration: Gy per MU at ``calib_depth_mm`` in water, field ``calib_field_mm`` square,
        SSD ``calib_ssd_mm``.
    pdd_field_mm : (nf,) ; pdd_depth_mm : (nd,) ; pdd_percent : (nf, nd)
        Central-axis PDD at SSD ``pdd_ssd_mm``, normalised to 100 at ``calib_depth_mm``.
    of_field_mm, scp, sc : (no,)
        Total output factor S_cp and head-scatter factor S_c at ``calib_depth_mm``, relative to 10x10.
    penumbra_depth_mm, penumbra_mm : (np,)
        80–20 % penumbra of the ``penumbra_field_mm`` field.
    mlc : MLCGeometry
    jaw_x_limits_mm, jaw_y_limits_mm : (2,) ; jaw_transmission : float
    min_mu_per_segment, max_mu_per_beam, dose_rate_mu_per_min : float
    source : str
        File it came from; ``digest`` its SHA-256.
    fluence_mode : {"STANDARD", "FFF"}
        Flattened or flattening-filter-free beam (with the nominal MV, what a beam's energy must match).
    aliases : tuple of str
        TreatmentMachineName values this file serves (besides ``name``).
    oar_radius_mm, oar_fluence, oar_mu_ratio : (nr,)
        Off-axis profile: primary fluence relative to the central axis and the effective attenuation
        coefficient relative to the axis (>1: softer) at radii (mm) in the isocentre plane; flat
        (one point, 1.0) when the file has no ``off_axis`` section.
    ccc : dict or None
        The file's raw ``ccc`` section (collapsed-cone commissioning, read by :mod:`art.dose.ccc`).
    """

    name: str
    energy: str
    sad_mm: float
    dose_per_mu_gy: float
    calib_field_mm: float
    calib_ssd_mm: float
    calib_depth_mm: float
    pdd_ssd_mm: float
    pdd_field_mm: np.ndarray
    pdd_depth_mm: np.ndarray
    pdd_percent: np.ndarray
    of_field_mm: np.ndarray
    scp: np.ndarray
    sc: np.ndarray
    penumbra_field_mm: float
    penumbra_depth_mm: np.ndarray
    penumbra_mm: np.ndarray
    mlc: MLCGeometry
    jaw_x_limits_mm: tuple[float, float]
    jaw_y_limits_mm: tuple[float, float]
    jaw_transmission: float
    min_mu_per_segment: float
    max_mu_per_beam: float
    dose_rate_mu_per_min: float
    source: str
    digest: str
    fluence_mode: str = "STANDARD"
    aliases: tuple[str, ...] = ()
    oar_radius_mm: np.ndarray = field(default_factory=lambda: np.zeros(1))
    oar_fluence: np.ndarray = field(default_factory=lambda: np.ones(1))
    oar_mu_ratio: np.ndarray = field(default_factory=lambda: np.ones(1))
    ccc: dict | None = None

    # ----------------------------------------------------------- look-ups
    def pdd(self, depth_mm: Any, field_mm: float) -> np.ndarray:
        """Central-axis PDD (%) at SSD ``pdd_ssd_mm`` for a square field of side ``field_mm``
        (linear in field size, then in depth; field size clamped to the table)."""
        f = float(np.clip(field_mm, self.pdd_field_mm[0], self.pdd_field_mm[-1]))
        col = np.array([np.interp(f, self.pdd_field_mm, self.pdd_percent[:, k]) for k in range(self.pdd_depth_mm.size)])
        return np.interp(depth_mm, self.pdd_depth_mm, col)

    def output_factor(self, field_mm: Any) -> np.ndarray:
        """Total output factor S_cp for square field side(s) ``field_mm`` (interpolated, clamped)."""
        return np.interp(field_mm, self.of_field_mm, self.scp)

    def head_scatter(self, field_mm: Any) -> np.ndarray:
        """Head-scatter factor S_c for a collimator (jaw) equivalent square ``field_mm`` (clamped)."""
        return np.interp(field_mm, self.of_field_mm, self.sc)

    def phantom_scatter(self, field_mm: Any) -> np.ndarray:
        """Phantom-scatter factor S_p = S_cp / S_c."""
        return np.interp(field_mm, self.of_field_mm, self.scp / self.sc)

    def penumbra(self, depth_mm: Any) -> np.ndarray:
        """80–20 % penumbra (mm) of the reference field at depth (linear, extrapolated at the ends)."""
        d = np.asarray(depth_mm, dtype=np.float64)
        x, y = self.penumbra_depth_mm, self.penumbra_mm
        if x.size == 1:
            return np.full_like(d, y[0])
        out = np.interp(d, x, y)
        lo = d < x[0]
        hi = d > x[-1]
        out = np.where(lo, y[0] + (d - x[0]) * (y[1] - y[0]) / (x[1] - x[0]), out)
        out = np.where(hi, y[-1] + (d - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2]), out)
        return out

    # ------------------------------------------------------------ off-axis profile
    def off_axis_ratio(self, r_mm: Any) -> np.ndarray:
        """Primary fluence relative to the central axis at radii ``r_mm`` (mm, isocentre plane);
        linear in the table, constant beyond its last radius; 1.0 for a machine without ``off_axis``."""
        return np.interp(np.abs(np.asarray(r_mm, dtype=np.float64)), self.oar_radius_mm, self.oar_fluence)

    def off_axis_mu_ratio(self, r_mm: Any) -> np.ndarray:
        """Effective attenuation coefficient relative to the central axis at radii ``r_mm`` (mm,
        isocentre plane; >1 = softer off axis); 1.0 without ``off_axis.mu_ratio``."""
        return np.interp(np.abs(np.asarray(r_mm, dtype=np.float64)), self.oar_radius_mm, self.oar_mu_ratio)

    @property
    def has_off_axis_fluence(self) -> bool:
        """True when the off-axis fluence ratio is not 1 everywhere."""
        return bool(np.any(self.oar_fluence != 1.0))

    @property
    def has_off_axis_softening(self) -> bool:
        """True when the off-axis attenuation ratio is not 1 everywhere."""
        return bool(np.any(self.oar_mu_ratio != 1.0))

    def effective_mu_per_mm(self) -> float:
        """Effective attenuation coefficient (1/mm) of the calibration field on the central axis:
        the slope of ln(PDD × inverse square) between 100 and 200 mm depth."""
        d = np.array([100.0, 200.0])
        t = self.pdd(d, self.calib_field_mm) * ((self.pdd_ssd_mm + d) / (self.pdd_ssd_mm + self.calib_depth_mm)) ** 2
        return float(np.log(t[0] / t[1]) / (d[1] - d[0]))


# ------------------------------------------------------------------ loading
class _Reader:
    def __init__(self, data: dict, path: Path):
        self.data, self.path = data, path

    def fail(self, field: str, problem: str) -> MachineDataError:
        return MachineDataError(f"field {field!r}: {problem}", path=self.path)

    def get(self, field: str) -> Any:
        node: Any = self.data
        for part in field.split("."):
            if not isinstance(node, dict) or part not in node:
                raise self.fail(field, "missing")
            node = node[part]
        return node

    def number(self, field: str, *, positive: bool = False, lo: float | None = None, hi: float | None = None) -> float:
        v = self.get(field)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise self.fail(field, f"must be a finite number, got {v!r}")
        v = float(v)
        if positive and v <= 0:
            raise self.fail(field, f"must be positive, got {v}")
        if lo is not None and v < lo:
            raise self.fail(field, f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise self.fail(field, f"must be <= {hi}, got {v}")
        return v

    def array(self, field: str, *, ndim: int = 1, increasing: bool = False, positive: bool = False, nonneg: bool = False, min_len: int = 1) -> np.ndarray:
        v = self.get(field)
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise self.fail(field, "must be a list of numbers (a table)") from None
        if a.ndim != ndim:
            raise self.fail(field, f"must be a {ndim}-D list of numbers, got shape {a.shape}")
        if a.shape[-1] < min_len:
            raise self.fail(field, f"needs at least {min_len} values")
        if not np.all(np.isfinite(a)):
            raise self.fail(field, "has non-finite values")
        if increasing and np.any(np.diff(a) <= 0):
            raise self.fail(field, "must be strictly increasing")
        if positive and np.any(a <= 0):
            raise self.fail(field, "must be positive")
        if nonneg and np.any(a < 0):
            raise self.fail(field, "must not be negative")
        return a


def _read_json(path: Path, kind: type[InputError]) -> tuple[dict, str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise kind(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise kind(f"not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}", path=path) from exc
    if not isinstance(data, dict):
        raise kind("top level must be an object/table", path=path)
    return data, hashlib.sha256(raw).hexdigest()


def load_machine(path: str | Path | None = None) -> Machine:
    """Load and validate a machine (beam model) file.

    Parameters
    ----------
    path : str or Path, optional
        A JSON or TOML file in the format of ``docs/machine_data.md``; default: the
        generic 6 MV linac shipped in ``art/dose/data/generic_6x.json``.

    Returns
    -------
    Machine

    Raises
    ------
    MachineDataError
        Naming the file and the field that is missing or invalid.
    """
    p = Path(path) if path is not None else DEFAULT_MACHINE
    data, digest = _read_json(p, MachineDataError)
    r = _Reader(data, p)
    # the sections in file order: the first invalid field is the one reported
    identity = _read_identity(r)
    calibration = _read_calibration(r)
    depth_dose = _read_depth_dose(r, calibration)
    output_factors = _read_output_factors(r, calibration)
    profile = _read_profile(r)
    mlc = _read_mlc(r)
    jaws = _read_jaws(r)
    mu = _read_mu(r)
    options = _read_options(r, identity["energy"])
    return Machine(**identity, **calibration, **depth_dose, **output_factors, **profile, mlc=mlc, **jaws, **mu, source=str(p), digest=digest,
                   **options)  # fmt: skip


def _read_identity(r: _Reader) -> dict[str, Any]:
    """``format`` (must be ``art-machine/1``), ``name``, ``energy`` and ``sad_mm`` (500–2000 mm).

    Returns ``name``, ``energy`` (stripped) and ``sad_mm`` (float, mm) as :class:`Machine` fields.
    """
    fmt = r.get("format")
    if fmt != "art-machine/1":
        raise r.fail("format", f"must be 'art-machine/1', got {fmt!r}")
    name = r.get("name")
    if not isinstance(name, str) or not name.strip():
        raise r.fail("name", "must be a non-empty string")
    energy = r.get("energy")
    if not isinstance(energy, str) or not energy.strip():
        raise r.fail("energy", "must be a non-empty string such as '6X'")
    sad = r.number("sad_mm", lo=500.0, hi=2000.0)
    return {"name": name.strip(), "energy": energy.strip(), "sad_mm": sad}


def _read_calibration(r: _Reader) -> dict[str, float]:
    """The ``calibration`` section: Gy per MU (≤ 1) at the reference field (mm), SSD (mm) and
    depth (mm), as the :class:`Machine` fields ``dose_per_mu_gy``, ``calib_field_mm``,
    ``calib_ssd_mm``, ``calib_depth_mm``."""
    dpm = r.number("calibration.dose_per_mu_gy", positive=True, hi=1.0)
    cf = r.number("calibration.field_size_mm", positive=True)
    cssd = r.number("calibration.ssd_mm", positive=True)
    cdep = r.number("calibration.depth_mm", positive=True)
    return {"dose_per_mu_gy": dpm, "calib_field_mm": cf, "calib_ssd_mm": cssd, "calib_depth_mm": cdep}


def _read_depth_dose(r: _Reader, calibration: dict[str, float]) -> dict[str, Any]:
    """The ``depth_dose`` section: a PDD table (nf field sizes × nd depths, percent), normalised
    to 100 at the calibration depth and not increasing beyond it, covering 0–300 mm and the
    calibration field.

    Returns the :class:`Machine` fields ``pdd_ssd_mm`` (float), ``pdd_field_mm`` (nf,),
    ``pdd_depth_mm`` (nd,) and ``pdd_percent`` (nf, nd), float64.
    """
    cf, cdep = calibration["calib_field_mm"], calibration["calib_depth_mm"]
    kind = r.get("depth_dose.kind")
    if kind != "PDD":
        raise r.fail("depth_dose.kind", f"only 'PDD' is supported, got {kind!r}")
    pssd = r.number("depth_dose.ssd_mm", positive=True)
    nd = r.number("depth_dose.normalisation_depth_mm", positive=True)
    if abs(nd - cdep) > 1e-6:
        raise r.fail("depth_dose.normalisation_depth_mm", f"must equal calibration.depth_mm ({cdep})")
    fs = r.array("depth_dose.field_sizes_mm", increasing=True, positive=True, min_len=3)
    ds = r.array("depth_dose.depths_mm", increasing=True, nonneg=True, min_len=5)
    pv = r.array("depth_dose.values_percent", ndim=2, nonneg=True)
    if pv.shape != (fs.size, ds.size):
        raise r.fail("depth_dose.values_percent", f"must be {fs.size} rows (field sizes) x {ds.size} columns (depths), got {pv.shape}")
    if ds[0] > 0 or ds[-1] < 300:
        raise r.fail("depth_dose.depths_mm", "must cover 0 to at least 300 mm")
    if not (fs[0] <= cf <= fs[-1]):
        raise r.fail("depth_dose.field_sizes_mm", f"must include the calibration field {cf} mm")
    for k in range(fs.size):
        at_ref = np.interp(cdep, ds, pv[k])
        if abs(at_ref - 100.0) > 0.5:
            raise r.fail("depth_dose.values_percent", f"row {k} (field {fs[k]} mm) is {at_ref:.1f} % at the normalisation depth, not 100 %")
        if np.any(np.diff(pv[k][ds >= cdep]) > 0):
            raise r.fail("depth_dose.values_percent", f"row {k} (field {fs[k]} mm) increases beyond the normalisation depth")
    return {"pdd_ssd_mm": pssd, "pdd_field_mm": fs, "pdd_depth_mm": ds, "pdd_percent": pv}


def _read_output_factors(r: _Reader, calibration: dict[str, float]) -> dict[str, np.ndarray]:
    """The ``output_factors`` section: total (S_cp) and head-scatter (S_c) factors per square
    field size (mm), 1.0 at the calibration field, within [0.5, 1.5], at the calibration depth.

    Returns the :class:`Machine` fields ``of_field_mm``, ``scp`` and ``sc``, (no,) float64.
    """
    cf, cdep = calibration["calib_field_mm"], calibration["calib_depth_mm"]
    ofs = r.array("output_factors.field_sizes_mm", increasing=True, positive=True, min_len=3)
    scp = r.array("output_factors.total", positive=True)
    sc = r.array("output_factors.head_scatter", positive=True)
    for fld, arr in (("output_factors.total", scp), ("output_factors.head_scatter", sc)):
        if arr.shape != ofs.shape:
            raise r.fail(fld, f"must have {ofs.size} values (one per field size), got {arr.size}")
        ref = np.interp(cf, ofs, arr)
        if abs(ref - 1.0) > 0.005:
            raise r.fail(fld, f"must be 1.0 at the calibration field {cf} mm, got {ref:.3f}")
        if np.any(arr < 0.5) or np.any(arr > 1.5):
            raise r.fail(fld, "values must lie between 0.5 and 1.5")
    if abs(r.number("output_factors.depth_mm", positive=True) - cdep) > 1e-6:
        raise r.fail("output_factors.depth_mm", f"must equal calibration.depth_mm ({cdep})")
    return {"of_field_mm": ofs, "scp": scp, "sc": sc}


def _read_profile(r: _Reader) -> dict[str, Any]:
    """The ``profile`` section: 80–20 % penumbra (mm, at most 30) of one field (mm) per depth (mm).

    Returns the :class:`Machine` fields ``penumbra_field_mm`` (float), ``penumbra_depth_mm``
    and ``penumbra_mm`` ((np,) float64).
    """
    pf = r.number("profile.field_size_mm", positive=True)
    pdep = r.array("profile.depths_mm", increasing=True, nonneg=True)
    pen = r.array("profile.penumbra_80_20_mm", positive=True)
    if pen.shape != pdep.shape:
        raise r.fail("profile.penumbra_80_20_mm", f"must have one value per depth ({pdep.size})")
    if np.any(pen > 30):
        raise r.fail("profile.penumbra_80_20_mm", "values above 30 mm are not plausible")
    return {"penumbra_field_mm": pf, "penumbra_depth_mm": pdep, "penumbra_mm": pen}


def _read_mlc(r: _Reader, prefix: str = "mlc.") -> MLCGeometry:
    """The ``mlc`` section (``prefix`` "" for an MLC model file's top level): leaf widths (mm) from the
    first boundary (mm), leaf position limits, maximum leaf span, minimum gap (0–20 mm),
    interdigitation and transmission (0–0.2)."""
    widths = r.array(f"{prefix}leaf_widths_mm", positive=True)
    npairs = r.number(f"{prefix}n_pairs", positive=True)
    if int(npairs) != widths.size:
        raise r.fail(f"{prefix}leaf_widths_mm", f"has {widths.size} widths but {prefix}n_pairs is {int(npairs)}")
    b0 = r.number(f"{prefix}first_boundary_mm")
    bounds = b0 + np.concatenate([[0.0], np.cumsum(widths)])
    lim = r.array(f"{prefix}position_limits_mm", increasing=True)
    if lim.size != 2:
        raise r.fail(f"{prefix}position_limits_mm", "must be [min, max]")
    mlc_interdig = r.get(f"{prefix}interdigitation")
    if not isinstance(mlc_interdig, bool):
        raise r.fail(f"{prefix}interdigitation", "must be true or false")
    return MLCGeometry(
        boundaries_mm=bounds,
        position_limits_mm=(float(lim[0]), float(lim[1])),
        max_leaf_span_mm=r.number(f"{prefix}max_leaf_span_mm", positive=True),
        min_gap_mm=r.number(f"{prefix}min_gap_mm", lo=0.0, hi=20.0),
        interdigitation=mlc_interdig,
        transmission=r.number(f"{prefix}transmission", lo=0.0, hi=0.2),
    )


def _read_jaws(r: _Reader) -> dict[str, Any]:
    """The ``jaws`` section: X and Y limits ``[min, max]`` (mm) and transmission (0–0.2), as the
    :class:`Machine` fields ``jaw_x_limits_mm``, ``jaw_y_limits_mm``, ``jaw_transmission``."""
    jx = r.array("jaws.x_limits_mm", increasing=True)
    jy = r.array("jaws.y_limits_mm", increasing=True)
    if jx.size != 2 or jy.size != 2:
        raise r.fail("jaws.x_limits_mm", "jaw limits must be [min, max]")
    return {
        "jaw_x_limits_mm": (float(jx[0]), float(jx[1])),
        "jaw_y_limits_mm": (float(jy[0]), float(jy[1])),
        "jaw_transmission": r.number("jaws.transmission", lo=0.0, hi=0.2),
    }


def _read_mu(r: _Reader) -> dict[str, float]:
    """The ``mu`` section: minimum MU per segment, maximum MU per beam, dose rate (MU/min)."""
    return {
        "min_mu_per_segment": r.number("mu.min_per_segment", lo=0.0),
        "max_mu_per_beam": r.number("mu.max_per_beam", positive=True),
        "dose_rate_mu_per_min": r.number("mu.dose_rate_mu_per_min", positive=True),
    }


FLUENCE_MODES = ("STANDARD", "FFF")


def _read_options(r: _Reader, energy: str) -> dict[str, Any]:
    """The optional fields: ``fluence_mode`` (default "FFF" when the energy ends with FFF, else
    "STANDARD"), ``aliases`` (strings), ``off_axis`` (:func:`_read_off_axis`) and the raw ``ccc`` dict."""
    fff = energy.upper().endswith("FFF")
    mode = r.data.get("fluence_mode", "FFF" if fff else "STANDARD")
    if mode not in FLUENCE_MODES:
        raise r.fail("fluence_mode", f"must be one of {', '.join(FLUENCE_MODES)}, got {mode!r}")
    if fff and mode != "FFF":
        raise r.fail("fluence_mode", f"is {mode!r} but the energy {energy!r} is a flattening-filter-free beam")
    aliases = r.data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise r.fail("aliases", "must be a list of non-empty strings (TreatmentMachineName values)")
    ccc = r.data.get("ccc", None)
    if ccc is not None and not isinstance(ccc, dict):
        raise r.fail("ccc", "must be an object/table")
    return {"fluence_mode": mode, "aliases": tuple(a.strip() for a in aliases), **_read_off_axis(r), "ccc": ccc}


def _read_off_axis(r: _Reader) -> dict[str, np.ndarray]:
    """The optional ``off_axis`` section: radii (mm, increasing from 0), the fluence ratio (0.2–2, 1 at 0)
    and optionally ``mu_ratio`` (0.5–2, 1 at 0), as the Machine fields ``oar_radius_mm``, ``oar_fluence``,
    ``oar_mu_ratio``; flat one-point tables without the section."""
    if "off_axis" not in r.data:
        return {"oar_radius_mm": np.zeros(1), "oar_fluence": np.ones(1), "oar_mu_ratio": np.ones(1)}
    if not isinstance(r.data["off_axis"], dict):
        raise r.fail("off_axis", "must be an object/table with radii_mm, fluence_ratio and optionally mu_ratio")
    rad = r.array("off_axis.radii_mm", increasing=True, nonneg=True, min_len=2)
    if rad[0] != 0.0:
        raise r.fail("off_axis.radii_mm", "must start at 0 (the central axis)")
    out = {"oar_radius_mm": rad}
    for fld, key, lo, hi in (("fluence_ratio", "oar_fluence", 0.2, 2.0), ("mu_ratio", "oar_mu_ratio", 0.5, 2.0)):
        if fld == "mu_ratio" and fld not in r.data["off_axis"]:
            out[key] = np.ones_like(rad)
            continue
        a = r.array(f"off_axis.{fld}", positive=True)
        if a.shape != rad.shape:
            raise r.fail(f"off_axis.{fld}", f"must have one value per radius ({rad.size})")
        if abs(a[0] - 1.0) > 1e-6:
            raise r.fail(f"off_axis.{fld}", f"must be 1.0 on the central axis (radius 0), got {a[0]}")
        if np.any(a < lo) or np.any(a > hi):
            raise r.fail(f"off_axis.{fld}", f"values must lie between {lo} and {hi}")
        out[key] = a
    return out


# ------------------------------------------------------------ CT calibration
@dataclass(frozen=True)
class HUTable:
    """HU → relative electron density table (piecewise linear, clamped at both ends)."""

    hu: np.ndarray
    density: np.ndarray
    name: str = ""
    source: str = ""


def load_hu_table(path: str | Path | None = None) -> HUTable:
    """Load a HU → relative electron density table (JSON/TOML with ``hu`` and
    ``relative_electron_density`` lists); default: ``art/dose/data/hu_to_density.json``.

    Raises
    ------
    MachineDataError
        Naming the file and the field.
    """
    p = Path(path) if path is not None else DEFAULT_HU_TABLE
    data, _ = _read_json(p, MachineDataError)
    r = _Reader(data, p)
    hu = r.array("hu", increasing=True, min_len=2)
    rho = r.array("relative_electron_density", nonneg=True, min_len=2)
    if rho.shape != hu.shape:
        raise r.fail("relative_electron_density", f"must have one value per HU point ({hu.size})")
    if np.any(np.diff(rho) < 0):
        raise r.fail("relative_electron_density", "must not decrease with HU")
    if rho[-1] > 10:
        raise r.fail("relative_electron_density", "values above 10 are not plausible")
    return HUTable(hu=hu, density=rho, name=str(data.get("name", "")), source=str(p))


def hu_to_density(hu: Any, table: HUTable | None = None) -> np.ndarray:
    """Relative electron density (water = 1) of CT numbers.

    Parameters
    ----------
    hu : array_like
        CT numbers (HU), any shape.
    table : HUTable, optional
        Calibration; default :func:`load_hu_table` ().

    Returns
    -------
    ndarray, float32, same shape as ``hu``
        Piecewise-linear interpolation in the table, clamped to the end values.
    """
    if table is None:
        table = _default_hu_table()
    if not isinstance(table, HUTable):
        raise InputError(f"table must be an HUTable (see load_hu_table), got {type(table).__name__}")
    a = np.asarray(hu, dtype=np.float32)
    return np.interp(a, table.hu, table.density).astype(np.float32)


_HU_CACHE: list[HUTable] = []


def _default_hu_table() -> HUTable:
    if not _HU_CACHE:
        _HU_CACHE.append(load_hu_table())
    return _HU_CACHE[0]
