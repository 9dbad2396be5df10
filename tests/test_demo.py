"""`medseg demo` end to end, shortened: phantoms -> training -> prediction -> evaluation -> report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.demo import demo


def test_demo_writes_a_complete_report(tmp_path: Path):
    report = demo(tmp_path / "d", minutes=0.25, train_cases=12, test_cases=4, size=64)
    html = report.read_text()
    assert report.name == "index.html"
    # learning curves + box plots + best/median/worst overlays (each case once), all embedded
    n_val = len(json.loads((tmp_path / "d" / "run" / "run.json").read_text())["split"]["val"])
    assert html.count('src="data:image/png;base64,') == 2 + min(3, n_val)
    assert 'alt="learning curves"' in html and 'alt="per-case box plots"' in html
    for word in ("organ", "lesion", "Dice", "HD95", "worst", "median", "best", "Held-out test set", "FLOPs"):
        assert word in html
    summary = json.loads((tmp_path / "d" / "evaluation.json").read_text())
    assert summary and (tmp_path / "d" / "evaluation.csv").is_file()
    assert len(list((tmp_path / "d" / "predictions").glob("*.png"))) == 4
    assert (tmp_path / "d" / "run" / "validation" / "metrics.csv").is_file()
    with pytest.raises(FileExistsError):
        demo(tmp_path / "d", minutes=0.1)
