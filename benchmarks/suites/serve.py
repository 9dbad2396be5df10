"""Load on `medseg serve` over loopback: N requests, C at a time, 2D (Kvasir-SEG) and 3D (MSD
hippocampus) mixed with malformed uploads, against two tiny runs trained first.

Every good request must get a mask equal to `medseg predict`'s for that file, every bad one a
4xx, none a 5xx; a full queue answers 429 (the client waits Retry-After and tries again), the
server's RSS (API process plus workers, read from /proc) stays under the stated bound, and
/healthz answers afterwards. Throughput is compared with the peer a user has without a server:
one `medseg predict` process per file (start, load the model, predict, exit), on the same files.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import fmt

TITLE = "medseg serve under load: correctness, queue bound, memory, throughput against per-file predict"
COMMAND = "python -m benchmarks run serve --requests 100 --concurrency 8"
RSS_BOUND_GIB = 4.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=100, help="requests in all (default 100)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients at a time (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="server prediction workers (default 1)")
    parser.add_argument("--queue-size", type=int, default=4, help="server queue bound (default 4)")


def _rss_gib(pid: int) -> float:
    """RSS of a process and its children (the workers), from /proc."""
    total = 0
    pids = [pid]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().split()[3]) == pid:
                    pids.append(int(p.name))
            except (OSError, ValueError, IndexError):
                pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total / 2**30


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    import numpy as np
    import SimpleITK as sitk

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    import medseg
    from helpers import hippocampus_msd, link_subset
    from serve_helpers import Server

    n = 12 if args.quick else args.requests
    work = Path(tempfile.mkdtemp(prefix="medseg-bench-serve-"))
    kv = args.data / "kvasir-seg"
    stems = sorted(p.stem for p in (kv / "images").iterdir())
    tiny = dict(batch_size=2, iterations_per_epoch=2, plan=False, epochs=1, finish=False, device="cpu")
    run2d = medseg.train(link_subset(kv, work / "k", stems[:6], "images", "masks"), work / "polyp",
                         features=(8, 16, 32), patch_size=(64, 64), image_size=128, val_fraction=0.34, **tiny)
    run3d = medseg.train(hippocampus_msd(work / "h", ["hippocampus_001", "hippocampus_003", "hippocampus_004",
                                                      "hippocampus_006"]), work / "hippocampus", features=(8, 16),
                         patch_size=(16, 16, 16), val_fraction=0.25, **{**tiny, "batch_size": 1})
    files = [("polyp", kv / "images" / f"{s}.jpg") for s in stems[10:14]]
    files += [("hippocampus", args.data / "msd-hippocampus" / "imagesTr" / f"hippocampus_{i:03d}.nii.gz")
              for i in (17, 19, 23, 24)]
    runs = {"polyp": run2d, "hippocampus": run3d}
    # the peer: one `medseg predict` process per file; its masks are the reference
    reference, peer_s = {}, time.perf_counter()
    for model, f in files:
        out = work / "cli" / f.name
        subprocess.run([sys.executable, "-m", "medseg", "predict", str(runs[model]), str(f), "--out", str(out),
                        "--device", "cpu", "--no-overlays"], check=True, capture_output=True)
        [mask] = [p for p in out.iterdir() if p.name.startswith(f.name.split(".")[0])]
        reference[f.name] = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
    peer_per_file = (time.perf_counter() - peer_s) / len(files)
    srv = Server([run2d, run3d], work / "serve", "--workers", str(args.workers), "--queue-size", str(args.queue_size))
    bad = [("junk.png", b"not a png", "polyp"), ("vol.nii.gz", files[4][1].read_bytes(), "polyp"),
           ("x.txt", b"hi", "hippocampus")]
    counts = {"good": 0, "good_correct": 0, "bad": 0, "bad_4xx": 0, "5xx": 0, "429": 0}
    peak = [0.0]

    def one(i: int) -> None:
        import httpx
        client = httpx.Client(base_url=srv.url, headers=srv.client.headers, timeout=300)
        if i % 5 == 4:  # one in five malformed
            name, content, model = bad[i % len(bad)]
            r = client.post("/api/v1/jobs", files={"file": (name, content)}, data={"model": model})
            counts["bad"] += 1
            counts["bad_4xx"] += int(400 <= r.status_code < 500)
            counts["5xx"] += int(r.status_code >= 500)
            return
        model, f = files[i % len(files)]
        while True:
            with open(f, "rb") as fh:
                r = client.post("/api/v1/jobs", files={"file": (f.name, fh)}, data={"model": model})
            if r.status_code != 429:
                break
            counts["429"] += 1
            time.sleep(min(5, int(r.headers["retry-after"])))
        counts["good"] += 1
        counts["5xx"] += int(r.status_code >= 500)
        if r.status_code != 202:
            return
        job_id = r.json()["id"]
        while (job := client.get(f"/api/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            time.sleep(0.1)
        if job["status"] == "done":
            body = client.get(f"/api/v1/jobs/{job_id}/mask").content
            path = work / f"got-{i}{''.join(Path(f.name).suffixes) if model == 'hippocampus' else '.png'}"
            path.write_bytes(body)
            counts["good_correct"] += int(np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))),
                                                         reference[f.name]))
        client.delete(f"/api/v1/jobs/{job_id}")
        peak[0] = max(peak[0], _rss_gib(srv.proc.pid))

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - start
    import httpx
    healthy = httpx.get(srv.url + "/healthz").json()["status"] == "ok"
    srv.stop()
    served_per_file = wall / max(1, counts["good"])
    results = {**counts, "wall_s": wall, "served_s_per_good_request": served_per_file,
               "peer_s_per_file": peer_per_file, "speedup_vs_per_file_predict": peer_per_file / served_per_file,
               "peak_rss_gib": peak[0], "rss_bound_gib": RSS_BOUND_GIB, "rss_within_bound": peak[0] < RSS_BOUND_GIB,
               "healthy_after": healthy}
    settings = {"requests": n, "concurrency": args.concurrency, "workers": args.workers, "queue_size": args.queue_size,
                "files": [f.name for _, f in files], "malformed_share": 0.2}
    return settings, results


def table(env: dict) -> list[str]:
    r, s = env["results"], env["settings"]
    return [f"{s['requests']} requests, {s['concurrency']} at a time, {s['workers']} worker(s), queue {s['queue_size']}: "
            "4 Kvasir pictures and 4 hippocampus volumes, one request in five malformed.", "",
            "| good: correct masks | bad: 4xx | 5xx | 429 answered | peak RSS (bound) | healthy after | "
            "served s/request | `medseg predict` per file s | ratio |",
            "|---|---|---:|---:|---:|---|---:|---:|---:|",
            f"| {r['good_correct']}/{r['good']} | {r['bad_4xx']}/{r['bad']} | {r['5xx']} | {r['429']} | "
            f"{fmt(r['peak_rss_gib'], 2)} GiB ({r['rss_bound_gib']}) | {'yes' if r['healthy_after'] else 'NO'} | "
            f"{fmt(r['served_s_per_good_request'], 2)} | {fmt(r['peer_s_per_file'], 2)} | "
            f"**{fmt(r['speedup_vs_per_file_predict'], 1)}x** |", "", f"Command: `{COMMAND}`"]
