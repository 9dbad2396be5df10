"""Fraction of the conv peak that prediction reaches on a real volume, and where the rest goes.

`profile_unet.py` times one batch of windows again and again on random input. This script
times what a user runs: the network calls inside a whole-volume `sliding_window` (every window
of a real case, timed one call at a time by a wrapper), the `sliding_window` call as a whole
(blending included) and `Predictor.segment` (crop, resample, normalise, windows, restore,
argmax). In each round the same network also runs on one window batch in a tight loop, as the
profile does, and the fp32 conv peak is measured before and after; the higher peak is the
yardstick, so every fraction in a round is taken at the same moment. This host's speed drifts by
tens of per cent from minute to minute, which is why the rounds are reported one by one.

    flock /work/scratch/cpu.lock .venv/bin/python benchmarks/predict_peak_fraction.py \\
        --run /work/scratch/h6/run3 --images /work/scratch/h6/brats/imagesTs --rounds 3

Writes benchmarks/results/predict_peak_fraction.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medseg.device import memory_format
from medseg.inference import sliding_window
from medseg.io.layout import prediction_inputs
from medseg.predict import Predictor, read_input_case

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conv_peak import machine_info, measure_conv_peak  # noqa: E402


class TimedNetwork(nn.Module):
    """The network, with the wall time of every call and the windows it ran recorded."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.seconds, self.windows = net, [], 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.net(x)
        self.seconds.append(time.perf_counter() - start)
        self.windows += int(x.shape[0])
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--case", type=int, default=0, help="index of the case among the inputs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "predict_peak_fraction.json")
    args = ap.parse_args()

    predictor = Predictor(args.run, device="cpu", postprocess=False, compile=False)
    member = predictor.members[0]
    item = prediction_inputs(args.images, predictor.in_channels, predictor.dataset.channel_names)[args.case]
    case = read_input_case(item, predictor.in_channels)
    image = member.pre.normalise(member.pre.resample(case, with_label=False).image)
    batch = predictor.batch_size
    window = torch.randn(batch, predictor.in_channels, *member.patch_size).contiguous(
        memory_format=memory_format(len(member.patch_size)))
    with FlopCounterMode(display=False) as counter, torch.enable_grad():   # PyTorch's own path
        member.model(window)
    flop_per_window = counter.get_total_flops() / batch
    print(f"{item.case_id}: working image {tuple(image.shape)}, {batch} windows per call, "
          f"{flop_per_window / 1e9:.2f} GFLOP per window", flush=True)

    rounds = []
    for r in range(args.rounds):
        peak_before = measure_conv_peak(3, repeats=3)
        loop = []
        with torch.inference_mode():
            member.model(window)
            for _ in range(12):
                start = time.perf_counter()
                member.model(window)
                loop.append(time.perf_counter() - start)
        timed = TimedNetwork(member.model)
        start = time.perf_counter()
        sliding_window(timed, image, member.patch_size, overlap=predictor.overlap, divisor=member.divisor,
                       batch_size=batch)
        whole_window = time.perf_counter() - start
        start = time.perf_counter()
        predictor.segment(case)
        segment = time.perf_counter() - start
        peak = max(peak_before, measure_conv_peak(3, repeats=3))

        def share(seconds: float, windows: int) -> float:
            return round(flop_per_window * windows / seconds / 1e9 / peak, 4)
        row = {"peak_gflops": peak, "peak_gflops_before": peak_before, "windows": timed.windows,
               "tight_loop_median_s": round(statistics.median(loop), 4),
               "tight_loop_of_peak": share(statistics.median(loop), batch),
               "network_calls_s": round(sum(timed.seconds), 3),
               "network_calls_of_peak": share(sum(timed.seconds), timed.windows),
               "sliding_window_s": round(whole_window, 3),
               "sliding_window_of_peak": share(whole_window, timed.windows),
               "segment_s": round(segment, 3), "segment_of_peak": share(segment, timed.windows)}
        rounds.append(row)
        print(f"round {r}: peak {peak:.0f} GFLOP/s; one batch in a tight loop {100 * row['tight_loop_of_peak']:.1f} %, "
              f"network calls of the volume {100 * row['network_calls_of_peak']:.1f} %, sliding_window "
              f"{100 * row['sliding_window_of_peak']:.1f} %, Predictor.segment {100 * row['segment_of_peak']:.1f} %",
              flush=True)
    record = {"benchmark": "predict_peak_fraction", "machine": machine_info(), "torch": torch.__version__,
              "run": str(Path(args.run).resolve()), "case": item.case_id, "working_shape": list(image.shape),
              "patch": list(member.patch_size), "windows_per_call": batch,
              "gflop_per_window": round(flop_per_window / 1e9, 3), "rounds": rounds,
              "median": {k: statistics.median(r[k] for r in rounds) for k in rounds[0] if k.endswith("of_peak")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print("median over rounds: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in record["median"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
