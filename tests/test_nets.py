import pytest
import torch

from medseg.nets import MODELS, UNet, build_model, count_parameters


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


def test_registry_errors_name_the_choices():
    with pytest.raises(ValueError, match="unet"):
        build_model("no-such-net", 1, 2)
    assert {"unet", "classic", "unet-classic"} <= set(MODELS)


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


def test_single_window_convolutions_run_on_onednn_with_the_same_result(monkeypatch):
    """Batch-1 inference (where PyTorch's kernel rule picks its reference kernel) goes to oneDNN;
    training, batches, autocast and tracing keep nn.ConvNd's own path; the output is the same."""
    from torch.utils.flop_counter import FlopCounterMode

    from medseg.nets import conv
    calls = []
    real = torch.mkldnn_convolution
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *a: calls.append(a[0].shape) or real(*a))
    torch.manual_seed(0)
    for dims, layer in ((2, conv.Conv2d(64, 64, 3, padding=1)), (3, conv.Conv3d(4, 16, 3, padding=1, stride=2))):
        reference = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(layer.in_channels, layer.out_channels, 3,
                                                                        padding=1, stride=layer.stride)
        reference.load_state_dict(layer.state_dict())  # same parameters and state-dict keys
        x = torch.randn(1, layer.in_channels, *([14] * dims))
        calls.clear()
        with torch.inference_mode():
            out = layer(x)
        assert calls == [x.shape]
        with torch.no_grad():
            assert torch.allclose(out, reference(x), atol=1e-5)
            with FlopCounterMode(display=False) as ours, torch.inference_mode():
                layer(x)
            with FlopCounterMode(display=False) as theirs:
                reference(x)
            assert ours.get_total_flops() == theirs.get_total_flops() > 0
            calls.clear()
            layer(torch.cat([x, x]))                                   # a batch: PyTorch decides
            with torch.autocast("cpu", dtype=torch.bfloat16):
                layer(x)
            torch.jit.trace(layer, x, check_trace=False)              # traced/exported graphs stay portable
        layer(x).sum().backward()                                      # training
        assert calls == []
    one_by_one = conv.Conv3d(8, 2, 1)
    with torch.no_grad():
        one_by_one(torch.randn(1, 8, 6, 6, 6))
    assert calls == []                                                 # 1x1 heads: a matrix product anyway


# ---------------------------------------------------------------------------------------------
# The model family of issue 7: every model in 2D and 3D, registry, divisors, `medseg models`
# ---------------------------------------------------------------------------------------------

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


def test_describe_models_counts_parameters_and_flops():
    from medseg.nets import describe_models

    rows = {r.name: r for r in describe_models((32, 32, 32), in_channels=1, num_classes=2, features=(16, 32, 64, 128))}
    assert "classic" not in rows and set(rows) >= {"unet", "unet-classic", "resunet", "vnet", "fcn", "unetr", "swinunetr"}
    unet = build_model("unet", 1, 2, 3, features=(16, 32, 64, 128))
    assert rows["unet"].parameters == count_parameters(unet)
    # by hand: the first convolution alone is 2 * 16 * 27 * 32^3 FLOPs
    assert rows["unet"].gflops > 2 * 16 * 27 * 32**3 / 1e9
    assert rows["swinunetr"].gflops is None and rows["swinunetr"].note  # 1 voxel left at its deepest stage
    odd = {r.name: r for r in describe_models((40, 40, 40), features=(16, 32, 64, 128))}
    assert odd["unet"].gflops is not None and "multiples of 32" in odd["swinunetr"].note
    assert rows["vnet"].gflops > rows["unet"].gflops > rows["fcn"].gflops


def test_models_command_prints_the_table(capsys):
    from medseg.cli import main

    assert main(["models", "--patch", "64", "64", "--in-channels", "3", "--classes", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("unet", "unet-classic", "resunet", "vnet", "fcn", "unetr", "swinunetr"):
        assert f"| {name} |" in out
    assert "31.03 M" in out  # the classic U-Net for 3 channels and 2 classes
