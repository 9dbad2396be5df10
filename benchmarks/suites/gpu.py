"""Patches per second of the training sampler against batch size, batched vs per-patch, on any device.

For the plans of MSD Hippocampus and BraTS 2013 (the patch of `medseg plan` for the device, cases
cropped, resampled and z-scored as training does), each batch size is timed with both samplers
in alternating rounds (`benchmarks.harness.interleave`):

  batched    `medseg.data.sampler.PatchSampler`: a batch's choices drawn as vectors, one
             `grid_sample` for all its patches, on `--device` (cases resident there)
  per-patch  `benchmarks.legacy_sampler.LegacyPatchSampler`: the sampler medseg had before, one
             patch and one `grid_sample` at a time on the CPU, the batch then copied to `--device`

Both use the plan's default augmentation. On a CPU the ratio says the batched path is not slower;
on a GPU it says how far the card is freed from the CPU. `--export DIR` writes the prepared cases
as .npz (float16 images) for a machine without SimpleITK (benchmarks/device_check.sh);
`--cases DIR` reads them back instead of the datasets.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.harness import fmt, interleave

TITLE = "Training sampler: batched on the device against per patch"
COMMAND = "python -m benchmarks run gpu --device cpu --batches 2 8 --rounds 3"
PLANS = ("hippocampus", "brats")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="where the batched sampler runs (cpu, cuda)")
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 8], help="batch sizes to time")
    parser.add_argument("--steps", type=int, default=5, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per batch size")
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=PLANS)
    parser.add_argument("--hippocampus-cases", type=int, default=40, help="MSD Hippocampus cases loaded")
    parser.add_argument("--cases", type=Path, help="read prepared cases (.npz from --export) instead of datasets")
    parser.add_argument("--export", type=Path, help="write the prepared cases here (float16 .npz) and stop")


def prepared_cases(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    """{"patch", "images", "labels"} for a plan: read with medseg's own loading, or from --cases."""
    import numpy as np
    import torch

    if args.cases is not None:
        with np.load(args.cases / f"{name}.npz") as z:
            n = int(z["count"])
            return {"patch": [int(p) for p in z["patch"]],
                    "images": [torch.from_numpy(z[f"image{i}"].astype(np.float32)) for i in range(n)],
                    "labels": [torch.from_numpy(z[f"label{i}"]) for i in range(n)]}
    from benchmarks.datasets import make_split
    from medseg.data.cache import CaseCache, default_cache_dir
    from medseg.data.preprocess import Preprocessor
    from medseg.io.dataset import validate_dataset
    from medseg.io.layout import describe_dataset
    from medseg.planning import Budget, plan_dataset
    from medseg.training.cases import load_cases

    if name == "hippocampus":
        data = make_split("hippocampus", args.data, tmp / name, train_limit=args.hippocampus_cases, test_limit=0).train
    else:
        data = make_split("brats", args.data, tmp / name).train
    device = "cuda" if str(args.device).startswith("cuda") else "cpu"
    plan = plan_dataset(data, Budget(device=device, minutes=20.0 if device == "cpu" else None), progress=False)
    pairs, info = describe_dataset(data)
    mapping = validate_dataset(pairs, info.label_mapping(), info.channels)
    pre = Preprocessor(None, tuple(plan["target_spacing"]), crop_nonzero=True, num_classes=mapping.num_classes)
    images, labels = load_cases(pairs, mapping, pre, 2, "loading", cache=CaseCache(default_cache_dir()),
                                channels=info.channels)
    return {"patch": plan["patch_size"], "images": [pre.normalise(x) for x in images], "labels": labels}


def export(cases: dict[str, dict], folder: Path) -> None:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for name, c in cases.items():
        arrays = {"count": np.array(len(c["images"])), "patch": np.array(c["patch"])}
        for i, (x, y) in enumerate(zip(c["images"], c["labels"])):
            arrays[f"image{i}"], arrays[f"label{i}"] = x.numpy().astype(np.float16), y.numpy()
        np.savez_compressed(folder / f"{name}.npz", **arrays)
        print(f"wrote {folder / f'{name}.npz'} ({(folder / f'{name}.npz').stat().st_size / 2**20:.1f} MiB)")


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    import shutil
    import tempfile

    import torch

    from benchmarks.legacy_sampler import LegacyPatchSampler
    from medseg.data.augment import AugmentConfig
    from medseg.data.sampler import PatchSampler

    device = torch.device(args.device)
    batches, steps, rounds = ([2], 2, 1) if args.quick else (args.batches, args.steps, args.rounds)
    tmp = Path(tempfile.mkdtemp(prefix="medseg-bench-gpu-"))
    try:
        cases = {name: prepared_cases(name, args, tmp) for name in args.plans}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.export is not None:
        export(cases, args.export)
        raise SystemExit(0)
    rows = {}
    for name, c in cases.items():
        patch = tuple(c["patch"])
        augment = AugmentConfig(flip_axes=(2,))  # a 3D run's default: left-right flips
        for batch in batches:
            batched = PatchSampler(c["images"], c["labels"], patch, batch, augment, seed=0, device=device)
            legacy = LegacyPatchSampler(c["images"], c["labels"], patch, batch, augment, seed=0)
            gens = {"batched": torch.Generator().manual_seed(1), "per-patch": torch.Generator().manual_seed(1)}

            def timed(draw):
                def go():
                    for _ in range(steps):
                        x, y = draw()
                        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                return go

            with torch.no_grad():
                ab = interleave({"per-patch": timed(lambda: legacy.batch(gens["per-patch"])),
                                 "batched": timed(lambda: batched.batch(gens["batched"]))},
                                rounds, reference="per-patch")
            rate = {k: round(batch * steps / v, 1) for k, v in ab["median_s"].items()}
            rows[f"{name} batch {batch}"] = {
                "plan": name, "batch": batch, "patch": list(patch), "cases": len(c["images"]),
                "patches_per_s": rate, "speedup": round(rate["batched"] / rate["per-patch"], 3),
                "paired_speedup": round(1 / ab["paired_time_ratio"]["batched"], 3),
                "residence": batched.residence.where, "rounds": ab}
            print(f"{name} batch {batch}: {rate} speedup {rows[f'{name} batch {batch}']['speedup']}", flush=True)
    settings = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                else "cpu", "steps": steps, "rounds": rounds, "batches": batches, "plans": list(cases),
                "threads": torch.get_num_threads(), "started": time.strftime("%H:%M")}
    return settings, {"rows": rows}


def table(env: dict) -> list[str]:
    s, rows = env["settings"], env["results"]["rows"]
    lines = [f"Device {s.get('device')} ({s.get('device_name')}), {s.get('threads')} CPU thread(s), "
             f"{s.get('rounds')} alternating rounds of {s.get('steps')} batches; load {env['machine'].get('load_average')}.",
             "", "| plan | batch | patch | per-patch patches/s | batched patches/s | batched / per-patch | cases live |",
             "|---|---:|---|---:|---:|---:|---|"]
    for key, r in rows.items():
        lines.append(f"| {r['plan']} | {r['batch']} | {'×'.join(map(str, r['patch']))} | "
                     f"{fmt(r['patches_per_s']['per-patch'], 1)} | {fmt(r['patches_per_s']['batched'], 1)} | "
                     f"**{r['speedup']:.2f}×** (paired {r['paired_speedup']:.2f}×) | {r['residence']} |")
    lines += ["", f"Command: `{COMMAND}`"]
    return lines
