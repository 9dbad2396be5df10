"""Segmentation losses on network logits.

Every loss takes ``logits`` shaped (B, K, *spatial) (2D or 3D, K >= 2 classes, raw network output;
softmax is applied inside) and ``target`` shaped (B, *spatial) holding class indices 0..K-1.

* ``ignore_index``: voxels whose target equals it contribute to no term of any loss: they are
  masked out of the Dice sums and out of the cross-entropy mean, so they also get zero gradient.
  It is meant for a value outside 0..K-1 (e.g. 255 for "unlabelled"); if it is a real class index,
  that class can never be a target, so it is also dropped from the Dice class mean.
* Mixed precision: losses are always computed in float32 (logits are cast with ``.float()`` and
  autocast is switched off inside), because sums over a whole volume lose too much in bf16/fp16.
* ``class_weights``: a sequence of K floats (one per class, background included). Dice normalises
  the weights of the classes it includes to sum to 1; cross-entropy uses them as torch does.
* ``batch_dice`` (Dice, Tversky, generalised Dice): sum over the batch and space per class, then
  score, instead of scoring each sample and averaging: steadier when a sample lacks a small target.

Each loss is cross-checked against MONAI's loss of the same name in tests/training/test_losses.py.
`medseg.training.deep_supervision` wraps any of them for networks that return logits at several scales;
`medseg.training.loss_registry` builds them by name.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CrossEntropyLoss",
    "DiceCELoss",
    "DiceFocalLoss",
    "DiceLoss",
    "FocalLoss",
    "GeneralizedDiceLoss",
    "TverskyLoss",
    "dice_loss_from_probs",
]


def _float32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off on `device`, so nothing inside the loss is silently run in bf16/fp16."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _check_inputs(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim < 3 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (B, K>=2, *spatial), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target must be (B, *spatial) = {tuple(logits.shape[:1] + logits.shape[2:])} "
            f"to match logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex():
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")


def _weights_tensor(class_weights: Sequence[float] | torch.Tensor | None, num_classes: int | None = None) -> torch.Tensor | None:
    """Validate class weights once (finite, >= 0, right length) and keep them as float32."""
    if class_weights is None:
        return None
    w = torch.as_tensor(class_weights, dtype=torch.float32).flatten().clone()
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"class_weights must be finite and >= 0, got {w.tolist()}")
    if num_classes is not None and w.numel() != num_classes:
        raise ValueError(f"class_weights needs one weight per class ({num_classes}), got {w.numel()}")
    return w


def _keep_class_weights(module: nn.Module, class_weights: Sequence[float] | torch.Tensor | None) -> None:
    """`module.class_weights`: a non-persistent buffer (it follows `.to(device)`), or None."""
    w = _weights_tensor(class_weights)
    if w is not None:
        module.register_buffer("class_weights", w, persistent=False)
    else:
        module.class_weights = None


def dice_loss_from_probs(
    probs: torch.Tensor,
    onehot: torch.Tensor,
    squared: bool = False,
    smooth: float = 1e-5,
    dims: Sequence[int] | None = None,
) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 sum(p*y) + smooth) / (sum(p) + sum(y) + smooth)``, unreduced.

    ``squared=True`` is the V-Net form with denominator ``sum(p^2) + sum(y^2)``. Sums run over
    ``dims`` (default: every axis from 2 on, i.e. the spatial axes of (B, K, *spatial)), so the
    result holds one loss per remaining index, e.g. (B, K). Kept separate from `DiceLoss` so the
    formula (and its gradient) can be checked directly on probabilities.
    """
    if probs.shape != onehot.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and onehot {tuple(onehot.shape)} must have the same shape")
    if dims is None:
        dims = tuple(range(2, probs.ndim))
    dims = tuple(dims)
    onehot = onehot.to(probs.dtype)
    intersection = (probs * onehot).sum(dim=dims)
    if squared:
        denominator = (probs * probs).sum(dim=dims) + (onehot * onehot).sum(dim=dims)
    else:
        denominator = probs.sum(dim=dims) + onehot.sum(dim=dims)
    return 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)


