"""medseg.nets.unet: the classic preset is the reference Keras U-Net (31,031,810 parameters), the
light U-Net keeps shapes in 2D and 3D with every norm, and its InstanceNorm matches PyTorch's."""
from __future__ import annotations

import pytest
import torch

from medseg.nets import UNet, build_model, count_parameters


def test_classic_preset_matches_reference_keras_parameter_count():
    # the seed's reference model: 3 input channels, 2 classes
    assert count_parameters(build_model("classic", 3, 2)) == 31_031_810


def test_classic_preset_structure():
    model = UNet.classic(3, 2)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    ups = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs[:10:2]] == [64, 128, 256, 512, 1024]
    assert all(u.kernel_size == (2, 2) and u.stride == (2, 2) for u in ups) and len(ups) == 4
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) for m in model.modules())
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 4
    assert convs[-1].kernel_size == (1, 1) and convs[-1].out_channels == 2


@pytest.mark.parametrize("dims,shape", [(2, (2, 1, 48, 64)), (3, (1, 2, 16, 32, 16))])
@pytest.mark.parametrize("norm", ["batch", "instance", "group", None])
def test_unet_output_shape_2d_and_3d(dims, shape, norm):
    model = UNet(shape[1], 4, dims, (8, 16, 32), norm=norm)
    out = model(torch.randn(shape))
    assert out.shape == (shape[0], 4) + shape[2:]
    assert model.divisor == 4


def test_instance_norm_matches_torch_and_keeps_channels_last():
    from medseg.nets.unet import InstanceNorm
    torch.manual_seed(0)
    for dims in (2, 3):
        x = torch.randn(2, 5, *([9] * dims)) * 3 + 1
        ours, ref = InstanceNorm(5), (torch.nn.InstanceNorm2d if dims == 2 else torch.nn.InstanceNorm3d)(5, affine=True)
        with torch.no_grad():
            ours.weight.uniform_(0.5, 2); ours.bias.uniform_(-1, 1)
        ref.load_state_dict(ours.state_dict())
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
        with torch.inference_mode():  # the inference path computes its statistics in two passes
            assert torch.allclose(ours(x), ref(x), atol=1e-5)
    fmt = torch.channels_last_3d
    x = torch.randn(2, 4, 6, 6, 6).to(memory_format=fmt)
    assert InstanceNorm(4)(x).is_contiguous(memory_format=fmt)
    with torch.no_grad():
        assert InstanceNorm(4)(x).is_contiguous(memory_format=fmt)
    # a channel whose mean is 10^4 times its spread keeps its statistics (E[x²] - E[x]² would not)
    x = torch.randn(1, 1, 16, 16, 16) * 0.01 + 100
    with torch.no_grad():
        out = InstanceNorm(1)(x)
    xd = x.double()
    expected = (xd - xd.mean()) / (xd.var(correction=0) + 1e-5).sqrt()
    assert torch.allclose(out.double(), expected, atol=1e-2)  # float32 means of values near 100
