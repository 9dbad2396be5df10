"""medseg.nets.describe: parameters and FLOPs of every model for a patch (`medseg models`)."""
from __future__ import annotations

from medseg.nets import build_model, count_parameters


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
