"""Does `torch.compile` pay in prediction? `medseg predict` end to end, eager against the default.

Each setting runs as its own `python -m medseg predict RUN INPUT` process (model load, reading,
preprocessing, windows, restore, writing: what a user waits for) with a fresh, empty inductor
cache, so the compiled run pays its full compilation:

  eager     --no-compile
  auto      the default: eager until 20 s went into one window shape, then compiled
  compiled  --compile: compiled from the first window batch

and the masks are compared voxel by voxel with the eager ones.

    .venv/bin/python benchmarks/predict_compile.py --run RUN --input FOLDER [--settings eager,auto]

Writes benchmarks/results/predict_compile.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv_peak import machine_info  # noqa: E402

FLAGS = {"eager": ["--no-compile"], "auto": [], "compiled": ["--compile"]}


def run_setting(run: Path, inputs: Path, out: Path, setting: str) -> float:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "medseg", "predict", str(run), str(inputs), "--out", str(out),
                        "--no-overlays", "--device", "cpu", *FLAGS[setting]], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def read_mask(path: Path) -> np.ndarray:
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib
        return np.asarray(nib.load(str(path)).dataobj)
    from PIL import Image
    return np.array(Image.open(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained run folder")
    parser.add_argument("--input", type=Path, required=True, help="what to predict (a file or folder)")
    parser.add_argument("--settings", default="eager,auto", help="comma-separated: eager, auto, compiled")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "predict_compile.json")
    args = parser.parse_args()
    settings = args.settings.split(",")
    work = Path(tempfile.mkdtemp(prefix="predict_compile_"))
    times, masks = {}, {}
    for setting in settings:
        out = work / setting
        times[setting] = round(run_setting(args.run, args.input, out, setting), 1)
        masks[setting] = {p.name: read_mask(p) for p in sorted(out.iterdir()) if p.is_file()}
        print(f"{setting:9s} {times[setting]:7.1f} s", flush=True)
    base = settings[0]
    differing = {s: sum(int((masks[s][n] != masks[base][n]).sum()) for n in masks[base]) for s in settings}
    voxels = sum(m.size for m in masks[base].values())
    for s in settings[1:]:
        print(f"{s} vs {base}: {times[base] / times[s]:.2f}x faster; {differing[s]} of {voxels} voxels differ")
    result = {"benchmark": "predict_compile", "run": str(args.run), "input": str(args.input),
              "cases": len(masks[base]), "seconds": times,
              "speedup_vs_" + base: {s: round(times[base] / times[s], 3) for s in settings[1:]},
              "voxels_differing_from_" + base: differing, "voxels": voxels, "machine": machine_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
