"""medseg: medical image segmentation that trains, predicts, evaluates and shows its results.

    import medseg
    run = medseg.train("data/", "run/", minutes=10)
    medseg.predict(run, "new_images/", "pred/")
    print(medseg.evaluate("pred/", "new_labels/").table())

Heavy modules (torch) load on first use, so `import medseg` and `medseg --help` stay fast.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["train", "predict", "Predictor", "evaluate", "demo"]


def __getattr__(name: str):
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")
