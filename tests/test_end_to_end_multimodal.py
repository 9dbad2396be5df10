"""Several modalities as channels on real data: BraTS 2013 converted to nnU-Net (FLAIR = _0000,
T1c = _0001) trains with 2 input channels, and a case that lacks a modality at prediction time is
refused with its name and the missing modality's name, before anything is written."""
from __future__ import annotations

import json

import pytest
import torch

import medseg
from helpers import real_dataset
from medseg.errors import MedsegInputError
from medseg.io.convert import convert_brats
from medseg.io.layout import describe_dataset

# 4 mm voxels and a small network: two channels through the whole trainer in a few seconds
TINY = dict(features=(8, 16, 32), batch_size=2, patch_size=(16, 24, 24), iterations_per_epoch=2,
            target_spacing=(4.0, 4.0, 4.0), val_fraction=0.25)


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    return convert_brats(real_dataset("brats2013-6"), tmp_path_factory.mktemp("brats") / "data")


def test_brats_trains_with_flair_and_t1c_and_refuses_a_missing_modality(brats, tmp_path):
    pairs, info = describe_dataset(brats)
    assert info.channel_names == ["FLAIR", "T1c"] and [len(p.image_files) for p in pairs] == [2] * len(pairs)
    run = medseg.train(brats, tmp_path / "run", epochs=1, finish=False, plan=False, device="cpu", **TINY)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert state["in_channels"] == 2 and state["num_classes"] == 5
    assert json.loads((run / "run.json").read_text())["dataset"]["channel_names"] == ["FLAIR", "T1c"]

    inputs = tmp_path / "in"
    inputs.mkdir()
    for f in sorted((brats / "imagesTs").iterdir()):
        (inputs / f.name).symlink_to(f.resolve())
    (inputs / "brats_2013_pat0002_1_0001.nii.gz").unlink()  # this case lost its T1c
    with pytest.raises(MedsegInputError, match=r"brats_2013_pat0002_1 has channel files _0000 but the model takes "
                                               r"2 channel\(s\).*FLAIR, T1c.*missing: _0001 \(T1c\)"):
        medseg.predict(run, inputs, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
