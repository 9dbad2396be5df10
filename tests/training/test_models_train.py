"""Every registered model trains a few steps, in 2D and 3D, on real or phantom data.

Convolutional models go through the real `Trainer` (data loading, patch sampling, loss,
optimiser, checkpoint). The MONAI transformer models need the trainer to pass their input size
(`img_size`), so until train.py does they train here through the same pieces by hand.
"""
from __future__ import annotations

import csv
import importlib
import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import hippocampus_msd, real_dataset
from medseg.data.synthetic import write_phantom_dataset
from medseg.training.loss_registry import make_loss
from medseg.training.deep_supervision import DeepSupervisionLoss
from medseg.nets import MODELS, build_model, model_spec, select_options
from medseg.training import Trainer, TrainConfig

CONV_MODELS = ["unet", "unet-classic", "resunet", "vnet", "fcn"]
TRANSFORMERS = ["unetr", "swinunetr"]
HIPPO_4 = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]


@pytest.fixture(scope="module")
def phantoms_2d(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "data", 4, shape=(64, 64))


@pytest.fixture(scope="module")
def hippo_4(tmp_path_factory) -> Path:
    return hippocampus_msd(tmp_path_factory.mktemp("hippo") / "data", HIPPO_4)


def _train_few_steps(data: Path, out: Path, model: str, patch: tuple[int, ...], **options) -> Trainer:
    config = TrainConfig(model=model, epochs=1, iterations_per_epoch=2, patch_size=patch, batch_size=2,
                         val_fraction=0.0, device="cpu", precision="fp32", seed=0, **options)
    trainer = Trainer(data, out, config)
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    changed = [k for k, v in trainer.model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, "no parameter changed"
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and np.isfinite(float(rows[-1]["train_loss"]))
    return trainer


@pytest.mark.parametrize("model", CONV_MODELS)
def test_conv_model_trains_in_2d(model, phantoms_2d, tmp_path):
    _train_few_steps(phantoms_2d, tmp_path / "run", model, (64, 64))


@pytest.mark.parametrize("model", CONV_MODELS)
def test_conv_model_trains_in_3d(model, hippo_4, tmp_path):
    if model == "unet-classic":
        pytest.skip("the 64-1024-channel 3D U-Net costs ~60 s per step here; "
                    "its forward is checked in tests/nets/test_registry.py")
    _train_few_steps(hippo_4, tmp_path / "run", model, (32, 32, 32))


def _trainer_passes_img_size() -> bool:
    return "select_options" in inspect.getsource(importlib.import_module("medseg.training.setup"))


@pytest.mark.parametrize("model,patch", [
    ("unetr", (32, 32, 32)),
    # ~2 min on this CPU at its default size; test_transformer_trains_on_real_volumes covers 3D Swin fast
    pytest.param("swinunetr", (32, 64, 32), marks=pytest.mark.slow),
    ("unetr", (64, 64)), ("swinunetr", (64, 64))])
def test_transformer_trains_through_the_trainer(model, patch, phantoms_2d, hippo_4, tmp_path):
    if not _trainer_passes_img_size():
        pytest.skip("train.py does not build models with nets.select_options(img_size=patch) yet")
    _train_few_steps(hippo_4 if len(patch) == 3 else phantoms_2d, tmp_path / "run", model, patch)


def _hippocampus_patches(size: tuple[int, int, int], n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """n real hippocampus volumes, z-scored, padded/cropped to `size`: (n, 1, *size), (n, *size)."""
    import SimpleITK as sitk

    src = real_dataset("msd-hippocampus")
    images, labels = [], []
    for case in HIPPO_4[:n]:
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "imagesTr" / f"{case}.nii.gz"))).astype(np.float32)
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "labelsTr" / f"{case}.nii.gz"))).astype(np.int64)
        img = (img - img.mean()) / img.std()
        box = np.zeros(size, np.float32), np.zeros(size, np.int64)
        sl = tuple(slice(0, min(s, m)) for s, m in zip(img.shape, size))
        box[0][sl], box[1][sl] = img[sl], lab[sl]
        images.append(box[0]), labels.append(box[1])
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels))


