"""`medseg evaluate` for the first minutes (medseg.evaluation.evaluate through the command): a few
predictions scored against a whole label folder (--only-predicted, --cases), class names from the
dataset.json beside the references or from the run, on real MSD Hippocampus labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from helpers import hippocampus_msd, write_volume
from reliability_helpers import medseg


def _one_prediction(data: Path, out: Path, case: str = "hippocampus_003") -> Path:
    """A prediction of one case: its real label with the posterior part dropped (a real mistake,
    not a copy), on the label's grid."""
    label_file = data / "labelsTr" / f"{case}.nii.gz"
    label = sitk.ReadImage(str(label_file))
    array = sitk.GetArrayFromImage(label).astype(np.uint8)
    array[array == 2] = 0
    write_volume(out / f"{case}.nii.gz", array, tuple(reversed(label.GetSpacing())), origin_xyz=label.GetOrigin(),
                 direction=label.GetDirection())
    return out


def test_a_few_predictions_against_a_whole_label_folder(tmp_path: Path, capsys):
    data = hippocampus_msd(tmp_path / "msd")
    pred = _one_prediction(data, tmp_path / "pred")
    line = medseg(capsys, "evaluate", pred, data / "labelsTr").one_error_line()
    assert "5 reference mask(s) have no prediction here" in line and "--only-predicted" in line

    assert medseg(capsys, "evaluate", pred, data / "labelsTr", "--only-predicted", "--no-distances").code == 0
    result = json.loads((pred / "evaluation.json").read_text())
    assert result["settings"]["cases"] == 1
    # the names dataset.json gives its classes, not class1 / class2
    assert result["settings"]["class_names"] == ["background", "Anterior", "Posterior"]
    assert result["summary"]["1"]["dice"]["mean"] == 1.0 and result["summary"]["2"]["dice"]["mean"] == 0.0

    assert medseg(capsys, "evaluate", pred, data / "labelsTr", "--cases", "hippocampus_003", "--no-distances",
                  "--overwrite", "--json", tmp_path / "named.json").code == 0
    assert json.loads((tmp_path / "named.json").read_text())["settings"]["cases"] == 1


def test_class_names_from_the_run(tmp_path: Path, capsys):
    data = hippocampus_msd(tmp_path / "msd")
    pred = _one_prediction(data, tmp_path / "pred")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"medseg_run": 1, "class_names": ["background", "head", "tail"]}))
    outcome = medseg(capsys, "evaluate", pred, data / "labelsTr", "--only-predicted", "--no-distances", "--run", run)
    assert outcome.code == 0 and "head" in outcome.out and "tail" in outcome.out
    assert json.loads((pred / "evaluation.json").read_text())["settings"]["class_names"] == ["background", "head", "tail"]
