"""`medseg predict --uncertainty` keeps its file contract: entropy maps on the mask's grid and
geometry (3D NIfTI from real MSD Hippocampus volumes; 2D float TIFF + PNG heat map), the
per-case table with case/score/flagged, the output manifest; and a run folder from before
calibration still predicts the masks it always did. A tiny run trained here also gets its
RUN/calibration.json and the report's calibration section."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

import medseg
from helpers import hippocampus_msd, real_dataset
from medseg.manifest import read_outputs
from medseg.training.calibrate import calibrate_run

OLD_RUN = Path(__file__).resolve().parents[1] / "golden" / "run_before_restructure"
TINY3D = dict(features=(8, 16, 32), batch_size=2, patch_size=(24, 32, 24), iterations_per_epoch=2,
              val_fraction=0.34)


@pytest.fixture(scope="module")
def hippo_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hippo")
    return medseg.train(hippocampus_msd(root / "data"), root / "run", epochs=1, device="cpu", **TINY3D)


def _rows(out: Path) -> list[dict]:
    with open(out / "uncertainty.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_training_stores_the_calibration_and_the_report_draws_it(hippo_run: Path) -> None:
    record = json.loads((hippo_run / "calibration.json").read_text())
    assert record["ece_bins"] == 15 and 0 <= record["ece_after"] <= 1 and 0 <= record["ece_before"] <= 1
    assert record["temperature"] and record["flag_threshold"] is not None
    assert len(record["cases"]) == len(json.loads((hippo_run / "run.json").read_text())["split"]["val"])
    assert sum(record["reliability_before"]["count"]) == record["voxels"]
    for entry in record["maps"].values():
        assert (hippo_run / "validation" / entry["map"]).is_file()
        assert (hippo_run / "validation" / entry["picture"]).is_file()
    assert "Calibration and uncertainty" in (hippo_run / "report.html").read_text()
    assert record["temperature_choice"] and record["fit"]["choice"]            # the rule's verdict, with reasons
    assert "Why this temperature" in (hippo_run / "report.html").read_text()


def test_the_calibration_reuses_the_validation_probabilities_and_fits_what_a_fresh_pass_fits(
        hippo_run: Path, tmp_path: Path) -> None:
    record = json.loads((hippo_run / "calibration.json").read_text())
    n = len(record["cases"])
    assert record["probabilities"].startswith(f"{n} of {n} cases from the final validation")
    fresh = calibrate_run(shutil.copytree(hippo_run, tmp_path / "run"), overwrite=True, device="cpu")
    assert fresh["probabilities"].startswith(f"0 of {n}")                     # predicted again here
    for key in ("temperature", "ece_before", "ece_after", "flag_threshold", "cases", "fit"):
        assert fresh[key] == record[key], key


def test_volumes_get_float32_entropy_maps_on_the_mask_grid(hippo_run: Path, tmp_path: Path) -> None:
    images = real_dataset("msd-hippocampus") / "imagesTr"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in ("hippocampus_011", "hippocampus_014"):
        (inputs / f"{case}.nii.gz").symlink_to(images / f"{case}.nii.gz")
    out = tmp_path / "out"
    medseg.predict(hippo_run, inputs, out, device="cpu", compile=False, uncertainty=True)
    rows = _rows(out)
    assert [r["case"] for r in rows] == ["hippocampus_011", "hippocampus_014"]
    for row in rows:
        mask = sitk.ReadImage(str(out / f"{row['case']}.nii.gz"))
        entropy = sitk.ReadImage(str(out / "uncertainty" / f"{row['case']}.nii.gz"))
        assert entropy.GetPixelID() == sitk.sitkFloat32
        assert entropy.GetSize() == mask.GetSize()
        assert np.allclose(entropy.GetSpacing(), mask.GetSpacing()) and np.allclose(entropy.GetOrigin(),
                                                                                    mask.GetOrigin())
        assert np.allclose(entropy.GetDirection(), mask.GetDirection())
        values = sitk.GetArrayFromImage(entropy)
        assert values.min() >= 0 and values.max() <= np.log(3) + 1e-4
        assert float(row["score"]) >= 0 and row["flagged"] in ("True", "False")
        assert int(row["members"]) == 1 and "mean_mi" not in row       # volumes: no mirroring by default
        voxels = np.bincount(sitk.GetArrayFromImage(mask).ravel(), minlength=3)
        assert float(row["volume_Anterior"]) == pytest.approx(voxels[1] * np.prod(mask.GetSpacing()) / 1000)
    recorded = read_outputs(out)
    assert {"uncertainty/", "uncertainty.csv", "uncertainty.json"} <= set(recorded)
    table = json.loads((out / "uncertainty.json").read_text())
    assert table["temperature"] == json.loads((hippo_run / "calibration.json").read_text())["temperature"]


def test_pictures_get_a_float_tiff_and_a_heat_map_and_old_runs_predict_the_same_masks(tmp_path: Path) -> None:
    run = shutil.copytree(OLD_RUN, tmp_path / "run", ignore=shutil.ignore_patterns("expected*", "inputs"))
    assert not (run / "calibration.json").exists()
    out = tmp_path / "out"
    medseg.predict(run, OLD_RUN / "inputs", out, device="cpu", compile=False, uncertainty=True)
    plain = tmp_path / "plain"
    medseg.predict(run, OLD_RUN / "inputs", plain, device="cpu", compile=False)
    for name in sorted(p.name for p in (OLD_RUN / "inputs").glob("*.png")):
        stem = name[:-4]
        mask = np.asarray(Image.open(out / name))
        assert np.array_equal(mask, np.asarray(Image.open(plain / name)))   # --uncertainty: the same mask
        entropy = tifffile.imread(out / "uncertainty" / f"{stem}.tiff")
        assert entropy.dtype == np.float32 and entropy.shape == mask.shape
        mi = tifffile.imread(out / "uncertainty" / f"{stem}_mi.tiff")
        assert mi.shape == mask.shape and mi.min() >= 0
        heat = Image.open(out / "uncertainty" / f"{stem}.png")
        assert heat.size == (mask.shape[1], mask.shape[0]) and heat.mode == "RGB"
    rows = _rows(out)
    assert {"case", "score", "flagged", "members", "mean_mi"} <= set(rows[0])
    assert all(r["members"] == "4" and r["flagged"] == "False" for r in rows)   # no threshold stored
    recorded = json.loads((OLD_RUN / "expected_masks.json").read_text())
    for name, expected in recorded["masks"].items():   # the old code's masks, from the uncertainty path
        old = np.asarray(Image.open(OLD_RUN / "expected" / name))
        mask = np.asarray(Image.open(out / name))
        assert np.mean(mask != old) <= 0.005 and hashlib.sha256(old.tobytes()).hexdigest() == expected["sha256"]
