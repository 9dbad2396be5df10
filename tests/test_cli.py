"""medseg.cli: the `medseg` command answers --help for each subcommand, turns bad input into exit
status 2 without a traceback, and runs train -> predict -> evaluate on real data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_cli_help_and_errors(tmp_path: Path):
    cmd = [sys.executable, "-m", "medseg"]
    out = subprocess.run(cmd + ["--help"], capture_output=True, encoding="utf-8", check=True).stdout
    assert all(word in out for word in ("train", "predict", "evaluate", "demo"))
    for sub in ("train", "predict", "evaluate", "demo"):
        assert subprocess.run(cmd + [sub, "--help"], capture_output=True, encoding="utf-8").returncode == 0
    bad = subprocess.run(cmd + ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "r")],
                         capture_output=True, encoding="utf-8")
    assert bad.returncode == 2 and "missing" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_train_predict_evaluate(isbi_small: Path, tmp_path: Path):
    cmd = [sys.executable, "-m", "medseg"]
    run, pred = tmp_path / "run", tmp_path / "pred"
    subprocess.run(cmd + ["train", str(isbi_small), "--out", str(run), "--epochs", "1", "--features", "8,16,32",
                          "--patch-size", "64x64", "--batch-size", "2", "--iterations-per-epoch", "2"], check=True)
    subprocess.run(cmd + ["predict", str(run), str(isbi_small / "images" / "3.png"), "--out", str(pred)], check=True)
    res = subprocess.run(cmd + ["evaluate", str(pred), str(tmp_path / "ref")], capture_output=True, encoding="utf-8")
    assert res.returncode == 2  # reference folder does not exist
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "3.png").symlink_to(isbi_small / "labels" / "3.png")
    res = subprocess.run(cmd + ["evaluate", str(pred), str(tmp_path / "ref")], capture_output=True, encoding="utf-8", check=True)
    assert "dice" in res.stdout.lower() and (pred / "evaluation.json").is_file() and (pred / "evaluation.csv").is_file()
