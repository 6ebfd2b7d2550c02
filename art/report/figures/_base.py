"""Canvas and argument checks shared by every report figure.

Figures are drawn with matplotlib's object API on the Agg canvas (no
``pyplot``, no global backend state); matplotlib is imported inside the
functions so ``import art.report`` stays light.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

from art.errors import InputError
from art.geometry import Volume
from art.structures import StructureSet


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def figure_to_png(fig: Any, *, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib Figure (``figsize × dpi`` pixels, no metadata).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    dpi : int, keyword-only
        Pixels per inch.

    Returns
    -------
    bytes
        The PNG file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imsave

    # one draw, the layout engine inside it: ``savefig`` draws twice when a figure has a layout
    # engine (once without rendering, for the layout); the PNG is the same to the byte
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    buf = io.BytesIO()
    imsave(buf, canvas.buffer_rgba(), format="png", origin="upper", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _finish(fig: Any, as_figure: bool, dpi: int) -> Any:
    if as_figure:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
        return fig
    return figure_to_png(fig, dpi=dpi)


def _check_volume(v: Any, name: str) -> Volume:
    if not isinstance(v, Volume):
        raise InputError(f"{name} must be a Volume (array and grid), got {type(v).__name__}")
    return v


def _rgb(color: Sequence[int] | str) -> Any:
    if isinstance(color, str):
        return color
    c = tuple(color)
    if len(c) != 3:
        raise InputError(f"a colour must be three integers 0-255, got {color!r}")
    return tuple(min(max(float(v), 0.0), 255.0) / 255.0 for v in c)


def _check_window(window: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise InputError(f"window must be two numbers (low, high) in image units, got {window!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise InputError(f"window must be finite with high > low, got {window!r}")
    return lo, hi


def _structures_arg(structures: Any) -> StructureSet | None:
    if structures is None or isinstance(structures, StructureSet):
        return structures
    raise InputError(f"structures must be a StructureSet or None, got {type(structures).__name__}")
