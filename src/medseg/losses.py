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
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOSSES",
    "CrossEntropyLoss",
    "DiceCELoss",
    "DiceLoss",
    "dice_loss_from_probs",
    "make_loss",
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


class DiceLoss(nn.Module):
    """Soft Dice loss on logits: robust to class imbalance because each class is scored by overlap.

    Per sample and class by default (sums over spatial axes, then a mean over samples), or over
    the whole batch at once with ``batch_dice=True`` (steadier when single samples can miss a
    small structure entirely). Classes are averaged uniformly, or with ``class_weights`` (K floats,
    renormalised to sum 1 over the included classes) to push small targets: "class-weighted Dice".
    """

    def __init__(
        self,
        squared: bool = False,
        smooth: float = 1e-5,
        include_background: bool = True,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        batch_dice: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.squared = squared
        self.smooth = float(smooth)
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.ignore_index = ignore_index
        w = _weights_tensor(class_weights)
        if w is not None:
            self.register_buffer("class_weights", w, persistent=False)
        else:
            self.class_weights = None

    def _included_classes(self, num_classes: int) -> list[int]:
        classes = list(range(0 if self.include_background else 1, num_classes))
        if self.ignore_index is not None and self.ignore_index in classes and len(classes) > 1:
            classes.remove(self.ignore_index)
        return classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_inputs(logits, target)
        num_classes = logits.shape[1]
        with _float32_region(logits.device):
            probs, onehot = _probs_onehot_mask(logits, target, self.ignore_index)
            classes = self._included_classes(num_classes)
            if len(classes) != num_classes:
                index = torch.tensor(classes, device=logits.device)
                probs, onehot = probs.index_select(1, index), onehot.index_select(1, index)
            dims = tuple(range(2, probs.ndim))
            if self.batch_dice:
                dims = (0,) + dims
            per_class = dice_loss_from_probs(probs, onehot, self.squared, self.smooth, dims)
            if not self.batch_dice:
                per_class = per_class.mean(dim=0)  # (K_included,)
            if self.class_weights is None:
                return per_class.mean()
            if self.class_weights.numel() != num_classes:
                raise ValueError(
                    f"class_weights has {self.class_weights.numel()} entries but logits have {num_classes} classes"
                )
            w = self.class_weights.to(per_class.device)[classes]
            total = w.sum()
            if total <= 0:
                raise ValueError("class_weights of the included classes sum to 0")
            return (per_class * (w / total)).sum()


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
        w = _weights_tensor(class_weights)
        if w is not None:
            self.register_buffer("class_weights", w, persistent=False)
        else:
            self.class_weights = None

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


def _weighted_dice(num_classes: int, class_weights, ignore_index) -> nn.Module:
    if class_weights is None:
        raise ValueError(
            "loss 'weighted-dice' needs class_weights (one per class, e.g. inverse class frequencies "
            "from the training labels); use 'dice' for the unweighted loss"
        )
    return DiceLoss(class_weights=class_weights, ignore_index=ignore_index)


# name -> factory(num_classes, class_weights, ignore_index) -> nn.Module.
# class_weights, when given, are honoured by every loss; "weighted-dice" only insists on them.
LOSSES: dict[str, Callable[[int, Sequence[float] | None, int | None], nn.Module]] = {
    "dice": lambda k, w, ii: DiceLoss(class_weights=w, ignore_index=ii),
    "dice-squared": lambda k, w, ii: DiceLoss(squared=True, class_weights=w, ignore_index=ii),
    "ce": lambda k, w, ii: CrossEntropyLoss(class_weights=w, ignore_index=ii),
    "dice+ce": lambda k, w, ii: DiceCELoss(class_weights=w, ignore_index=ii),
    "weighted-dice": _weighted_dice,
}


def make_loss(
    name: str,
    num_classes: int,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    ignore_index: int | None = None,
) -> nn.Module:
    """Build the loss registered as `name` for `num_classes` classes (the config/CLI entry point)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + at least one class), got {num_classes}")
    if class_weights is not None:
        class_weights = _weights_tensor(class_weights, num_classes)
    return LOSSES[name](num_classes, class_weights, ignore_index)
