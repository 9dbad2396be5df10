"""A run on a dataset as published (masks beside their images, named with a suffix) finishes: its
validation cases are predicted, scored against the masks the run trained on, and reported."""
from __future__ import annotations

import csv
import json
import os

from helpers import real_dataset

import medseg

CHASE_CASES = ["Image_01L", "Image_01R", "Image_02L", "Image_02R", "Image_03L", "Image_03R"]


def chase_subset(dst):
    """Six CHASE_DB1 images with both observers' masks, linked flat as published."""
    src = real_dataset("chasedb1")
    dst.mkdir()
    for case in CHASE_CASES:
        for name in (f"{case}.jpg", f"{case}_1stHO.png", f"{case}_2ndHO.png"):
            os.symlink(src / name, dst / name)
    return dst


def test_chase_as_published_finishes_with_the_chosen_observer(tmp_path):
    data = chase_subset(tmp_path / "chase")
    before = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    run = medseg.train(data, tmp_path / "run", epochs=1, iterations_per_epoch=2, plan=False, features=(4, 8, 16),
                       image_size=64, batch_size=2, device="cpu", compile=False, label_suffix="_2ndHO")
    info = json.loads((run / "run.json").read_text())
    assert info["dataset"]["label_suffix"] == "_2ndHO"
    val = info["split"]["val"]
    assert val and all(c.rstrip("LR") not in {v.rstrip("LR") for v in info["split"]["train"]} for c in val)
    rows = list(csv.DictReader((run / "validation" / "metrics.csv").open()))
    assert {r["case"] for r in rows} == set(val)
    assert (run / "report.html").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == before   # nothing of the user's touched