def _probs_onehot_mask(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and one-hot target (both float32, (B, K, *spatial)), zeroed at ignored voxels."""
    num_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)
    if ignore_index is not None:
        keep = target != ignore_index
        safe_target = torch.where(keep, target, torch.zeros_like(target))
    else:
        keep, safe_target = None, target
    if (safe_target < 0).any() or (safe_target >= num_classes).any():
        raise ValueError(f"target holds values outside 0..{num_classes - 1} (and ignore_index={ignore_index})")
    onehot = F.one_hot(safe_target.long(), num_classes).movedim(-1, 1).to(probs.dtype)
    if keep is not None:
        mask = keep.unsqueeze(1).to(probs.dtype)
        probs = probs * mask
        onehot = onehot * mask
    return probs, onehot


class _RegionLoss(nn.Module):
    """Shared machinery of the overlap losses (Dice, Tversky, generalised Dice): softmax, one-hot,
    ignored voxels zeroed in both, background optionally left out, per-sample or batch sums."""

    def __init__(
        self,
        smooth: float = 1e-5,
        include_background: bool = True,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        batch_dice: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = float(smooth)
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.ignore_index = ignore_index
        _keep_class_weights(self, class_weights)

    def _included_classes(self, num_classes: int) -> list[int]:
        classes = list(range(0 if self.include_background else 1, num_classes))
        if self.ignore_index is not None and self.ignore_index in classes and len(classes) > 1:
            classes.remove(self.ignore_index)
        return classes

    def _prepare(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int], tuple[int, ...]]:
        """Probabilities and one-hot of the included classes, the classes, and the axes to sum."""
        _check_inputs(logits, target)
        probs, onehot = _probs_onehot_mask(logits, target, self.ignore_index)
        classes = self._included_classes(logits.shape[1])
        if len(classes) != logits.shape[1]:
            index = torch.tensor(classes, device=logits.device)
            probs, onehot = probs.index_select(1, index), onehot.index_select(1, index)
        dims = tuple(range(2, probs.ndim))
        return probs, onehot, classes, ((0,) + dims if self.batch_dice else dims)

    def _included_weights(self, classes: list[int], num_classes: int, device: torch.device) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        if self.class_weights.numel() != num_classes:
            raise ValueError(f"class_weights has {self.class_weights.numel()} entries but logits have {num_classes} classes")
        return self.class_weights.to(device)[classes]

    def _class_mean(self, per_class: torch.Tensor, classes: list[int], num_classes: int) -> torch.Tensor:
        """Mean over samples (unless batch sums), then over classes, uniform or by class_weights."""
        if not self.batch_dice:
            per_class = per_class.mean(dim=0)  # (K_included,)
        w = self._included_weights(classes, num_classes, per_class.device)
        if w is None:
            return per_class.mean()
        total = w.sum()
        if total <= 0:
            raise ValueError("class_weights of the included classes sum to 0")
        return (per_class * (w / total)).sum()


class DiceLoss(_RegionLoss):
    """Soft Dice loss on logits: robust to class imbalance because each class is scored by overlap.

    Per sample and class by default (sums over spatial axes, then a mean over samples), or over
    the whole batch at once with ``batch_dice=True`` (steadier when single samples can miss a
    small structure entirely). Classes are averaged uniformly, or with ``class_weights`` (K floats,
    renormalised to sum 1 over the included classes) to push small targets: "class-weighted Dice".
    ``squared=True`` is the V-Net form (denominator sum p^2 + sum y^2).
    """

    def __init__(self, squared: bool = False, smooth: float = 1e-5, include_background: bool = True,
                 class_weights: Sequence[float] | torch.Tensor | None = None, batch_dice: bool = False,
                 ignore_index: int | None = None) -> None:
        super().__init__(smooth, include_background, class_weights, batch_dice, ignore_index)
        self.squared = squared

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with _float32_region(logits.device):
            probs, onehot, classes, dims = self._prepare(logits, target)
            per_class = dice_loss_from_probs(probs, onehot, self.squared, self.smooth, dims)
            return self._class_mean(per_class, classes, logits.shape[1])


class TverskyLoss(_RegionLoss):
    """Tversky loss ``1 - (TP + s) / (TP + alpha FP + beta FN + s)`` (Salehi et al. 2017), per class.

    ``alpha`` weighs false positives, ``beta`` false negatives; alpha = beta = 0.5 is Dice.
    For small targets, ``beta > alpha`` (e.g. 0.3 / 0.7) trades precision for recall, so a
    lesion is less likely to be missed. Reduction as `DiceLoss`.
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-5, include_background: bool = True,
                 class_weights: Sequence[float] | torch.Tensor | None = None, batch_dice: bool = False,
                 ignore_index: int | None = None) -> None:
        super().__init__(smooth, include_background, class_weights, batch_dice, ignore_index)
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"alpha and beta must be >= 0 and not both 0, got {alpha}, {beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with _float32_region(logits.device):
            probs, onehot, classes, dims = self._prepare(logits, target)
            tp = (probs * onehot).sum(dim=dims)
            fp = probs.sum(dim=dims) - tp
            fn = onehot.sum(dim=dims) - tp
            per_class = 1.0 - (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
            return self._class_mean(per_class, classes, logits.shape[1])


class GeneralizedDiceLoss(_RegionLoss):
    """Generalised Dice loss (Sudre et al. 2017): one ratio over all classes, each weighted 1/(sum y)^2.

    ``1 - (2 sum_k w_k TP_k + s) / (sum_k w_k (sum p_k + sum y_k) + s)``, per sample (or over the
    batch with ``batch_dice``), then averaged over samples. The inverse squared volume lets a
    small class count as much as a large one. A class absent from a sample's target has an
    infinite weight; as in MONAI's `GeneralizedDiceLoss`, it gets the largest finite weight of
    that sample instead (of the batch with ``batch_dice``), so predicting it there is still
    penalised but nothing becomes inf or NaN; a sample with no included class at all gives 0.
    ``class_weights``, if given, multiply these weights.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        with _float32_region(logits.device):
            probs, onehot, classes, dims = self._prepare(logits, target)
            tp = (probs * onehot).sum(dim=dims)                           # (B, K') or (K',)
            denominator = probs.sum(dim=dims) + onehot.sum(dim=dims)
            volume = onehot.sum(dim=dims)
            w = torch.where(volume > 0, 1.0 / volume.clamp_min(1.0) ** 2, torch.zeros_like(volume))
            largest = w.amax(dim=-1, keepdim=True)
            w = torch.where(volume > 0, w, largest)
            extra = self._included_weights(classes, num_classes, w.device)
            if extra is not None:
                w = w * extra
            score = (2.0 * (w * tp).sum(-1) + self.smooth) / ((w * denominator).sum(-1) + self.smooth)
            return (1.0 - score).mean()


class CrossEntropyLoss(nn.Module):
    """Voxel-wise cross-entropy on logits (float32), mean over the non-ignored voxels.

    With ``class_weights`` the mean is weighted as in ``torch.nn.CrossEntropyLoss``
    (sum of w[y]*nll over sum of w[y]). A batch whose voxels are all ignored gives 0, not NaN.
    """

    def __init__(
        self,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        _keep_class_weights(self, class_weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_inputs(logits, target)
        with _float32_region(logits.device):
            logits = logits.float()
            target = target.long()
            weight = None if self.class_weights is None else self.class_weights.to(logits.device)
            if weight is not None and weight.numel() != logits.shape[1]:
                raise ValueError(f"class_weights has {weight.numel()} entries but logits have {logits.shape[1]} classes")
            if self.ignore_index is None:
                return F.cross_entropy(logits, target, weight=weight)
            # Reduce by hand: torch's mean is 0/0 = NaN when every voxel is ignored.
            nll = F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index, reduction="none")
            keep = target != self.ignore_index
            if weight is None:
                denominator = keep.sum().to(nll.dtype)
            else:
                safe_target = torch.where(keep, target, torch.zeros_like(target))
                denominator = (weight[safe_target] * keep).sum()
            return nll.sum() / denominator.clamp_min(torch.finfo(nll.dtype).tiny)


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al. 2017): ``-(1 - p_t)^gamma log p_t``, mean over the voxels.

    Down-weights voxels the network already gets right, so the many easy background voxels stop
    drowning the few hard ones at a small target's edge. ``gamma=0`` is exactly cross-entropy
    (`CrossEntropyLoss`), including the ``class_weights`` convention (sum of w[y]*term over sum of
    w[y]) and ``ignore_index``. Scale: MONAI's `FocalLoss(use_softmax=True)` averages over classes
    too, so it is this loss divided by K (the tests check exactly that).
    """

    def __init__(self, gamma: float = 2.0, class_weights: Sequence[float] | torch.Tensor | None = None,
                 ignore_index: int | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        _keep_class_weights(self, class_weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_inputs(logits, target)
        num_classes = logits.shape[1]
        with _float32_region(logits.device):
            keep = torch.ones_like(target, dtype=torch.bool) if self.ignore_index is None else target != self.ignore_index
            safe_target = torch.where(keep, target, torch.zeros_like(target)).long()
            if (safe_target < 0).any() or (safe_target >= num_classes).any():
                raise ValueError(f"target holds values outside 0..{num_classes - 1} (and ignore_index={self.ignore_index})")
            log_p = torch.log_softmax(logits.float(), dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
            term = -((1.0 - log_p.exp()) ** self.gamma) * log_p
            weight = keep.to(term.dtype)
            if self.class_weights is not None:
                if self.class_weights.numel() != num_classes:
                    raise ValueError(f"class_weights has {self.class_weights.numel()} entries but logits have {num_classes} classes")
                weight = weight * self.class_weights.to(term.device)[safe_target]
            return (term * weight).sum() / weight.sum().clamp_min(torch.finfo(term.dtype).tiny)


class DiceCELoss(nn.Module):
    """``dice_weight * Dice + ce_weight * CE``: Dice handles imbalance, CE gives smooth early gradients.

    ``dice_kwargs`` go to `DiceLoss`; ``class_weights`` and ``ignore_index`` among them are used
    by the cross-entropy term too.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, **dice_kwargs) -> None:
        super().__init__()
        if dice_weight < 0 or ce_weight < 0:
            raise ValueError(f"dice_weight and ce_weight must be >= 0, got {dice_weight}, {ce_weight}")
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.dice = DiceLoss(**dice_kwargs)
        self.ce = CrossEntropyLoss(
            class_weights=dice_kwargs.get("class_weights"), ignore_index=dice_kwargs.get("ignore_index")
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * self.ce(logits, target)


class DiceFocalLoss(nn.Module):
    """``dice_weight * Dice + focal_weight * Focal``: as Dice + CE, with the CE term focused on hard voxels.

    ``dice_kwargs`` go to `DiceLoss`; ``class_weights`` and ``ignore_index`` are shared with the
    focal term. MONAI's `DiceFocalLoss` pairs a softmax Dice with a *sigmoid* focal term, so it is a
    different loss; this one is MONAI's `DiceLoss(softmax=True)` plus K x `FocalLoss(use_softmax=True)`.
    """

    def __init__(self, dice_weight: float = 1.0, focal_weight: float = 1.0, gamma: float = 2.0, **dice_kwargs) -> None:
        super().__init__()
        if dice_weight < 0 or focal_weight < 0:
            raise ValueError(f"dice_weight and focal_weight must be >= 0, got {dice_weight}, {focal_weight}")
        self.dice_weight, self.focal_weight = float(dice_weight), float(focal_weight)
        self.dice = DiceLoss(**dice_kwargs)
        self.focal = FocalLoss(gamma, class_weights=dice_kwargs.get("class_weights"),
                               ignore_index=dice_kwargs.get("ignore_index"))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_weight * self.dice(logits, target) + self.focal_weight * self.focal(logits, target)
