"""What every benchmark suite shares: the machine it ran on, interleaved A/B timing, one result envelope.

Every result file is one JSON envelope, `benchmarks/results/NAME.json`, the latest run of suite NAME:

    {"benchmark": NAME, "machine": {...}, "torch": "2.x", "commit": "abc1234", "date": "YYYY-MM-DD",
     "settings": {...the suite's options...}, "results": {...the suite's figures...}}

Suites whose figures come in independent rows (one per dataset, task or case) keep them under
``results["rows"]``; a run that measures some rows replaces those and keeps the others, each row
stamped with its own ``measured`` date and commit. That way one file per suite holds the latest
figure of every row, and nothing needs a session or round name.

Timing rule: a comparison on a shared CPU runs its variants alternately within one process
(A B, B A, A B ...), so drift in the machine's speed falls on every variant alike; the figure is
the median over rounds, and the ratio of medians plus the median of per-round ratios are both kept.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
RESULTS = PACKAGE / "results"
DEFAULT_DATA = Path(os.environ.get("MEDSEG_DATA", REPO.parent / "shared" / "data"))
ENVELOPE_KEYS = ("benchmark", "machine", "torch", "commit", "date", "settings", "results")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """What the figures were measured on: CPU, cores, torch threads, load from other jobs."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info.update(threads=torch.get_num_threads(), cpu_capability=torch.backends.cpu.get_cpu_capability())
        from medseg.device import cpu_has_native_bf16

        info["native_bf16"] = bool(cpu_has_native_bf16())
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return info


def torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def git_commit(repo: Path = REPO) -> str | None:
    """Short hash of HEAD; "-dirty" when medseg's sources or the benchmarks have uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src", "benchmarks"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def today() -> str:
    return _dt.date.today().isoformat()


def envelope(benchmark: str, settings: dict, results: dict, *, machine: dict | None = None,
             commit: str | None = None, date: str | None = None, torch: str | None = None) -> dict:
    """The one result format: {benchmark, machine, torch, commit, date, settings, results}."""
    return {"benchmark": benchmark, "machine": machine if machine is not None else machine_info(),
            "torch": torch if torch is not None else torch_version(),
            "commit": commit if commit is not None else git_commit(), "date": date or today(),
            "settings": settings, "results": results}


def check_envelope(env: dict, where: str | Path = "result") -> dict:
    """Refuse a result file that is not an envelope, naming the file and the missing keys."""
    missing = [k for k in ENVELOPE_KEYS if k not in env]
    if missing:
        raise ValueError(f"{where}: not a benchmark envelope, missing {', '.join(missing)}")
    return env


def result_path(name: str, results_dir: Path = RESULTS) -> Path:
    return Path(results_dir) / f"{name}.json"


def read_result(name: str, results_dir: Path = RESULTS) -> dict | None:
    """The latest envelope of suite `name`, or None when it was never measured."""
    path = result_path(name, results_dir)
    if not path.is_file():
        return None
    return check_envelope(json.loads(path.read_text()), path)


def stamp_rows(env: dict) -> dict:
    """Give every row of ``results["rows"]`` without one a ``measured`` stamp from the envelope."""
    stamp = {"date": env["date"], "commit": env["commit"], "cpu": (env.get("machine") or {}).get("cpu")}
    for row in (env["results"].get("rows") or {}).values():
        if isinstance(row, dict):
            row.setdefault("measured", dict(stamp))
    return env


def merge_rows(new: dict, old: dict | None) -> dict:
    """Rows of `old` that `new` did not measure again are kept (with their own stamps)."""
    if not old or "rows" not in new["results"] or "rows" not in old.get("results", {}):
        return new
    rows = dict(old["results"]["rows"])
    rows.update(new["results"]["rows"])
    new["results"]["rows"] = rows
    return new


def save(env: dict, path: Path) -> Path:
    """Write an envelope (rows stamped, earlier rows at the same path kept) and return the path."""
    check_envelope(env, path)
    stamp_rows(env)
    path = Path(path)
    if path.is_file():
        try:
            env = merge_rows(env, json.loads(path.read_text()))
        except (ValueError, json.JSONDecodeError):
            pass  # an unreadable old file is replaced, not merged
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(env, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    """numpy scalars, tuples inside numpy arrays, paths: what json cannot write by itself."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ----------------------------------------------------------------------------- A/B timing
def median(values: list[float]) -> float:
    return float(statistics.median(values))


def ab_summary(seconds: dict[str, list[float]], reference: str | None = None) -> dict:
    """Medians per variant, each variant's median over the reference's (time ratio: > 1 is slower)
    and the median of the per-round ratios (robust to one round hit by another job)."""
    names = list(seconds)
    ref = reference or names[0]
    med = {n: median(v) for n, v in seconds.items()}
    return {
        "reference": ref,
        "seconds": {n: [round(t, 4) for t in v] for n, v in seconds.items()},
        "median_s": {n: round(v, 4) for n, v in med.items()},
        "time_ratio": {n: round(med[n] / med[ref], 4) for n in names},
        "paired_time_ratio": {n: round(median([a / b for a, b in zip(seconds[n], seconds[ref])]), 4)
                              for n in names},
    }


def interleave(variants: dict[str, Callable[[], object]], rounds: int, *, warmup: int = 1,
               reference: str | None = None, on_round: Callable[[int, str, float], None] | None = None) -> dict:
    """Run every variant once per round, the order reversed every other round (A B, B A, ...);
    `warmup` untimed rounds first (kernel choice, allocation, compilation). Returns `ab_summary`."""
    names = list(variants)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            variants[name]()
            elapsed = time.perf_counter() - start
            if r >= warmup:
                seconds[name].append(elapsed)
            if on_round is not None:
                on_round(r - warmup, name, elapsed)
    return ab_summary(seconds, reference)


def rotated(names: list[str], shift: int) -> list[str]:
    """`names` started at position `shift`: with one repeat per case, each peer still goes first somewhere."""
    k = shift % len(names)
    return names[k:] + names[:k]


def fmt(value, digits: int = 3, unit: str = "") -> str:
    """A table cell: numbers rounded, None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"
