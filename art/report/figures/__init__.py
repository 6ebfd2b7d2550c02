"""Figures of the QA report: plain functions returning PNG bytes.

Every function draws with matplotlib's object API on the Agg canvas (no
``pyplot``, no global backend state; matplotlib is imported inside the
functions so ``import art.report`` stays light). Each returns the PNG bytes of
the figure, or the :class:`matplotlib.figure.Figure` itself with
``as_figure=True`` (for tests and for callers who want another format).

The PNG has exactly ``figsize × dpi`` pixels (no tight bounding box) and no
software metadata.

Planes
------
The image views (dose wash, difference, gamma, checkerboard) show three planes
through a point: axial (viewed from the feet: patient right on the left,
anterior at the top), coronal (viewed from the front: patient right on the
left, superior at the top) and sagittal (viewed from the patient's left:
anterior on the left, superior at the top). Each plane is sampled on an
axis-aligned LPS grid through the point (snapped to the nearest image voxel
centre), so oblique and feet-first images display in the same orientation.
Axes are in LPS mm with equal aspect, so anisotropic voxels show at their true
size. Every volume (dose, gamma, structures) is resampled onto the image's
planes with :func:`art.geometry.resample`.

Modules: :mod:`~art.report.figures.dvh` (DVH overlay),
:mod:`~art.report.figures.dose` (dose wash and dose difference),
:mod:`~art.report.figures.gamma` (gamma map and histogram),
:mod:`~art.report.figures.registration` (checkerboard),
:mod:`~art.report.figures.monitor_units` (MU per beam),
:mod:`~art.report.figures.trend` (values per fraction with reference lines).
"""

from art.report.figures._base import figure_to_png
from art.report.figures.dose import difference_figure, dose_wash_figure
from art.report.figures.dvh import DEFAULT_STYLES, dvh_figure
from art.report.figures.gamma import gamma_figure
from art.report.figures.monitor_units import mu_bar_figure
from art.report.figures.registration import checkerboard_figure
from art.report.figures.trend import trend_figure

__all__ = [
    "dvh_figure",
    "dose_wash_figure",
    "difference_figure",
    "gamma_figure",
    "checkerboard_figure",
    "mu_bar_figure",
    "trend_figure",
    "figure_to_png",
    "DEFAULT_STYLES",
]
