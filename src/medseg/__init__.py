"""medseg: medical image segmentation that trains, predicts, evaluates and shows its results.

    import medseg
    run = medseg.train("data/", "run/", minutes=10)
    medseg.predict(run, "new_images/", "pred/")
    print(medseg.evaluate("pred/", "new_labels/").table())

The functions are imported eagerly on purpose: their names equal their modules' names
(`medseg.train` the function lives in `medseg/train.py`), and binding them here, after the
submodules load, is what makes `medseg.train(...)` the function rather than the module.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .api import Predictor, demo, evaluate, export_onnx, predict, train  # noqa: E402

__all__ = ["train", "predict", "Predictor", "evaluate", "demo", "export_onnx"]
