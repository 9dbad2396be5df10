"""The CPU's conv peak, where a U-Net step's time goes, and how many windows one network call should take.

1. Conv peak (`benchmarks.flops`): best fp32 GFLOP/s of big 3D and 2D conv layers, contiguous and
   channels-last; bf16 autocast beside fp32 on small layers (where bf16 is emulated it is many
   times slower, which is why `--precision auto` keeps fp32 there).
2. Profile, at the shapes of today's plans: one training step of the hippocampus U-Net (16-128,
   batch 2 x 40x56x40, Dice+CE, AdamW), one call of prediction windows of the BraTS plan (56^3,
   4 -> 5 classes, `windows_per_call` windows) and one 40x56x40 window (a hippocampus case);
   eager and `torch.compile` alternating; each one's GFLOP/s and fraction of the peak, self time
   per operator grouped into parts (`torch.profiler`), and every conv layer alone at its shape.
3. Windows per call: the eager prediction network per window at several batch sizes, alternating
   (the evidence behind `medseg.inference.windows_per_call`).

The peak is measured before and after the cases; fractions use the higher one (the host drifts).
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

from benchmarks.harness import fmt, interleave

TITLE = "Conv peak, profile and windows per call"
COMMAND = "python -m benchmarks run peak --repeats 7 --steps 8"
CASES = {"train": ("train", 1, 3, 2, (40, 56, 40)), "predict": ("predict", 4, 5, None, (56, 56, 56)),
         "predict_one_window": ("predict", 1, 3, 1, (40, 56, 40))}   # mode, in, classes, batch, patch
PARTS = (("convolution", ("conv",)), ("normalisation", ("var_mean", "rsqrt", "batch_norm", "instance_norm")),
         ("activation", ("leaky_relu", "relu")),
         ("element-wise", ("mul", "add", "sub", "div", "neg", "sum", "mean")),
         ("copies", ("cat", "copy", "clone", "contiguous", "empty", "slice", "narrow")),
         ("loss", ("softmax", "log", "nll", "one_hot", "exp", "scatter")),
         ("optimiser", ("adam", "foreach", "lerp", "sqrt", "addcdiv", "addcmul")))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per conv layer")
    parser.add_argument("--steps", type=int, default=8, help="timed rounds per profiled case")
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--no-bf16", action="store_true", help="skip bf16 autocast layers")
    parser.add_argument("--window-batches", default="1,2,4", help="windows per call to compare (56^3 windows)")


def conv_peak(repeats: int, quick: bool, bf16: bool) -> dict:
    from benchmarks.flops import BF16_LAYERS, LAYERS, time_layer

    rows = []
    for dims in (3, 2):
        for layer in LAYERS[dims][1:2] if quick else LAYERS[dims]:
            rows += [time_layer(layer, form, repeats) for form in ("fp32 contiguous", "fp32 channels-last")]
        for layer in BF16_LAYERS[dims] if bf16 else ():
            rows += [time_layer(layer, "fp32 channels-last", repeats), time_layer(layer, "bf16 autocast channels-last", 1)]
    best = {f"fp32_{d}d": max(r["gflops"] for r in rows if r["layer"].startswith(f"{d}D") and r["form"].startswith("fp32"))
            for d in (3, 2)}
    same = {}
    for r in rows:
        if r["form"].startswith("bf16"):
            fp32 = next(x for x in rows if x["layer"] == r["layer"] and x["form"] == "fp32 channels-last")
            same[r["layer"]] = round(r["gflops"] / fp32["gflops"], 4)
    bf = [r for r in rows if r["form"].startswith("bf16")]
    return {**best, "fp32": max(best.values()), "bf16": max((r["gflops"] for r in bf), default=None),
            "bf16_over_fp32_same_layer": same, "layers": rows}


def case_fn(name: str, compiled: bool):
    """A callable running one training step or one call of prediction windows, and its FLOPs."""
    import torch

    from benchmarks.flops import forward_flops, training_step_flops
    from medseg.inference import windows_per_call
    from medseg.nets import build_model
    from medseg.training.loss_registry import make_loss

    mode, cin, k, batch, patch = CASES[name]
    batch = batch or windows_per_call(patch)
    torch.manual_seed(0)
    model = build_model("unet", cin, k, 3, features=(16, 32, 64, 128), norm="instance")
    model = model.to(memory_format=torch.channels_last_3d)
    x = torch.randn(batch, cin, *patch).contiguous(memory_format=torch.channels_last_3d)
    net = torch.compile(model) if compiled else model
    if mode == "train":
        y = torch.randint(0, k, (batch, *patch))
        loss_fn, opt = make_loss("dice+ce", k), torch.optim.AdamW(model.parameters(), 1e-3)

        def run() -> None:
            loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run, training_step_flops(model, loss_fn, x, y), model, x
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            torch.softmax(net(x), 1)
    return run, forward_flops(model, x), model, x


def time_shares(run, steps: int) -> dict:
    """Share of self CPU time per part of the step (first matching operator-name fragment)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    parts: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.self_cpu_time_total > 0 and not event.key.startswith("ProfilerStep"):
            name = event.key.lower()
            parts[next((p for p, frags in PARTS if any(f in name for f in frags)), "other")] += event.self_cpu_time_total
    total = sum(parts.values())
    return {k: round(v / total, 4) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}


