"""medseg.report.run_report (`medseg report RUN`) and training's ensure_validation, which the report
needs: the report's sections, the CLI and the page in headless Chromium (skipped where no chromium
is installed; .ci/run installs Debian's package), all from two tiny real training runs (2D
phantoms, 3D NIfTI phantoms with anisotropic spacing)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medseg
from helpers import write_volume
from medseg.data.synthetic import make_phantom, to_uint8, write_phantom_dataset
from medseg.errors import MedsegInputError
from medseg.report.browser import find_chromium, images_loaded, rendered_dom, screenshot
from medseg.training import ensure_validation


def _tiny_run(data: Path, out: Path, **options) -> Path:
    return medseg.train(data, out, epochs=2, iterations_per_epoch=2, features=(4, 8, 16), batch_size=2,
                 val_fraction=0.3, seed=0, device="cpu", cache=False, **options)


def _nifti_phantoms(out: Path, n: int, shape=(20, 24, 22), spacing_zyx=(2.0, 1.0, 1.5)) -> Path:
    for i in range(n):
        image, label = make_phantom(np.random.default_rng((5, i)), shape)
        write_volume(out / "images" / f"vol_{i}.nii.gz", to_uint8(image), spacing_zyx)
        write_volume(out / "labels" / f"vol_{i}.nii.gz", label, spacing_zyx)
    return out


@pytest.fixture(scope="module")
def run2d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run2d")
    data = write_phantom_dataset(root / "data", 8, (48, 48), seed=3)
    return _tiny_run(data, root / "run", class_names=("background", "organ", "lesion"))


@pytest.fixture(scope="module")
def run3d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run3d")
    return _tiny_run(_nifti_phantoms(root / "data", 6), root / "run")


def test_ensure_validation_predicts_and_evaluates_the_split(run2d, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run2d, run)
    shutil.rmtree(run / "validation", ignore_errors=True)
    info = json.loads((run / "run.json").read_text())
    val = info["split"]["val"]
    out = ensure_validation(run, device="cpu")
    assert out == run / "validation"
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{c}.png" for c in val)
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["case"] for r in rows}) == sorted(val)
    assert {r["class_name"] for r in rows} == {"background", "organ", "lesion"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["summary"]) == {"0", "1", "2"} and "hd95" in summary["summary"]["1"]
    record = json.loads((out / "validation.json").read_text())
    assert record["cases"] == len(val) and record["predict_s"] >= 0
    # second call: nothing to do, nothing rewritten
    stamp = (out / "metrics.csv").stat().st_mtime_ns
    assert ensure_validation(run) == out and (out / "metrics.csv").stat().st_mtime_ns == stamp


@pytest.mark.slow  # a second tiny training run (3D); the 2D run covers the same code in the fast suite
def test_ensure_validation_3d_keeps_geometry(run3d, tmp_path):
    import SimpleITK as sitk

    run = tmp_path / "run"
    shutil.copytree(run3d, run)
    shutil.rmtree(run / "validation", ignore_errors=True)
    out = ensure_validation(run, device="cpu")
    masks = sorted(out.glob("*.nii.gz"))
    assert masks
    img = sitk.ReadImage(str(masks[0]))
    assert img.GetSpacing() == pytest.approx((1.5, 1.0, 2.0))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["spacing_source"] == "reference headers"
    assert summary["settings"]["volume_unit"] == "mL"


def test_ensure_validation_errors(tmp_path):
    with pytest.raises(MedsegInputError, match="run.json"):
        ensure_validation(tmp_path)


def _no_nan(text: str) -> None:
    lowered = text.lower()
    assert ">nan<" not in lowered and "nan ±" not in lowered and ">inf<" not in lowered


@pytest.fixture(scope="module")
def report2d(run2d, tmp_path_factory) -> Path:
    """The 2D run's report, written through the command line as a user would."""
    from medseg.cli import main

    out = tmp_path_factory.mktemp("report2d") / "report.html"
    assert main(["report", str(run2d), "--out", str(out), "--device", "cpu"]) == 0
    return out


