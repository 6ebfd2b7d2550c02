"""art.evaluate: DVH, dose-volume metrics and clinical-goal evaluation (gamma and plan comparison elsewhere)."""

from art.evaluate.dvh import DVH, dvh, occupancy, structure_samples
from art.evaluate.gamma import GammaResult, gamma_index
from art.evaluate.goals import GoalResult, evaluate_goals
from art.evaluate.metrics import evaluate_metric
from art.evaluate.polygons import polygon_occupancy, polygon_samples, polygon_volume_cc

__all__ = ["DVH", "dvh", "occupancy", "structure_samples", "GoalResult", "evaluate_goals", "evaluate_metric", "GammaResult", "gamma_index", "polygon_occupancy", "polygon_samples", "polygon_volume_cc"]