def conv_layers_alone(model, x, train: bool) -> dict:
    """Every conv layer of the network on its own at its real input shape: their combined GFLOP/s."""
    import torch
    from torch import nn

    from benchmarks.flops import count_flops

    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].shape)))
             for m in model.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    flops = seconds = 0.0
    for mod, shape in seen:
        inp = torch.randn(shape).contiguous(memory_format=torch.channels_last_3d).requires_grad_(train)

        def run() -> None:
            if train:
                mod(inp).sum().backward()
            else:
                with torch.inference_mode():
                    mod(inp)
        flops += count_flops(run)
        run()
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        seconds += best
    return {"layers": len(seen), "gflops": round(flops / seconds / 1e9, 1)}


def windows_per_call_table(batches: list[int], rounds: int) -> dict:
    """Eager BraTS-plan network (56^3 windows, 4 -> 5 classes): ms per window at each batch, alternating."""
    import torch

    from medseg.inference import windows_per_call
    from medseg.nets import build_model

    torch.manual_seed(0)
    model = build_model("unet", 4, 5, 3, features=(16, 32, 64, 128), norm="instance")
    model = model.to(memory_format=torch.channels_last_3d).eval()
    inputs = {b: torch.randn(b, 4, 56, 56, 56).contiguous(memory_format=torch.channels_last_3d) for b in batches}

    def call(b: int):
        def run() -> None:
            with torch.inference_mode():
                torch.softmax(model(inputs[b]), 1)
        return run
    ab = interleave({f"batch {b}": call(b) for b in batches}, rounds, warmup=1)
    return {"window": [56, 56, 56], "chosen": windows_per_call((56, 56, 56)),
            "ms_per_window": {b: round(1000 * ab["median_s"][f"batch {b}"] / b, 1) for b in batches}, "rounds": ab}


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    from benchmarks.flops import LAYERS, measure_conv_peak

    quick = args.quick
    repeats, steps = (2, 2) if quick else (args.repeats, args.steps)
    compile_too = not (args.no_compile or quick)
    peak = conv_peak(repeats, quick, bf16=not (args.no_bf16 or quick))
    print(f"conv peak fp32 3D {peak['fp32_3d']}, 2D {peak['fp32_2d']}, bf16 {peak['bf16']} GFLOP/s", flush=True)
    cases = {}
    for name in CASES:
        fns = {"eager": case_fn(name, False)} | ({"compiled": case_fn(name, True)} if compile_too else {})
        ab = interleave({v: f[0] for v, f in fns.items()}, steps, warmup=2)
        run_e, flops, model, x = fns["eager"]
        cases[name] = {"gflop": round(flops / 1e9, 2), "time": ab, "conv_layers_alone":
                       conv_layers_alone(model, x, CASES[name][0] == "train"),
                       "time_shares": {v: time_shares(f[0], max(2, steps // 2)) for v, f in fns.items()}}
        print(f"{name}: " + ", ".join(f"{v} {1000 * s:.1f} ms" for v, s in ab["median_s"].items()), flush=True)
    batches = [int(b) for b in args.window_batches.split(",")][: 2 if quick else None]
    per_call = windows_per_call_table(batches, steps)
    after = measure_conv_peak(3, repeats=repeats, layers=LAYERS[3][1:2] if quick else None)
    yardstick = max(peak["fp32_3d"], after)
    for entry in cases.values():
        entry["gflops"] = {v: round(entry["gflop"] / s, 1) for v, s in entry["time"]["median_s"].items()}
        entry["of_peak"] = {v: round(g / yardstick, 4) for v, g in entry["gflops"].items()}
        entry["conv_layers_alone"]["of_peak"] = round(entry["conv_layers_alone"]["gflops"] / yardstick, 4)
    settings = {"repeats": repeats, "steps": steps, "compile": compile_too, "bf16": not (args.no_bf16 or quick),
                "window_batches": batches, "cases": {k: {"mode": v[0], "in_channels": v[1], "classes": v[2],
                                                         "batch": v[3] or "windows_per_call", "patch": list(v[4])}
                                                     for k, v in CASES.items()}}
    return settings, {"conv_peak": peak, "peak_3d_after": after, "yardstick_gflops": yardstick, "cases": cases,
                      "windows_per_call": per_call}


def table(env: dict) -> list[str]:
    r = env["results"]
    p = r["conv_peak"]
    same = ", ".join(f"{v:.2f}" for v in p.get("bf16_over_fp32_same_layer", {}).values()) or "not measured"
    lines = ["| conv peak | GFLOP/s |", "|---|---:|",
             f"| fp32, best 3D layer | **{p['fp32_3d']:.1f}** |", f"| fp32, best 2D layer | {p['fp32_2d']:.1f} |",
             f"| bf16 autocast, best small layer | {fmt(p.get('bf16'), 1)} (bf16 / fp32 on the same layers: {same}) |",
             "", f"Yardstick for the fractions below: {r['yardstick_gflops']:.1f} GFLOP/s (the higher of the 3D peak "
             "before and after the cases).", "",
             "| case | GFLOP | variant | time | GFLOP/s | of the peak | convolution / normalisation / element-wise share "
             "| conv layers alone |", "|---|---:|---|---:|---:|---:|---|---:|"]
    for name, c in r["cases"].items():
        for v, s in c["time"]["median_s"].items():
            sh = c["time_shares"].get(v, {})
            shares = " / ".join(f"{100 * sh.get(k, 0):.0f} %" for k in ("convolution", "normalisation", "element-wise"))
            alone = c["conv_layers_alone"]
            lines.append(f"| {name} | {c['gflop']} | {v} | {1000 * s:.1f} ms | {c['gflops'][v]:.1f} | "
                         f"**{100 * c['of_peak'][v]:.1f} %** | {shares} | {100 * alone['of_peak']:.0f} % |")
    w = r["windows_per_call"]
    lines += ["", f"Windows per call, eager 56³ BraTS-plan network (`windows_per_call` chooses {w['chosen']}):", "",
              "| windows per call | " + " | ".join(str(b) for b in w["ms_per_window"]) + " |",
              "|---|" + "---:|" * len(w["ms_per_window"]),
              "| ms per window | " + " | ".join(f"{v:.1f}" for v in w["ms_per_window"].values()) + " |",
              "", f"Command: `python -m benchmarks run peak --repeats {env['settings'].get('repeats')} --steps "
              f"{env['settings'].get('steps')}{'' if env['settings'].get('compile', True) else ' --no-compile'}`"]
    return lines
