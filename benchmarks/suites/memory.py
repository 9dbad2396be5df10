"""Peak memory and time of `medseg predict` on a CT-sized volume, every window against --skip-empty.

A CT-like 512 x 512 x 400 int16 volume (air at -1000 HU around an elliptical body, organs, spine
and ribs; 0.8 x 0.8 x 1.5 mm; `benchmarks.ct_phantom`) and a real run trained through
`medseg.train` on six small phantoms of the same kind (modality CT, 4 classes, a narrow U-Net
4-32 channels, patch 48 x 128 x 128, --steps steps: enough for air to come out as background;
the weights' quality does not change memory). Its 2 mm target spacing makes prediction resample
the volume to 300 x 512 x 512 and back, as it does for most real cases. Each variant is one
`python -m medseg predict RUN VOLUME` child process; peak RSS is the kernel's high-water mark of
that process (`os.wait4` -> ru_maxrss), wall time includes reading the volume and writing the
mask and overlay. Variants: the defaults (every window) and `--skip-empty` (windows whose every
voxel is its channel's minimum after normalisation get background without running the network);
their masks are compared voxel by voxel. Issue 6's target: peak RSS under 6 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.harness import fmt

TITLE = "Prediction memory on a CT-sized volume"
COMMAND = "python -m benchmarks run memory"
TARGET_BYTES = 6e9
GIB = 1024 ** 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default="400x512x512", help="volume shape z x y x x (default 400x512x512)")
    parser.add_argument("--steps", type=int, default=60, help="training steps of the run")
    parser.add_argument("--variants", default="default,skip-empty")
    parser.add_argument("--work", type=Path, help="keep the volume and run here (reused when present)")


def prepare(work: Path, shape: tuple[int, ...], steps: int, quick: bool) -> tuple[Path, Path]:
    """The CT volume and a trained run (both reused when already in `work`)."""
    import medseg
    from benchmarks.ct_phantom import ct_phantom, write_ct_dataset, write_volume

    volume = work / "ct_volume.nii.gz"
    if not volume.exists():
        image, _ = ct_phantom(shape, seed=7)
        write_volume(volume, image, (1.5, 0.8, 0.8))
        del image
    run = work / "run"
    if not (run / "run.json").exists() or not json.loads((run / "run.json").read_text()).get("finished"):
        train_shape, patch = ((16, 48, 48), (16, 48, 48)) if quick else ((48, 128, 128), (48, 128, 128))
        spacings = [1.5, 2.0, 2.5] if quick else [1.5, 2.0, 2.0, 2.0, 2.5, 3.0]
        if run.exists():
            shutil.rmtree(run)
        data = write_ct_dataset(work / "data", train_shape, spacings)
        medseg.train(str(data), str(run), epochs=1, iterations_per_epoch=steps, features=(4, 8, 16, 32),
                     patch_size=patch, batch_size=1, cache=False, device="cpu")
    return volume, run


def predict_once(run: Path, volume: Path, out: Path, extra: list[str]) -> dict:
    """One `medseg predict` child: peak RSS (GiB, from wait4), wall seconds, an RSS timeline."""
    cmd = [sys.executable, "-m", "medseg", "predict", str(run), str(volume), "--out", str(out), "--device", "cpu",
           "--overwrite", *extra]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                with open(f"/proc/{child.pid}/status") as f:
                    rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), None)
            except OSError:
                break
            if rss is not None:
                samples.append((round(time.perf_counter() - start, 1), round(rss / 1024 ** 2, 3)))
            stop.wait(0.5)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    output = child.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stop.set()
    poller.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output[-3000:]}")
    return {"peak_rss_gib": round(usage.ru_maxrss / 1024 ** 2, 3), "wall_s": round(wall, 1),
            "rss_timeline_gib": samples[::4], "options": extra}


def count_windows(run: Path, volume: Path) -> dict:
    """Windows on the volume's working grid, and how many hold nothing but background."""
    import itertools

    from medseg.inference import Predictor, empty_value, is_empty, read_input_case, window_starts
    from medseg.io.layout import prediction_inputs

    predictor = Predictor(run, device="cpu")
    member = predictor.members[0]
    case = read_input_case(prediction_inputs(volume, 1, predictor.dataset.channel_names)[0], 1)
    image = member.pre.normalise(member.pre.resample(case, with_label=False).image)
    patch, background = member.patch_size, empty_value(image)
    starts = itertools.product(*[window_starts(s, w, predictor.overlap) for s, w in zip(image.shape[1:], patch)])
    flags = [is_empty(image[(slice(None),) + tuple(slice(a, a + w) for a, w in zip(st, patch))], background)
             for st in starts]
    return {"working_grid": list(image.shape[1:]), "windows": len(flags), "empty_windows": int(sum(flags))}


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    import numpy as np
    import SimpleITK as sitk

    from benchmarks.datasets import dice

    shape = (40, 96, 96) if args.quick else tuple(int(v) for v in args.shape.split("x"))
    steps = 2 if args.quick else args.steps
    work = args.work or Path(tempfile.mkdtemp(prefix="medseg-bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        volume, run_dir = prepare(work, shape, steps, args.quick)
        options = {"default": [], "skip-empty": ["--skip-empty"]}
        variants, masks = {}, {}
        for name in args.variants.split(","):
            print(f"predicting: {name}", flush=True)
            variants[name] = predict_once(run_dir, volume, work / f"pred-{name}", options[name])
            masks[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(work / f"pred-{name}" / "ct_volume.nii.gz")))
            print(f"  peak RSS {variants[name]['peak_rss_gib']:.2f} GiB, {variants[name]['wall_s']} s", flush=True)
        windows = count_windows(run_dir, volume)
        ref = masks.get("default")
        for name, mask in masks.items():
            variants[name]["voxels_differing_from_default"] = int((mask != ref).sum()) if ref is not None else None
            variants[name]["dice_vs_default"] = ({c: round(dice(mask == c, ref == c), 5) for c in range(1, 4)}
                                                 if ref is not None else None)
            variants[name]["under_target"] = variants[name]["peak_rss_gib"] * GIB < TARGET_BYTES
        voxels = int(np.prod(ref.shape)) if ref is not None else None
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    settings = {"volume_shape_zyx": list(shape), "volume_spacing_zyx_mm": [1.5, 0.8, 0.8], "dtype": "int16",
                "classes": 4, "training_steps": steps, "features": [4, 8, 16, 32], "variants": list(variants)}
    return settings, {"variants": variants, "windows": windows, "voxels": voxels, "target_bytes": TARGET_BYTES}


def table(env: dict) -> list[str]:
    r, s = env["results"], env["settings"]
    w = r["windows"]
    lines = [f"Volume {'×'.join(map(str, s['volume_shape_zyx']))} int16, working grid "
             f"{'×'.join(map(str, w['working_grid']))}: {w['windows']} windows, {w['empty_windows']} of them pure "
             "background.", "",
             "| variant | peak RSS | under 6 GB | wall | voxels ≠ default | lowest per-class Dice vs default |",
             "|---|---:|---|---:|---:|---:|"]
    for name, v in r["variants"].items():
        low = min(v["dice_vs_default"].values()) if v.get("dice_vs_default") else None
        lines.append(f"| {name} | **{v['peak_rss_gib']:.2f} GiB** | {'yes' if v['under_target'] else 'NO'} | "
                     f"{v['wall_s']:.0f} s | {fmt(v.get('voxels_differing_from_default'))} | {fmt(low, 3)} |")
    if r.get("note"):
        lines += ["", r["note"]]
    shape = "x".join(map(str, s["volume_shape_zyx"]))
    lines += ["", f"Command: `python -m benchmarks run memory --shape {shape} --steps {s['training_steps']}`"]
    return lines
