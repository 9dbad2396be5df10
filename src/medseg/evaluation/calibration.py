"""Is a model's confidence worth believing? Calibration and error-detection metrics on voxels.

All functions take flat numpy arrays of the voxels to judge (medseg passes those of the
foreground-relevant region, `medseg.inference.uncertainty.relevant_region`), so the
definitions here do not depend on where the voxels came from:

* Reliability bins and ECE: `ECE_BINS` equal-width bins of the confidence (the probability
  given to the predicted class) on [0, 1], the last bin closed; ECE is the voxel-weighted mean
  of |accuracy - mean confidence| over the bins (Guo et al. 2017). 0 is perfect.
* AUROC of a score for a binary event ("this voxel is wrong"): the probability that a random
  positive scores above a random negative, ties counting half (Mann-Whitney U), NaN when one
  of the two groups is empty.
* Spearman's rank correlation (case score against Dice): SciPy's, NaN when either side is
  constant or there are fewer than 3 cases.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

ECE_BINS = 15


def _flat(x) -> np.ndarray:
    return np.asarray(x).reshape(-1)


def reliability_bins(confidence, correct, bins: int = ECE_BINS) -> dict:
    """Per bin of confidence: its edges, voxel count, mean confidence and accuracy (None where
    empty). JSON-ready: what the report's reliability diagram draws."""
    conf = _flat(confidence).astype(np.float64)
    hit = _flat(correct).astype(np.float64)
    if conf.shape != hit.shape:
        raise ValueError(f"confidence and correct differ in length ({conf.size} vs {hit.size})")
    index = np.clip(np.floor(conf * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    hit_sum = np.bincount(index, weights=hit, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = conf_sum / count
        accuracy = hit_sum / count
    return {"edges": [round(i / bins, 6) for i in range(bins + 1)], "count": count.tolist(),
            "confidence": [None if c == 0 else float(v) for c, v in zip(count, mean_conf)],
            "accuracy": [None if c == 0 else float(v) for c, v in zip(count, accuracy)]}


def ece_from_bins(table: dict) -> float:
    """Expected calibration error of a `reliability_bins` table (NaN for no voxels)."""
    total = sum(table["count"])
    if total == 0:
        return math.nan
    return float(sum(n * abs(a - c) for n, a, c in zip(table["count"], table["accuracy"], table["confidence"])
                     if n) / total)


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float:
    """ECE of voxels' confidence (probability of the predicted class) against whether the
    prediction was right, with `bins` equal-width bins."""
    return ece_from_bins(reliability_bins(confidence, correct, bins))


def auroc(score, positive) -> float:
    """Area under the ROC curve of `score` for the boolean `positive` (ties count half)."""
    s = _flat(score).astype(np.float64)
    pos = _flat(positive).astype(bool)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(s)  # average ranks: ties count half
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(x, y) -> float:
    """Spearman's rho of two equal-length sequences; NaN when undefined (constant, < 3 values)."""
    a, b = _flat(x).astype(np.float64), _flat(y).astype(np.float64)
    if a.size != b.size:
        raise ValueError(f"spearman needs equal lengths ({a.size} vs {b.size})")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def flag_precision_recall(scores, bad, threshold: float) -> dict:
    """How well `score >= threshold` finds the bad cases: flagged count, precision (share of
    flagged cases that are bad) and recall (share of bad cases flagged); NaN where undefined."""
    s, b = _flat(scores).astype(np.float64), _flat(bad).astype(bool)
    flagged = s >= threshold
    hits = int((flagged & b).sum())
    return {"flagged": int(flagged.sum()), "bad": int(b.sum()),
            "precision": hits / int(flagged.sum()) if flagged.any() else math.nan,
            "recall": hits / int(b.sum()) if b.any() else math.nan}
