"""art.registration: rigid and deformable CBCT-to-CT registration, contour propagation, synthetic CT.

SimpleITK is imported inside the functions that need it, so importing this
package stays light.
"""

from art.registration.deformable import DeformableResult, register_deformable
from art.registration.metrics import contour_metrics, dice, hd95, mean_surface_distance, tre_stats
from art.registration.propagate import propagate_rigid, propagate_structures, volume_changes
from art.registration.rigid import RigidResult, register_rigid
from art.registration.synthetic_ct import synthetic_ct, warp_ct

__all__ = [
    "RigidResult",
    "register_rigid",
    "DeformableResult",
    "register_deformable",
    "propagate_structures",
    "propagate_rigid",
    "volume_changes",
    "tre_stats",
    "dice",
    "mean_surface_distance",
    "hd95",
    "contour_metrics",
    "synthetic_ct",
    "warp_ct",
]
