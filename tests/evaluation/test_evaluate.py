"""medseg.evaluation.evaluate: a folder of predictions against a folder of references."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import real_dataset, write_volume
from medseg.errors import MedsegInputError
from medseg.evaluation import EvaluationResult, evaluate
from medseg.io.labels import LabelMapping


def write(path: Path, array) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def square(top: int, left: int, size: int = 4, shape=(10, 10)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[top:top + size, left:left + size] = 1
    return m


@pytest.fixture
def folders(tmp_path):
    """Two cases, hand-checkable.

    shifted: reference = 4x4 square (16 px), prediction = same square 2 columns right ->
             overlap 8 px: Dice = 2*8/(16+16) = 0.5, Jaccard = 8/24 = 1/3, sensitivity 0.5,
             background: 100-16 = 84 px each, overlap 76: Dice 152/168; accuracy (100 - 8 FP - 8 FN)/100.
    exact:   prediction == reference: every metric 1.
    References are stored 0/255 (a "levels" dataset), predictions 0/1 (class indices).
    """
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    write(labels / "shifted.png", square(3, 3) * 255)
    write(preds / "shifted.png", square(3, 5))
    write(labels / "exact.png", square(1, 1) * 255)
    write(preds / "exact.png", square(1, 1))
    return preds, labels


def test_hand_checked_dice(folders, tmp_path):
    preds, labels = folders
    result = evaluate(preds, labels, csv_path=tmp_path / "out" / "metrics.csv", json_path=tmp_path / "out" / "s.json")
    assert isinstance(result, EvaluationResult)
    rows = {(r["case"], r["class"]): r for r in result.rows}
    assert len(rows) == 4
    shifted = rows[("shifted", 1)]
    assert shifted["class_name"] == "class1"
    assert shifted["dice"] == pytest.approx(0.5)
    assert shifted["jaccard"] == pytest.approx(1 / 3)
    assert shifted["sensitivity"] == pytest.approx(0.5)
    assert shifted["specificity"] == pytest.approx(76 / 84)
    assert shifted["accuracy"] == pytest.approx(84 / 100)  # 8 FP + 8 FN wrong pixels
    assert (shifted["ref_pixels"], shifted["pred_pixels"]) == (16, 16)
    assert rows[("shifted", 0)]["dice"] == pytest.approx(2 * 76 / 168)
    assert rows[("shifted", 0)]["class_name"] == "background"
    assert all(v == 1.0 for k, v in rows[("exact", 1)].items() if k in ("dice", "jaccard", "specificity"))

    dice = result.summary[1]["dice"]
    assert dice["mean"] == pytest.approx(0.75) and dice["n"] == 2
    assert dice["std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert (dice["min"], dice["max"], dice["median"]) == (0.5, 1.0, 0.75)
    assert result.summary[1]["class_name"] == "class1"

    table = result.table()
    for word in ("Dice", "Jaccard", "Precision", "Sensitivity", "Specificity", "HD95 px", "ASSD px", "NSD", "RVD",
                 "Lesion F1", "missed", "spurious", "background", "class1"):
        assert word in table
    assert "0.750 ± 0.354" in table

    with open(tmp_path / "out" / "metrics.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 4
    assert {"case", "class", "class_name", "dice", "jaccard", "accuracy", "sensitivity", "specificity"} <= set(csv_rows[0])
    assert float(next(r for r in csv_rows if r["case"] == "shifted" and r["class"] == "1")["dice"]) == pytest.approx(0.5)
    saved = json.loads((tmp_path / "out" / "s.json").read_text())
    assert saved["summary"]["1"]["dice"]["mean"] == pytest.approx(0.75)
    assert saved["settings"]["num_classes"] == 2 and saved["settings"]["cases"] == 2
    assert saved["settings"]["reference_mapping"] == {"mode": "levels", "values": [0, 255], "threshold": None,
                                                      "num_classes": 2}


def test_binary_255_predictions_and_dataset_folder_as_reference(tmp_path):
    labels = tmp_path / "data" / "masks"
    write(labels / "a.png", square(3, 3))  # references stored as class indices 0/1
    write(tmp_path / "data" / "images" / "a.png", np.zeros((10, 10)))
    write(tmp_path / "preds" / "a.png", square(3, 5) * 255)  # a 0/255 prediction from another tool
    result = evaluate(tmp_path / "preds", tmp_path / "data")  # a dataset folder: masks/ inside is used
    assert result.rows[1]["dice"] == pytest.approx(0.5)
    assert result.settings["prediction_mapping"]["mode"] == "levels"


def test_names_classes_mapping_and_extra_predictions(folders):
    preds, labels = folders
    write(preds / "leftover.png", square(0, 0))
    with pytest.warns(UserWarning, match="leftover.png"):
        result = evaluate(preds, labels, num_classes=3, class_names=["bg", "polyp", "tool"],
                          mapping={"mode": "levels", "values": [0, 255]})
    assert {r["case"] for r in result.rows} == {"shifted", "exact"}
    assert sorted(result.summary) == [0, 1, 2]
    assert result.summary[2]["class_name"] == "tool"
    assert result.summary[2]["dice"]["mean"] == 1.0  # absent from both: 1 by convention, never NaN
    assert "polyp" in result.table()
    assert result.settings["ignored_predictions"] == ["leftover.png"]
    (preds / "leftover.png").unlink()
    same = evaluate(preds, labels, mapping=LabelMapping("levels", values=[0, 255]))
    assert same.summary[1]["dice"]["mean"] == pytest.approx(0.75)


def test_missing_prediction_is_an_error_listing_it(folders):
    preds, labels = folders
    (preds / "exact.png").unlink()
    with pytest.raises(MedsegInputError) as e:
        evaluate(preds, labels)
    assert "exact.png" in str(e.value) and "no prediction" in str(e.value)


def test_size_mismatch_and_bad_inputs(folders, tmp_path):
    preds, labels = folders
    write(preds / "exact.png", np.zeros((8, 10)))
    with pytest.raises(MedsegInputError) as e:
        evaluate(preds, labels)
    assert "exact.png" in str(e.value) and "8x10" in str(e.value) and "10x10" in str(e.value)

    write(preds / "exact.png", square(1, 1) * 2)  # class 2 in a binary evaluation
    with pytest.raises(MedsegInputError) as e:
        evaluate(preds, labels)
    assert "exact.png" in str(e.value)

    with pytest.raises(MedsegInputError) as e:
        evaluate(tmp_path / "nowhere", labels)
    assert "nowhere" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsegInputError) as e:
        evaluate(preds, tmp_path / "empty")
    assert "empty" in str(e.value)

    write(labels / "odd.png", np.full((10, 10), 128))  # a reference value the given mapping does not know
    write(preds / "odd.png", np.zeros((10, 10)))
    write(preds / "exact.png", square(1, 1))
    with pytest.raises(MedsegInputError) as e:
        evaluate(preds, labels, mapping=LabelMapping("levels", values=[0, 255]))
    assert "odd.png" in str(e.value) and "128" in str(e.value)


def test_progress_bar_for_many_cases(tmp_path, capsys):
    for i in range(55):
        write(tmp_path / "labels" / f"{i}.png", square(i % 5, 2))
        write(tmp_path / "preds" / f"{i}.png", square(i % 5, 2))
    with pytest.warns(UserWarning, match="byte for byte"):  # the same bytes on purpose: perfect scores
        result = evaluate(tmp_path / "preds", tmp_path / "labels", accept_identical=True)
    assert "evaluating" in capsys.readouterr().err
    assert result.summary[1]["dice"]["mean"] == 1.0 and result.summary[1]["dice"]["n"] == 55
    assert [r["case"] for r in result.rows[:6:2]] == ["0", "1", "2"]  # natural order


def test_real_data_isbi_against_itself_and_kvasir_subset(tmp_path):
    isbi = real_dataset("isbi2012-membrane")
    with pytest.raises(MedsegInputError, match="is the reference folder itself"):  # refused unless asked for
        evaluate(isbi / "labels", isbi)
    with pytest.warns(UserWarning, match="measure nothing"):
        result = evaluate(isbi / "labels", isbi, accept_identical=True)
    assert result.summary[1]["dice"]["n"] == 30 and result.summary[1]["dice"]["min"] == 1.0

    kvasir = real_dataset("kvasir-seg")
    refs = sorted((kvasir / "masks").glob("*.jpg"))[:5]
    for f in refs:  # copies: the shared data is never touched
        shutil.copy(f, tmp_path / f.name)
        raw = np.asarray(Image.open(f))[..., 0]
        write(tmp_path / "preds" / f"{f.stem}.png", raw >= 128)  # a perfect class-index prediction
    (tmp_path / "refs").mkdir()
    for f in refs:
        (tmp_path / f.name).rename(tmp_path / "refs" / f.name)
    result = evaluate(tmp_path / "preds", tmp_path / "refs")
    assert result.settings["reference_mapping"]["mode"] == "threshold"
    assert result.summary[1]["dice"]["mean"] == 1.0


def test_volumes_use_header_spacing_cases_subset_and_empty_rows(tmp_path):
    """3D NIfTI with anisotropic spacing: distances in mm from the headers, the `cases` subset,
    and the missed / spurious / absent rows as documented (never NaN, counted in the summary)."""
    from medseg.evaluation.metrics import case_metrics

    spacing = (3.0, 0.8, 1.2)
    rng = np.random.default_rng(0)
    labels, preds = tmp_path / "labelsTr", tmp_path / "pred"
    ref = np.zeros((12, 20, 16), np.uint8)
    ref[3:8, 4:12, 5:11] = 1
    ref[8:10, 12:16, 3:7] = 2
    pred = np.roll(ref, 1, axis=1)
    pred[rng.random(ref.shape) < 0.01] = 1
    cases = {
        "good": (ref, pred),
        "missed": (ref, np.where(pred == 2, 0, pred)),           # class 2 only in the reference
        "spurious": (np.where(ref == 2, 0, ref), pred),         # class 2 only in the prediction
        "absent": (np.where(ref == 2, 0, ref), np.where(pred == 2, 0, pred)),
        "not_evaluated": (ref, pred),
    }
    for name, (r, p) in cases.items():
        write_volume(labels / f"{name}.nii.gz", r, spacing, dtype=np.uint8)
        if name != "not_evaluated":
            write_volume(preds / f"{name}.nii.gz", p, spacing, dtype=np.uint8)
    result = evaluate(preds, tmp_path, cases=["good", "missed", "spurious", "absent"], num_classes=3,
                      csv_path=tmp_path / "m.csv", json_path=tmp_path / "s.json", tolerance=2.0)
    rows = {(r["case"], r["class"]): r for r in result.rows}
    assert {c for c, _ in rows} == {"good", "missed", "spurious", "absent"}
    want = case_metrics(cases["good"][1], cases["good"][0], 3, spacing, tolerance=2.0)
    for metric in ("dice", "hd95", "assd", "nsd", "lesion_f1", "ref_volume", "rvd"):
        assert rows[("good", 1)][metric] == pytest.approx(want[1][metric]), metric
    assert rows[("good", 1)]["ref_volume"] == pytest.approx(5 * 8 * 6 * 3.0 * 0.8 * 1.2 / 1000)  # mL
    diagonal = float(np.sqrt((12 * 3.0) ** 2 + (20 * 0.8) ** 2 + (16 * 1.2) ** 2))
    assert [rows[(c, 2)]["status"] for c in ("good", "missed", "spurious", "absent")] == \
        ["found", "missed", "spurious", "absent"]
    assert rows[("missed", 2)]["hd95"] == pytest.approx(diagonal) and rows[("missed", 2)]["dice"] == 0.0
    assert rows[("spurious", 2)]["assd"] == pytest.approx(diagonal) and rows[("spurious", 2)]["rvd"] == 1.0
    assert rows[("absent", 2)]["dice"] == 1.0 and rows[("absent", 2)]["hd95"] == 0.0
    assert result.summary[2]["cases"] == {"found": 1, "missed": 1, "spurious": 1, "absent": 1}
    assert result.summary[2]["hd95"]["n"] == 4  # failures stay in the mean
    assert "hd95" not in result.summary[0] and "hd95" not in rows[("good", 0)]
    text = (tmp_path / "m.csv").read_text() + (tmp_path / "s.json").read_text()
    assert "nan" not in text.lower() and "inf" not in text.lower().replace("inferred", "")
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["settings"]["spacing_source"] == "reference headers"
    assert saved["settings"]["volume_unit"] == "mL" and saved["settings"]["nsd_tolerance_mm"] == 2.0
    with pytest.raises(MedsegInputError, match="nope"):
        evaluate(preds, tmp_path, cases=["nope"])
    # an explicit spacing replaces the headers'
    iso = evaluate(preds, tmp_path, cases=["good"], num_classes=3, spacing=(1.0, 1.0, 1.0), lesions=False)
    assert iso.rows[1]["hd95"] == pytest.approx(case_metrics(pred, ref, 3)[1]["hd95"])
    assert "lesion_f1" not in iso.rows[1]
