"""medseg.report.html: the report page is one self-contained file (pictures embedded as base64, no
script, nothing fetched), with every text escaped."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from medseg.report import plot_learning_curves, save_overlay, write_report


def test_report_is_self_contained_and_escaped(tmp_path: Path):
    pred = np.zeros((64, 64), np.uint8)
    pred[10:40, 10:40] = 1
    pictures = [save_overlay(tmp_path / f"case_{i}.png", np.random.default_rng(i).random((64, 64)), pred, pred)
                for i in range(2)]
    log = tmp_path / "log.csv"
    log.write_text("epoch,iteration,elapsed_s,lr,train_loss,val_loss,val_dice_mean,val_dice_organ,val_dice_lesion\n"
                   "0,50,30.0,0.01,0.8,0.7,0.6,0.7,0.5\n")
    curve = plot_learning_curves(log, tmp_path / "curves.png")
    index = write_report(
        tmp_path / "report",
        title="Phantoms <demo> & friends",
        summary_table=[{"class": "organ", "dice": "0.91 ± 0.03", "hd95": 2.5},
                       {"class": "lesion", "dice": "0.55 ± 0.20", "note": "<small>"},
                       {"class": "mean", "dice": "0.73"}],
        curve_png=curve,
        overlays=[("case_000 — Dice 0.87", pictures[0]), ("case_001 <odd>", pictures[1])],
        facts={"dataset": "phantoms (20 cases)", "model": "U-Net 2D", "parameters": "1.9 M"},
    )
    assert index == tmp_path / "report" / "index.html"
    page = index.read_text(encoding="utf-8")
    assert page.count('<img src="data:image/png;base64,') == 2
    assert page.count('src="data:image/png;base64,') == 3  # overlays + curve
    embedded = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(embedded) == curve.read_bytes()
    assert "Phantoms &lt;demo&gt; &amp; friends" in page and "<demo>" not in page
    assert "case_001 &lt;odd&gt;" in page and "case_000 — Dice 0.87" in page
    assert "<td>&lt;small&gt;</td>" in page
    for column in ("class", "dice", "hd95", "note"):
        assert f"<th>{column}</th>" in page
    assert "<tr><td>organ</td><td>0.91 ± 0.03</td><td>2.5</td><td></td></tr>" in page
    legend = page[page.index('<div class="legend">'):]
    legend = legend[:legend.index("</div>")]
    assert "</span>organ</span>" in legend and "</span>lesion</span>" in legend and "mean" not in legend
    assert "fill: prediction · outline: reference (ground truth)" in legend
    assert "<script" not in page and "http" not in page  # nothing fetched from elsewhere


def test_report_without_curve_or_overlays(tmp_path: Path):
    index = write_report(tmp_path, title="t", summary_table=[], curve_png=None, overlays=[], facts={})
    assert "data:image" not in index.read_text()
