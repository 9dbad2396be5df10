"""medseg.training.init_from: `medseg train --init-from RUN_OR_PACKAGE` starts from another run's
weights with its network; other classes get a fresh output layer (and the run says so); other
dimensions, channels, models, ensembles and non-runs are refused naming the source."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import medseg
from helpers import hippocampus_msd, link_subset, raises_naming, real_dataset, write_volume
from medseg.errors import MedsegInputError
from medseg.inference.package import export_package
from medseg.nets import build_model
from medseg.runs import find_checkpoint, load_checkpoint
from medseg.training.init_from import load_initial_weights, source_state

TINY = dict(batch_size=2, iterations_per_epoch=1, val_fraction=0.25, device="cpu")
CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny 3-class hippocampus run (its own features and patch) to fine-tune from."""
    root = tmp_path_factory.mktemp("source")
    data = hippocampus_msd(root / "data", CASES)
    return medseg.train(data, root / "run", epochs=1, plan=False, finish=False, features=(4, 8, 16),
                        patch_size=(24, 32, 24), **TINY)


def binary_hippocampus(dst):
    """The same real MR volumes with both hippocampus parts as one class (images/ + labels/)."""
    src = real_dataset("msd-hippocampus")
    (dst / "images").mkdir(parents=True)
    for case in CASES:
        (dst / "images" / f"{case}.nii.gz").symlink_to(src / "imagesTr" / f"{case}.nii.gz")
        label = sitk.ReadImage(str(src / "labelsTr" / f"{case}.nii.gz"))
        write_volume(dst / "labels" / f"{case}.nii.gz", sitk.GetArrayFromImage(label) > 0,
                     label.GetSpacing()[::-1], origin_xyz=label.GetOrigin(), direction=label.GetDirection(),
                     dtype=np.uint8)
    return dst


def test_same_classes_copy_every_weight_and_keep_the_network(source, tmp_path, capsys):
    state = source_state(source)
    model = build_model("unet", 1, 3, 3, **state["model_options"])
    note = load_initial_weights(model, source, state, model_name="unet", model_options=state["model_options"],
                                in_channels=1, spatial_dims=3, class_names=list(state["class_names"]),
                                channel_names=["MRI"])
    assert "start fresh" not in note
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key
    data = hippocampus_msd(tmp_path / "data", CASES)
    run = medseg.train(data, tmp_path / "tuned", epochs=1, plan=False, finish=False, init_from=source, **TINY)
    assert "fine-tuning from" in capsys.readouterr().out
    tuned = load_checkpoint(find_checkpoint(run))
    assert list(tuned["model_options"]["features"]) == [4, 8, 16] and list(tuned["patch_size"]) == [24, 32, 24]
    assert json.loads((run / "run.json").read_text())["config"]["init_from"] == str(source)


def test_other_classes_get_a_fresh_output_layer_and_say_so(source, tmp_path, capsys):
    package = export_package(source, tmp_path / "source.medseg.zip")  # a package works as a source too
    data = binary_hippocampus(tmp_path / "binary")
    run = medseg.train(data, tmp_path / "tuned", epochs=1, plan=False, finish=False, init_from=package, **TINY)
    out = capsys.readouterr().out
    assert "start fresh because the classes differ" in out and "head.weight" in out, out
    assert load_checkpoint(find_checkpoint(run))["num_classes"] == 2
    state = source_state(package)
    model = build_model("unet", 1, 2, 3, **state["model_options"])
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    load_initial_weights(model, package, state, model_name="unet", model_options=state["model_options"],
                         in_channels=1, spatial_dims=3, class_names=["background", "hippocampus"], channel_names=None)
    for key, value in model.state_dict().items():
        expected = fresh[key] if key.startswith("head.") else state["model"][key]
        assert torch.equal(value, expected), key


def test_what_does_not_fit_is_refused_naming_the_source(source, tmp_path, isbi_small):
    state = source_state(source)
    two_channels = build_model("unet", 2, 3, 3, **state["model_options"])
    with raises_naming(source, "input channel"):
        load_initial_weights(two_channels, source, state, model_name="unet", model_options=state["model_options"],
                             in_channels=2, spatial_dims=3, class_names=list(state["class_names"]), channel_names=None)
    with raises_naming(source, "is a 3D network, this data is 2D"):
        medseg.train(isbi_small, tmp_path / "2d", epochs=1, plan=False, finish=False, init_from=source, **TINY)
    data = hippocampus_msd(tmp_path / "data", CASES)
    with raises_naming(source, "holds a unet network"):
        medseg.train(data, tmp_path / "resunet", epochs=1, plan=False, finish=False, init_from=source,
                     model="resunet", **TINY)
    (tmp_path / "crossval" / "fold_0").mkdir(parents=True)
    (tmp_path / "crossval" / "fold_0" / "checkpoints").symlink_to(source / "checkpoints")
    with raises_naming(tmp_path / "crossval", "fine-tune from one fold"):
        source_state(tmp_path / "crossval")
    with pytest.raises(MedsegInputError, match="neither a medseg run folder nor a model package"):
        source_state(tmp_path)
