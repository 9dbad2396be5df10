"""Where a 3D U-Net's time goes, operator by operator, and what that means for "% of conv peak".

Issue 6 asks training to reach 55 % and prediction 65 % of the measured conv peak. The peak is
the best single large convolution (`conv_peak.py`); a U-Net also normalises, activates,
concatenates and upsamples, and its outer convolutions are narrow (16 channels). This script
splits one training step and one batch of prediction windows into those parts with
`torch.profiler` (self time per operator, grouped), and times every convolution layer of the
network on its own at its real shape, so each gap to the peak has a number:

  fraction of peak = (conv share of the time) x (conv layers' own GFLOP/s / peak)

Cases (the shapes of today's plans):
  train    hippocampus plan: U-Net 16-128, 1 -> 3 classes, batch 2 x 40x56x40, Dice+CE, AdamW
  predict  BraTS plan (30-minute model): U-Net 16-128, 4 -> 5 classes, 56^3 windows in batches of
           `windows_per_call` (2; session 8 and before: 4)
  predict_one_window  hippocampus plan, one 40x56x40 window (a case that fits the patch)

The peak is measured in this process before and after the cases; the higher of the two is the
yardstick (the host's speed drifts by several per cent within minutes).

Variants: eager (what medseg runs by default in 3D) and `torch.compile` (inductor).

    .venv/bin/python benchmarks/profile_unet.py [--steps 8] [--no-compile]

Writes benchmarks/results/profile_unet.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv_peak import machine_info, measure_conv_peak  # noqa: E402

from medseg.inference import windows_per_call  # noqa: E402
from medseg.losses import make_loss  # noqa: E402
from medseg.nets import build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FMT = torch.channels_last_3d

CASES = {
    "train": {"mode": "train", "in_channels": 1, "classes": 3, "batch": 2, "patch": (40, 56, 40)},
    "predict": {"mode": "predict", "in_channels": 4, "classes": 5, "batch": windows_per_call((56, 56, 56)),
                "patch": (56, 56, 56)},
    "predict_one_window": {"mode": "predict", "in_channels": 1, "classes": 3, "batch": 1, "patch": (40, 56, 40)},
}

# operator name fragments -> part of the step (first match wins; self time, so nothing counts twice)
PARTS = (
    ("convolution", ("conv",)),
    ("normalisation", ("var_mean", "rsqrt", "native_batch_norm", "instance_norm")),
    ("activation", ("leaky_relu", "relu")),
    ("element-wise (norm affine, residual, grads)", ("mul", "add", "sub", "div", "neg", "sum", "mean")),
    ("concatenation and copies", ("cat", "copy", "clone", "contiguous", "to_copy", "empty", "slice", "narrow")),
    ("loss (softmax, log, one-hot)", ("softmax", "log", "nll", "one_hot", "exp", "scatter")),
    ("optimiser", ("adam", "foreach", "lerp", "sqrt", "addcdiv", "addcmul")),
)


def part_of(op: str) -> str:
    name = op.lower()
    for part, fragments in PARTS:
        if any(f in name for f in fragments):
            return part
    return "other"


def network(case: dict) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("unet", case["in_channels"], case["classes"], 3, features=(16, 32, 64, 128), norm="instance")
    return model.to(memory_format=FMT)


def step_fn(case: dict, mode: str, compiled: bool):
    """A callable running one training step or one window batch, and the FLOPs it does."""
    model = network(case)
    x = torch.randn(case["batch"], case["in_channels"], *case["patch"]).contiguous(memory_format=FMT)
    net = torch.compile(model) if compiled else model
    if mode == "train":
        y = torch.randint(0, case["classes"], (case["batch"], *case["patch"]))
        loss_fn = make_loss("dice+ce", case["classes"])
        opt = torch.optim.AdamW(model.parameters(), 1e-3)

        def run() -> None:
            loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        with FlopCounterMode(display=False) as counter:
            loss_fn(model(x), y).backward()
        model.zero_grad(set_to_none=True)
    else:
        model.eval()

        def run() -> None:
            with torch.inference_mode():
                torch.softmax(net(x), 1)

        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(x)
    return run, int(counter.get_total_flops()), model, x


def median_time(run, steps: int) -> float:
    for _ in range(2):  # warm-up: oneDNN kernel choice, compilation
        run()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def profile_parts(run, steps: int) -> tuple[dict, list]:
    """Share of self CPU time per part, and the ten most expensive operators."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    parts: dict[str, float] = defaultdict(float)
    ops = []
    for event in prof.key_averages():
        if event.key.startswith("ProfilerStep") or event.self_cpu_time_total <= 0:
            continue
        parts[part_of(event.key)] += event.self_cpu_time_total
        ops.append((event.key, event.self_cpu_time_total))
    total = sum(parts.values())
    shares = {k: round(v / total, 4) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}
    top = [{"op": k, "share": round(v / total, 4)} for k, v in sorted(ops, key=lambda kv: -kv[1])[:10]]
    return shares, top


