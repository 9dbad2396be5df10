"""Uncertainty from class probabilities: per-voxel maps, the region they are judged in, a
case-level score, and temperature scaling.

Definitions (every map, score and calibration metric in medseg uses these, and only these):

* Predictive entropy: ``H(p) = -sum_k p_k log p_k`` in nats of the (averaged, calibrated) class
  probabilities, with ``0 log 0 = 0``. 0 where the model is certain; ``log K`` at most.
* Mutual information (BALD disagreement) of several members (mirrored passes, folds):
  ``H(mean_m p_m) - mean_m H(p_m)``, clamped at 0 (it is >= 0 in exact arithmetic; rounding
  can make it a hair negative). 0 where the members agree, whatever their confidence.
* Relevant region (`relevant_region`): the voxels a reviewer of the segmentation looks at, not
  the acres of background every model is sure of: predicted foreground, or any foreground
  class with probability above `RELEVANT_PROBABILITY`, plus (when given) a reference label's
  foreground, dilated by `RELEVANT_MARGIN` voxels (a cube, in voxel units). Calibration error,
  voxel AUROC and the case score are all computed inside it, so a large empty background does
  not make a model look calibrated or certain.
* Case score (`case_score`): the mean entropy over the relevant region (see its docstring).
* Temperature: ``softmax(log p / T)`` per voxel, one T per run or one per class; T = 1 leaves
  the probabilities untouched (the same tensor is returned).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

@dataclass
class UncertainPrediction:
    """One case's prediction with its uncertainty (`Predictor.predict_uncertain`)."""
    mask: np.ndarray                          # class indices, exactly as `Predictor.segment` gives
    probabilities: torch.Tensor               # (K, *S) float32, calibrated (the run's temperature)
    entropy: torch.Tensor                     # (*S) float32 nats of `probabilities`
    mutual_information: torch.Tensor | None   # (*S) float32 nats; None with a single pass
    members: int                              # passes averaged per voxel (mirrors x folds)
    score: float                              # `case_score`
    flagged: bool                             # score at or above the run's flag threshold


