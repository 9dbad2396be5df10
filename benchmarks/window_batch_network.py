"""Windows per network call, the network alone: time per window of a whole eager U-Net
(16-128, instance norm) for batches of 1, 2, 4, 8 ... windows, interleaved in one process.

`window_batch.py` times whole predictions; this one isolates the network at the window shapes
of today's plans, which is what `medseg.inference.windows_per_call` was chosen from. The fp32
conv peak is measured in every round, so each figure also has its fraction of the peak.

    flock /work/scratch/cpu.lock .venv/bin/python benchmarks/window_batch_network.py
    ... --window 120x120 --channels 1 --batches 1,2,4,8,16,32

Writes benchmarks/results/window_batch_network_<window>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from medseg.device import memory_format
from medseg.inference import windows_per_call
from medseg.nets import build_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conv_peak import machine_info, measure_conv_peak  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", default="56x56x56")
    ap.add_argument("--channels", type=int, default=4, help="input channels (BraTS plan: 4 in the profile)")
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: PyTorch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    window = tuple(int(s) for s in args.window.split("x"))
    fmt = memory_format(len(window))
    torch.manual_seed(0)
    model = build_model("unet", args.channels, args.classes, len(window), features=(16, 32, 64, 128),
                        norm="instance").to(memory_format=fmt).eval()
    batches = [int(b) for b in args.batches.split(",")]
    inputs = {b: torch.randn(b, args.channels, *window).contiguous(memory_format=fmt) for b in batches}
    flops = {}
    for b, x in inputs.items():
        with FlopCounterMode(display=False) as counter, torch.enable_grad():
            model(x)
        flops[b] = counter.get_total_flops()
    times: dict[int, list[float]] = {b: [] for b in batches}
    peaks = []
    with torch.inference_mode():
        for x in inputs.values():
            model(x)
            model(x)
        for _ in range(args.rounds):
            peaks.append(measure_conv_peak(len(window), repeats=3))
            for b, x in inputs.items():
                best = float("inf")
                for _ in range(3):
                    start = time.perf_counter()
                    torch.softmax(model(x), 1)
                    best = min(best, time.perf_counter() - start)
                times[b].append(best)
    peak = statistics.median(peaks)
    rows = {}
    for b in batches:
        s = statistics.median(times[b])
        rows[b] = {"ms_per_call": round(1000 * s, 1), "ms_per_window": round(1000 * s / b, 1),
                   "gflops": round(flops[b] / s / 1e9, 1), "of_peak": round(flops[b] / s / 1e9 / peak, 4),
                   "all_ms": [round(1000 * t, 1) for t in times[b]]}
        print(f"batch {b:3d}: {rows[b]['ms_per_window']:7.1f} ms per window, {100 * rows[b]['of_peak']:5.1f} % of "
              f"{peak:.0f} GFLOP/s", flush=True)
    record = {"benchmark": "window_batch_network", "machine": machine_info(), "torch": torch.__version__,
              "window": list(window), "channels": args.channels, "threads": torch.get_num_threads(),
              "peak_gflops_per_round": peaks, "by_batch": rows,
              "windows_per_call": windows_per_call(window)}
    out = HERE / "results" / f"window_batch_network_{args.window}.json"
    out.write_text(json.dumps(record, indent=2))
    print(f"windows_per_call chooses {record['windows_per_call']}; wrote {out}")


if __name__ == "__main__":
    main()
