"""Overlap metrics between a predicted and a reference label map (numpy, 2D or 3D).

Every class k in 0..K-1 (background included) is scored one-vs-rest from its confusion counts
TP, FP, FN, TN over the N counted voxels (voxels whose reference equals ``ignore_index`` are not
counted at all). Conventions, chosen so that no metric is ever NaN:

* Dice = 2TP / (2TP + FP + FN); 1.0 when the class is absent from both prediction and reference
  (nothing to find, nothing wrongly found), 0.0 when it is in only one of them.
* Jaccard = TP / (TP + FP + FN); same empty-case convention as Dice.
* Sensitivity = TP / (TP + FN); 1.0 when the reference has none of the class (nothing to miss).
* Specificity = TN / (TN + FP); 1.0 when there are no negatives (every voxel is the class).
* Accuracy = (TP + TN) / N; 1.0 when N = 0 (every voxel ignored).
* Precision = TP / (TP + FP); 1.0 when nothing of the class is predicted (nothing wrongly found;
  a missed structure still shows as Dice 0 and sensitivity 0).

`case_metrics` adds, per class of one case: volumes in millimetre units (mL in 3D, mm² in 2D,
which is pixels when the file gives no spacing), the relative volume difference, and for
foreground classes the surface distances HD95 and ASSD, the normalised surface Dice and
lesion-wise detection (`medseg.evaluation.surface`, which documents their empty-mask conventions).

To aggregate over many cases, sum their `confusion` arrays first, then score the sum (e.g. with
`dice_from_confusion`): that weighs every voxel equally, instead of averaging per-case scores.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from .surface import (DISTANCE_METRICS, LESION_METRICS, as_spacing, lesion_metrics, surface_metrics,
                            worst_distance)

__all__ = [
    "METRIC_NAMES",
    "confusion",
    "dice_from_confusion",
    "metrics_from_confusion",
    "overlap_metrics",
    "VOLUME_METRICS",
    "ALL_METRIC_NAMES",
    "case_metrics",
    "relative_volume_difference",
]

METRIC_NAMES = ("dice", "jaccard", "accuracy", "sensitivity", "specificity", "precision")
VOLUME_METRICS = ("ref_volume", "pred_volume", "rvd")

# Column order of a confusion array.
TP, FP, FN, TN = 0, 1, 2, 3


def _as_labels(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label map, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def confusion(
    pred: np.ndarray, ref: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """One-vs-rest TP, FP, FN, TN per class, shape (K, 4) int64.

    One `np.bincount` over ``ref * K + pred`` gives the full K x K confusion matrix, so the cost is
    a single pass over the voxels whatever K is. Voxels whose *reference* equals ``ignore_index``
    are left out; every other value of pred and ref must lie in 0..K-1.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    pred, ref = _as_labels(pred, "pred").ravel(), _as_labels(ref, "ref").ravel()
    if ignore_index is not None:
        keep = ref != ignore_index
        if not keep.all():
            pred, ref = pred[keep], ref[keep]
    k = int(num_classes)
    for name, a in (("pred", pred), ("ref", ref)):
        if a.size and (a.min() < 0 or a.max() >= k):
            raise ValueError(
                f"{name} holds labels in [{a.min()}, {a.max()}], outside 0..{k - 1}"
                + (f" (ignore_index={ignore_index})" if ignore_index is not None else "")
            )
    matrix = np.bincount(ref * k + pred, minlength=k * k).reshape(k, k)  # rows: ref, cols: pred
    tp = np.diagonal(matrix).astype(np.int64)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    tn = ref.size - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=1).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num / den, with `empty` where den == 0 (never NaN, never a divide warning)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _check_conf(conf: np.ndarray) -> np.ndarray:
    conf = np.asarray(conf)
    if conf.ndim < 1 or conf.shape[-1] != 4:
        raise ValueError(f"confusion array must end in an axis of 4 (TP, FP, FN, TN), got shape {conf.shape}")
    return conf


def dice_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Dice per class from a (K, 4) confusion array (or one summed over cases); 1.0 where empty."""
    conf = _check_conf(conf)
    tp, fp, fn = conf[..., TP], conf[..., FP], conf[..., FN]
    return _ratio(2 * tp, 2 * tp + fp + fn, 1.0)


def metrics_from_confusion(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of `METRIC_NAMES` per class, each an array shaped like ``conf[..., 0]``."""
    conf = _check_conf(conf)
    tp, fp, fn, tn = (conf[..., i].astype(np.float64) for i in (TP, FP, FN, TN))
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "jaccard": _ratio(tp, tp + fp + fn, 1.0),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
        "sensitivity": _ratio(tp, tp + fn, 1.0),
        "specificity": _ratio(tn, tn + fp, 1.0),
        "precision": _ratio(tp, tp + fp, 1.0),
    }


