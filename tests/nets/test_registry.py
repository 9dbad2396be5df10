"""medseg.nets.registry: every registered model builds and runs forward in 2D and 3D at sizes its
divisors allow, options and errors name the choices, deep supervision gives the coarser outputs,
and MONAI is imported only for the transformer models."""
from __future__ import annotations

import pytest
import torch

from medseg.nets import MODELS, build_model


def test_registry_errors_name_the_choices():
    with pytest.raises(ValueError, match="unet"):
        build_model("no-such-net", 1, 2)
    assert {"unet", "classic", "unet-classic"} <= set(MODELS)


SMALL_OPTIONS = {
    "unet": {"features": (8, 16, 32)},
    "unet-classic": {},
    "resunet": {"features": (8, 16, 32)},
    "vnet": {"features": (8, 16, 32)},
    "fcn": {"features": (8, 16, 32, 64)},
    "unetr": {"hidden_size": 48, "mlp_dim": 96, "num_heads": 2, "feature_size": 8},
    "swinunetr": {"feature_size": 12, "depths": (1, 1, 1, 1)},
}
SHAPES = {2: (2, 2, 64, 32), 3: (1, 2, 32, 32, 64)}


@pytest.mark.parametrize("name", sorted(SMALL_OPTIONS))
@pytest.mark.parametrize("dims", [2, 3])
def test_every_model_forward_2d_and_3d(name, dims):
    from medseg.nets import axis_divisors, model_spec

    if name == "unet-classic" and dims == 3:
        pytest.skip("31 M-parameter 3D U-Net: its 3D form is the same code as the unet's")
    shape = SHAPES[dims]
    options = dict(SMALL_OPTIONS[name])
    if model_spec(name).needs_img_size:
        options["img_size"] = shape[2:]
    torch.manual_seed(0)
    model = build_model(name, shape[1], 3, dims, **options).eval()
    assert all(s % d == 0 for s, d in zip(shape[2:], axis_divisors(model, dims)))
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], 3) + shape[2:] and torch.isfinite(out).all()


def test_unetr_pads_smaller_inputs_and_refuses_larger_ones():
    model = build_model("unetr", 1, 2, 3, img_size=(32, 32, 32), **{k: v for k, v in SMALL_OPTIONS["unetr"].items()}).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16, 32, 16)).shape == (1, 2, 16, 32, 16)
        with pytest.raises(ValueError, match="img_size"):
            model(torch.randn(1, 1, 48, 32, 32))
    with pytest.raises(ValueError, match="img_size"):
        build_model("unetr", 1, 2, 3)
    with pytest.raises(ValueError, match="multiple of 16"):
        build_model("unetr", 1, 2, 3, img_size=(40, 32, 32))


@pytest.mark.parametrize("name", ["unet", "resunet"])
def test_deep_supervision_outputs(name):
    model = build_model(name, 1, 3, 3, features=(8, 16, 32, 64), deep_supervision=True)
    outs = model(torch.randn(1, 1, 32, 32, 16))
    assert [tuple(o.shape[2:]) for o in outs] == [(32, 32, 16), (16, 16, 8), (8, 8, 4)]
    model.eval()
    assert model(torch.randn(1, 1, 32, 32, 16)).shape == (1, 3, 32, 32, 16)


def test_vnet_is_a_vnet():
    from medseg.nets import VNet

    model = VNet(1, 2, 3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert {c.kernel_size for c in convs if c.stride == (1, 1, 1) and c.kernel_size != (1, 1, 1)} == {(5, 5, 5)}
    downs = [c for c in convs if c.stride == (2, 2, 2)]
    assert [c.kernel_size for c in downs] == [(2, 2, 2)] * 4 and model.divisor == 16
    assert not any(isinstance(m, torch.nn.MaxPool3d) for m in model.modules())


def test_registry_options_and_dims_errors():
    from medseg.nets import model_divisor

    with pytest.raises(ValueError, match="has no option strides.*features"):
        build_model("vnet", 1, 2, 3, strides=[2, 2])
    assert model_divisor("unet", 3, features=(16, 32, 64, 128)) == 8
    assert model_divisor("unetr", 3) == 16 and model_divisor("swinunetr", 2) == 32
    assert model_divisor("unet", 3, features=(8, 16, 32), strides=[(1, 2, 2), (2, 2, 2)]) == (2, 4, 4)


def test_monai_is_not_imported_for_the_other_models():
    import subprocess
    import sys

    code = ("import sys, medseg, medseg.nets as n; n.build_model('vnet', 1, 2, 3, features=(8, 16)); "
            "print('monai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