RELEVANT_PROBABILITY = 0.1  # a foreground class this likely somewhere makes the voxel worth a look
RELEVANT_MARGIN = 3         # voxels of dilation around the foreground: the boundary band both sides
LOG_FLOOR = 1e-12           # probabilities are clamped here before a log (a 0 has no logarithm)


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def predictive_entropy(probs: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(K, *S) class probabilities -> (*S) float32 entropy in nats; ``0 log 0 = 0``.

    Computed one class at a time in float32, so a float16 map of a large volume needs one
    float32 map of scratch, not K."""
    probs = _as_tensor(probs)
    out = torch.zeros(probs.shape[1:], dtype=torch.float32)
    for k in range(probs.shape[0]):
        p = probs[k].float()
        out -= torch.where(p > 0, p * torch.log(p.clamp_min(LOG_FLOOR)), torch.zeros((), dtype=torch.float32))
    return out.clamp_min_(0.0)


def mutual_information(member_probs: Sequence[torch.Tensor | np.ndarray]) -> torch.Tensor:
    """Members' (K, *S) probabilities -> (*S) float32 mutual information in nats, >= 0:
    entropy of their mean minus the mean of their entropies. One member gives zeros."""
    members = [_as_tensor(p).float() for p in member_probs]
    if not members:
        raise ValueError("mutual_information needs at least one member's probabilities")
    mean = torch.stack(members).mean(dim=0) if len(members) > 1 else members[0]
    member_entropy = torch.stack([predictive_entropy(p) for p in members]).mean(dim=0)
    return mutual_information_from(mean, member_entropy)


def mutual_information_from(mean_probs: torch.Tensor, mean_member_entropy: torch.Tensor) -> torch.Tensor:
    """Mutual information from what a streaming inferer keeps: the members' mean probabilities
    and the mean of their entropies (no member's full map is ever held)."""
    return (predictive_entropy(mean_probs) - _as_tensor(mean_member_entropy).float()).clamp_min_(0.0)


def _dilate(region: torch.Tensor, margin: int) -> torch.Tensor:
    """Binary dilation of a (*S) bool map by a (2*margin+1)-voxel cube (max pooling)."""
    if margin <= 0 or not bool(region.any()):
        return region
    x = region[None, None].float()
    pool = F.max_pool2d if region.ndim == 2 else F.max_pool3d
    if region.ndim not in (2, 3):
        raise ValueError(f"relevant_region takes 2D or 3D maps, got {region.ndim}D")
    return pool(x, kernel_size=2 * margin + 1, stride=1, padding=margin)[0, 0] > 0


def relevant_region(probs: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None, *,
                    threshold: float = RELEVANT_PROBABILITY, margin: int = RELEVANT_MARGIN) -> torch.Tensor:
    """(*S) bool: the foreground-relevant voxels of (K, *S) probabilities (module docstring).

    Foreground is predicted (the argmax is not class 0) or possible (a foreground class above
    `threshold`); `mask` (a class-index map, e.g. the reference label when scoring against one)
    adds its foreground, so a structure the model missed entirely still counts. Dilated by
    `margin` voxels. Background-only probabilities with nothing likely give an empty region."""
    probs = _as_tensor(probs)
    if probs.shape[0] < 2:
        return torch.ones(probs.shape[1:], dtype=torch.bool)
    foreground = probs[1:].float()
    best_fg = foreground.amax(dim=0)
    region = (best_fg > threshold) | (best_fg > probs[0].float())
    if mask is not None:
        region |= _as_tensor(mask).to(region.device) > 0
    return _dilate(region, margin)


def case_score(probs: torch.Tensor | np.ndarray, entropy: torch.Tensor | np.ndarray | None = None,
               region: torch.Tensor | None = None) -> float:
    """Case-level uncertainty: the mean entropy (nats) over the relevant region, 0 when it is empty.

    Why a mean over the relevant region: a sum of entropies (what MONAI Label's users met) grows
    with the size of the structure, so large livers always outrank small, doubtful tumours; a
    mean over the whole image shrinks with the size of the field of view. Over the relevant
    region a confident structure of any size scores low (its inside and the background margin
    around it are certain, only its thin boundary is not), while doubtful voxels anywhere (a
    foreground class above the threshold adds them to the region) raise it. An empty prediction
    with low foreground probability everywhere has an empty region and scores 0.
    """
    probs = _as_tensor(probs)
    entropy = predictive_entropy(probs) if entropy is None else _as_tensor(entropy).float()
    region = relevant_region(probs) if region is None else region
    count = int(region.sum())
    return float(entropy[region].sum() / count) if count else 0.0


def _temperatures(temperature: float | Sequence[float] | torch.Tensor, classes: int, ndim: int) -> torch.Tensor:
    t = torch.as_tensor(temperature, dtype=torch.float32).flatten()
    if t.numel() not in (1, classes):
        raise ValueError(f"a temperature is one number or one per class ({classes}), got {t.numel()}")
    if bool((t <= 0).any()) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"temperatures must be positive and finite, got {t.tolist()}")
    return t.view((-1,) + (1,) * (ndim - 1))


def is_identity(temperature: float | Sequence[float] | torch.Tensor | None) -> bool:
    """True when `temperature` changes nothing (None, 1, or all ones)."""
    if temperature is None:
        return True
    return bool((torch.as_tensor(temperature, dtype=torch.float32) == 1).all())


def apply_temperature(probs: torch.Tensor, temperature: float | Sequence[float] | torch.Tensor | None,
                      *, logits: bool = False) -> torch.Tensor:
    """Calibrated (K, *S) probabilities: ``softmax(log p / T)`` (or ``softmax(z / T)`` of logits).

    The temperature acts on log-probabilities rather than on each window's logits: for one
    network pass the two are the same (``log softmax(z) = z - c`` per voxel, and the shift ``c``
    cancels), and for averaged passes (mirrors, folds, overlapping windows) it calibrates the
    ensemble's probabilities themselves ("pool, then calibrate"), the same probabilities the
    temperature was fitted on. A per-class T divides class k's log-probability by T_k.
    T = 1 (or None) returns `probs` itself, untouched. float32 out.
    """
    if is_identity(temperature):
        return probs
    t = _temperatures(temperature, probs.shape[0], probs.ndim)
    z = probs.float() if logits else torch.log(probs.float().clamp_min(LOG_FLOOR))
    return torch.softmax(z / t, dim=0)


def max_entropy(classes: int) -> float:
    """The largest entropy K classes can have (nats): log K, for scaling heat maps."""
    return math.log(max(classes, 2))
