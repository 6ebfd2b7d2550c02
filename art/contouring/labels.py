"""The classes of the shipped contouring network and their RT ROI types and colours."""

from __future__ import annotations

__all__ = ["CLASSES", "ROI_TYPES", "COLOURS", "VOLUME_RANGES_CC", "FLUID_FILLED"]

#: Network output channels, in order; channel 0 is the background.
#: ``BODY`` is the body outside the other organs (the final BODY structure is
#: the union of every non-background class).
CLASSES: tuple[str, ...] = ("background", "BODY", "Bladder", "Rectum", "Prostate", "FemoralHead_L", "FemoralHead_R")

#: RT ROI Interpreted Type per structure name (anything else is ORGAN).
ROI_TYPES: dict[str, str] = {"BODY": "EXTERNAL"}

#: Display colours (r, g, b).
COLOURS: dict[str, tuple[int, int, int]] = {
    "BODY": (0, 255, 0),
    "Bladder": (255, 255, 0),
    "Rectum": (160, 82, 45),
    "Prostate": (255, 0, 0),
    "FemoralHead_L": (0, 191, 255),
    "FemoralHead_R": (0, 128, 255),
}

#: Plausible volume ranges (cc) for the anatomical sanity check; a structure
#: outside its range is flagged for review.
VOLUME_RANGES_CC: dict[str, tuple[float, float]] = {
    "BODY": (3000.0, 80000.0),
    "Bladder": (40.0, 1500.0),
    "Rectum": (10.0, 400.0),
    "Prostate": (8.0, 150.0),
    "FemoralHead_L": (20.0, 200.0),
    "FemoralHead_R": (20.0, 200.0),
}

#: Fluid-filled organs: their content is water-like (urine), never fat or gas.
#: Value: how far (HU) below the organ's own median CBCT intensity (smoothed
#: 2 mm) a voxel of the automatic contour may lie before it is removed as
#: surrounding fat (~100 HU darker than urine) or gas.
FLUID_FILLED: dict[str, float] = {"Bladder": 60.0}
