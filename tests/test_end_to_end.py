"""2D end to end through the Python functions: train -> predict -> evaluate on real data (a few
images, seconds of training), resume, and bad input refused before training."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medseg
from helpers import crash_after_first_epoch
from medseg.runs import load_checkpoint
from medseg.errors import MedsegInputError

TINY = dict(features=(8, 16, 32), batch_size=2, patch_size=(64, 64), iterations_per_epoch=3, val_fraction=0.4)


def test_isbi_train_predict_evaluate(isbi_small: Path, tmp_path: Path):
    run = medseg.train(isbi_small, tmp_path / "run", epochs=2, **TINY)
    for name in ("run.json", "log.csv", "learning_curves.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] and info["epochs_done"] == 2 and info["cases"] == {"train": 3, "val": 2, "val_used_per_epoch": 2}
    assert info["label_mapping"]["mode"] == "levels" and info["label_mapping"]["values"] == [0, 255]
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and all(0 <= float(r["val_dice_mean"]) <= 1 for r in rows)

    pred = tmp_path / "pred"
    written = medseg.predict(run, isbi_small / "images", pred)
    assert len(written) == 5 and (pred / "overlays" / "0.png").is_file()
    mask = np.array(Image.open(pred / "0.png"))
    assert mask.shape == (512, 512) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}

    result = medseg.evaluate(pred, isbi_small, csv_path=tmp_path / "e.csv", json_path=tmp_path / "e.json")
    assert len(result.rows) == 5 * 2
    summary = json.loads((tmp_path / "e.json").read_text())
    assert "summary" in summary and (tmp_path / "e.csv").read_text().count("\n") == 11

    # predicting again into the same folder never silently replaces the earlier masks
    with pytest.raises(FileExistsError, match="overwrite"):
        medseg.predict(run, isbi_small / "images", pred)

    # 2D runs mirror by default (test-time augmentation over the trained flips); it can be turned off
    from medseg.inference import Predictor, mirrors
    assert Predictor(run).mirror_axes == (0, 1) and Predictor(run, mirror=False).mirror_axes == ()
    assert not mirrors("auto", 3) and mirrors("auto", 2)
    with pytest.raises(ValueError, match="mirror"):
        mirrors("yes", 2)


def test_resume_continues_where_it_stopped(isbi_small: Path, tmp_path: Path):
    out = tmp_path / "run"
    medseg.train(isbi_small, out, epochs=1, **TINY)
    first = load_checkpoint(out / "checkpoints" / "last.pt")
    with pytest.raises(FileExistsError, match="resume"):
        medseg.train(isbi_small, out, epochs=2, **TINY)
    medseg.train(isbi_small, out, epochs=2, resume=True, **TINY)
    second = load_checkpoint(out / "checkpoints" / "last.pt")
    assert (first["epoch"], second["epoch"]) == (1, 2)
    assert second["iteration"] == 2 * TINY["iterations_per_epoch"]
    assert second["split"] == first["split"]
    assert [int(r["epoch"]) for r in csv.DictReader((out / "log.csv").open())] == [1, 2]


def test_resumed_run_matches_uninterrupted_run(isbi_small: Path, tmp_path: Path, monkeypatch):
    opts = dict(TINY, val_fraction=0.0)
    # the precision probe times fp32 against bf16 on CPUs with native bf16; pinned here so both
    # runs start alike on a busy machine, and refused on resume, which must reuse the stored choice
    monkeypatch.setattr(sys.modules["medseg.training.setup"], "choose_precision", lambda *a, **k: None)
    medseg.train(isbi_small, tmp_path / "a", epochs=2, **opts)

    crash_after_first_epoch(monkeypatch, lambda: medseg.train(isbi_small, tmp_path / "b", epochs=2, **opts))
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["autocast"] == "fp32"

    def no_probe(*args, **kwargs):
        raise AssertionError("a resumed run must keep the precision it began with, not probe again")

    monkeypatch.setattr(sys.modules["medseg.training.setup"], "choose_precision", no_probe)
    medseg.train(isbi_small, tmp_path / "b", epochs=2, resume=True, **opts)
    wa = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    for key in wa:
        assert np.allclose(wa[key].float().numpy(), wb[key].float().numpy(), atol=1e-5), key


def test_kvasir_rgb_jpeg_of_different_sizes(kvasir_small: Path, tmp_path: Path):
    run = medseg.train(kvasir_small, tmp_path / "run", epochs=1, image_size=96, **dict(TINY, patch_size=(64, 64)))
    info = json.loads((run / "run.json").read_text())
    assert info["label_mapping"]["mode"] == "threshold"
    pred = tmp_path / "pred"
    medseg.predict(run, kvasir_small / "images", pred, overlays=False)
    for image in (kvasir_small / "images").iterdir():
        with Image.open(image) as src:
            width, height = src.size
        assert Image.open(pred / f"{image.stem}.png").size == (width, height)


def test_bad_input_stops_before_training_and_names_the_file(tmp_path: Path, isbi_small: Path):
    data = tmp_path / "bad"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "images" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "images" / "b.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "labels" / "a.png")
    with pytest.raises(MedsegInputError, match="b.png"):
        medseg.train(data, tmp_path / "run", epochs=1, **TINY)
    assert not (tmp_path / "run").exists()
    Image.fromarray(np.zeros((30, 32), np.uint8)).save(data / "labels" / "b.png")
    with pytest.raises(MedsegInputError, match="b.png"):
        medseg.train(data, tmp_path / "run", epochs=1, **TINY)
    # a grey model refuses RGB input with a clear message
    run = medseg.train(isbi_small, tmp_path / "grey", epochs=1, **TINY)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(rgb)
    with pytest.raises(MedsegInputError, match="rgb.png.*3 channel"):
        medseg.predict(run, rgb, tmp_path / "p")
