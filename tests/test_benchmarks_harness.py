"""The benchmark harness: the result envelope, row merging, A/B alternation, the generated table and
`python -m benchmarks list` (run from the repository root, as `python -m pytest` does)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import harness
from benchmarks.suites import SUITES
from benchmarks.table import render

ROOT = Path(__file__).resolve().parents[1]


def _fake(rows: dict, date: str) -> dict:
    return harness.envelope("accuracy", {"sets": list(rows)}, {"rows": rows},
                            machine={"cpu": "Test CPU", "cores": 2, "threads": 2}, commit="abc1234", date=date,
                            torch="2.13.0+cpu")


def _row(dice: float) -> dict:
    return {"set": "isbi", "dice": {"membrane": dice, "cell": 0.95}, "iterations": 100, "batch_size": 8,
            "images_per_s": 40.0, "budget": {"minutes": 10.0}, "options": {}}


def test_envelope_has_its_keys_and_saved_rows_are_stamped_and_merged(tmp_path: Path):
    env = _fake({"isbi": _row(0.80)}, "2026-01-01")
    assert tuple(env) == harness.ENVELOPE_KEYS
    path = harness.save(env, tmp_path / "accuracy.json")
    first = json.loads(path.read_text())
    assert first["results"]["rows"]["isbi"]["measured"] == {"date": "2026-01-01", "commit": "abc1234", "cpu": "Test CPU"}
    # a later run measuring another row keeps the first row with its own date
    harness.save(_fake({"isbi-ema": _row(0.81)}, "2026-02-01"), path)
    rows = json.loads(path.read_text())["results"]["rows"]
    assert set(rows) == {"isbi", "isbi-ema"}
    assert rows["isbi"]["measured"]["date"] == "2026-01-01" and rows["isbi-ema"]["measured"]["date"] == "2026-02-01"


def test_a_file_that_is_not_an_envelope_is_refused_by_name(tmp_path: Path):
    (tmp_path / "peak.json").write_text(json.dumps({"fp32": {"gflops": 300}}))
    with pytest.raises(ValueError, match=r"peak\.json.*missing benchmark"):
        harness.read_result("peak", tmp_path)


def test_interleave_alternates_the_order_and_reports_medians_and_ratios():
    order: list[str] = []
    variants = {"a": lambda: (order.append("a"), time.sleep(0.002)),
                "b": lambda: (order.append("b"), time.sleep(0.006))}
    ab = harness.interleave(variants, rounds=3, warmup=1)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]   # warm-up round, then A B / B A alternating
    assert len(ab["seconds"]["a"]) == 3 and ab["reference"] == "a"
    assert ab["time_ratio"]["a"] == 1.0 and ab["time_ratio"]["b"] > 1.5


def test_table_renders_a_fake_result_file_and_names_what_is_not_measured(tmp_path: Path):
    harness.save(_fake({"isbi": _row(0.8123)}, "2026-01-01"), tmp_path / "accuracy.json")
    text = render(tmp_path)
    assert "membrane **0.812**" in text and "Test CPU" in text and "2026-01-01" in text
    assert "`python -m benchmarks run accuracy --sets isbi`" in text
    for name in SUITES:
        assert f"(`{name}`)" in text
    assert "Not yet measured with this harness: `python -m benchmarks run generalisation" in text


def test_list_names_every_suite_quickly():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "benchmarks", "list"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert time.perf_counter() - start < 5
    assert [line.split()[0] for line in out.splitlines()] == list(SUITES)