@pytest.mark.parametrize("model,size,options", [
    ("unetr", (32, 32, 32), {"hidden_size": 96, "mlp_dim": 192, "num_heads": 4}),
    # 64 along one axis keeps 2 voxels in Swin's deepest stage, enough for instance normalisation
    ("swinunetr", (32, 64, 32), {"feature_size": 12, "depths": (1, 1, 1, 1)}),
])
def test_transformer_trains_on_real_volumes(model, size, options):
    torch.manual_seed(0)
    x, y = _hippocampus_patches(size)
    spec = model_spec(model)
    net = build_model(model, 1, 3, 3, **options, **({"img_size": size} if spec.needs_img_size else {}))
    loss_fn = DeepSupervisionLoss(make_loss("dice+ce", 3))
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(2):
        loss = loss_fn(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_deep_supervision_through_the_trainer(phantoms_2d, tmp_path):
    """The trainer's loss (wrapped by DeepSupervisionLoss) trains a deeply supervised U-Net."""
    config = TrainConfig(model="unet", epochs=1, iterations_per_epoch=2, patch_size=(64, 64), batch_size=2,
                         val_fraction=0.25, device="cpu", precision="fp32")
    trainer = Trainer(phantoms_2d, tmp_path / "run", config)
    options = {**trainer.model_options(), "deep_supervision": True}
    trainer.model = build_model("unet", trainer.in_channels, trainer.num_classes, 2, **options)
    trainer.optimiser = torch.optim.AdamW(trainer.model.parameters(), lr=config.lr)
    trainer.loss_fn = DeepSupervisionLoss(trainer.loss_fn)
    trainer.fit()
    with open(tmp_path / "run" / "log.csv") as f:
        row = list(csv.DictReader(f))[-1]
    assert np.isfinite(float(row["train_loss"])) and "val_dice_mean" in row


def test_select_options_maps_generic_settings():
    generic = {"features": (16, 32, 64, 128), "norm": "instance", "strides": None, "img_size": (64, 64, 64),
               "deep_supervision": True}
    assert select_options("unet", **generic) == {"features": (16, 32, 64, 128), "norm": "instance",
                                                  "deep_supervision": True}
    assert select_options("vnet", **generic) == {"features": (16, 32, 64, 128), "norm": "instance"}
    assert select_options("unetr", **generic) == {"norm": "instance", "img_size": (64, 64, 64)}
    assert select_options("unet-classic", **generic) == {}
    assert set(TRANSFORMERS + CONV_MODELS) <= set(MODELS)


def test_compile_flag_and_the_auto_rule():
    """`--compile` / `--no-compile` reach TrainConfig; without either the "auto" rule decides:
    2D CPU runs with a clock budget of 5 minutes or more compile, everything else stays eager."""
    from medseg.cli import _train_options, build_parser
    from medseg.training import compiles

    parse = build_parser().parse_args
    assert _train_options(parse(["train", "data", "--out", "run", "--compile"]))["compile"] is True
    assert _train_options(parse(["train", "data", "--out", "run", "--no-compile"]))["compile"] is False
    assert "compile" not in _train_options(parse(["train", "data", "--out", "run"]))
    assert TrainConfig().compile == "auto"
    cpu = torch.device("cpu")
    has_compiler = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    assert compiles("auto", 2, cpu, 15.0) is bool(has_compiler)
    assert not compiles("auto", 2, cpu, 2.0) and not compiles("auto", 2, cpu, None)
    assert compiles("auto", 3, cpu, 20.0) is bool(has_compiler) and not compiles("auto", 3, cpu, 1.0)
    assert not compiles("auto", 2, torch.device("cuda"), 20.0)
    assert compiles(True, 3, cpu, None) and not compiles(False, 2, cpu, 15.0)
    with pytest.raises(ValueError, match="compile"):
        compiles("yes", 2, cpu, 15.0)


@pytest.mark.slow
def test_compiled_training_steps(phantoms_2d, tmp_path):
    """With compile=True the trainer's steps run through torch.compile and still train."""
    trainer = _train_few_steps(phantoms_2d, tmp_path / "run", "unet", (64, 64), compile=True)
    assert isinstance(trainer.net, torch._dynamo.eval_frame.OptimizedModule)


@pytest.mark.slow
def test_compiled_run_with_a_time_budget_keeps_training(tmp_path):
    """The first compiled step (compilation included) must not be taken as the cost of a step:
    it once made the validation reserve exceed the budget, and a 10-minute run stopped after one
    step."""
    from helpers import link_subset

    data = link_subset(real_dataset("isbi2012-membrane"), tmp_path / "data", ["0", "1", "2", "3"])
    config = TrainConfig(model="unet", minutes=1.5, iterations_per_epoch=20, patch_size=(64, 64), batch_size=2,
                         features=(8, 16, 32), val_fraction=0.5, device="cpu", precision="fp32", compile=True)
    trainer = Trainer(data, tmp_path / "run", config)
    trainer.fit()
    assert trainer.iteration > 10
