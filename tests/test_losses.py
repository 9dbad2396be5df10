"""Tests for medseg.losses: closed-form gradient, MONAI cross-checks, ignore_index, registry."""
from __future__ import annotations

import pytest
import torch

from medseg.losses import (
    LOSSES,
    CrossEntropyLoss,
    DiceCELoss,
    DiceLoss,
    dice_loss_from_probs,
    make_loss,
)

monai_losses = pytest.importorskip("monai.losses")

SHAPES = {"2d": (2, 3, 12, 10), "3d": (2, 4, 6, 7, 5)}


def _random_inputs(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=dtype) * 2
    target = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g)
    return logits, target


# ---------------------------------------------------------------------------------------------
# Formula and gradient
# ---------------------------------------------------------------------------------------------


def test_squared_dice_gradient_matches_closed_form():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(1, 1, 50, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(1, 1, 50, generator=g, dtype=torch.float64) > 0.6).to(torch.float64)
    loss = dice_loss_from_probs(p, y, squared=True, smooth=0.0).sum()
    (grad,) = torch.autograd.grad(loss, p)

    pd, yd = p.detach(), y
    inter = (pd * yd).sum()
    size_x = (pd**2).sum()
    size_y = (yd**2).sum()
    expected = -2 * yd / (size_x + size_y) + 4 * inter * pd / (size_x + size_y) ** 2
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    # and the value is 1 - 2|X∩Y| / (|X| + |Y|)
    torch.testing.assert_close(loss.detach(), 1 - 2 * inter / (size_x + size_y), rtol=1e-12, atol=1e-12)


def test_plain_dice_value_by_hand():
    p = torch.tensor([[[0.5, 1.0, 0.0, 0.25]]], dtype=torch.float64)
    y = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]], dtype=torch.float64)
    # 2 * 1.5 / (1.75 + 2)
    got = dice_loss_from_probs(p, y, squared=False, smooth=0.0)
    assert got.shape == (1, 1)
    assert got.item() == pytest.approx(1 - 3.0 / 3.75)


# ---------------------------------------------------------------------------------------------
# MONAI oracle
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
def test_dice_matches_monai(dim, squared, include_background, batch):
    logits, target = _random_inputs(SHAPES[dim], seed=3)
    smooth = 1e-3
    ours = DiceLoss(squared=squared, smooth=smooth, include_background=include_background, batch_dice=batch)
    ref = monai_losses.DiceLoss(
        softmax=True,
        to_onehot_y=True,
        include_background=include_background,
        squared_pred=squared,
        smooth_nr=smooth,
        smooth_dr=smooth,
        batch=batch,
    )
    got = ours(logits, target)
    want = ref(logits, target.unsqueeze(1))
    assert got.shape == ()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("include_background", [True, False])
def test_class_weighted_dice_matches_monai(dim, include_background):
    logits, target = _random_inputs(SHAPES[dim], seed=4)
    k = logits.shape[1]
    weights = torch.arange(1, k + 1, dtype=torch.float32) ** 2
    ours = DiceLoss(class_weights=weights.tolist(), include_background=include_background)
    # MONAI multiplies each class term by its raw weight and then takes a plain mean over classes;
    # weights scaled to sum to K_included there equal our weights normalised to sum 1.
    used = weights if include_background else weights[1:]
    ref = monai_losses.DiceLoss(
        softmax=True,
        to_onehot_y=True,
        include_background=include_background,
        weight=used * len(used) / used.sum(),
    )
    torch.testing.assert_close(ours(logits, target), ref(logits, target.unsqueeze(1)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("squared", [False, True])
def test_dice_ce_matches_monai(dim, squared):
    logits, target = _random_inputs(SHAPES[dim], seed=5)
    ours = DiceCELoss(dice_weight=0.7, ce_weight=1.3, squared=squared, smooth=1e-5)
    ref = monai_losses.DiceCELoss(
        softmax=True,
        to_onehot_y=True,
        squared_pred=squared,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        lambda_dice=0.7,
        lambda_ce=1.3,
    )
    torch.testing.assert_close(ours(logits, target), ref(logits, target.unsqueeze(1)), rtol=0, atol=1e-5)


def test_ce_matches_torch_weighted():
    logits, target = _random_inputs(SHAPES["3d"], seed=6)
    w = [0.1, 1.0, 2.0, 5.0]
    got = CrossEntropyLoss(class_weights=w)(logits, target)
    want = torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor(w))
    torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------
# ignore_index
# ---------------------------------------------------------------------------------------------

IGNORE = 255


def _with_ignored_band(shape, seed):
    """Inputs whose last `cut` columns (in the last spatial axis) are all ignored."""
    logits, target = _random_inputs(shape, seed=seed)
    cut = 3
    target = target.clone()
    target[..., -cut:] = IGNORE
    return logits, target, cut


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: DiceLoss(ignore_index=IGNORE),
        lambda: DiceLoss(squared=True, ignore_index=IGNORE, include_background=False),
        lambda: DiceLoss(ignore_index=IGNORE, batch_dice=True, class_weights=[1, 2, 3, 4]),
        lambda: CrossEntropyLoss(ignore_index=IGNORE),
        lambda: CrossEntropyLoss(ignore_index=IGNORE, class_weights=[1, 2, 3, 4]),
        lambda: DiceCELoss(ignore_index=IGNORE),
    ],
    ids=["dice", "dice-sq-nobg", "dice-batch-weighted", "ce", "ce-weighted", "dice+ce"],
)
def test_ignore_index_equals_cropped_loss_and_zero_gradient(dim, make):
    shape = (2, 4) + SHAPES[dim][2:]  # K=4 to match the 4 class weights above
    logits, target, cut = _with_ignored_band(shape, seed=7)
    loss_fn = make()
    logits = logits.requires_grad_(True)
    loss = loss_fn(logits, target)

    cropped = loss_fn(logits.detach()[..., :-cut], target[..., :-cut])
    torch.testing.assert_close(loss.detach(), cropped, rtol=1e-6, atol=1e-6)

    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.all(grad[..., -cut:] == 0)
    assert grad[..., :-cut].abs().sum() > 0


