"""The trend figure (art.report.figures.trend_figure): data, reference lines, flagged points, argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from art.errors import InputError
from art.report.figures import trend_figure

from .conftest import png_pixels, png_size


def test_lines_carry_the_series_and_reference_values():
    fig = trend_figure(
        [1, 2, 3, 4],
        {"PTV D95% × 20": [57.4, 56.8, None, 56.2], "CTV": [59.0, 59.1, 58.9, 59.2]},
        ylabel="D95% (Gy)",
        lines={"goal ≥ 57 Gy": 57.0, "projected 56.8 Gy": 56.8},
        flagged={"PTV D95% × 20": [False, True, False, True]},
        title="PTV $D95$ <x>",
        as_figure=True,
    )
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    ptv = lines["PTV D95% × 20"]
    np.testing.assert_array_equal(ptv.get_xdata(), [1, 2, 3, 4])
    y = np.asarray(ptv.get_ydata(), dtype=float)
    assert np.isnan(y[2]) and np.allclose(y[[0, 1, 3]], [57.4, 56.8, 56.2])  # None: a gap
    goal = lines["goal ≥ 57 Gy"]
    assert np.allclose(goal.get_ydata(), 57.0) and goal.get_linestyle() == "--"
    assert np.allclose(lines["projected 56.8 Gy"].get_ydata(), 56.8)
    rings = [ln for ln in ax.get_lines() if ln.get_marker() == "o" and ln.get_markerfacecolor() == "none"]
    assert len(rings) == 1 and np.allclose(rings[0].get_xdata(), [2, 4]) and np.allclose(rings[0].get_ydata(), [56.8, 56.2])
    assert list(ax.get_xticks()) == [1, 2, 3, 4]
    assert ax.get_title() == r"PTV \$D95\$ <x>"  # no mathtext from a name with dollars
    assert ax.get_ylabel() == "D95% (Gy)"


def test_png_size_and_content():
    png = trend_figure([1, 2], {"Bladder": [310.0, 250.0]}, ylabel="volume (cc)", figsize=(5, 3), dpi=80)
    assert png_size(png) == (400, 240) and png_pixels(png)[..., :3].std() > 0.05
    assert png == trend_figure([1, 2], {"Bladder": [310.0, 250.0]}, ylabel="volume (cc)", figsize=(5, 3), dpi=80)
    assert png != trend_figure([1, 2], {"Bladder": [310.0, 200.0]}, ylabel="volume (cc)", figsize=(5, 3), dpi=80)


@pytest.mark.parametrize(
    "args, match",
    [
        (([], {"a": []}), "x must be"),
        (([1, 2], {}), "series must be"),
        (([1, 2], {"a": [1.0]}), "has 1 values but x has 2"),
        (([1, 2], {"a": [1.0, "high"]}), r"series\['a'\] must be a sequence of numbers"),
        (([1, 2], {"a": [1.0, np.inf]}), "finite"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(InputError, match=match):
        trend_figure(*args, ylabel="y")


def test_bad_lines_and_flags():
    with pytest.raises(InputError, match=r"lines\['goal'\]"):
        trend_figure([1, 2], {"a": [1, 2]}, ylabel="y", lines={"goal": None})
    with pytest.raises(InputError, match="names no series"):
        trend_figure([1, 2], {"a": [1, 2]}, ylabel="y", flagged={"b": [True, False]})
    with pytest.raises(InputError, match="has 1 values"):
        trend_figure([1, 2], {"a": [1, 2]}, ylabel="y", flagged={"a": [True]})
