"""Sparse annotation on MSD Hippocampus: 80 % of the axial slices unlabelled vs full labels.

Protocol: sort the case names, hold out every 5th (as benchmarks/accuracy_3d.py); the other 208
train. "sparse": their labels keep one axial slice in five (SimpleITK array axis 0, z; slices
2, 7, 12, ...) and mark the rest 255, declared as the label "ignore" in dataset.json
(`medseg.data.sparse.write_sparse_msd`); "full": the same cases with their full labels. Both train
with the same plan (made on the full set for the budget), seed 0 and budget, at the same time
(one process each, one thread each, so the machine's load falls on both alike). The held-out
cases are predicted from their original NIfTI files and scored against their *full* labels with
`medseg.evaluate` (Dice per class).

    python benchmarks/sparse_labels.py [--minutes 8] [--keep-every 5]
Writes benchmarks/results/sparse_labels.json and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDSEG_DATA", ROOT.parent / "shared" / "data")) / "msd-hippocampus"
RESULTS = ROOT / "benchmarks" / "results" / "sparse_labels.json"


def split_cases() -> tuple[list[str], list[str]]:
    desc = json.loads((DATA / "dataset.json").read_text())
    names = sorted(Path(e["image"]).name.split(".")[0] for e in desc["training"])
    return [n for i, n in enumerate(names) if i % 5], [n for i, n in enumerate(names) if i % 5 == 0]


def prepare(work: Path, keep_every: int) -> dict:
    """Training folders (full: links; sparse: rewritten labels), the held-out inputs and the plan."""
    from medseg.data.sparse import write_sparse_msd
    from medseg.plan import Budget, plan_dataset

    train, held = split_cases()
    full, sparse, test = work / "full", work / "sparse", work / "test" / "imagesTs"
    if not (full / "dataset.json").is_file():
        desc = json.loads((DATA / "dataset.json").read_text())
        for sub in ("imagesTr", "labelsTr"):
            (full / sub).mkdir(parents=True, exist_ok=True)
            for n in train:
                (full / sub / f"{n}.nii.gz").symlink_to(DATA / sub / f"{n}.nii.gz")
        desc["training"] = [e for e in desc["training"] if Path(e["image"]).name.split(".")[0] in set(train)]
        desc["numTraining"] = len(desc["training"])
        (full / "dataset.json").write_text(json.dumps(desc, indent=2))
    if not (sparse / "dataset.json").is_file():
        write_sparse_msd(DATA, sparse, train, keep_every=keep_every, axis=0)
    if not test.is_dir():
        test.mkdir(parents=True)
        for n in held:
            (test / f"{n}.nii.gz").symlink_to(DATA / "imagesTr" / f"{n}.nii.gz")
    return {"full": full, "sparse": sparse, "test": test, "held": held, "train": train}


def run_variant(variant: str, work: Path, plan_path: Path, minutes: float) -> dict:
    """Train one variant, predict the held-out cases, score them on full labels."""
    import torch

    import medseg

    torch.set_num_threads(1)
    data = work / variant
    run, pred = work / f"run_{variant}", work / f"pred_{variant}"
    start = time.perf_counter()
    medseg.train(data, run, minutes=minutes, seed=0, device="cpu", finish=False,
                 plan=json.loads(plan_path.read_text()))
    trained = time.perf_counter() - start
    medseg.predict(run, work / "test" / "imagesTs", pred, device="cpu", overlays=False)
    _, held = split_cases()
    result = medseg.evaluate(pred, DATA / "labelsTr", cases=held, class_names=["background", "anterior", "posterior"],
                             json_path=pred / "evaluation.json", csv_path=pred / "evaluation.csv", distances=False,
                             lesions=False)
    info = json.loads((run / "run.json").read_text())
    return {"dice_anterior": round(result.summary[1]["dice"]["mean"], 4),
            "dice_posterior": round(result.summary[2]["dice"]["mean"], 4),
            "steps": info["iterations_done"], "train_s": round(trained, 1),
            "label_rule": info["label_rule"], "best_val_dice_mean": info["best_val_dice_mean"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--keep-every", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "medseg-sparse")
    parser.add_argument("--variant", choices=["full", "sparse"], help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args()
    plan_path = args.work / "plan.json"
    if args.variant:
        out = run_variant(args.variant, args.work, plan_path, args.minutes)
        (args.work / f"result_{args.variant}.json").write_text(json.dumps(out, indent=2))
        return

    from medseg.plan import Budget, plan_dataset

    args.work.mkdir(parents=True, exist_ok=True)
    folders = prepare(args.work, args.keep_every)
    if not plan_path.is_file():
        plan_path.write_text(json.dumps(plan_dataset(folders["full"], Budget(device="cpu", minutes=args.minutes),
                                                     progress=False), indent=2))
    children = [subprocess.Popen([sys.executable, __file__, "--variant", v, "--minutes", str(args.minutes),
                                  "--work", str(args.work)]) for v in ("full", "sparse")]
    if any(c.wait() for c in children):
        sys.exit("a variant failed (see its output above)")
    import torch

    plan = json.loads(plan_path.read_text())
    results = {
        "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
        "minutes": args.minutes, "seed": 0, "keep_every": args.keep_every,
        "ignored_slice_fraction": round(1 - 1 / args.keep_every, 3), "slice_axis": "axial (SimpleITK array axis 0, z)",
        "train_cases": len(folders["train"]), "held_out_cases": len(folders["held"]),
        "plan": {k: plan.get(k) for k in ("patch_size", "batch_size", "target_spacing", "features")},
        "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, 1 thread per variant, both at once",
        "full": json.loads((args.work / "result_full.json").read_text()),
        "sparse": json.loads((args.work / "result_sparse.json").read_text()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
