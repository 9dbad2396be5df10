"""Fingerprint + plan time on a real dataset (issue 4's target: under 30 s for msd-hippocampus).

    python benchmarks/plan_speed.py [--data ../shared/data/msd-hippocampus]

Times `medseg plan`'s work in this process (fingerprint of every case, then the plan for a
20-minute CPU budget) and, as the peer, reading every case's image and label with nibabel alone
(the least any fingerprint that looks at intensities must do). Writes
benchmarks/results/plan_speed.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "msd-hippocampus")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "plan_speed.json")
    args = parser.parse_args()

    import nibabel as nib

    from medseg.data.fingerprint import compute_fingerprint
    from medseg.io.layout import describe_dataset
    from medseg.plan import Budget, make_plan

    start = time.perf_counter()
    fp, _, _ = compute_fingerprint(args.data, progress=False)
    fingerprint_s = time.perf_counter() - start
    start = time.perf_counter()
    plan = make_plan(fp, Budget("cpu", minutes=20))
    plan_s = time.perf_counter() - start

    pairs, _ = describe_dataset(args.data)
    start = time.perf_counter()
    for pair in pairs:
        for path in list(pair.image_files) + [pair.label]:
            nib.load(str(path)).get_fdata(dtype="float32")
    read_s = time.perf_counter() - start

    result = {"dataset": args.data.name, "cases": len(fp.cases), "fingerprint_s": round(fingerprint_s, 2),
              "plan_s": round(plan_s, 2), "total_s": round(fingerprint_s + plan_s, 2), "target_s": 30,
              "peer_read_all_nibabel_s": round(read_s, 2),
              "ratio_to_plain_read": round((fingerprint_s + plan_s) / read_s, 2),
              "patch_size": plan["patch_size"], "batch_size": plan["batch_size"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
