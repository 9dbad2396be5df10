"""Run folders a user hands back to medseg: no code runs from a checkpoint, a damaged checkpoint
is named, a finished run resumes only to be extended (explicitly), and a damaged cache entry
heals itself. Each case runs the public command and checks the user's files are unchanged.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from reliability_helpers import TINY_2D, checksums, copy_isbi, medseg


class _Payload:
    """What a malicious checkpoint carries: unpickling it would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_a_checkpoint_cannot_run_code(run2d, run_copy, tmp_path, capsys):
    run = run_copy(run2d)
    marker = tmp_path / "the_payload_ran"
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        state = torch.load(path, weights_only=True)
        state["plan"] = _Payload(marker)
        torch.save(state, path)
    data = Path(json.loads((run / "run.json").read_text())["data"])
    images = data / "images"
    before = checksums(run, data)
    commands = {"predict": ["predict", run, images, "--out", tmp_path / "pred", "--no-compile"],
                "resume": ["train", data, "--out", run, "--resume", "--epochs", "3"],
                "export": ["export", run, "--onnx", "--out", tmp_path / "model.onnx"]}
    for what, argv in commands.items():
        line = medseg(capsys, *argv).one_error_line()
        assert "checkpoints" in line and "refused: the checkpoint holds more than weights" in line, (what, line)
        assert "posix.system" in line
    assert not marker.exists()
    assert checksums(run, data) == before


def test_truncated_and_empty_checkpoints(run2d, run_copy, tmp_path, capsys):
    run = run_copy(run2d)
    best = run / "checkpoints" / "best.pt"
    images = Path(json.loads((run / "run.json").read_text())["data"]) / "images"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    line = medseg(capsys, "predict", run, images, "--out", tmp_path / "a", "--no-compile").one_error_line()
    assert f"{best}: is truncated or not a medseg checkpoint" in line
    best.write_bytes(b"")
    line = medseg(capsys, "predict", run, images, "--out", tmp_path / "b", "--no-compile").one_error_line()
    assert f"{best}: checkpoint file is empty (0 bytes)" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_resume_of_a_finished_run_says_so(run2d, capsys):
    """The issue's case: --resume on a finished run trained on and replaced its checkpoints."""
    data = Path(json.loads((run2d / "run.json").read_text())["data"])
    before = checksums(run2d, data)
    line = medseg(capsys, "train", data, "--out", run2d, "--resume").one_error_line()
    assert f"{run2d}: this run's training finished (1 epochs" in line and "--epochs more than 1" in line
    line = medseg(capsys, "train", data, "--out", run2d, "--resume", "--epochs", "1").one_error_line()
    assert "already trained 1 epochs; --epochs 1 adds none" in line
    assert checksums(run2d, data) == before


def test_resume_extends_a_finished_run_when_asked(run2d, run_copy, capsys):
    run = run_copy(run2d)
    data = Path(json.loads((run / "run.json").read_text())["data"])
    (run / "validation").mkdir(exist_ok=True)
    (run / "validation" / "stale.txt").write_text("scores of the old weights")
    outcome = medseg(capsys, "train", data, "--out", run, "--resume", "--epochs", "2")
    assert outcome.code == 0, outcome.err
    assert "extending a finished run (1 epochs" in outcome.out and "to 2 epochs" in outcome.out
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    info = json.loads((run / "run.json").read_text())
    assert info["epochs_done"] == 2 and info["finished"]
    assert not (run / "validation" / "stale.txt").exists()  # validation redone for the new weights


def test_unreadable_cache_entry_is_rebuilt(tmp_path, capsys, monkeypatch):
    """The issue's case: a truncated cache entry (BadZipFile) made training impossible."""
    import medseg

    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDSEG_CACHE", str(cache))
    data = copy_isbi(tmp_path / "data", ("0", "1", "2"))
    medseg.train(data, tmp_path / "first", **TINY_2D)
    entries = sorted(cache.rglob("*.npz"))
    assert len(entries) == 3
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:1000])
    before = checksums(data)
    outcome = medseg_cli_train(capsys, data, tmp_path / "second")
    assert outcome.code == 0, outcome.err
    assert outcome.err.count("unreadable cache entry") == 1  # said once, not per entry
    assert all(e.stat().st_size > 1000 for e in entries)  # rebuilt in place
    assert checksums(data) == before


def medseg_cli_train(capsys, data: Path, out: Path):
    return medseg(capsys, "train", data, "--out", out, "--epochs", "1", "--no-plan", "--features", "8,16,32",
                  "--patch-size", "64x64", "--batch-size", "2", "--iterations-per-epoch", "1",
                  "--val-fraction", "0.4")


@pytest.mark.parametrize("which", ["run.json", "log.csv"])
def test_run_records_are_whole_files(run2d, which):
    """run.json and log.csv are written whole (atomically) each epoch: they parse."""
    text = (run2d / which).read_text()
    if which == "run.json":
        assert json.loads(text)["finished"] is True
    else:
        assert [int(r["epoch"]) for r in csv.DictReader(text.splitlines())] == [1]
