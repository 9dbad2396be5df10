"""The judged accuracy protocols, end to end on real data (10, 15 and 20 minutes: `make test-slow`)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import real_dataset

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_2d.py"


def _run(dataset: str, tmp_path: Path) -> dict:
    subprocess.run([sys.executable, str(BENCH), dataset, "--out", str(tmp_path)], check=True)
    return json.loads((tmp_path / f"{dataset}.json").read_text())


@pytest.mark.slow
def test_isbi_membrane_and_cell_dice(tmp_path: Path):
    real_dataset("isbi2012-membrane")
    result = _run("isbi", tmp_path)
    assert result["train_wall_s"] <= 10 * 60 + 30
    assert result["dice"]["membrane"] >= 0.82 and result["dice"]["cell"] >= 0.95, result["dice"]


@pytest.mark.slow
def test_kvasir_polyp_dice_at_original_resolution(tmp_path: Path):
    real_dataset("kvasir-seg")
    result = _run("kvasir", tmp_path)
    assert result["train_wall_s"] <= 15 * 60 + 30
    assert result["dice"]["polyp"] >= 0.82, result["dice"]


@pytest.mark.slow
def test_hippocampus_dice_in_20_minutes_with_the_input_geometry(tmp_path: Path):
    real_dataset("msd-hippocampus")
    bench = BENCH.with_name("accuracy_3d.py")
    subprocess.run([sys.executable, str(bench), "--out", str(tmp_path)], check=True)
    result = json.loads((tmp_path / "hippocampus.json").read_text())
    assert result["train_wall_s"] <= 20 * 60 + 30
    assert result["geometry_identical"] == "52/52"
    dice = result["dice_mirror_tta"]
    assert dice["anterior"] >= 0.88 and dice["posterior"] >= 0.87, result
