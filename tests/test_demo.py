"""`medseg demo` end to end, shortened: phantoms -> training (a fixed number of steps) ->
prediction -> evaluation -> one report; run again it reuses or replaces only its own folder."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from helpers import real_dataset
from medseg.demo import demo
from medseg.errors import MedsegInputError
from medseg.manifest import MANIFEST_NAME, read_outputs

TINY = dict(epochs=2, iterations=5, train_cases=12, test_cases=4, size=64)


def test_demo_trains_fixed_steps_and_writes_one_report(tmp_path: Path, capsys):
    out = tmp_path / "d"
    report = demo(out, **TINY)
    said = capsys.readouterr().out
    assert report == out / "report.html"
    # before training: how many steps, and how long the plan expects them to take on this machine
    before = said.index("demo: training 10 steps (2 epochs of 5)")
    assert "s per step on this machine, so about" in said[before:]
    assert before < said.index("Dice")  # said before the test metrics were printed
    assert f"demo: the report is {report}" in said
    info = json.loads((out / "run" / "run.json").read_text())
    assert info["iterations_done"] == 10 and info["config"]["minutes"] is None  # steps, not minutes
    # one report: no second page in the run folder or a report folder
    assert sorted(p.name for p in out.rglob("*.html")) == ["report.html"]
    html = report.read_text()
    n_val = len(info["split"]["val"])
    # curves, boxes, overlays; the reliability diagram and the uncertainty heat maps
    assert html.count('src="data:image/png;base64,') == 2 + min(3, n_val) + 1 + min(3, n_val)
    assert "Calibration and uncertainty" in html
    assert 'alt="learning curves"' in html and 'alt="per-case box plots"' in html
    for word in ("organ", "lesion", "Dice", "HD95", "worst", "median", "best", "Held-out test set", "FLOPs"):
        assert word in html
    assert json.loads((out / "evaluation.json").read_text()) and (out / "evaluation.csv").is_file()
    assert len(list((out / "predictions").glob("*.png"))) == 4
    assert (out / "run" / "validation" / "metrics.csv").is_file()
    assert set(read_outputs(out)) >= {"data/", "run/", "predictions/", "report.html", "evaluation.csv"}

    # `make demo` twice: the finished demo is reused, nothing is trained or written again
    stamp = report.stat().st_mtime_ns
    assert demo(out, **TINY) == report and report.stat().st_mtime_ns == stamp
    assert "already holds this demo" in capsys.readouterr().out

    # other settings: the earlier demo is replaced, and only what it wrote
    demo(out, **{**TINY, "epochs": 1})
    assert "replacing the earlier demo" in capsys.readouterr().out
    assert json.loads((out / "run" / "run.json").read_text())["iterations_done"] == 5
    assert sorted(p.name for p in out.rglob("*.html")) == ["report.html"]


def test_demo_never_writes_into_another_folder(tmp_path: Path):
    """A folder holding someone's files (here real reference labels) is refused, and kept as it was."""
    labels = tmp_path / "labels"
    labels.mkdir()
    src = real_dataset("isbi2012-membrane") / "labels" / "0.png"
    shutil.copy(src, labels / "0.png")
    digest = hashlib.sha256((labels / "0.png").read_bytes()).hexdigest()
    with pytest.raises(MedsegInputError, match="did not write") as info:
        demo(labels, **TINY)
    assert "0.png" in str(info.value) and "labels-demo" in str(info.value)  # says which file, suggests a folder
    assert sorted(p.name for p in labels.iterdir()) == ["0.png"] and not (labels / MANIFEST_NAME).exists()
    assert hashlib.sha256((labels / "0.png").read_bytes()).hexdigest() == digest
