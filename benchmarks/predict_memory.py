"""Peak memory and time of `medseg predict` on a CT-sized volume (512 x 512 x 400, int16 HU).

    flock /work/scratch/cpu.lock nice -n 19 .venv/bin/python benchmarks/predict_memory.py \\
        --work /work/scratch/s4/helperC/pm --baseline /work/scratch/s4/helperC/base

Issue 6's target: peak RSS under 6 GB. The script
1. writes CT-like phantoms (benchmarks/ct_phantom.py): a training set of 6 small ones
   (z spacing 1.5-3 mm, median 2 mm; 0.8 mm in-plane) and one 512 x 512 x 400 volume at
   0.8 x 0.8 x 1.5 mm, so the working grid (2 mm slices: 300 x 512 x 512) differs from the
   volume's and prediction resamples there and back, as it does for most real cases;
2. trains a real run on the small ones through `medseg.train` (CT normalisation from the plan,
   4 classes, a narrow U-Net (4-32 channels), 60 steps: enough for air to come out as
   background, so masks can be compared; the weights' quality does not change memory);
3. runs `python -m medseg predict RUN volume.nii.gz --out DIR` in a subprocess for each
   variant and reads the child's peak RSS from `os.wait4` (ru_maxrss; the kernel's own high-water
   mark, nothing missed between polls) and its wall time:
   - `baseline`: the code before issue 6's memory work (a git worktree of that commit, `--baseline`),
   - `medseg`: the current code with its defaults (every window run),
   - `medseg --skip-empty`: the current code not running all-background windows.
Masks are compared voxel by voxel with the baseline's. Prints a table with ratios and writes
benchmarks/results/predict_memory.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ct_phantom import ct_phantom, write_ct_dataset, write_volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VOLUME_SHAPE = (400, 512, 512)          # z, y, x
VOLUME_SPACING = (1.5, 0.8, 0.8)        # mm, z, y, x
TRAIN_SHAPE = (48, 128, 128)
TRAIN_Z_SPACINGS = [1.5, 2.0, 2.0, 2.0, 2.5, 3.0]
GB = 1024 ** 3


def prepare(work: Path, steps: int) -> tuple[Path, Path]:
    """The CT volume and a trained run (reused when already there)."""
    volume = work / "ct_volume.nii.gz"
    if not volume.exists():
        image, _ = ct_phantom(VOLUME_SHAPE, seed=7)
        write_volume(volume, image, VOLUME_SPACING)
        del image
    run = work / "run"
    if not (run / "run.json").exists() or not json.loads((run / "run.json").read_text()).get("finished"):
        data = work / "data"
        if not (data / "dataset.json").exists():
            write_ct_dataset(data, TRAIN_SHAPE, TRAIN_Z_SPACINGS)
        import medseg
        medseg.train(str(data), str(run), epochs=1, iterations_per_epoch=steps, features=(4, 8, 16, 32),
                     patch_size=(48, 128, 128), batch_size=1, cache=False, device="cpu")
    return volume, run


def _poll_rss(pid: int, samples: list[tuple[float, float]], stop: threading.Event) -> None:
    """RSS timeline of the child (for the record; the peak comes from wait4)."""
    t0 = time.perf_counter()
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        samples.append((time.perf_counter() - t0, int(line.split()[1]) / 1024 ** 2))
        except OSError:
            break
        stop.wait(0.25)


def predict_once(src: Path, run: Path, volume: Path, out: Path, extra: list[str]) -> dict:
    """One `medseg predict` child process: peak RSS (GiB), wall seconds, its mask."""
    env = dict(os.environ, PYTHONPATH=str(src / "src"))
    cmd = [sys.executable, "-m", "medseg", "predict", str(run), str(volume), "--out", str(out),
           "--device", "cpu", "--overwrite", *extra]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, cwd=str(out.parent), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    poller = threading.Thread(target=_poll_rss, args=(child.pid, samples, stop), daemon=True)
    poller.start()
    output = child.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    poller.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({child.returncode}):\n{output[-3000:]}")
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct_volume.nii.gz")))
    return {"command": " ".join(cmd), "peak_rss_gib": usage.ru_maxrss / 1024 ** 2, "wall_s": wall,
            "rss_timeline_gib": [(round(t, 1), round(r, 3)) for t, r in samples[::4]], "mask": mask}


def count_windows_run(run: Path, volume: Path) -> dict:
    """Windows on the volume's working grid, and how many hold nothing but background (no network)."""
    import itertools

    from medseg.inference import empty_value, is_empty, window_starts
    from medseg.io.layout import prediction_inputs
    from medseg.predict import Predictor, read_input_case

    predictor = Predictor(run, device="cpu")
    member = predictor.members[0]
    case = read_input_case(prediction_inputs(volume, 1, predictor.dataset.channel_names)[0], 1)
    image = member.pre.normalise(member.pre.resample(case, with_label=False).image)
    window = member.patch_size
    starts = itertools.product(*[window_starts(s, w, predictor.overlap) for s, w in zip(image.shape[1:], window)])
    background = empty_value(image)
    flags = [is_empty(image[(slice(None),) + tuple(slice(a, a + w) for a, w in zip(st, window))], background)
             for st in starts]
    return {"working_grid": list(image.shape[1:]), "windows": len(flags), "empty_windows": int(sum(flags))}


