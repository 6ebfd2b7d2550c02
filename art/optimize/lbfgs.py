"""Fast fluence optimisation: smooth penalties minimised with L-BFGS-B, in priority stages.

This is the default method of :func:`art.optimize.fmo.optimize_fluence`
(``method="lbfgs"``). It works on the same down-sampled, scaled problem as the
cvxpy method: ``u = B @ x`` is the dose in units of the prescription dose,
``x ≥ 0`` the scaled beamlet weights. Each surrogate requirement
(:mod:`art.optimize.objectives`) becomes a smooth penalty that is 0 exactly
when the requirement holds on the sampled voxels (``ω`` the voxel volumes
normalised to sum 1, ``L`` the level):

==============================  ==============================================
surrogate form                  penalty
==============================  ==============================================
``mean`` (Dmean, ...)           ``max(0, mean - L)²`` (upper) /
                                ``max(0, L - mean)²`` (lower)
``extreme`` (Dmax ≤, Dmin ≥)    ``Σ ω (u - L)₊² / η`` (upper; lower mirrored),
                                ``η = max(0.01, max ω)``
``cvar`` (D x%, V d Gy)         dose-volume penalty (Wu & Mohan 2000): with
                                ``q`` the structure's current dose at the
                                goal's volume, the voxels between ``L`` and
                                ``q`` are penalised, ``Σ ω (u - L)² / η``,
                                ``η = max(0.01, min(f, 1 - f))``; 0 when the
                                DVH point meets the goal
==============================  ==============================================

The hierarchy is realised by successive stages (one per priority, ascending,
then a final stage): stage *p* minimises the penalties of the priority-*p*
goals plus ``hold_weight`` times the penalties of every earlier goal, held at
the level it achieved (its goal level when met, the achieved value otherwise:
the DVH point, mean, max or min), plus small multiples of the final-stage
terms. Upper ``extreme`` (max-dose) requirements count as hard: their weight
is ``hold_weight`` already in their own stage. A stage whose goals the
current weights already meet is skipped. The final stage adds, at full
weight, the stretch goals, OAR mean dose, a quadratic normal-tissue fall-off
penalty, target hot spots above the prescription and fluence smoothness
(squared differences of neighbouring beamlets). After a stage, held
requirements that slipped by more than the tolerance get a ten-fold weight and
the stage continues (at most three times). The objective is scaled by
``1 / tolerance²`` so that L-BFGS-B's stopping rule (relative to ``max(|f|, 1)``)
does not take a miss near the tolerance for convergence.

Each evaluation costs one product with ``B`` and one with ``Bᵀ``; vector dot
products avoid BLAS, whose threads spin on a busy machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import optimize, sparse

from art.optimize.objectives import Surrogate
from art.blas import single_threaded_blas
from art.optimize.products import SparseProducts

__all__ = ["PenaltyTerm", "LbfgsStage", "penalty_terms", "run_stages"]


@dataclass
class PenaltyTerm:
    """One surrogate as a smooth penalty on the sampled dose (prescription units).

    Attributes
    ----------
    index : int
        Index of the surrogate.
    rows : ndarray of int64
        Sampled rows of the structure.
    omega : ndarray of float64
        Voxel volumes normalised to sum 1.
    sense : {"upper", "lower"}
    form : {"mean", "extreme", "cvar"}
    fraction : float
        Tail fraction (``"cvar"``).
    level : float
        Level in units of the prescription dose.
    """

    index: int
    rows: np.ndarray
    omega: np.ndarray
    sense: str
    form: str
    fraction: float
    level: float

    @property
    def eta(self) -> float:
        if self.form == "extreme":
            return max(0.01, float(self.omega.max()))
        if self.form == "cvar":
            return max(0.01, min(self.fraction, 1.0 - self.fraction))
        return 1.0

    def achieved(self, u: np.ndarray) -> float:
        """The requirement's current value (mean, max/min or DVH point), prescription units."""
        d = u[self.rows]
        if self.form == "mean":
            return _dot(self.omega, d)
        if self.form == "extreme":
            return float(d.max() if self.sense == "upper" else d.min())
        return _tail_point(d, self.omega, self.fraction, self.sense)

    def violation(self, u: np.ndarray, level: float | None = None) -> float:
        """By how much (prescription units, >= 0) the requirement misses ``level``."""
        lv = self.level if level is None else level
        a = self.achieved(u)
        return max(0.0, a - lv) if self.sense == "upper" else max(0.0, lv - a)

    def penalty(self, u: np.ndarray, level: float) -> tuple[float, np.ndarray | None]:
        """Penalty value and its gradient with respect to ``u[self.rows]`` (None when 0)."""
        d = u[self.rows]
        om = self.omega
        up = self.sense == "upper"
        if self.form == "mean":
            m = _dot(om, d)
            v = m - level if up else level - m
            if v <= 0:
                return 0.0, None
            return v * v, (2.0 * v if up else -2.0 * v) * om
        if self.form == "extreme":
            e = d - level if up else level - d
            pos = e > 0
            if not pos.any():
                return 0.0, None
            e = np.where(pos, e, 0.0)
            eta = self.eta
            g = 2.0 * om * e / eta
            return _dot(om, e * e) / eta, (g if up else -g)
        q = _tail_point(d, om, self.fraction, self.sense)
        if (up and q <= level) or (not up and q >= level):
            return 0.0, None
        sel = (d > level) & (d <= q) if up else (d < level) & (d >= q)
        e = np.where(sel, d - level if up else level - d, 0.0)
        eta = self.eta
        g = 2.0 * om * e / eta
        return _dot(om, e * e) / eta, (g if up else -g)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a · b`` without BLAS: OpenBLAS threads spin badly on a busy 2-core machine (5x slower)."""
    return float(np.multiply(a, b).sum())


def _tail_point(d: np.ndarray, om: np.ndarray, fraction: float, sense: str) -> float:
    """Dose with volume ``fraction`` hotter (upper) or colder (lower) than it, conservatively.

    :mod:`art.evaluate.metrics` places each voxel's dose at the middle of the
    volume it stands for and interpolates between neighbours; the value
    returned is the hotter (upper) or colder (lower) of the two voxels the
    interpolation uses, so that it meeting a level implies the exact metric does.
    """
    order = np.argsort(-d if sense == "upper" else d, kind="stable")
    w = om[order]
    cum = np.cumsum(w)
    mid = cum - 0.5 * w
    k = int(np.searchsorted(mid, fraction * cum[-1] * (1 + 1e-12), side="right")) - 1
    k = min(max(k, 0), d.size - 1)
    return float(d[order[k]])


def penalty_terms(surrogates: Sequence[Surrogate], structures: dict, rx_gy: float, find: Callable) -> list[PenaltyTerm]:
    """Penalty terms of ``surrogates`` on the sampled structures (levels in prescription units)."""
    out = []
    for k, s in enumerate(surrogates):
        sv = find(structures, s.structure)
        om = sv.weight_array()
        om = om / om.sum() if om.size else om
        out.append(PenaltyTerm(k, sv.rows, om, s.sense, s.form, float(s.fraction), s.level_gy / rx_gy))
    return out


@dataclass
class LbfgsStage:
    """What one L-BFGS-B stage did (for :class:`art.optimize.fmo.StageLog`)."""

    name: str
    priority: int | None
    status: str
    wall_time_s: float
    iterations: int
    evaluations: int
    violations: dict[int, float]


class _Problem:
    """Objective and gradient of one stage: penalties + smooth extra terms."""

    def __init__(self, b: sparse.csr_matrix, terms: list[PenaltyTerm], extra: dict) -> None:
        self.b = b
        self.products = SparseProducts(b)  # B @ x and B.T @ g on two threads, bit-identical
        self.terms = terms
        self.extra = extra
        self.n_evals = 0
        self.last_penalty = np.inf  # goal penalties (no extra terms) at the last evaluated point

    def dose(self, x: np.ndarray) -> np.ndarray:
        return self.products.dot(x)

    def objective(self, x: np.ndarray, tw: np.ndarray, levels: np.ndarray, lam: np.ndarray) -> tuple[float, np.ndarray]:
        self.n_evals += 1
        u = self.products.dot(x)
        gu = np.zeros_like(u)
        f = 0.0
        for t in self.terms:
            w = tw[t.index]
            if w == 0.0:
                continue
            p, g = t.penalty(u, levels[t.index])
            if g is not None:
                f += w * p
                gu[t.rows] += w * g
        self.last_penalty = f
        ex = self.extra
        # 0 normal tissue, 1 OAR mean, 2 hot spot, 3 smoothness, 4 total fluence
        if lam[0] and ex.get("nt_rows") is not None:
            r, om, lv = ex["nt_rows"], ex["nt_omega"], ex["nt_level"]
            e = np.maximum(u[r] - lv, 0.0)
            f += lam[0] * _dot(om, e * e)
            gu[r] += lam[0] * 2.0 * om * e
        if lam[1] and ex.get("oars"):
            n = len(ex["oars"])
            for r, om in ex["oars"]:
                f += lam[1] * _dot(om, u[r]) / n
                gu[r] += lam[1] * om / n
        if lam[2] and ex.get("hot_rows") is not None:
            r, om = ex["hot_rows"], ex["hot_omega"]
            e = np.maximum(u[r] - 1.0, 0.0)
            f += lam[2] * _dot(om, e * e)
            gu[r] += lam[2] * 2.0 * om * e
        g = self.products.tdot(gu)
        if lam[3] and ex.get("pairs") is not None:
            p = ex["pairs"]
            diff = x[p[:, 0]] - x[p[:, 1]]
            f += lam[3] * _dot(diff, diff) / p.shape[0]
            gd = lam[3] * 2.0 * diff / p.shape[0]
            g = g + np.bincount(p[:, 0], gd, x.size) - np.bincount(p[:, 1], gd, x.size)
        if lam[4]:
            f += lam[4] * float(x.sum()) / x.size
            g = g + lam[4] / x.size
        return f, g


class _Timeout(Exception):
    pass


def run_stages(
    b: sparse.csr_matrix,
    terms: list[PenaltyTerm],
    stage_terms: list[tuple[int, list[int]]],
    stretch_terms: list[int],
    extra: dict,
    lam_final: np.ndarray,
    x0: np.ndarray,
    *,
    hold_weight: float = 20.0,
    reg: float = 1e-3,
    tolerance: float = 1e-3,
    max_iterations: int = 300,
    final_iterations: int | None = None,
    deadline: float | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> tuple[np.ndarray, list[LbfgsStage], bool]:
    """Run the priority stages and the final stage.

    Parameters
    ----------
    b : csr_matrix, shape (m, n)
        Sampled, scaled influence (prescription units per unit ``x``).
    terms : list of PenaltyTerm
    stage_terms : list of (priority, term indices)
        Non-stretch requirements of each priority, ascending.
    stretch_terms : list of int
    extra : dict
        Rows and weights of the extra terms (see ``_Problem.objective``).
    lam_final : ndarray, shape (5,)
        Weights of normal tissue, OAR mean, hot spot, smoothness, total fluence.
    x0 : ndarray, shape (n,)
        Start (scaled weights).
    hold_weight : float, keyword-only
        Weight of held (higher-priority) and hard requirements.
    reg : float, keyword-only
        Multiple of ``lam_final`` used in the priority stages.
    tolerance : float, keyword-only
        Prescription units a held requirement may slip above what it achieved.
    max_iterations, final_iterations : int, keyword-only
        L-BFGS-B iterations per priority stage and for the final stage.
    deadline : float, optional, keyword-only
        ``time.perf_counter()`` value after which the best point so far is kept.

    Returns
    -------
    x : ndarray, shape (n,)
    stages : list of LbfgsStage
    timed_out : bool
    """
    runner = _StageRunner(_Problem(b, terms, extra), terms, x0, hold_weight=hold_weight, tolerance=tolerance, deadline=deadline, progress=progress)
    stages: list[LbfgsStage] = []
    final_iterations = max_iterations if final_iterations is None else final_iterations
    n_stages = len(stage_terms) + 1
    # the sparse products run on two threads of their own (SparseProducts): BLAS threads spinning
    # beside them (L-BFGS-B's vector operations) took the second core and cancelled the gain
    with single_threaded_blas():
        for si, (p, ks) in enumerate(stage_terms):
            if runner.timed_out:
                break
            stages.append(runner.priority_stage(p, ks, reg * lam_final, max_iterations, si / n_stages))
        if not runner.timed_out:
            log = runner.run("final", None, list(stretch_terms), lam_final, final_iterations, (n_stages - 1) / n_stages)
            stages.append(log)
    return runner.x, stages, runner.timed_out


class _StageRunner:
    """The state the stages share and change: the point, the held levels and the term weights.

    Attributes
    ----------
    prob : _Problem
    terms : list of PenaltyTerm
    levels : ndarray of float64, shape (n_terms,)
        Level each term is held at, prescription units (its own level until held).
    held : ndarray of bool, shape (n_terms,)
        Terms of earlier priorities (held at what they achieved).
    hold_w : ndarray of float64, shape (n_terms,)
        Weight of each held term in later stages.
    hard : ndarray of bool, shape (n_terms,)
        Upper ``extreme`` (max-dose) terms, weighted ``hold_weight`` in their own stage.
    x : ndarray of float64, shape (n,)
        Current scaled weights (>= 0).
    timed_out : bool
        The deadline has passed.
    obj_scale : float
        ``1 / tolerance²`` (tolerance at least 1e-6): the objective's scale.
    """

    def __init__(
        self,
        prob: _Problem,
        terms: list[PenaltyTerm],
        x0: np.ndarray,
        *,
        hold_weight: float,
        tolerance: float,
        deadline: float | None,
        progress: Callable[[str, float], None] | None,
    ) -> None:
        self.prob = prob
        self.terms = terms
        n_t = len(terms)
        self.levels = np.array([t.level for t in terms], dtype=np.float64)
        self.held = np.zeros(n_t, bool)
        self.hold_w = np.zeros(n_t)
        self.x = np.maximum(np.asarray(x0, dtype=np.float64), 0.0)
        self.timed_out = False
        self.hard = np.array([t.form == "extreme" and t.sense == "upper" for t in terms])
        # L-BFGS-B stops when the objective changes by less than ftol * max(|f|, 1): unscaled, penalties of
        # misses near the tolerance (~1e-6) look converged at once. Scaled, a miss of ``tolerance`` costs ~1.
        self.obj_scale = 1.0 / max(tolerance, 1e-6) ** 2
        self.hold_weight = hold_weight
        self.tolerance = tolerance
        self.deadline = deadline
        self.progress = progress

    def minimise(self, tw: np.ndarray, lam: np.ndarray, maxiter: int, stop_when_met: bool) -> tuple[str, int]:
        """One L-BFGS-B run from ``self.x`` with term weights ``tw`` (n_terms,) and extra weights ``lam`` (5,).

        Updates ``self.x`` (and ``self.timed_out``); with ``stop_when_met`` it
        stops as soon as every weighted penalty is 0. Returns the status and
        the iterations used.
        """
        prob, deadline, obj_scale = self.prob, self.deadline, self.obj_scale
        best = {"x": self.x}

        def cb(intermediate_result=None):  # noqa: ANN001
            if intermediate_result is not None:
                best["x"] = intermediate_result.x
            if deadline is not None and time.perf_counter() > deadline:
                raise StopIteration
            if stop_when_met and prob.last_penalty == 0.0:
                raise StopIteration  # every requirement of the stage holds: leave the rest to later stages

        def fun(xk: np.ndarray, *args) -> tuple[float, np.ndarray]:  # noqa: ANN002
            f, g = prob.objective(xk, *args)
            return f * obj_scale, g * obj_scale

        res = optimize.minimize(
            fun,
            self.x,
            args=(tw, self.levels, lam),
            jac=True,
            method="L-BFGS-B",
            bounds=optimize.Bounds(0.0, np.inf),
            callback=cb,
            options={"maxiter": int(maxiter), "maxcor": 20, "ftol": 1e-10, "gtol": 1e-9},
        )
        xn = res.x if res.x is not None else best["x"]
        self.x = np.maximum(np.asarray(xn, dtype=np.float64), 0.0)
        msg = str(res.message)
        if deadline is not None and time.perf_counter() > deadline:
            self.timed_out = True
            msg = "time limit"
        if stop_when_met and prob.last_penalty == 0.0 and msg != "time limit":
            return "goals met", int(res.nit)
        status = "optimal" if res.success else ("iteration limit" if "ITERATIONS" in msg.upper() or res.nit >= maxiter else msg)
        return status, int(res.nit)

    def run(self, name: str, prio: int | None, ks: list[int], lam: np.ndarray, maxiter: int, frac: float) -> LbfgsStage:
        """Minimise the terms ``ks`` (plus the held ones) with extra weights ``lam`` (5,); ``prio`` None is the final stage.

        A failed line search restarts once with a fresh memory; held terms that
        slipped are then stiffened (:meth:`_stiffen_slipped`). Returns the
        stage's log, with each term's violation (prescription units).
        """
        prob, hold_weight = self.prob, self.hold_weight
        t0 = time.perf_counter()
        e0 = prob.n_evals
        if self.progress is not None:
            self.progress(f"{name} (L-BFGS-B)", frac)
        tw = self.hold_w.copy()
        for k in ks:
            tw[k] = max(tw[k], hold_weight if self.hard[k] else 1.0)
        status, nit = self.minimise(tw, lam, maxiter, prio is not None)
        if status.startswith("ABNORMAL") and prio is not None and not self.timed_out and nit < maxiter:
            # a failed line search (the DVH penalties are only piecewise smooth): restart with a fresh memory
            st2, nit2 = self.minimise(tw, lam, maxiter - nit, True)
            status, nit = st2, nit + nit2
        status, nit = self._stiffen_slipped(tw, lam, maxiter, prio, status, nit)
        u = prob.dose(self.x)
        viol = {int(k): float(self.terms[k].violation(u)) for k in ks}
        return LbfgsStage(name, prio, status, time.perf_counter() - t0, nit, prob.n_evals - e0, viol)

    def _stiffen_slipped(self, tw: np.ndarray, lam: np.ndarray, maxiter: int, prio: int | None, status: str, nit: int) -> tuple[str, int]:
        """Held requirements that slipped by more than the tolerance: ten-fold weight and continue (at most three times).

        Changes ``tw`` (and ``self.hold_w`` of held terms) in place; returns the
        status of the last run and the iterations in all (``nit`` plus those
        added).
        """
        terms, levels, hold_weight = self.terms, self.levels, self.hold_weight
        for _ in range(3):
            if self.timed_out:
                break
            u = self.prob.dose(self.x)
            slipped = [k for k in range(len(terms)) if tw[k] >= hold_weight and terms[k].violation(u, levels[k]) > self.tolerance]
            if not slipped:
                break
            for k in slipped:
                tw[k] *= 10.0
                if self.held[k]:
                    self.hold_w[k] = tw[k]
            st2, nit2 = self.minimise(tw, lam, max(maxiter // 3, 30), prio is not None)
            status, nit = st2, nit + nit2
        return status, nit

    def priority_stage(self, p: int, ks: list[int], lam: np.ndarray, maxiter: int, frac: float) -> LbfgsStage:
        """The stage of priority ``p`` (terms ``ks``; skipped when they already hold), then hold what they achieved.

        A met requirement is held at its own level, a missed one at what it
        achieved plus the tolerance; held terms get ``hold_weight``.
        """
        terms, tolerance = self.terms, self.tolerance
        u = self.prob.dose(self.x)
        if all(terms[k].violation(u) <= 0.0 for k in ks):
            log = LbfgsStage(f"priority {p}", p, "skipped", 0.0, 0, 0, {int(k): 0.0 for k in ks})
        else:
            log = self.run(f"priority {p}", p, ks, lam, maxiter, frac)
            u = self.prob.dose(self.x)
        # hold what was achieved: the goal level when met, the achieved value otherwise
        for k in ks:
            # a met requirement is held at its own level (the slip allowance then stays inside the goal margin)
            a = terms[k].achieved(u)
            if terms[k].sense == "upper":
                self.levels[k] = terms[k].level if a <= terms[k].level else a + tolerance
            else:
                self.levels[k] = terms[k].level if a >= terms[k].level else a - tolerance
            self.held[k] = True
            self.hold_w[k] = self.hold_weight
        return log
