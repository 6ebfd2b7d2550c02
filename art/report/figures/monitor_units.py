"""Monitor-unit figure: a bar chart of the MU per beam of one or more plans."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from art.errors import InputError
from art.report.figures._base import _finish, _new_figure


def mu_bar_figure(
    mu_per_beam: Mapping[str, Any],
    *,
    title: str | None = None,
    figsize: tuple[float, float] = (9.0, 4.0),
    dpi: int = 100,
    as_figure: bool = False,
) -> Any:
    """Bar chart of monitor units per beam.

    Parameters
    ----------
    mu_per_beam : mapping beam -> MU, or mapping plan label -> (mapping beam -> MU)
        MU per fraction. With several plans the bars are grouped by beam.
    title, figsize, dpi, as_figure : keyword-only
        See :func:`dvh_figure`. With ``as_figure`` each plan's bars are one
        BarContainer of the axes, in order.

    Returns
    -------
    bytes or matplotlib.figure.Figure
    """
    if not isinstance(mu_per_beam, Mapping) or not mu_per_beam:
        raise InputError("mu_per_beam must be a non-empty mapping beam -> MU (or plan label -> {beam: MU})")
    first = next(iter(mu_per_beam.values()))
    per_plan = mu_per_beam if isinstance(first, Mapping) else {"": mu_per_beam}
    beams: list[str] = []
    clean: dict[str, dict[str, float]] = {}
    for label, m in per_plan.items():
        if not isinstance(m, Mapping):
            raise InputError(f"mu_per_beam[{label!r}] must be a mapping beam -> MU")
        clean[str(label)] = {}
        for b, mu in m.items():
            if not (isinstance(mu, (int, float, np.integer, np.floating)) and math.isfinite(float(mu)) and float(mu) >= 0):
                raise InputError(f"MU of beam {b!r} must be a non-negative number, got {mu!r}")
            clean[str(label)][str(b)] = float(mu)
            if str(b) not in beams:
                beams.append(str(b))
    fig = _new_figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    n = len(clean)
    width = 0.8 / n
    x = np.arange(len(beams))
    for i, (label, m) in enumerate(clean.items()):
        vals = [m.get(b, 0.0) for b in beams]
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width=width, label=label or None)
    ax.set_xticks(x, beams, rotation=45 if len(beams) > 8 else 0, fontsize=8)
    ax.set_ylabel("MU per fraction")
    ax.grid(True, axis="y", alpha=0.3)
    if n > 1:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _finish(fig, as_figure, dpi)
