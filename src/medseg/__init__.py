"""medseg: medical image segmentation that trains, predicts, evaluates and shows its results.

    import medseg
    run = medseg.train("data/", "run/", minutes=10)
    medseg.predict(run, "new_images/", "pred/")
    print(medseg.evaluate("pred/", "new_labels/").table())

The stages live in packages named after them (`io`, `data`, `nets`, `planning`, `training`,
`inference`, `evaluation`, `report`); `medseg.api` holds the functions re-exported here.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .api import Predictor, demo, evaluate, export_onnx, predict, report, train  # noqa: E402

__all__ = ["train", "predict", "Predictor", "evaluate", "demo", "export_onnx", "report"]
