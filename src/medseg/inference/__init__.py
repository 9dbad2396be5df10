"""Inference: sliding windows over a case, the Predictor that loads a run once and segments many
cases, `predict` over files and folders, the compile policy, the ONNX backend and the
postprocessing chosen on validation data. Re-exports only."""
from .compile import COMPILE_COST_S, COMPILE_SAVES, CompilingNetwork, prediction_network
from .predict import output_suffix, predict, read_input_case
from .predictor import Predictor, member_runs, mirrors
from .sliding_window import (argmax_mask, count_windows, empty_value, gaussian_weight, is_empty, mirror_sets,
                             sliding_window, window_starts, windows_per_call)

__all__ = ["COMPILE_COST_S", "COMPILE_SAVES", "CompilingNetwork", "Predictor", "argmax_mask", "count_windows",
           "empty_value", "gaussian_weight", "is_empty", "member_runs", "mirror_sets", "mirrors", "output_suffix",
           "predict", "prediction_network", "read_input_case", "sliding_window", "window_starts",
           "windows_per_call"]
