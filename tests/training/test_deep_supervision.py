"""medseg.training.deep_supervision: the loss over a network's coarser outputs (weights halving per
scale, nearest-subsampled targets that keep the ignore value) trains a U-Net end to end."""
from __future__ import annotations

import pytest
import torch

from medseg.training.deep_supervision import DeepSupervisionLoss
from medseg.training.loss_registry import make_loss
from medseg.training.losses import DiceCELoss

IGNORE = 255


def test_deep_supervision_loss_weights_and_nearest_targets():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 16, 16, 8))
    target[0, :2] = IGNORE
    outputs = [torch.randn(2, 3, 16, 16, 8), torch.randn(2, 3, 8, 8, 4), torch.randn(2, 3, 4, 4, 2)]
    base = DiceCELoss(ignore_index=IGNORE)
    got = DeepSupervisionLoss(base)(outputs, target)
    # weights 1, 1/2, 1/4 normalised; targets subsampled at voxels i*s (nearest), labels untouched
    want = (base(outputs[0], target) + 0.5 * base(outputs[1], target[:, ::2, ::2, ::2])
            + 0.25 * base(outputs[2], target[:, ::4, ::4, ::4])) / 1.75
    torch.testing.assert_close(got, want)
    # a single tensor (eval mode, or no deep supervision) goes straight through
    torch.testing.assert_close(DeepSupervisionLoss(base)(outputs[0], target), base(outputs[0], target))
    with pytest.raises(ValueError, match="weights"):
        DeepSupervisionLoss(base, weights=[1.0, 0.5])(outputs, target)


def test_deep_supervision_trains_a_unet_end_to_end():
    from medseg.nets import build_model

    torch.manual_seed(0)
    model = build_model("unet", 1, 3, 2, features=(8, 16, 32, 64), deep_supervision=True)
    x, y = torch.randn(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    loss = DeepSupervisionLoss(make_loss("dice+ce", 3))(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.ds_heads.parameters())
    model.eval()
    assert model(x).shape == (2, 3, 32, 32)