def overlap_metrics(
    pred: np.ndarray, ref: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> dict[int, dict[str, float]]:
    """``{class: {metric: value}}`` for every class 0..K-1 and every name in `METRIC_NAMES`."""
    values = metrics_from_confusion(confusion(pred, ref, num_classes, ignore_index))
    return {k: {name: float(values[name][k]) for name in METRIC_NAMES} for k in range(num_classes)}


ALL_METRIC_NAMES = METRIC_NAMES + VOLUME_METRICS + DISTANCE_METRICS + LESION_METRICS


def relative_volume_difference(pred_volume: float, ref_volume: float) -> float:
    """(V_pred - V_ref) / V_ref: -1 for a missed structure, 0 for a perfect volume.

    Reference empty: 0.0 when the prediction is empty too, +1.0 when it is not (a structure
    predicted where none exists counts as +100 %, the mirror of a missed one), never inf or NaN.
    """
    if ref_volume > 0:
        return (pred_volume - ref_volume) / ref_volume
    return 0.0 if pred_volume <= 0 else 1.0


def case_metrics(
    pred: np.ndarray, ref: np.ndarray, num_classes: int, spacing: Sequence[float] | None = None, *,
    tolerance: float = 1.0, percentile: float = 95.0, distances: bool = True, lesions: bool = True,
    ignore_index: int | None = None,
) -> dict[int, dict[str, float]]:
    """Every metric of one case, ``{class: {metric: value}}`` (never NaN).

    All classes get `METRIC_NAMES` and the volumes (``ref_volume``, ``pred_volume`` in mL for 3D,
    mm² for 2D; ``rvd``); foreground classes (1..K-1) also get hd95, assd, nsd (``distances``) and
    lesion_f1/tp/fp/fn (``lesions``). spacing: voxel size in mm per axis (default 1).
    tolerance: NSD tolerance in mm.

    ignore_index: reference voxels with this value ("not annotated", sparse labels) are left out of
    the overlap metrics and volumes; for distances and lesions they take the prediction's class,
    so they add no surface and no disagreement of their own.

    Distances are computed inside the bounding box of the class in both masks, found for all
    classes at once with `scipy.ndimage.find_objects` (one pass over each volume).
    """
    conf = confusion(pred, ref, num_classes, ignore_index)
    values = metrics_from_confusion(conf)
    pred, ref = _as_labels(pred, "pred"), _as_labels(ref, "ref")
    if ignore_index is not None:
        ignored = ref == ignore_index
        if ignored.any():
            ref = np.where(ignored, pred, ref)
    voxel = float(np.prod(as_spacing(spacing, pred.ndim)))
    unit = 1000.0 if pred.ndim == 3 else 1.0  # mm³ -> mL in 3D; mm² in 2D
    worst = worst_distance(pred.shape, spacing)
    pred_boxes = ndimage.find_objects(pred, max_label=num_classes - 1) if (distances or lesions) else []
    ref_boxes = ndimage.find_objects(ref, max_label=num_classes - 1) if (distances or lesions) else []
    out: dict[int, dict[str, float]] = {}
    for k in range(num_classes):
        row = {name: float(values[name][k]) for name in METRIC_NAMES}
        ref_n, pred_n = int(conf[k, TP] + conf[k, FN]), int(conf[k, TP] + conf[k, FP])
        row["ref_volume"], row["pred_volume"] = ref_n * voxel / unit, pred_n * voxel / unit
        row["rvd"] = relative_volume_difference(row["pred_volume"], row["ref_volume"])
        if k > 0 and (distances or lesions):
            box = _union_box(pred_boxes[k - 1], ref_boxes[k - 1])
            p = pred[box] == k if box is not None else np.zeros((1,) * pred.ndim, bool)
            r = ref[box] == k if box is not None else np.zeros((1,) * pred.ndim, bool)
            if distances:
                row.update(surface_metrics(p, r, spacing, tolerance=tolerance, percentile=percentile, worst=worst))
            if lesions:
                found = lesion_metrics(p, r)
                row.update({name: found[name] for name in LESION_METRICS})
        out[k] = row
    return out


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))
