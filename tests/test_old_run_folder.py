"""A run folder written before the restructure still predicts, pixel for pixel.

tests/golden/run_before_restructure/ holds what `medseg predict` reads of a tiny 2D run trained
by the code before the modules moved into stage folders (medseg 69130d7): checkpoints/best.pt,
run.json, plan.json, postprocessing.json, three held-out phantoms (inputs/) and the masks the old
code predicted from them (expected/; sha256 of their pixels in expected_masks.json). Users keep
run folders for a long time, so moving or renaming modules must not orphan them (a class path
pickled in a checkpoint, a key renamed in run.json, a changed preprocessing default).

The masks are bit-exact only on the torch/numpy build and CPU kernels they were recorded with;
elsewhere the sha256 comparison is replaced by pixel agreement with expected/.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

OLD_RUN = Path(__file__).resolve().parent / "golden" / "run_before_restructure"
MAX_DISAGREEING_SHARE = 0.005    # other CPUs/builds: at most 5 of 1024 pixels may flip


def _environment() -> dict:
    return {"torch": torch.__version__, "numpy": np.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine()}


def test_old_run_folder_predicts_the_masks_the_old_code_predicted(tmp_path: Path) -> None:
    recorded = json.loads((OLD_RUN / "expected_masks.json").read_text())
    run = shutil.copytree(OLD_RUN, tmp_path / "run", ignore=shutil.ignore_patterns("expected*", "inputs"))
    pred = tmp_path / "pred"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MEDSEG_CACHE": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)          # today's medseg, the one this interpreter imports
    done = subprocess.run([sys.executable, "-m", "medseg", "predict", str(run), str(OLD_RUN / "inputs"),
                           "--out", str(pred), "--device", "cpu", "--no-compile", "--no-overlays"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"medseg predict failed on the old run folder:\n{done.stdout}\n{done.stderr}"

    written = sorted(p.name for p in pred.glob("*.png"))
    assert written == sorted(recorded["masks"]), f"masks written: {written}"
    same_build = recorded["environment"] == _environment()
    for name, expected in recorded["masks"].items():
        mask = np.ascontiguousarray(np.asarray(Image.open(pred / name)))
        assert [list(mask.shape), str(mask.dtype)] == [expected["shape"], expected["dtype"]], name
        old = np.asarray(Image.open(OLD_RUN / "expected" / name))
        assert hashlib.sha256(old.tobytes()).hexdigest() == expected["sha256"], f"expected/{name} was edited"
        if same_build:
            assert hashlib.sha256(mask.tobytes()).hexdigest() == expected["sha256"], (
                f"{name}: pixels per class {np.bincount(mask.ravel()).tolist()}, the old code predicted "
                f"{expected['voxels_per_class']}")
        else:
            assert np.mean(mask != old) <= MAX_DISAGREEING_SHARE, (
                f"{name}: {int(np.sum(mask != old))} pixels differ from the old code's mask "
                f"(recorded on {recorded['environment']}, this is {_environment()})")
