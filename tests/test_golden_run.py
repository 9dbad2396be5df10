"""Golden run: one small end-to-end run through the `medseg` command, compared with recorded results.

A restructure of the code must not change what the program does. This test runs the public
surface only (`python -m medseg plan / train / predict / evaluate`, one fresh interpreter per
variant, so it does not care where modules live) on fixed data with a fixed seed, eager (no
torch.compile), fp32, on the CPU with one thread, and compares each step with the files under
tests/golden/<variant>/:

    plan.json      what `medseg plan` wrote (minus the fingerprint's timing)
    training.json  the run's settings, split, per-epoch losses and validation Dice (log.csv
                   without timings) and the postprocessing chosen on validation
    masks.json     per predicted mask: shape, dtype, sha256 of the pixel array, voxels per class
    metrics.json   `medseg evaluate`'s summary (rounded to 6 decimals) and settings minus paths
    environment.json  torch and numpy versions and CPU kernels (AVX2, AVX512, ...) of the recording:
                   the numbers are bit-exact only there, so elsewhere the test skips and says why

Variants: "2d" (synthetic phantoms, 8 training and 3 held-out 64x64 cases) and "3d" (6 real
MSD hippocampus volumes: 4 to train, 2 held out; skipped when the data is not there).

Threads are pinned (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1) in the subprocess: the plan's
budget records the thread count, and a convolution's floating-point sums depend on how many
threads share them (with 2 threads the losses move in the 6th digit and a few mask voxels flip).
Workers stay at their default (2; the CLI has no option for them). The run trains 2 epochs:
the first and last always validate, so the best checkpoint does not depend on the clock.

Refresh, only when behaviour changes on purpose (and say so in the commit message):
    MEDSEG_REFRESH_GOLDEN=1 python -m pytest tests/test_golden_run.py
rewrites tests/golden/ from the current code (those tests report as skipped), then review
`git diff tests/golden` before committing.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import hippocampus_msd, real_dataset

GOLDEN = Path(__file__).resolve().parent / "golden"
REFRESH = os.environ.get("MEDSEG_REFRESH_GOLDEN") == "1"
DIGITS = 6                      # metrics, losses and plan numbers are compared to this many decimals
STEPS = ("plan", "training", "masks", "metrics")
LOG_TIMING_COLUMNS = {"elapsed_s", "images_per_s", "data_wait_s"}
RUN_KEYS = ("config", "model", "device", "precision", "label_mapping", "class_names", "preprocessor", "cases",
            "split", "epochs_done", "iterations_done", "best_val_dice_mean", "finished")
HIPPO_TRAIN = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]
HIPPO_TEST = ["hippocampus_007", "hippocampus_008"]


# One interpreter runs every command of a variant, each exactly as `python -m medseg ARGS` would
# (runpy executes medseg/__main__.py, wherever the modules behind it live): importing torch and
# medseg takes ~4 s, which four separate processes would pay four times.
DRIVER = """
import json, runpy, sys, time
prelude, commands = sys.argv[1], json.loads(sys.argv[2])
exec(prelude)
import platform, numpy, torch, medseg
print("@@ medseg imported from", medseg.__file__, flush=True)
print("@@ environment", json.dumps({"torch": torch.__version__, "numpy": numpy.__version__,
      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine()}), flush=True)
