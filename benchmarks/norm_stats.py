"""Instance-norm statistics without autograd: PyTorch's `var_mean` against the alternatives.

`var_mean` is a one-pass (Welford) reduction; on channels-last CPU tensors it made the norms
38 % of an eager prediction batch (`profile_unet.py`, session 7). This script times, in one
process:

  statistics   var_mean | two passes (mean, then mean square about it: medseg's inference path)
               | one pass E[x²] - E[x]² (fast, but loses precision when a mean dwarfs its spread)
               at the activation shapes of the BraTS and ISBI plans, and their precision on a
               channel with mean 100 and spread 0.01;
  networks     the whole eager U-Net forward (BraTS plan: four 56³ windows; ISBI plan: eight
               120² windows) with `var_mean` + separate multiply/add (session 7's InstanceNorm)
               against today's `InstanceNorm` (two passes + addcmul), interleaved.

    .venv/bin/python benchmarks/norm_stats.py [--repeats 5]

Writes benchmarks/results/norm_stats.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv_peak import machine_info  # noqa: E402

from medseg.nets import build_model  # noqa: E402
from medseg.nets import unet as unet_module  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [(4, 16, 56, 56, 56), (4, 32, 28, 28, 28), (4, 64, 14, 14, 14), (8, 16, 120, 120), (8, 32, 60, 60)]
NETWORKS = {"brats 4 x 56^3": (3, 2, 5, (4, 2, 56, 56, 56)), "isbi 8 x 120^2": (2, 1, 2, (8, 1, 120, 120))}


def var_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.var_mean(x, dim=tuple(range(2, x.ndim)), keepdim=True, correction=0)


def two_pass(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = tuple(range(2, x.ndim))
    mean = x.mean(dims, keepdim=True)
    return (x - mean).square_().mean(dims, keepdim=True), mean


def one_pass(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = tuple(range(2, x.ndim))
    mean = x.mean(dims, keepdim=True)
    return ((x * x).mean(dims, keepdim=True) - mean * mean).clamp_min(0), mean


def session7_forward(self, x: torch.Tensor) -> torch.Tensor:
    """InstanceNorm.forward as it was before: var_mean, then multiply and add."""
    var, mean = var_mean(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = self.weight.view(shape) * torch.rsqrt(var + self.eps)
    return x * scale + (self.bias.view(shape) - mean * scale)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last_3d if x.ndim == 5 else torch.channels_last)


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the network timings")
    parser.add_argument("--out", type=Path, default=RESULTS / "norm_stats.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict = {"benchmark": "norm_stats", "machine": machine_info(), "torch": torch.__version__,
                     "statistics_ms": {}, "precision": {}, "networks_ms": {}}
    variants = (var_mean, two_pass, one_pass)
    with torch.inference_mode():
        for shape in SHAPES:
            x = channels_last(torch.randn(shape) * 3 + 1)
            row = {f.__name__: round(timed(lambda f=f: f(x), args.repeats * 4) * 1e3, 3) for f in variants}
            results["statistics_ms"][" x ".join(map(str, shape))] = row
            print(shape, "  ".join(f"{k} {v:.2f} ms" for k, v in row.items()))
        x = channels_last(torch.randn(2, 4, 32, 32, 32) * 0.01 + 100)
        exact = x.double().var(dim=(2, 3, 4), correction=0)
        for f in variants:
            error = float(((f(x)[0].flatten(1).double() - exact) / exact).abs().max())
            results["precision"][f.__name__] = error
            print(f"mean 100, spread 0.01: {f.__name__} relative variance error {error:.1e}")

    today_forward = unet_module.InstanceNorm.forward
    for name, (dims, channels, classes, shape) in NETWORKS.items():
        model = build_model("unet", channels, classes, dims, features=[16, 32, 64, 128]).eval()
        model = model.to(memory_format=torch.channels_last_3d if dims == 3 else torch.channels_last)
        x = channels_last(torch.randn(shape))
        times: dict[str, list[float]] = {"session7": [], "today": []}
        outputs = {}
        for round_ in range(args.rounds):
            order = ("session7", "today") if round_ % 2 == 0 else ("today", "session7")
            for variant in order:
                unet_module.InstanceNorm.forward = session7_forward if variant == "session7" else today_forward
                with torch.inference_mode():
                    times[variant].append(round(timed(lambda: model(x), args.repeats) * 1e3, 1))
                    outputs[variant] = torch.softmax(model(x), dim=1)
        unet_module.InstanceNorm.forward = today_forward
        drift = float((outputs["today"] - outputs["session7"]).abs().max())
        median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        results["networks_ms"][name] = {"rounds": times, "median": median,
                                        "speedup": round(median["session7"] / median["today"], 3),
                                        "max_abs_probability_change": drift}
        print(f"{name}: session 7 {median['session7']} ms, today {median['today']} ms "
              f"({median['session7'] / median['today']:.2f}x), max |dp| {drift:.1e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
