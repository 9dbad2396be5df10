"""Sliding-window batch size and thread count for prediction on this CPU.

    flock /work/scratch/cpu.lock nice -n 19 .venv/bin/python benchmarks/window_batch.py \\
        --case brats=/work/scratch/brats_run:/work/scratch/brats/imagesTs/brats_2013_pat0001_1_0000.nii.gz,/work/scratch/brats/imagesTs/brats_2013_pat0001_1_0001.nii.gz \\
        --case ct=/work/scratch/s4/helperC/pm/run:/work/scratch/s4/helperC/pm/ct_volume.nii.gz --ct-slices 96

`medseg.Predictor.probabilities` on one case per run with windows batched 1, 2, 4 and 8 at a
time, and with fewer intra-op threads at the default batch (`windows_per_call` of the run's
patch: 2 for 56³ windows; it was a fixed 4 until session 9); the settings take turns within each
round (`--rounds`), and the median per setting is reported with its ratio to the default
(`windows_per_call`, all cores). `--ct-slices N` keeps N middle slices of a volume so a
CT-sized case fits the time (the windows are the same shape; there are fewer of them).
Writes benchmarks/results/window_batch.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from medseg.case import Case
from medseg.io.dataset import read_image_channels
from medseg.inference import windows_per_call
from medseg.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]


def load_case(files: list[Path], slices: int | None) -> Case:
    image, spacing, meta = read_image_channels(files, files[0].name, None, "the model takes")
    if slices and image.shape[1] > slices:
        first = (image.shape[1] - slices) // 2
        image = np.ascontiguousarray(image[:, first:first + slices])
    return Case(case_id=files[0].name, image=image, spacing=spacing, meta=meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", required=True, help="NAME=RUN:FILE[,FILE...]")
    ap.add_argument("--ct-slices", type=int, default=None, help="keep this many middle slices of the 'ct' case")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "window_batch.json")
    args = ap.parse_args()
    cores = torch.get_num_threads()
    results = {}
    for spec in args.case:
        name, rest = spec.split("=", 1)
        run, files = rest.split(":", 1)
        case = load_case([Path(f) for f in files.split(",")], args.ct_slices if name == "ct" else None)
        predictor = Predictor(run, device="cpu")
        chosen = windows_per_call(predictor.patch_size)
        settings = [(b, cores) for b in map(int, args.batches.split(","))] + [(chosen, t) for t in range(1, cores)]
        times: dict[str, list[float]] = {f"batch {b}, {t} thread(s)": [] for b, t in settings}
        reference = None
        for r in range(args.rounds):
            for b, t in (settings if r % 2 == 0 else settings[::-1]):
                predictor.batch_size = b
                torch.set_num_threads(t)
                t0 = time.perf_counter()
                probs = predictor.probabilities(case)
                times[f"batch {b}, {t} thread(s)"].append(time.perf_counter() - t0)
                if reference is None:
                    reference = probs
                else:
                    assert torch.allclose(probs, reference, atol=1e-4), "batching changed the probabilities"
                del probs
        torch.set_num_threads(cores)
        default = statistics.median(times[f"batch {chosen}, {cores} thread(s)"])
        results[name] = {"shape": list(case.image.shape), "run": run, "patch": list(predictor.patch_size),
                         "default_batch": chosen,
                         "median_s": {k: statistics.median(v) for k, v in times.items()},
                         "all_s": times,
                         "ratio_to_default": {k: statistics.median(v) / default for k, v in times.items()}}
        print(f"\n{name} {tuple(case.image.shape)}  (ratio: time / time at batch {chosen}, {cores} threads)")
        for k, v in results[name]["median_s"].items():
            print(f"  {k:<24} {v:8.2f} s  {results[name]['ratio_to_default'][k]:5.2f}")
    record = {"benchmark": "window_batch",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "load_average_at_end": os.getloadavg()},
              "settings": {"cases": args.case, "ct_slices": args.ct_slices, "rounds": args.rounds},
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
