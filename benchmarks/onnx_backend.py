"""Sliding-window prediction through PyTorch vs ONNX Runtime, same network and weights, same run.

The issue keeps a speed lever only if it pays: this decides whether `--backend onnx` should ever
become a default. For the default 2D and 3D U-Nets (random weights: speed does not depend on
them) it times `medseg.inference.sliding_window` over one image per case size, alternating the
two backends `--repeats` times and keeping each one's median, so both see the same machine load.
It also records the largest probability difference between them.

Run it on an idle machine only (`uptime` load well under 1): other processes distort a ratio.

    python benchmarks/onnx_backend.py [--repeats 5] [--threads N]

Writes benchmarks/results/onnx_backend.json and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medseg.inference import sliding_window
from medseg.nets import axis_divisors, build_model
from medseg.onnx_backend import OnnxModel, export_ready
from medseg.train import FEATURES_2D, FEATURES_3D

CASES = {  # name: (spatial dims, image shape, patch), sizes as medseg plans them on real data
    "hippocampus_3d": (3, (40, 56, 40), (40, 56, 40)),
    "volume_3d": (3, (96, 160, 160), (48, 80, 64)),
    "picture_2d": (2, (512, 512), (256, 256)),
}


def _export(model: torch.nn.Module, dims: int, patch: tuple[int, ...], path: Path) -> None:
    ready = export_ready(model, dims)
    axes = {0: "batch", **{2 + i: f"axis{i}" for i in range(dims)}}
    torch.onnx.export(ready, (torch.randn(1, 1, *patch),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": axes, "logits": axes})


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
               "torch": torch.__version__, "load_before": os.getloadavg()[0], "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (dims, shape, patch) in CASES.items():
            model = build_model("unet", 1, 3, dims, features=FEATURES_3D if dims == 3 else FEATURES_2D).eval()
            if dims == 3:
                model = model.to(memory_format=torch.channels_last_3d)
            path = Path(tmp) / f"{name}.onnx"
            _export(model, dims, patch, path)
            onnx_model = OnnxModel(path, threads=args.threads)
            image = torch.randn(1, *shape)
            kw = dict(divisor=axis_divisors(model, dims), device="cpu")
            run_torch = lambda: sliding_window(model, image, patch, **kw)  # noqa: E731
            run_onnx = lambda: sliding_window(onnx_model, image, patch, **kw)  # noqa: E731
            diff = float((run_torch() - run_onnx()).abs().max())  # also the warm-up of both
            t_torch, t_onnx = [], []
            for _ in range(args.repeats):  # alternate, so both see the same load
                t_torch += _time(run_torch, 1)
                t_onnx += _time(run_onnx, 1)
            med_t, med_o = statistics.median(t_torch), statistics.median(t_onnx)
            results["cases"][name] = {"shape": list(shape), "patch": list(patch), "torch_s": round(med_t, 3),
                                      "onnx_s": round(med_o, 3), "onnx_speedup": round(med_t / med_o, 3),
                                      "max_prob_difference": diff}
            print(name, results["cases"][name], flush=True)
    results["load_after"] = os.getloadavg()[0]
    out = Path(__file__).parent / "results" / "onnx_backend.json"
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
