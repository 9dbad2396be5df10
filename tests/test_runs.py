"""medseg.runs and the command around it: a wrong run path says "not found"; a demo folder (or
any folder holding runs) names the run inside it; the help texts say what the code does."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import real_dataset
from medseg.cli import build_parser
from reliability_helpers import medseg


def _images(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(real_dataset("isbi2012-membrane") / "images" / "0.png", images / "0.png")
    return images


def test_wrong_run_paths_say_what_is_wrong(tmp_path: Path, capsys):
    images = _images(tmp_path)
    missing = tmp_path / "demo_rn"
    line = medseg(capsys, "predict", missing, images, "--out", tmp_path / "pred").one_error_line()
    assert f"{missing}: not found" in line and not (tmp_path / "pred").exists()
    assert f"{missing}: not found" in medseg(capsys, "report", missing).one_error_line()

    demo = tmp_path / "demo_run"  # what `medseg demo` leaves: the run is demo_run/run
    (demo / "run").mkdir(parents=True)
    (demo / "run" / "run.json").write_text(json.dumps({"medseg_run": 1}))
    for argv in (("predict", demo, images, "--out", tmp_path / "pred"), ("report", demo)):
        line = medseg(capsys, *argv).one_error_line()
        assert f"{demo}: is a demo folder, not a run folder; the run is inside it: use {demo / 'run'}" in line

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is not a medseg run folder (no run.json)" in medseg(capsys, "report", empty).one_error_line()


def test_help_texts_agree_with_the_code():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them here
    train = {a.dest: a.help for a in commands["train"]._actions}  # noqa: SLF001
    predict = {a.dest: a.help for a in commands["predict"]._actions}  # noqa: SLF001
    assert "AdamW" in train["lr"]  # the optimiser is torch.optim.AdamW (medseg.training.setup)
    assert "few per cent faster" not in predict["compile"] and "10 %% slower" in predict["compile"]
    demo = {a.dest: a.help for a in commands["demo"]._actions}  # noqa: SLF001
    assert "minutes" not in demo and "epochs" in demo