def test_report_2d_has_every_section(run2d, report2d):
    html = report2d.read_text()
    n_val = len(json.loads((run2d / "run.json").read_text())["split"]["val"])
    # curves, boxes, overlays; the reliability diagram and the uncertainty heat maps
    assert html.count('src="data:image/png;base64,') == 2 + min(3, n_val) + 1 + min(3, n_val)
    for heading in ("Validation metrics", "Per-case distribution", "Best, median and worst", "Learning curves",
                    "Calibration and uncertainty",
                    "Cases, worst first", "Data", "Model", "Plan", "Time spent"):
        assert f"<h2>{heading}" in html, heading
    for text in ("HD95 px", "NSD", "Lesion F1", "cases missed", "FLOPs per patch", "GFLOPs", "parameters",
                 "organ", "lesion", "worst:", "best:", "outline: reference (ground truth)"):
        assert text in html, text
    assert "http://" not in html and "https://" not in html  # nothing fetched from anywhere
    _no_nan(html)


@pytest.mark.slow
def test_report_3d_slices_and_plan(run3d, tmp_path):
    from medseg.report.run_report import write_run_report

    run = tmp_path / "run"
    shutil.copytree(run3d, run)
    info = json.loads((run / "run.json").read_text())
    info["plan"] = {"patch_size": [16, 16, 16], "reasons": {"patch_size": "fits the median shape"},
                    "fingerprint": {"huge": list(range(5))}}
    (run / "run.json").write_text(json.dumps(info))
    html = write_run_report(run).read_text()
    assert (run / "report.html").is_file()
    assert "slices through the centre of the label (axial · coronal · sagittal)" in html
    assert "HD95 mm" in html and "Volume (mL)" in html
    assert "fits the median shape" in html and "huge" not in html  # the plan, without its fingerprint
    _no_nan(html)


def test_rank_cases_and_model_cost(run2d):
    from medseg.report.run_report import model_cost, rank_cases

    rows = [{"case": "a", "class": 1, "dice": 0.75, "hd95": 1.0}, {"case": "a", "class": 2, "dice": 0.25, "hd95": 2.0},
            {"case": "b", "class": 1, "dice": 0.25, "hd95": 9.0}, {"case": "b", "class": 2, "dice": 0.5, "hd95": 0.0},
            {"case": "c", "class": 1, "dice": 0.5, "hd95": 3.0}, {"case": "c", "class": 2, "dice": 0.5, "hd95": 1.0},
            {"case": "c", "class": 0, "dice": 0.0}]
    # mean foreground Dice 0.375, 0.5, 0.5 (background ignored); the tie goes to the larger HD95 first
    assert [c["case"] for c in rank_cases(rows)] == ["b", "c", "a"]
    cost = model_cost(run2d)
    assert cost["parameters"] == json.loads((run2d / "run.json").read_text())["model"]["parameters"]
    assert cost["flops"] and cost["flops"] > 0


def test_cli_report_error(tmp_path):
    from medseg.cli import main

    assert main(["report", str(tmp_path)]) == 2  # not a run folder: a clear error, no traceback


def test_report_waits_its_turn_on_a_run_in_use(run2d, tmp_path):
    """A run folder another medseg process holds (a training still writing it) is refused, and
    nothing is written into it."""
    from medseg.api import report
    from medseg.locks import output_lock

    run = tmp_path / "run"
    shutil.copytree(run2d, run)
    (run / "report.html").unlink(missing_ok=True)
    with output_lock(run, "run folder"):
        with pytest.raises(MedsegInputError, match="in use by another medseg process"):
            report(run)
    assert not (run / "report.html").exists()
    assert report(run) == run / "report.html"


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medseg.report.tensorboard import close, log_scalars

    for epoch in (1, 2):
        n = log_scalars(tmp_path, {"epoch": epoch, "iteration": 10 * epoch, "train_loss": 1.0 / epoch,
                                   "val_dice_organ": 0.5 * epoch, "lr": "0.001", "val_loss": None})
        assert n == 3
    close(tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss/train", "dice/organ", "train/lr"}
    assert [e.value for e in acc.Scalars("dice/organ")] == pytest.approx([0.5, 1.0])
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2]


def test_training_logs_tensorboard(run2d):
    assert list((run2d / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_report_renders_in_chromium(report2d, tmp_path):
    """Offline, every embedded picture decodes (naturalWidth > 0), the tables are there, and the
    screenshot is a page, not a blank."""
    html = report2d
    dom = rendered_dom(html)
    n_images = html.read_text().count("<img ")
    assert n_images >= 4
    assert images_loaded(dom) == n_images
    assert dom.count("<table") >= 5 and "Validation metrics" in dom and "Cases, worst first" in dom
    png = screenshot(html, tmp_path / "shot.png", width=1100, height=1400)
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert pixels.shape == (1400, 1100)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.02  # text, tables and pictures
