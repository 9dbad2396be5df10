"""medseg never writes over a file it did not write (medseg.manifest, inference.predict,
evaluation.checks): the issue's case was `medseg predict RUN IMAGES --out LABELS` answering "use
--overwrite", which then destroyed the reference labels, and `medseg evaluate` reporting Dice
1.000 for predictions that were the references. Every case runs the `medseg` command on copies
of real ISBI 2012 label files and checks them byte for byte afterwards."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medseg.manifest import MANIFEST_NAME, read_outputs
from reliability_helpers import TINY_2D, checksums, copy_isbi, medseg


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    import medseg as api

    root = tmp_path_factory.mktemp("guard")
    return api.train(copy_isbi(root / "data"), root / "run", **TINY_2D)


def _predict(capsys, run: Path, images: Path, out: Path, *extra: str):
    return medseg(capsys, "predict", run, images, "--out", out, "--no-compile", "--no-mirror", *extra)


def test_predicting_into_a_label_folder_is_refused(trained, tmp_path, capsys):
    data = copy_isbi(tmp_path / "data", ("0", "1"))
    labels = data / "labels"
    before = checksums(labels)
    for extra in ((), ("--overwrite",)):  # the advice that destroyed ground truth is never given, nor followed
        line = _predict(capsys, trained, data / "images", labels, *extra).one_error_line()
        assert f"{labels}: holds files medseg did not write (0.png, 1.png)" in line
        assert "reference labels" in line and "--overwrite included" in line
        assert f"e.g. {labels.with_name('labels-predictions')}" in line  # a new folder to use instead
        assert "use --overwrite" not in line
        assert checksums(labels) == before and sorted(p.name for p in labels.iterdir()) == ["0.png", "1.png"]


def test_overwrite_replaces_only_what_medseg_wrote(trained, tmp_path, capsys):
    data = copy_isbi(tmp_path / "data", ("0", "1"))
    pred = tmp_path / "pred"
    assert _predict(capsys, trained, data / "images", pred).code == 0
    record = json.loads((pred / MANIFEST_NAME).read_text())["outputs"]
    assert record == {"0.png": "medseg predict", "1.png": "medseg predict", "overlays/": "medseg predict",
                      "statistics.csv": "medseg predict", "statistics.json": "medseg predict"}
    again = _predict(capsys, trained, data / "images", pred).one_error_line()
    assert "0.png: already exists (2 of the masks to write do, written by medseg earlier); use --overwrite" in again
    assert _predict(capsys, trained, data / "images", pred, "--overwrite").code == 0

    # a file of the user's beside the masks: the folder is no longer medseg's alone
    shutil.copy(data / "labels" / "1.png", pred / "reference_1.png")
    before = checksums(pred)
    line = _predict(capsys, trained, data / "images", pred, "--overwrite").one_error_line()
    assert "holds files medseg did not write (reference_1.png)" in line
    assert checksums(pred) == before


def test_evaluate_refuses_predictions_that_are_the_references(trained, tmp_path, capsys):
    data = copy_isbi(tmp_path / "data", ("0", "1"))
    labels = data / "labels"
    line = medseg(capsys, "evaluate", labels, labels).one_error_line()  # `medseg evaluate X X`
    assert f"{labels}: is the reference folder itself" in line
    copies = Path(shutil.copytree(labels, tmp_path / "copies"))
    line = medseg(capsys, "evaluate", copies, labels).one_error_line()
    assert "all 2 predicted mask(s) are byte for byte their reference masks" in line and "--accept-identical" in line
    assert not (copies / "evaluation.csv").exists()
    with pytest.warns(UserWarning, match="measure nothing"):
        accepted = medseg(capsys, "evaluate", copies, labels, "--accept-identical", "--no-distances")
    assert accepted.code == 0
    assert json.loads((copies / "evaluation.json").read_text())["settings"]["identical_to_reference"] == 2

    # real predictions score normally, and their evaluation is recorded beside them
    pred = tmp_path / "pred"
    assert _predict(capsys, trained, data / "images", pred).code == 0
    assert medseg(capsys, "evaluate", pred, labels, "--no-distances").code == 0
    assert read_outputs(pred)["evaluation.csv"] == "medseg evaluate"


def test_evaluate_never_writes_over_a_file_it_did_not_write(trained, tmp_path, capsys):
    data = copy_isbi(tmp_path / "data", ("0",))
    pred = tmp_path / "pred"
    assert _predict(capsys, trained, data / "images", pred).code == 0
    mine = tmp_path / "results.csv"
    mine.write_text("my own table\n")
    for extra in ((), ("--overwrite",)):
        line = medseg(capsys, "evaluate", pred, data / "labels", "--csv", mine, *extra).one_error_line()
        assert f"{mine}: exists and medseg did not write it" in line and "--overwrite included" in line
    assert mine.read_text() == "my own table\n" and not (pred / "evaluation.json").exists()