def dice(a: np.ndarray, b: np.ndarray, k: int) -> float:
    x, y = a == k, b == k
    s = int(x.sum()) + int(y.sum())
    return 1.0 if s == 0 else 2.0 * int((x & y).sum()) / s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medseg_predict_memory"))
    ap.add_argument("--baseline", type=Path, required=True,
                    help="checkout of the code before the memory work (git worktree add DIR b2c0fe4)")
    ap.add_argument("--steps", type=int, default=60, help="training steps for the run (default 60)")
    ap.add_argument("--variants", default="baseline,medseg,medseg-skip")
    ap.add_argument("--prepare-only", action="store_true", help="write the volume and train the run, then stop")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict_memory.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    volume, run = prepare(args.work, args.steps)
    if args.prepare_only:
        return
    variants = {"baseline": (args.baseline, []), "medseg": (ROOT, []), "medseg-skip": (ROOT, ["--skip-empty"])}
    results: dict[str, dict] = {}
    for name in args.variants.split(","):
        src, extra = variants[name]
        print(f"predicting with {name} ...", flush=True)
        results[name] = predict_once(src, run, volume, args.work / f"pred_{name}", extra)
        print(f"  peak RSS {results[name]['peak_rss_gib']:.2f} GiB, {results[name]['wall_s']:.1f} s", flush=True)
    windows = count_windows_run(run, volume)
    print(f"working grid {windows['working_grid']}: {windows['empty_windows']} of {windows['windows']} windows "
          "hold nothing but background", flush=True)
    ref = results.get("baseline") or next(iter(results.values()))
    k = len(json.loads((run / "run.json").read_text()).get("class_names", [])) or 4
    for name, r in results.items():
        r["voxels_differing_from_baseline"] = int((r["mask"] != ref["mask"]).sum())
        r["dice_vs_baseline"] = {c: dice(r["mask"], ref["mask"], c) for c in range(1, k)}
        r["mask_class_voxels"] = np.bincount(r["mask"].ravel(), minlength=k).tolist()
    base = results.get("baseline")
    print(f"\n{'variant':<16} {'peak RSS GiB':>12} {'wall s':>8} {'RSS ratio':>10} {'time ratio':>10} "
          f"{'voxels != baseline':>19}  target < 6 GB")
    for name, r in results.items():
        rr = r["peak_rss_gib"] / base["peak_rss_gib"] if base else float("nan")
        tr = r["wall_s"] / base["wall_s"] if base else float("nan")
        ok = "met" if r["peak_rss_gib"] * GB < 6e9 else "MISSED"
        print(f"{name:<16} {r['peak_rss_gib']:>12.2f} {r['wall_s']:>8.1f} {rr:>10.2f} {tr:>10.2f} "
              f"{r['voxels_differing_from_baseline']:>19}  {ok}")
    import torch
    record = {
        "benchmark": "predict_memory",
        "command": "flock /work/scratch/cpu.lock nice -n 19 .venv/bin/python benchmarks/predict_memory.py "
                   f"--work {args.work} --baseline {args.baseline}",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_at_end": os.getloadavg()},
        "settings": {"volume_shape_zyx": VOLUME_SHAPE, "volume_spacing_zyx_mm": VOLUME_SPACING,
                     "volume_dtype": "int16", "train_shape_zyx": TRAIN_SHAPE, "train_z_spacings": TRAIN_Z_SPACINGS,
                     "classes": k, "training_steps": args.steps, "features": [4, 8, 16, 32],
                     "patch": [48, 128, 128], "run_plan": json.loads((run / "plan.json").read_text()).get("target_spacing")
                     if (run / "plan.json").exists() else None,
                     "baseline_source": str(args.baseline), "target_bytes": 6e9},
        "windows": windows,
        "results": {n: {key: v for key, v in r.items() if key != "mask"} for n, r in results.items()},
    }
    if base:
        record["ratios_vs_baseline"] = {n: {"peak_rss": r["peak_rss_gib"] / base["peak_rss_gib"],
                                            "wall": r["wall_s"] / base["wall_s"]} for n, r in results.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=float))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
