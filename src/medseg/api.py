"""The functions behind the `medseg` command, for notebooks and scripts."""
from .demo import demo
from .evaluate import evaluate
from .onnx_backend import export_onnx
from .predict import Predictor, predict
from .train import train

__all__ = ["train", "predict", "Predictor", "evaluate", "demo", "export_onnx"]
