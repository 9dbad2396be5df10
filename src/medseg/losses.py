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

Each loss is cross-checked against MONAI's loss of the same name in tests/test_losses.py.
`DeepSupervisionLoss` wraps any of them for networks that return logits at several scales.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOSSES",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceFocalLoss",
    "DiceLoss",
    "FocalLoss",
    "GeneralizedDiceLoss",
    "TverskyLoss",
    "dice_loss_from_probs",
    "loss_options",
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
        w = _weights_tensor(class_weights)
        if w is not None:
            self.register_buffer("class_weights", w, persistent=False)
        else:
            self.class_weights = None

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


class DeepSupervisionLoss(nn.Module):
    """A loss over the multi-scale logits of a deeply supervised network (full resolution first).

    Scale i (0 = full) gets weight 2^-i, the weights normalised to sum 1, so the full-resolution
    term dominates and coarse heads only guide the early layers. The target is brought to each
    scale by nearest-neighbour subsampling (voxel i*s of each axis, which is the centre of a
    stride-s convolution's window), not by max-pooling: losses take one class index per voxel,
    and max-pooling integer labels would promote the largest class id (and an ignore value such
    as 255) over every other label in its window. A plain tensor (a network in eval mode, or
    without deep supervision) goes straight to the wrapped loss, so wrapping is always safe.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def scale_weights(self, count: int) -> list[float]:
        raw = self.weights if self.weights is not None else [0.5 ** i for i in range(count)]
        if len(raw) != count:
            raise ValueError(f"{len(raw)} deep-supervision weights for {count} outputs")
        total = sum(raw)
        if total <= 0 or min(raw) < 0:
            raise ValueError(f"deep-supervision weights must be >= 0 and not all 0, got {raw}")
        return [w / total for w in raw]

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        total = 0.0
        for weight, logits in zip(self.scale_weights(len(outputs)), outputs):
            if weight == 0:
                continue
            scaled = target
            if tuple(logits.shape[2:]) != tuple(target.shape[1:]):
                # exact for label values < 2^24 (float32 holds them), which covers any ignore value in use
                scaled = F.interpolate(target.unsqueeze(1).float(), size=logits.shape[2:], mode="nearest")
                scaled = scaled.squeeze(1).to(target.dtype)
            total = total + weight * self.loss(logits, scaled)
        return total


def _dice_options(smooth: float = 1e-5, include_background: bool = True, batch_dice: bool = False) -> dict:
    return {"smooth": smooth, "include_background": include_background, "batch_dice": batch_dice}


# name -> factory(num_classes, class_weights, ignore_index, **options) -> nn.Module; the keyword
# options each factory names are the ones `make_loss` accepts for it (`loss_options(name)`).
# class_weights, when given, are honoured by every loss; "weighted-dice" only insists on them.
def _dice(k, w, ii, smooth=1e-5, include_background=True, batch_dice=False):
    return DiceLoss(class_weights=w, ignore_index=ii, **_dice_options(smooth, include_background, batch_dice))


def _dice_squared(k, w, ii, smooth=1e-5, include_background=True, batch_dice=False):
    return DiceLoss(squared=True, class_weights=w, ignore_index=ii,
                    **_dice_options(smooth, include_background, batch_dice))


def _weighted(k, w, ii, smooth=1e-5, include_background=True, batch_dice=False):
    if w is None:
        raise ValueError(
            "loss 'weighted-dice' needs class_weights (one per class, e.g. inverse class frequencies "
            "from the training labels); use 'dice' for the unweighted loss"
        )
    return DiceLoss(class_weights=w, ignore_index=ii, **_dice_options(smooth, include_background, batch_dice))


def _ce(k, w, ii):
    return CrossEntropyLoss(class_weights=w, ignore_index=ii)


def _dice_ce(k, w, ii, dice_weight=1.0, ce_weight=1.0, smooth=1e-5, include_background=True, batch_dice=False):
    return DiceCELoss(dice_weight, ce_weight, class_weights=w, ignore_index=ii,
                      **_dice_options(smooth, include_background, batch_dice))


def _generalised_dice(k, w, ii, smooth=1e-5, include_background=True, batch_dice=False):
    return GeneralizedDiceLoss(class_weights=w, ignore_index=ii, **_dice_options(smooth, include_background, batch_dice))


def _tversky(k, w, ii, alpha=0.5, beta=0.5, smooth=1e-5, include_background=True, batch_dice=False):
    return TverskyLoss(alpha, beta, class_weights=w, ignore_index=ii,
                       **_dice_options(smooth, include_background, batch_dice))


def _focal(k, w, ii, gamma=2.0):
    return FocalLoss(gamma, class_weights=w, ignore_index=ii)


def _dice_focal(k, w, ii, gamma=2.0, dice_weight=1.0, focal_weight=1.0, smooth=1e-5, include_background=True,
                batch_dice=False):
    return DiceFocalLoss(dice_weight, focal_weight, gamma, class_weights=w, ignore_index=ii,
                         **_dice_options(smooth, include_background, batch_dice))


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "dice": _dice,
    "dice-squared": _dice_squared,
    "ce": _ce,
    "dice+ce": _dice_ce,
    "weighted-dice": _weighted,
    "generalised-dice": _generalised_dice,
    "tversky": _tversky,
    "focal": _focal,
    "dice+focal": _dice_focal,
}


def loss_options(name: str) -> dict[str, object]:
    """The options loss `name` accepts, with their defaults (e.g. {"alpha": 0.5, "beta": 0.5, ...})."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    params = list(inspect.signature(LOSSES[name]).parameters.values())[3:]
    return {p.name: p.default for p in params}


def make_loss(
    name: str,
    num_classes: int,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    ignore_index: int | None = None,
    **options,
) -> nn.Module:
    """Build the loss registered as `name` for `num_classes` classes (the config/CLI entry point).

    `options` are the loss's own settings (`loss_options(name)` lists them), e.g.
    ``make_loss("tversky", 3, alpha=0.3, beta=0.7)`` or ``make_loss("dice", 3, batch_dice=True)``.
    """
    accepted = loss_options(name)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + at least one class), got {num_classes}")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"loss {name!r} has no option {', '.join(unknown)}; "
                         f"its options: {', '.join(accepted) or 'none'}")
    if class_weights is not None:
        class_weights = _weights_tensor(class_weights, num_classes)
    return LOSSES[name](num_classes, class_weights, ignore_index, **options)