def conv_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, torch.Size]]:
    """Every conv / transposed conv of the network with the input shape it sees."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].shape)))
             for m in model.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def layer_table(model: nn.Module, x: torch.Tensor, mode: str, repeats: int) -> list[dict]:
    """Each conv layer alone at its real shape: forward (predict) or forward+backward (train)."""
    rows = []
    for mod, shape in conv_layers(model, x):
        inp = torch.randn(shape).contiguous(memory_format=FMT)
        if mode == "train":
            inp.requires_grad_(True)

            def run() -> None:
                mod(inp).sum().backward()
        else:
            def run() -> None:
                with torch.inference_mode():
                    mod(inp)
        with FlopCounterMode(display=False) as counter:
            run()
        best = min(median_time(run, 1) for _ in range(repeats))
        flops = int(counter.get_total_flops())
        rows.append({"layer": f"{type(mod).__name__} {mod.in_channels}->{mod.out_channels} k{mod.kernel_size[0]} "
                              f"on {'x'.join(map(str, shape[2:]))}",
                     "flops": flops, "s": round(best, 5), "gflops": round(flops / best / 1e9, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--out", type=Path, default=RESULTS / "profile_unet.json")
    args = parser.parse_args()

    peak_before = measure_conv_peak(3)
    print(f"fp32 3D conv peak measured now: {peak_before:.1f} GFLOP/s")
    results = {"benchmark": "profile_unet", "peak_gflops": peak_before, "machine": machine_info(),
               "torch": torch.__version__, "cases": {}}
    cases = {}
    for name, case in CASES.items():
        mode = case["mode"]
        entry = {"case": {k: list(v) if isinstance(v, tuple) else v for k, v in case.items()}, "variants": {}}
        for compiled in (False,) if args.no_compile else (False, True):
            run, flops, model, x = step_fn(case, mode, compiled)
            seconds = median_time(run, args.steps)
            shares, top = profile_parts(run, max(2, args.steps // 2))
            variant = "compiled" if compiled else "eager"
            entry["variants"][variant] = {"s": round(seconds, 4), "gflop": round(flops / 1e9, 2),
                                       "gflops": round(flops / seconds / 1e9, 1),
                                       "of_peak": round(flops / seconds / 1e9 / peak_before, 4),
                                       "time_shares": shares, "top_ops": top}
            print(f"{name:8s} {variant:8s} {seconds * 1000:7.1f} ms  {flops / seconds / 1e9:6.1f} GFLOP/s  "
                  f"{100 * flops / seconds / 1e9 / peak_before:5.1f} % of peak  parts: "
                  + ", ".join(f"{k} {100 * v:.0f} %" for k, v in list(shares.items())[:4]), flush=True)
        layers = layer_table(network(case) if mode != "train" else model, x, mode, repeats=3)
        conv_flops = sum(r["flops"] for r in layers)
        conv_s = sum(r["s"] for r in layers)
        entry["conv_layers"] = layers
        entry["conv_layers_gflops"] = round(conv_flops / conv_s / 1e9, 1)
        entry["conv_layers_of_peak"] = round(conv_flops / conv_s / 1e9 / peak_before, 4)
        print(f"{name:8s} conv layers alone: {conv_flops / conv_s / 1e9:.1f} GFLOP/s "
              f"({100 * conv_flops / conv_s / 1e9 / peak_before:.0f} % of peak); slowest per FLOP:")
        for r in sorted(layers, key=lambda r: r["gflops"])[:4]:
            print(f"    {r['layer']:48s} {r['gflops']:6.1f} GFLOP/s")
        cases[name] = entry
    peak_after = measure_conv_peak(3)
    peak = max(peak_before, peak_after)
    print(f"fp32 3D conv peak measured after the cases: {peak_after:.1f} GFLOP/s; yardstick {peak:.1f}")
    for name, entry in cases.items():   # fractions against the higher of the two peaks
        for v in entry["variants"].values():
            v["of_peak"] = round(v["gflops"] / peak, 4)
        entry["conv_layers_of_peak"] = round(entry["conv_layers_gflops"] / peak, 4)
        print(f"{name:20s} " + ", ".join(f"{k} {100 * v['of_peak']:.1f} %" for k, v in entry["variants"].items())
              + f" of {peak:.1f} GFLOP/s")
    results.update(peak_gflops=peak, peak_gflops_before=peak_before, peak_gflops_after=peak_after, cases=cases)
    results["machine"]["load_average_after"] = [round(v, 2) for v in __import__("os").getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
