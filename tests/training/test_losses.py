"""medseg.training.losses and .loss_registry: closed-form gradient, MONAI cross-checks, ignore_index,
the registry by name and its options."""
from __future__ import annotations

import pytest
import torch

from medseg.training.loss_registry import LOSSES, loss_options, make_loss
from medseg.training.losses import (
    CrossEntropyLoss,
    DiceCELoss,
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    GeneralizedDiceLoss,
    TverskyLoss,
    dice_loss_from_probs,
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
        lambda: GeneralizedDiceLoss(ignore_index=IGNORE),
        lambda: GeneralizedDiceLoss(ignore_index=IGNORE, batch_dice=True, include_background=False),
        lambda: TverskyLoss(0.3, 0.7, ignore_index=IGNORE),
        lambda: FocalLoss(2.0, ignore_index=IGNORE),
        lambda: FocalLoss(2.0, ignore_index=IGNORE, class_weights=[1, 2, 3, 4]),
        lambda: DiceFocalLoss(ignore_index=IGNORE, batch_dice=True),
    ],
    ids=["dice", "dice-sq-nobg", "dice-batch-weighted", "ce", "ce-weighted", "dice+ce", "gdl", "gdl-batch-nobg",
         "tversky", "focal", "focal-weighted", "dice+focal"],
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


@pytest.mark.parametrize("name", ["dice", "dice-squared", "weighted-dice", "dice+ce", "ce", "generalised-dice",
                                  "tversky", "focal", "dice+focal"])
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
        make_loss("no-such-loss", 3)
    with pytest.raises(ValueError, match="alpha"):  # names the loss's own options
        make_loss("tversky", 3, gamma=2.0)
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


# ---------------------------------------------------------------------------------------------
# The losses added for small targets: MONAI oracle, absent classes, options
# ---------------------------------------------------------------------------------------------


def _absent_class_inputs(shape=(3, 4, 8, 8, 6), seed=20):
    """Random inputs where class 3 is absent from sample 0 and class 2 from every sample."""
    logits, target = _random_inputs(shape, seed=seed)
    target = torch.where(target == 2, torch.zeros_like(target), target)
    target[0] = torch.where(target[0] == 3, torch.ones_like(target[0]), target[0])
    return logits, target


@pytest.mark.parametrize("inputs", ["random-2d", "random-3d", "absent-classes"])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
def test_generalised_dice_matches_monai(inputs, include_background, batch):
    if inputs == "absent-classes":
        logits, target = _absent_class_inputs()
    else:
        logits, target = _random_inputs(SHAPES[inputs[-2:]], seed=21)
    ours = GeneralizedDiceLoss(smooth=1e-5, include_background=include_background, batch_dice=batch)
    ref = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, include_background=include_background,
                                           smooth_nr=1e-5, smooth_dr=1e-5, batch=batch)
    torch.testing.assert_close(ours(logits, target), ref(logits, target.unsqueeze(1)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("alpha,beta", [(0.5, 0.5), (0.3, 0.7), (0.8, 0.1)])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
def test_tversky_matches_monai(dim, alpha, beta, include_background, batch):
    logits, target = _random_inputs(SHAPES[dim], seed=22)
    ours = TverskyLoss(alpha, beta, smooth=1e-4, include_background=include_background, batch_dice=batch)
    ref = monai_losses.TverskyLoss(softmax=True, to_onehot_y=True, include_background=include_background,
                                   alpha=alpha, beta=beta, smooth_nr=1e-4, smooth_dr=1e-4, batch=batch)
    torch.testing.assert_close(ours(logits, target), ref(logits, target.unsqueeze(1)), rtol=0, atol=1e-5)


def test_tversky_half_half_is_dice():
    logits, target = _random_inputs(SHAPES["3d"], seed=23)
    torch.testing.assert_close(TverskyLoss(0.5, 0.5)(logits, target), DiceLoss()(logits, target))


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 3.5])
def test_focal_matches_monai_times_classes(dim, gamma):
    logits, target = _random_inputs(SHAPES[dim], seed=24)
    k = logits.shape[1]
    ref = monai_losses.FocalLoss(use_softmax=True, to_onehot_y=True, include_background=True, gamma=gamma)
    # MONAI averages over the class axis as well: its value is ours / K (documented in FocalLoss)
    torch.testing.assert_close(FocalLoss(gamma)(logits, target), k * ref(logits, target.unsqueeze(1)),
                               rtol=1e-5, atol=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, target = _random_inputs(SHAPES["3d"], seed=25)
    w = [0.1, 1.0, 2.0, 5.0]
    torch.testing.assert_close(FocalLoss(0.0, class_weights=w)(logits, target),
                               CrossEntropyLoss(class_weights=w)(logits, target))


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("batch", [False, True])
def test_dice_focal_matches_monai(dim, batch):
    logits, target = _random_inputs(SHAPES[dim], seed=26)
    k = logits.shape[1]
    ours = DiceFocalLoss(dice_weight=0.6, focal_weight=1.5, gamma=2.0, batch_dice=batch)
    # MONAI's DiceFocalLoss always uses the sigmoid focal loss (it has no softmax option for that
    # term), so its Dice half is checked as is and the focal half against softmax FocalLoss.
    ref = monai_losses.DiceFocalLoss(softmax=True, to_onehot_y=True, include_background=True, gamma=2.0,
                                     smooth_nr=1e-5, smooth_dr=1e-5, batch=batch)
    onehot = torch.nn.functional.one_hot(target, k).movedim(-1, 1).float()
    focal = monai_losses.FocalLoss(use_softmax=True, include_background=True, gamma=2.0)
    want = 0.6 * ref.dice(logits, onehot) + 1.5 * k * focal(logits, onehot)
    torch.testing.assert_close(ours(logits, target), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("batch_dice", [False, True])
def test_gradients_finite_with_absent_classes(name, batch_dice):
    logits, target = _absent_class_inputs(seed=27)
    options = {"batch_dice": batch_dice} if "batch_dice" in loss_options(name) else {}
    loss_fn = make_loss(name, 4, class_weights=[0.1, 0.2, 0.3, 0.4], **options)
    logits.requires_grad_(True)
    loss = loss_fn(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_make_loss_passes_options():
    logits, target = _random_inputs(SHAPES["3d"], seed=28)
    torch.testing.assert_close(make_loss("tversky", 4, alpha=0.3, beta=0.7)(logits, target),
                               TverskyLoss(0.3, 0.7)(logits, target))
    torch.testing.assert_close(make_loss("dice", 4, batch_dice=True)(logits, target),
                               DiceLoss(batch_dice=True)(logits, target))
    torch.testing.assert_close(make_loss("dice+focal", 4, gamma=1.0, include_background=False)(logits, target),
                               DiceFocalLoss(gamma=1.0, include_background=False)(logits, target))
    assert loss_options("tversky")["alpha"] == 0.5 and loss_options("ce") == {}
