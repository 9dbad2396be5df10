"""medseg.training.ema: the moving average of the weights (`TrainConfig.ema`), its arithmetic, what
checkpoints hold, and that a crashed run with an average resumes to the same weights as an
uninterrupted one."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import medseg
from helpers import crash_after_first_epoch
from medseg.runs import load_checkpoint
from medseg.training.ema import WeightEMA

TINY = dict(features=(8, 16, 32), batch_size=2, patch_size=(64, 64), iterations_per_epoch=3, val_fraction=0.0,
            ema=0.9, compile=False)


def test_average_follows_the_decay_with_a_ramp():
    model = torch.nn.Linear(3, 2)
    ema = WeightEMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first update: decay min(0.9, 2/11)
    assert torch.allclose(ema.model.weight, start + (1 - 2 / 11))
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.model.weight, model.weight, atol=1e-6)  # a fixed model is reached
    assert not ema.model.weight.requires_grad
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(model, decay=1.0)


def test_checkpoint_holds_the_average_for_prediction_and_the_weights_for_training(isbi_small: Path, tmp_path: Path):
    run = medseg.train(isbi_small, tmp_path / "run", epochs=1, **TINY)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["ema_updates"] == TINY["iterations_per_epoch"]
    assert any(not torch.equal(state["model"][k], state["train_model"][k]) for k in state["model"]
               if state["model"][k].is_floating_point())
    from medseg.inference import Predictor
    predictor = Predictor(run, checkpoint="last", device="cpu")
    for key, value in predictor.model.state_dict().items():
        assert torch.equal(value, state["model"][key])


def test_resumed_run_with_an_average_matches_uninterrupted_run(isbi_small: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sys.modules["medseg.training.setup"], "choose_precision", lambda *a, **k: None)
    medseg.train(isbi_small, tmp_path / "a", epochs=2, **TINY)
    crash_after_first_epoch(monkeypatch, lambda: medseg.train(isbi_small, tmp_path / "b", epochs=2, **TINY))
    medseg.train(isbi_small, tmp_path / "b", epochs=2, resume=True, **TINY)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["ema_updates"] == b["ema_updates"] == 6
    for part in ("model", "train_model"):
        for key in a[part]:
            assert torch.allclose(a[part][key].float(), b[part][key].float(), atol=1e-5), (part, key)