for argv in commands:
    start = time.perf_counter()
    sys.argv = ["medseg", *argv]
    try:
        runpy.run_module("medseg", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    print(f"@@ medseg {argv[0]}: exit {code} after {time.perf_counter() - start:.1f} s", flush=True)
    if code:
        sys.exit(f"medseg {' '.join(argv)} exited {code}")
"""


def medseg(commands: list[list[str]], cwd: Path, prelude: str = "") -> str:
    """Run `python -m medseg ARGS` for each ARGS in turn (after the Python `prelude`) with one thread and a
    private cache, in one subprocess; its output, or a failure showing it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MEDSEG_CACHE": str(cwd / "cache"),
           "PYTHONHASHSEED": "0"}
    done = subprocess.run([sys.executable, "-c", DRIVER, prelude, json.dumps(commands)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"golden run failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done.stdout


# ------------------------------------------------------------------------------ normalising outputs
def rounded(value, digits: int = DIGITS):
    """Floats rounded (NaN/inf kept as strings) throughout nested dicts and lists, so JSON compares."""
    if isinstance(value, float):
        return repr(value) if not np.isfinite(value) else round(value, digits)
    if isinstance(value, dict):
        return {str(k): rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def plan_record(plan_file: Path) -> dict:
    """The plan minus what depends on the clock (the fingerprint's seconds)."""
    plan = json.loads(plan_file.read_text())
    plan.get("fingerprint", {}).pop("seconds", None)
    return rounded(plan)


def training_record(run: Path) -> dict:
    """Settings, split and learning curve of the run (no timings, no paths), and its postprocessing."""
    info = json.loads((run / "run.json").read_text())
    with open(run / "log.csv", newline="") as f:
        log = [{k: (float(v) if k not in ("epoch", "iteration") else int(v)) for k, v in row.items()
                if k not in LOG_TIMING_COLUMNS} for row in csv.DictReader(f)]
    plan = info.get("plan") or {}
    plan.get("fingerprint", {}).pop("seconds", None)
    post = json.loads((run / "postprocessing.json").read_text())
    return rounded({"run": {k: info.get(k) for k in RUN_KEYS}, "run_plan": plan, "log": log,
                    "postprocessing": post})


def read_mask(path: Path) -> np.ndarray:
    """A predicted mask's pixel array, read with the format's own library (not medseg's)."""
    if path.name.endswith((".nii.gz", ".nii")):
        import nibabel as nib
        return np.asanyarray(nib.load(str(path)).dataobj)
    from PIL import Image
    return np.asarray(Image.open(path))


def mask_record(pred: Path) -> dict:
    """Per mask: shape, dtype, sha256 of the C-ordered pixel bytes and voxels per class. The
    checksum is of the array, not of the file, so a writer's header or compression can't change it."""
    out = {}
    for path in sorted(p for p in pred.iterdir() if p.is_file() and p.name.endswith((".png", ".nii.gz"))):
        array = np.ascontiguousarray(read_mask(path))
        out[path.name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                          "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
                          "voxels_per_class": np.bincount(array.astype(np.int64).ravel()).tolist()}
    return out


def metrics_record(evaluation_json: Path) -> dict:
    """`medseg evaluate`'s summary and settings, without the folders it was given or prose."""
    data = json.loads(evaluation_json.read_text())
    settings = {k: v for k, v in data.get("settings", {}).items()
                if k not in ("pred_dir", "label_dir", "conventions", "std")}
    return rounded({"summary": data["summary"], "settings": settings})


# ------------------------------------------------------------------------------ comparing
def differences(expected, actual, where: str = "", limit: int = 25) -> list[str]:
    """Leaf-by-leaf differences as 'key.path: expected X, got Y' (at most `limit`)."""
    out: list[str] = []
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            path = f"{where}.{key}" if where else str(key)
            if key not in actual:
                out.append(f"{path}: missing (expected {json.dumps(expected[key])[:120]})")
            elif key not in expected:
                out.append(f"{path}: new (got {json.dumps(actual[key])[:120]})")
            else:
                out.extend(differences(expected[key], actual[key], path, limit))
            if len(out) >= limit:
                break
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for i, (e, a) in enumerate(zip(expected, actual)):
            out.extend(differences(e, a, f"{where}[{i}]", limit))
            if len(out) >= limit:
                break
    elif expected != actual:
        out.append(f"{where}: expected {json.dumps(expected)[:160]}, got {json.dumps(actual)[:160]}")
    return out[:limit]


def check_against_golden(variant: str, records: dict[str, dict], environment: dict) -> None:
    """Compare every step's record with tests/golden/<variant>/<step>.json (or rewrite them on refresh).

    The numbers are bit-exact only for the torch/numpy build and CPU kernels they were recorded
    with (environment.json): elsewhere the test skips, saying so, rather than fail on rounding."""
    folder = GOLDEN / variant
    if REFRESH:
        folder.mkdir(parents=True, exist_ok=True)
        for step, record in {**records, "environment": environment}.items():
            (folder / f"{step}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"MEDSEG_REFRESH_GOLDEN=1: rewrote {folder}; review `git diff tests/golden` before committing")
    recorded = folder / "environment.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != environment:
        pytest.skip(f"golden run '{variant}' was recorded with {recorded.read_text().strip()}, this is {environment}: "
                    "float results differ between builds/CPUs; record on this machine before a change to compare")
    report = []
    for step in STEPS:
        path = folder / f"{step}.json"
        if not path.is_file():
            pytest.fail(f"{path} is missing; record it with MEDSEG_REFRESH_GOLDEN=1 python -m pytest {__file__}")
        # a JSON round trip so tuples/ints compare as the file holds them
        found = differences(json.loads(path.read_text()), json.loads(json.dumps(records[step])))
        if found:
            report.append(f"[{step}] differs from {path.relative_to(GOLDEN.parent)}:\n  " + "\n  ".join(found))
    assert not report, (f"golden run '{variant}' changed (first step listed is where it starts):\n"
                        + "\n".join(report) + "\nIf the change is intended, refresh: MEDSEG_REFRESH_GOLDEN=1 "
                        "python -m pytest tests/test_golden_run.py")


def run_pipeline(work: Path, train_dir: Path, test_images: Path, test_labels: Path, *, epochs: int,
                 iterations: int, class_names: str, prelude: str = "") -> tuple[dict[str, dict], dict]:
    """plan -> train (with that plan) -> predict the held-out images -> evaluate; each step's record,
    and the environment (torch, numpy, CPU kernels) they ran in."""
    plan_file, run, pred = work / "plan.json", work / "run", work / "pred"
    output = medseg([
        ["plan", str(train_dir), "--out", str(plan_file), "--device", "cpu", "--memory-gb", "4", "--minutes", "1"],
        ["train", str(train_dir), "--out", str(run), "--plan", str(plan_file), "--epochs", str(epochs),
         "--iterations-per-epoch", str(iterations), "--seed", "0", "--device", "cpu", "--no-compile",
         "--precision", "fp32", "--class-names", class_names],
        ["predict", str(run), str(test_images), "--out", str(pred), "--device", "cpu", "--no-compile",
         "--no-overlays"],
        ["evaluate", str(pred), str(test_labels)],
    ], work, prelude)
    print("\n".join(line for line in output.splitlines() if line.startswith("@@")))
    environment = json.loads(next(line for line in output.splitlines() if line.startswith("@@ environment "))[15:])
    return {"plan": plan_record(plan_file), "training": training_record(run), "masks": mask_record(pred),
            "metrics": metrics_record(pred / "evaluation.json")}, environment


# ------------------------------------------------------------------------------ the variants
def test_golden_run_2d(tmp_path: Path) -> None:
    """Synthetic 2D phantoms (written with a fixed seed): 8 to train (6 + 2 validation), 3 held out."""
    prelude = ("from medseg.data.synthetic import write_phantom_dataset as w\n"
               f"w({str(tmp_path / 'train')!r}, 8, (64, 64), seed=0)\n"
               f"w({str(tmp_path / 'test')!r}, 3, (64, 64), seed=1)\n")
    test = tmp_path / "test"
    records, environment = run_pipeline(tmp_path, tmp_path / "train", test / "images", test / "labels", epochs=2,
                                        iterations=25, class_names="background,organ,lesion", prelude=prelude)
    assert len(records["masks"]) == 3
    check_against_golden("2d", records, environment)


def test_golden_run_3d(tmp_path: Path) -> None:
    """Real MSD hippocampus volumes (NIfTI): 4 to train (3 + 1 validation), 2 held out."""
    src = real_dataset("msd-hippocampus")
    train_dir = hippocampus_msd(tmp_path / "train", HIPPO_TRAIN)
    images, labels = tmp_path / "test" / "images", tmp_path / "test" / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for case in HIPPO_TEST:
        (images / f"{case}.nii.gz").symlink_to(src / "imagesTr" / f"{case}.nii.gz")
        (labels / f"{case}.nii.gz").symlink_to(src / "labelsTr" / f"{case}.nii.gz")
    records, environment = run_pipeline(tmp_path, train_dir, images, labels, epochs=2, iterations=5,
                                        class_names="background,anterior,posterior")
    assert len(records["masks"]) == 2
    check_against_golden("3d", records, environment)
