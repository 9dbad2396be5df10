"""Cases that fit in one window: oneDNN convolutions vs PyTorch's own kernel choice.

A case smaller than the patch (every MSD Hippocampus volume) is one network call of batch 1.
For such inputs PyTorch's CPU rule sends a 3x3x3 float32 convolution to its unvectorised
reference kernel whenever batch x channels x the first two sizes is at most 20480, which in a
3D U-Net hits the first layer, the 14³ levels and the bottleneck (`medseg.nets.conv`). This
script predicts the same cases with medseg's routing on and off (`single_window_on_onednn`
patched to False: PyTorch decides), rounds alternating, and checks the class maps agree.

    flock /work/scratch/cpu.lock .venv/bin/python benchmarks/single_window.py \\
        --run /work/scratch/s8/h8/run --images /work/scratch/s8/h8/test/imagesTs

Writes benchmarks/results/single_window.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from medseg.io.layout import prediction_inputs
from medseg.nets import conv
from medseg.predict import Predictor, argmax_mask, read_input_case

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conv_peak import machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "single_window.json")
    args = ap.parse_args()
    predictor = Predictor(args.run, device="cpu", postprocess=False, compile=False)
    items = prediction_inputs(args.images, predictor.in_channels, predictor.dataset.channel_names)
    cases = [read_input_case(item, predictor.in_channels) for item in items]
    routing = conv.single_window_on_onednn
    settings = {"onednn (medseg)": routing, "pytorch's choice": lambda layer, x: False}
    times: dict[str, list[float]] = {k: [] for k in settings}
    masks: dict[str, list] = {}
    for r in range(args.rounds + 1):                   # round 0 warms both up and is not counted
        for name in (list(settings) if r % 2 else list(settings)[::-1]):
            conv.single_window_on_onednn = settings[name]
            start = time.perf_counter()
            out = [argmax_mask(predictor.probabilities(case)) for case in cases]
            if r:
                times[name].append(time.perf_counter() - start)
            masks[name] = out
            print(f"round {r} {name:<18} {time.perf_counter() - start:6.2f} s", flush=True)
    conv.single_window_on_onednn = routing
    differing = sum(int((a != b).sum()) for a, b in zip(*masks.values()))
    median = {k: statistics.median(v) for k, v in times.items()}
    record = {"benchmark": "single_window", "machine": machine_info(), "torch": torch.__version__,
              "run": str(Path(args.run).resolve()), "cases": len(cases), "patch": list(predictor.patch_size),
              "seconds": times, "median_s": median,
              "speedup": round(median["pytorch's choice"] / median["onednn (medseg)"], 3),
              "voxels_differing": differing, "voxels": sum(int(m.size) for m in masks["onednn (medseg)"]),
              "load_after": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    ours, theirs = median["onednn (medseg)"], median["pytorch's choice"]
    print(f"{len(cases)} cases: oneDNN {ours:.2f} s, PyTorch's choice {theirs:.2f} s -> {record['speedup']}x; {differing} voxels differ; wrote {args.out}")


if __name__ == "__main__":
    main()