def test_ignore_index_scattered_voxels_match_masked_reference():
    """Ignored voxels anywhere (not just a crop): per-sample Dice equals Dice over the kept voxels."""
    logits, target = _random_inputs((2, 3, 9, 9), seed=8)
    ignored = torch.rand(target.shape, generator=torch.Generator().manual_seed(9)) < 0.3
    target_ig = torch.where(ignored, torch.full_like(target, -1), target)
    got = DiceLoss(ignore_index=-1)(logits, target_ig)
    per_sample = []
    for b in range(2):
        keep = ~ignored[b]
        lg = logits[b].reshape(3, -1)[:, keep.reshape(-1)]  # (K, n_kept)
        tg = target[b].reshape(-1)[keep.reshape(-1)]
        per_sample.append(DiceLoss()(lg.unsqueeze(0), tg.unsqueeze(0)))
    torch.testing.assert_close(got, torch.stack(per_sample).mean())


def test_all_ignored_is_finite():
    logits, target = _random_inputs((1, 3, 4, 4), seed=10)
    target = torch.full_like(target, IGNORE)
    logits.requires_grad_(True)
    for name in LOSSES:
        loss = make_loss(name, 3, class_weights=[1.0, 1.0, 1.0], ignore_index=IGNORE)(logits, target)
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.all(grad == 0)


def test_ignore_index_that_is_a_class_drops_that_class():
    logits, target = _random_inputs((2, 3, 8, 8), seed=11)
    got = DiceLoss(ignore_index=2)(logits, target)
    keep = target != 2
    # Equivalent: Dice over classes 0 and 1 only, on the voxels not labelled 2.
    probs = torch.softmax(logits, 1) * keep.unsqueeze(1)
    onehot = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * keep.unsqueeze(1)
    want = dice_loss_from_probs(probs[:, :2], onehot[:, :2]).mean()
    torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------
# Registry, mixed precision, sanity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_make_loss_gives_finite_scalar_with_gradient(name, dim):
    logits, target = _random_inputs(SHAPES[dim], seed=12)
    k = logits.shape[1]
    loss_fn = make_loss(name, k, class_weights=[1.0 / (i + 1) for i in range(k)])
    assert isinstance(loss_fn, torch.nn.Module)
    logits.requires_grad_(True)
    loss = loss_fn(logits, target)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["dice", "dice-squared", "weighted-dice", "dice+ce", "ce"])
def test_perfect_prediction_gives_near_zero_loss(name):
    _, target = _random_inputs((2, 3, 8, 8, 4), seed=13)
    logits = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 100.0
    loss = make_loss(name, 3, class_weights=[0.2, 0.3, 0.5])(logits, target)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_perfect_prediction_with_absent_class_is_zero():
    target = torch.zeros(1, 6, 6, dtype=torch.long)
    target[0, 2:4, 2:4] = 1  # class 2 absent everywhere
    logits = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 100.0
    assert DiceLoss()(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_make_loss_errors():
    with pytest.raises(ValueError, match="dice-squared"):
        make_loss("focal", 3)
    with pytest.raises(ValueError, match="class_weights"):
        make_loss("weighted-dice", 3)
    with pytest.raises(ValueError, match="one weight per class"):
        make_loss("dice", 3, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError):
        make_loss("dice", 3, class_weights=[1.0, -1.0, 1.0])


def test_bad_inputs_raise():
    logits, target = _random_inputs((2, 3, 5, 5))
    with pytest.raises(ValueError, match="target"):
        DiceLoss()(logits, target[:, :4])
    with pytest.raises(ValueError, match="outside"):
        DiceLoss()(logits, target + 3)
    with pytest.raises(ValueError, match="class_weights"):
        DiceLoss(class_weights=[1.0, 2.0])(logits, target)


def test_bf16_autocast_computes_in_float32():
    logits, target = _random_inputs(SHAPES["3d"], seed=14)
    logits_bf16 = logits.to(torch.bfloat16).requires_grad_(True)
    for name in LOSSES:
        loss_fn = make_loss(name, logits.shape[1], class_weights=[1.0, 2.0, 3.0, 4.0])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(logits_bf16, target)
        assert loss.dtype == torch.float32
        want = loss_fn(logits_bf16.detach().float(), target)
        torch.testing.assert_close(loss.detach(), want, rtol=1e-6, atol=1e-6)
        (grad,) = torch.autograd.grad(loss, logits_bf16)
        assert grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()


def test_batch_dice_differs_from_per_sample_when_a_sample_lacks_a_class():
    # sample 0 has class 2, sample 1 does not: per-sample Dice punishes sample 1's tiny p mass hard.
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, :4, :4] = 2
    target[:, 4:, 4:] = 1
    logits = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 3.0
    per_sample = DiceLoss()(logits, target)
    batch = DiceLoss(batch_dice=True)(logits, target)
    assert batch < per_sample
