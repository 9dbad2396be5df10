"""Losses by name (`--loss NAME`): one factory per name, its keyword options being the ones
`make_loss` accepts for it (`loss_options(name)` lists them)."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .losses import (CrossEntropyLoss, DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss, GeneralizedDiceLoss,
                     TverskyLoss, _weights_tensor)

__all__ = ["LOSSES", "loss_options", "make_loss"]


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
