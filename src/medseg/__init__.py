"""medseg: medical image segmentation that trains, predicts, evaluates and shows its results.

    import medseg
    run = medseg.train("data/", "run/", minutes=10)
    medseg.predict(run, "new_images/", "pred/")
    print(medseg.evaluate("pred/", "new_labels/").table())

The stages live in packages named after them (`io`, `data`, `nets`, `planning`, `training`,
`inference`, `evaluation`, `report`); `medseg.api` holds the functions re-exported here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["train", "predict", "Predictor", "evaluate", "demo", "export_onnx", "report"]

if TYPE_CHECKING:
    from .api import Predictor, demo, evaluate, export_onnx, predict, report, train  # noqa: F401


def __getattr__(name: str):
    """The functions above, imported on first use: `medseg --help` and argument errors then
    answer without loading torch (a second, not five)."""
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")
