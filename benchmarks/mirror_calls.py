"""Mirroring TTA: flipped copies sharing network calls against one call per flip.

`sliding_window` runs every batch of windows once per mirror flip. For an image of one or two
windows that meant 4 (2D) or 8 (3D) network calls of one or two windows each; now the flipped
copies go through the network together while a call holds at most `windows_per_call` windows
(`medseg.inference._run_batch`). This script predicts the same cases both ways in one process,
rounds alternating, with the images read beforehand, and checks that the masks are identical.

    flock /work/scratch/cpu.lock .venv/bin/python benchmarks/mirror_calls.py \\
        --run /work/scratch/k/k8_default/work/run --images /work/scratch/k/k8_default/work/test/images
    ... --run /work/scratch/s8/h8/run --images /work/scratch/s8/h8/test/imagesTs --mirror

Writes benchmarks/results/mirror_calls_<images folder name>.json (`--out` to choose; the Kvasir run is
stored as mirror_calls_kvasir.json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from medseg import inference
from medseg.io.layout import prediction_inputs
from medseg.predict import Predictor, read_input_case

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conv_peak import machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--mirror", action="store_true", help="mirror volumes too (2D images mirror by default)")
    ap.add_argument("--cases", type=int, default=0, help="only the first N (0: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    predictor = Predictor(args.run, device="cpu", postprocess=False, compile=False,
                          mirror=True if args.mirror else "auto")
    items = prediction_inputs(args.images, predictor.in_channels, predictor.dataset.channel_names)
    items = items[: args.cases] if args.cases else items
    cases = [read_input_case(item, predictor.in_channels) for item in items]
    shared = inference._run_batch

    def one_call_per_flip(model, padded, crops, flips, device, autocast_dtype, per_call):
        return shared(model, padded, crops, flips, device, autocast_dtype, 1)

    settings = {"shared calls": shared, "one call per flip": one_call_per_flip}
    times: dict[str, list[float]] = {k: [] for k in settings}
    masks: dict[str, list] = {}
    for r in range(args.rounds):
        for name in (list(settings) if r % 2 else list(settings)[::-1]):
            inference._run_batch = settings[name]
            start = time.perf_counter()
            masks[name] = [predictor.segment(case) for case in cases]
            times[name].append(time.perf_counter() - start)
            print(f"round {r} {name:<18} {times[name][-1]:6.2f} s", flush=True)
    inference._run_batch = shared
    median = {k: statistics.median(v) for k, v in times.items()}
    record = {"benchmark": "mirror_calls", "machine": machine_info(), "torch": torch.__version__,
              "run": str(Path(args.run).resolve()), "cases": len(cases), "mirror_axes": list(predictor.mirror_axes),
              "windows_per_call": predictor.batch_size, "seconds": times, "median_s": median,
              "speedup": round(median["one call per flip"] / median["shared calls"], 3),
              "voxels_differing": sum(int((a != b).sum()) for a, b in zip(*masks.values())),
              "voxels": sum(int(m.size) for m in masks["shared calls"])}
    out = args.out or HERE / "results" / f"mirror_calls_{Path(args.images).resolve().name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"{len(cases)} cases, flips {predictor.mirror_axes}: shared {median['shared calls']:.2f} s, "
          f"one call per flip {median['one call per flip']:.2f} s -> {record['speedup']}x; "
          f"{record['voxels_differing']} voxels differ; wrote {out}")


if __name__ == "__main__":
    main()
