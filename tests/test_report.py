"""Report pictures and page: overlays show pred and ref apart, curves survive odd logs, HTML is self-contained."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.report import (
    PALETTE, REF_COLOUR, class_colour, overlay, plot_learning_curves, read_log, save_overlay, write_report,
)
from medseg.report.overlay import outline_width

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def square_masks(size=64):
    pred = np.zeros((size, size), np.uint8)
    pred[10:40, 10:40] = 1
    pred[20:25, 20:25] = 2
    ref = np.zeros((size, size), np.uint8)
    ref[14:44, 14:44] = 1
    return pred, ref


def test_palette_is_distinct_and_avoids_the_reference_colour():
    assert len(set(PALETTE)) == len(PALETTE) >= 10
    assert REF_COLOUR not in PALETTE
    assert class_colour(1) == PALETTE[0] and class_colour(len(PALETTE) + 1) == PALETTE[0]
    with pytest.raises(ValueError):
        class_colour(0)


def test_grey_image_without_masks_is_grey_rgb_uint8():
    image = np.random.default_rng(0).normal(100.0, 30.0, (50, 70))  # any float range
    out = overlay(image)
    assert out.shape == (50, 70, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out.min() == 0 and out.max() == 255  # 1/99 percentile stretch


def test_channel_first_inputs():
    rgb = np.zeros((3, 20, 30), np.float32)
    rgb[0] = 1.0  # pure red
    out = overlay(rgb)
    assert out.shape == (20, 30, 3)
    assert (out[..., 0] > out[..., 1]).all()
    two_channels = np.stack([np.linspace(0, 1, 600).reshape(20, 30), np.zeros((20, 30))])
    grey = overlay(two_channels)  # other channel counts: first channel as grey
    assert (grey[..., 0] == grey[..., 2]).all() and grey.max() == 255
    assert overlay(np.ones((1, 8, 8))).shape == (8, 8, 3)  # flat image does not divide by zero


def test_prediction_colours_appear_only_where_predicted():
    image = np.full((64, 64), 0.5, np.float32)
    pred, _ = square_masks()
    out = overlay(image, pred=pred).astype(int)
    background = out[pred == 0]
    assert (background == background[0]).all()  # background untouched
    organ_colour, lesion_colour = np.array(class_colour(1)), np.array(class_colour(2))
    assert (out[30, 30] != out[5, 5]).any()  # fill tints the inside
    assert np.abs(out[30, 30] - organ_colour).sum() < np.abs(out[5, 5] - organ_colour).sum()
    assert (out[10, 25] == organ_colour).all()  # outline in the class colour
    assert (out[20, 22] == lesion_colour).all()
    outline = (out == organ_colour).all(-1)
    assert not outline[pred == 0].any()


def test_reference_outline_is_distinct_from_prediction():
    image = np.zeros((64, 64), np.float32)
    pred, ref = square_masks()
    out = overlay(image, pred=pred, ref=ref)
    is_ref = (out == REF_COLOUR).all(-1)
    assert is_ref[14, 14:44].all() and is_ref[43, 20] and not is_ref[30, 30]
    assert (out[10, 25] == class_colour(1)).all()  # pred outline stays where ref does not cover it
    ref_only = overlay(image, ref=ref)
    assert set(map(tuple, ref_only.reshape(-1, 3))) == {(0, 0, 0), REF_COLOUR}  # outline only, no fill


def test_outlines_thicken_on_large_images():
    assert outline_width(128, 128) == outline_width(512, 512) == 1
    assert outline_width(1080, 1350) >= 3
    pred = np.zeros((1080, 1350), np.uint8)
    pred[200:800, 300:900] = 1
    out = overlay(np.zeros((3, 1080, 1350), np.float32), pred=pred)
    assert (out[200:203, 500] == class_colour(1)).all()


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="pred"):
        overlay(np.zeros((10, 10)), pred=np.zeros((10, 12), np.uint8))


def test_save_overlay_writes_png(tmp_path: Path):
    pred, ref = square_masks()
    path = save_overlay(tmp_path / "sub" / "case.png", np.random.default_rng(1).random((64, 64)), pred, ref, alpha=0.5)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (64, 64) and im.mode == "RGB"


def write_log(path: Path, rows: list[str], classes=("organ", "lesion")) -> Path:
    header = "epoch,iteration,elapsed_s,lr,train_loss,val_loss,val_dice_mean," + ",".join(
        f"val_dice_{c}" for c in classes
    )
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_read_log_parses_numbers_and_empty_cells(tmp_path: Path):
    log = write_log(tmp_path / "log.csv", ["0,10,5.5,0.01,1.2,,,,", "1,20,11.0,0.009,0.9,0.8,0.7,0.8,0.6"])
    rows = read_log(log)
    assert rows[0]["epoch"] == 0 and rows[1]["iteration"] == 20
    assert rows[0]["val_loss"] is None and rows[1]["val_dice_lesion"] == pytest.approx(0.6)


def test_curves_for_one_epoch(tmp_path: Path):
    log = write_log(tmp_path / "log.csv", ["0,50,30.0,0.01,0.8,0.7,0.6,0.7,0.5"])
    out = plot_learning_curves(log, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_curves_without_validation(tmp_path: Path):
    rows = [f"{e},{10 * e},{6.0 * e},0.01,{1 / (e + 1):.3f},,,," for e in range(1, 6)]
    out = plot_learning_curves(write_log(tmp_path / "log.csv", rows), tmp_path / "curves.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    no_val_columns = tmp_path / "bare.csv"
    no_val_columns.write_text("epoch,iteration,elapsed_s,lr,train_loss\n0,5,1.0,0.1,2.0\n1,10,2.0,0.1,1.5\n")
    assert plot_learning_curves(no_val_columns, tmp_path / "bare.png").read_bytes()[:8] == PNG_SIGNATURE


def test_report_is_self_contained_and_escaped(tmp_path: Path):
    pred, ref = square_masks()
    pictures = [save_overlay(tmp_path / f"case_{i}.png", np.random.default_rng(i).random((64, 64)), pred, ref)
                for i in range(2)]
    curve = plot_learning_curves(
        write_log(tmp_path / "log.csv", ["0,50,30.0,0.01,0.8,0.7,0.6,0.7,0.5"]), tmp_path / "curves.png"
    )
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
    assert "prediction: organ" in page and "prediction: lesion" in page and "prediction: mean" not in page
    assert "ground truth" in page
    assert "<script" not in page and "http" not in page  # nothing fetched from elsewhere


def test_report_without_curve_or_overlays(tmp_path: Path):
    index = write_report(tmp_path, title="t", summary_table=[], curve_png=None, overlays=[], facts={})
    assert "data:image" not in index.read_text()
