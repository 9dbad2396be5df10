"""Evaluation: metrics of one case (overlap, volume, surface distances, lesions) and a folder of
predictions scored against a folder of references. Re-exports only."""
from .evaluate import EvaluationResult, default_class_names, evaluate
from .metrics import ALL_METRIC_NAMES, METRIC_NAMES, case_metrics, confusion, dice_from_confusion

__all__ = ["ALL_METRIC_NAMES", "METRIC_NAMES", "EvaluationResult", "case_metrics", "confusion",
           "default_class_names", "dice_from_confusion", "evaluate"]
