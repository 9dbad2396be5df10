"""The plan for the card, checked on the card: what `medseg.planning.card` chooses there, and how
its throughput model (a fixed time per step + FLOPs / the card's assumed rate) compares with the
patches/s that benchmarks/device_train.py measures. benchmarks/device_check.sh runs it.

    here:   python -m benchmarks.device_plan export --out device-cases   (fingerprints: MSD Hippocampus, BraTS)
    device: python -m benchmarks.device_plan plan --cases device-cases --minutes 3 --out plan.json
            python -m benchmarks.device_plan compare --plan plan.json --train train.json --out plan_check.json

`plan` plans each exported fingerprint for the visible card (a time budget of --minutes, and
nnU-Net's epochs without one) and prints the plans; `compare` fits step time = overhead + batch x
time per patch to the measured batched-sampler rows and sets the fitted overhead and card rate
beside the figures the plan assumed (CUDA_STEP_OVERHEAD_S, the card table x ACHIEVABLE_FRACTION).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

for _missing in ("SimpleITK", "nibabel"):  # medseg.io imports them; nothing here reads a medical file
    if importlib.util.find_spec(_missing) is None:
        sys.modules[_missing] = types.ModuleType(_missing)

import numpy as np  # noqa: E402

from benchmarks.harness import DEFAULT_DATA  # noqa: E402
from medseg.planning import Budget, format_plan, make_plan  # noqa: E402
from medseg.planning.card import modelled_step_s  # noqa: E402
from medseg.planning.fingerprint import Fingerprint  # noqa: E402

SETS = ("hippocampus", "brats")


def export(data: Path, out: Path) -> None:
    """Fingerprints of the whole MSD Hippocampus training set and of BraTS's training cases (the
    plans' data, not the subset the device trains on: the batch rule reads the dataset's size)."""
    import tempfile

    from benchmarks.datasets import make_split
    from medseg.planning import compute_fingerprint

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in SETS:
            folder = data / "msd-hippocampus" if name == "hippocampus" else make_split(name, data, Path(tmp) / name).train
            fp, _, _ = compute_fingerprint(folder, progress=False)
            (out / f"{name}.fingerprint.json").write_text(json.dumps(fp.to_dict()))
            print(f"wrote {out / f'{name}.fingerprint.json'} ({len(fp.cases)} cases)")


def plan(cases: Path, minutes: float, out: Path) -> dict:
    plans = {}
    for name in SETS:
        path = cases / f"{name}.fingerprint.json"
        if not path.is_file():
            print(f"{path}: missing (python -m benchmarks.device_plan export --out {cases})")
            continue
        fp = Fingerprint.from_dict(json.loads(path.read_text()))
        plans[name] = {"minutes": make_plan(fp, Budget("cuda", minutes=minutes)), "epochs": make_plan(fp, Budget("cuda"))}
        for budget, p in plans[name].items():
            print(f"== {name}, {budget}\n{format_plan(p)}\n   card: {json.dumps(p['budget'].get('card'))}\n"
                  f"   batch rule: {json.dumps(p['estimate'].get('card_batch'))}", flush=True)
    out.write_text(json.dumps(plans, indent=1) + "\n")
    return plans


def fit_steps(rows: list[dict]) -> dict | None:
    """Least-squares step time = overhead + batch x per-patch time from (batch, patches/s) rows."""
    if len({r["batch"] for r in rows}) < 2:
        return None
    batch = np.array([r["batch"] for r in rows], dtype=float)
    step = batch / np.array([r["patches_per_s"] for r in rows], dtype=float)
    per_patch, overhead = np.polyfit(batch, step, 1)
    return {"overhead_s": round(float(overhead), 4), "per_patch_s": round(float(per_patch), 6)}


def compare(plan_file: Path, train_file: Path, out: Path) -> dict:
    """The plan's modelled patches/s at batch 2 and at its batch against the measured ones, and the
    overhead and card rate fitted to the measurements against the assumed ones."""
    p = json.loads(plan_file.read_text())["hippocampus"]["minutes"]
    train = json.loads(train_file.read_text())
    card, figures, gflops = p["budget"]["card"], p["estimate"]["card_batch"], p["estimate"]["forward_gflops_per_patch"]
    rows = [r for r in train["throughput"] if r["sampler"] == "batched"]
    measured = {r["batch"]: r["patches_per_s"] for r in rows}
    model = {b: round(b / modelled_step_s(b, 3 * gflops, card["train_gflops"], card["step_overhead_s"]), 1)
             for b in sorted(measured)}
    chosen = p["batch_size"]
    result = {"card": card, "plan_batch": chosen, "plan_patch": p["patch_size"], "trained_patch": train.get("patch"),
              "limited_by": figures["limited_by"], "modelled_patches_per_s": model,
              "measured_patches_per_s": measured,
              "chosen_vs_batch_2": (round(measured[chosen] / measured[2], 2)
                                    if chosen in measured and 2 in measured else None),
              "assumed": {"overhead_s": card["step_overhead_s"], "train_gflops": card["train_gflops"]}}
    fitted = fit_steps(rows)
    if fitted:
        rate = 3 * gflops / fitted["per_patch_s"] if fitted["per_patch_s"] > 0 else None
        result["fitted"] = {**fitted, "train_gflops": round(rate, 1) if rate else None,
                            "fraction_of_peak": (round(rate / (card["peak_bf16_tflops"] * 1000 * card["sm_scale"]), 3)
                                                 if rate and card.get("peak_bf16_tflops") else None)}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("--data", type=Path, default=DEFAULT_DATA)
    e.add_argument("--out", type=Path, required=True)
    pl = sub.add_parser("plan")
    pl.add_argument("--cases", type=Path, required=True)
    pl.add_argument("--minutes", type=float, default=3.0)
    pl.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("--plan", type=Path, required=True)
    c.add_argument("--train", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args.data, args.out)
    elif args.command == "plan":
        plan(args.cases, args.minutes, args.out)
    else:
        compare(args.plan, args.train, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
