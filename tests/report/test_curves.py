"""medseg.report.curves: the training log (log.csv) is read with empty cells as None, and learning
curves are drawn for one epoch, without validation, and without validation columns."""
from __future__ import annotations

from pathlib import Path

import pytest

from medseg.report.curves import plot_learning_curves, read_log

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_log(path: Path, rows: list[str], classes=("organ", "lesion")) -> Path:
    header = "epoch,iteration,elapsed_s,lr,train_loss,val_loss,val_dice_mean," + ",".join(
        f"val_dice_{c}" for c in classes
    )
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_read_log_parses_numbers_and_empty_cells(tmp_path: Path):
    log = write_log(tmp_path / "log.csv", ["0,10,5.5,0.01,1.2,,,,", "1,20,11.0,0.009,0.9,0.8,0.7,0.8,0.6"])
    rows = read_log(log)
    assert rows[0]["epoch"] == 0 and rows[1]["iteration"] == 20
    assert rows[0]["val_loss"] is None and rows[1]["val_dice_lesion"] == pytest.approx(0.6)


def test_curves_for_one_epoch(tmp_path: Path):
    log = write_log(tmp_path / "log.csv", ["0,50,30.0,0.01,0.8,0.7,0.6,0.7,0.5"])
    out = plot_learning_curves(log, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_curves_without_validation(tmp_path: Path):
    rows = [f"{e},{10 * e},{6.0 * e},0.01,{1 / (e + 1):.3f},,,," for e in range(1, 6)]
    out = plot_learning_curves(write_log(tmp_path / "log.csv", rows), tmp_path / "curves.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    no_val_columns = tmp_path / "bare.csv"
    no_val_columns.write_text("epoch,iteration,elapsed_s,lr,train_loss\n0,5,1.0,0.1,2.0\n1,10,2.0,0.1,1.5\n")
    assert plot_learning_curves(no_val_columns, tmp_path / "bare.png").read_bytes()[:8] == PNG_SIGNATURE
