"""The measured convolution peak of this CPU: the yardstick for "fraction of peak" figures.

Training and prediction of a U-Net are mostly convolution arithmetic, so the honest ceiling for
them is what the CPU's best convolution kernel reaches, not the data sheet. This script times big
convolution layers (3D 3x3x3 and 2D 3x3, 32->32 .. 128->128 channels, a few input sizes) in
three forms: fp32 contiguous, fp32 channels-last, and bf16 autocast (channels-last; on small
layers only, as it is emulated and ~300x slower on this AVX2-only CPU). FLOPs come
from `torch.utils.flop_counter.FlopCounterMode` (2 per multiply-add), time is the best of N
forward passes without autograd; GFLOP/s = FLOPs / best time. The peak of a dtype is its best
layer.

    .venv/bin/python benchmarks/conv_peak.py [--repeats 5] [--quick]

Writes benchmarks/results/conv_peak.json:
    {"fp32": {"gflops", "layer", "layout"}, "bf16": {...}, "best": {"dtype", "gflops"},
     "layers": [every timed layer], "machine": ..., "torch": ...}

Other scripts take the peak from that file (`read_conv_peak`) or measure it in their own run
(`measure_conv_peak(spatial_dims, dtype)`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_JSON = RESULTS / "conv_peak.json"


@dataclass(frozen=True)
class ConvLayer:
    """One convolution to time: channels in = out, a cube (3D) or square (2D) input."""

    spatial_dims: int
    channels: int
    size: int
    batch: int = 1

    def describe(self) -> str:
        k = "x".join(["3"] * self.spatial_dims)
        shape = "x".join([str(self.size)] * self.spatial_dims)
        return f"{self.spatial_dims}D {k} conv {self.channels}->{self.channels}, batch {self.batch} x {shape}"


# fp32: sizes for which one forward pass takes ~10-200 ms here, long enough to time.
LAYERS_3D = (ConvLayer(3, 32, 48), ConvLayer(3, 64, 32), ConvLayer(3, 128, 24), ConvLayer(3, 64, 48))
LAYERS_2D = (ConvLayer(2, 32, 256), ConvLayer(2, 64, 128), ConvLayer(2, 128, 96), ConvLayer(2, 64, 256))
# bf16: on a CPU without native bf16 (AVX2 only) oneDNN falls back to a reference kernel that ran
# at ~0.2 GFLOP/s here (a 32->32 conv on 48^3 took 33 s), so bf16 is timed on small layers only
# (a few seconds each); fp32 is timed on the same layers for a like-for-like ratio.
BF16_LAYERS_3D = (ConvLayer(3, 64, 16), ConvLayer(3, 128, 12))
BF16_LAYERS_2D = (ConvLayer(2, 64, 64), ConvLayer(2, 128, 48))

FORMS = {  # name -> (dtype, channels-last?)
    "fp32 contiguous": (torch.float32, False),
    "fp32 channels-last": (torch.float32, True),
    "bf16 autocast channels-last": (torch.bfloat16, True),
}


def conv_flops(conv: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass as PyTorch's own counter sees them (2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        conv(x)
    return int(counter.get_total_flops())


def time_layer(layer: ConvLayer, dtype: torch.dtype, channels_last: bool, repeats: int) -> dict:
    """Best-of-`repeats` forward time of one layer; returns GFLOP/s and the timings."""
    torch.manual_seed(0)
    conv_cls = nn.Conv3d if layer.spatial_dims == 3 else nn.Conv2d
    conv = conv_cls(layer.channels, layer.channels, 3, padding=1)
    x = torch.randn(layer.batch, layer.channels, *[layer.size] * layer.spatial_dims)
    if channels_last:
        fmt = torch.channels_last_3d if layer.spatial_dims == 3 else torch.channels_last
        conv, x = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
    flops = conv_flops(conv, x)
    autocast = dtype != torch.float32

    def forward() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=autocast):
            conv(x)

    forward()  # warm-up: oneDNN picks and builds its kernel on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"layer": layer.describe(), "flops": flops, "best_s": round(best, 5),
            "median_s": round(sorted(times)[len(times) // 2], 5), "gflops": round(flops / best / 1e9, 2)}


def measure_conv_peak(spatial_dims: int = 3, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Best GFLOP/s of this CPU's conv kernels for one dtype (both layouts for fp32, channels-last
    for bf16), measured now in this process, so a benchmark can divide by a peak taken under
    the same load as its own figures."""
    if dtype == torch.float32:
        layers = LAYERS_3D if spatial_dims == 3 else LAYERS_2D
    else:
        layers = BF16_LAYERS_3D if spatial_dims == 3 else BF16_LAYERS_2D
    layouts = (False, True) if dtype == torch.float32 else (True,)
    reps = repeats if dtype == torch.float32 else max(1, repeats // 3)
    return max(time_layer(layer, dtype, cl, reps)["gflops"] for layer in layers for cl in layouts)


def read_conv_peak(path: Path = DEFAULT_JSON, dtype: str = "fp32") -> float:
    """The peak stored by the last run of this script (GFLOP/s), for "fraction of peak" figures."""
    return float(json.loads(Path(path).read_text())[dtype]["gflops"])


def machine_info() -> dict:
    """What the figures were measured on."""
    from medseg.device import cpu_has_native_bf16

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "threads": torch.get_num_threads(),
            "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],  # other jobs sharing the CPU
            "native_bf16": cpu_has_native_bf16(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per layer (fp32)")
    parser.add_argument("--bf16-repeats", type=int, default=1, help="timed passes per layer for bf16 (slow here)")
    parser.add_argument("--quick", action="store_true", help="one 3D and one 2D layer per form (smoke run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    if args.quick:
        big, small = (LAYERS_3D[1], LAYERS_2D[1]), (BF16_LAYERS_3D[0], BF16_LAYERS_2D[0])
    else:
        big, small = LAYERS_3D + LAYERS_2D, BF16_LAYERS_3D + BF16_LAYERS_2D
    plan = [(layer, form) for layer in big for form in FORMS if FORMS[form][0] == torch.float32]
    plan += [(layer, form) for layer in small for form in FORMS]  # bf16 beside fp32 on the same layer
    rows = []
    for layer, form in plan:
        dtype, channels_last = FORMS[form]
        reps = args.repeats if dtype == torch.float32 else args.bf16_repeats
        row = {"form": form, **time_layer(layer, dtype, channels_last, reps)}
        rows.append(row)
        print(f"{row['layer']:<46} {form:<28} {row['gflops']:>7.2f} GFLOP/s  (best {row['best_s'] * 1e3:.1f} ms)",
              flush=True)

    def best_of(forms: tuple[str, ...]) -> dict:
        top = max((r for r in rows if r["form"] in forms), key=lambda r: r["gflops"])
        return {"gflops": top["gflops"], "layer": top["layer"], "layout": top["form"]}

    result = {
        "fp32": best_of(("fp32 contiguous", "fp32 channels-last")),
        "fp32_contiguous": best_of(("fp32 contiguous",)),
        "fp32_channels_last": best_of(("fp32 channels-last",)),
        "bf16": best_of(("bf16 autocast channels-last",)),
    }
    per_dims = {}
    for dims in (3, 2):
        sub = [r for r in rows if r["layer"].startswith(f"{dims}D")]
        if sub:
            per_dims[f"{dims}d"] = {f: max(r["gflops"] for r in sub if r["form"] == f) for f in FORMS}
    best_dtype = "bf16" if result["bf16"]["gflops"] > result["fp32"]["gflops"] else "fp32"
    result["best"] = {"dtype": best_dtype, "gflops": result[best_dtype]["gflops"]}
    result["per_spatial_dims"] = per_dims
    result["bf16_over_fp32"] = round(result["bf16"]["gflops"] / result["fp32"]["gflops"], 4)
    same = {}
    for layer in small:  # bf16 / fp32 channels-last on the very same layer
        by_form = {r["form"]: r["gflops"] for r in rows if r["layer"] == layer.describe()}
        same[layer.describe()] = round(by_form["bf16 autocast channels-last"] / by_form["fp32 channels-last"], 4)
    result["bf16_over_fp32_same_layer"] = same
    result["layers"] = rows
    result["machine"] = machine_info()
    result["torch"] = torch.__version__
    result["settings"] = {"repeats": args.repeats, "bf16_repeats": args.bf16_repeats, "quick": args.quick,
                          "timing": "best of N forward passes, torch.no_grad, after one warm-up"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print()
    print(f"{'':<22}{'GFLOP/s':>9}  layer")
    for key in ("fp32_contiguous", "fp32_channels_last", "fp32", "bf16"):
        print(f"{key:<22}{result[key]['gflops']:>9.2f}  {result[key]['layer']}")
    print(f"bf16 / fp32 peak: {result['bf16_over_fp32']:.4f}x   (native bf16: {result['machine']['native_bf16']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
