"""medseg.training.schedule: validation is capped to a share of the training time
(`TrainConfig.val_share`), but the first and the last epoch always validate, so a run has a
learning curve and a best checkpoint."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medseg.data.synthetic import write_phantom_dataset
from medseg.training import Trainer, TrainConfig


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "data", 4, shape=(64, 64))


def _validated_epochs(data: Path, out: Path, val_share: float) -> list[int]:
    config = TrainConfig(epochs=4, iterations_per_epoch=2, patch_size=(64, 64), batch_size=2, val_fraction=0.25,
                         device="cpu", precision="fp32", compile=False, val_share=val_share)
    Trainer(data, out, config).fit()
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # every epoch is logged and checkpointed
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "checkpoints" / "last.pt").is_file()
    return [int(r["epoch"]) for r in rows if r["val_dice_mean"]]


def test_a_tiny_share_validates_only_the_first_and_last_epoch(phantoms, tmp_path):
    assert _validated_epochs(phantoms, tmp_path / "run", val_share=1e-9) == [1, 4]


def test_share_one_validates_every_epoch(phantoms, tmp_path):
    assert _validated_epochs(phantoms, tmp_path / "run", val_share=1.0) == [1, 2, 3, 4]
