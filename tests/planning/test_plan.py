"""medseg.planning.fingerprint and .plan: fingerprint -> plan, and the plan's robustness to odd data.

Odd datasets are written as real NIfTI files (helpers.write_volume): very anisotropic spacing, three
cases, a class absent from some cases, and a single huge case. Each is planned and trained for a
couple of steps through the public API, so the plan is shown to produce a network that runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import medseg
from helpers import write_volume
from medseg.cli import main
from medseg.errors import MedsegInputError
from medseg.planning import (PLAN_KEYS, Budget, apply_overrides, compute_fingerprint, divisors, format_plan, make_plan,
                             plan_dataset, read_plan, train_settings, write_plan)

QUICK = dict(epochs=1, iterations_per_epoch=2)


def write_volume_dataset(root: Path, cases: list[tuple[np.ndarray, np.ndarray]], spacing_zyx: tuple[float, ...],
                         modality: str = "MRI", labels: dict | None = None) -> Path:
    """An nnU-Net v2 dataset of real .nii.gz files from (image, label) arrays shaped (z, y, x)."""
    for i, (image, label) in enumerate(cases):
        write_volume(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz", image, spacing_zyx, dtype=np.float32)
        write_volume(root / "labelsTr" / f"case_{i:03d}.nii.gz", label, spacing_zyx, dtype=np.uint8)
    labels = labels or {"background": 0, "organ": 1}
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": modality}, "labels": labels, "numTraining": len(cases), "file_ending": ".nii.gz"}))
    return root


def blob_case(shape: tuple[int, ...], rng: np.random.Generator, classes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with an ellipsoid per class (class k shifted along the last axis)."""
    grid = np.indices(shape).astype(float)
    label = np.zeros(shape, np.uint8)
    for k in range(1, classes + 1):
        centre = [s / 2 for s in shape]
        centre[-1] = shape[-1] * k / (classes + 1)
        radius = [max(1.5, s / 5) for s in shape]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1
        label[inside] = k
    image = rng.normal(0, 1, shape) + 3.0 * label + 10
    return image, label


# ------------------------------------------------------------------------------ real datasets
def test_plan_on_hippocampus_subset_matches_the_hand_tuned_3d_run(hippo_small, tmp_path):
    plan = plan_dataset(hippo_small, Budget("cpu", minutes=20), progress=False)
    assert plan["spatial_dims"] == 3
    assert plan["target_spacing"] == [1.0, 1.0, 1.0]
    assert plan["features"] == [16, 32, 64, 128] and plan["batch_size"] == 2
    assert plan["deep_supervision"] is False  # 3D: not measured here, off
    assert all(p % d == 0 for p, d in zip(plan["patch_size"], divisors(plan["strides"], 3)))
    assert plan["normalization"] == [{"scheme": "zscore"}]
    assert plan["fingerprint"]["cases"] == 6 and plan["fingerprint"]["class_stats"][0]["cases_present"] == 6
    assert set(plan["reasons"]) >= {"patch_size", "batch_size", "target_spacing", "strides", "features", "loss"}
    text = format_plan(plan)
    assert "patch_size" in text and "median voxel size" in text
    # the written plan reads back identical, and is never silently replaced
    path = write_plan(plan, tmp_path / "p.json")
    assert read_plan(path)["patch_size"] == plan["patch_size"]
    with pytest.raises(FileExistsError):
        write_plan(plan, path)


def test_plan_chooses_2d_for_pictures(kvasir_small, isbi_small):
    kvasir = plan_dataset(kvasir_small, Budget("cpu", minutes=20), progress=False)
    assert kvasir["spatial_dims"] == 2 and kvasir["target_spacing"] is None
    assert kvasir["image_size"] == 112          # Kvasir photos are up to ~1900 px wide
    assert all(64 <= p <= 256 for p in kvasir["patch_size"]) and 2 <= kvasir["batch_size"] <= 8
    isbi = plan_dataset(isbi_small, Budget("cpu", minutes=20), progress=False)
    assert isbi["image_size"] is None and isbi["patch_size"] == [256, 256]
    # 2D U-Nets train with deep supervision (measured faster learning); a model without decoder
    # heads does not get it, and TrainConfig receives a real bool either way
    assert kvasir["deep_supervision"] is True and train_settings(kvasir)["deep_supervision"] is True
    fcn = plan_dataset(kvasir_small, Budget("cpu", minutes=20), model="fcn", progress=False)
    assert fcn["deep_supervision"] is False
    old = {k: v for k, v in kvasir.items() if k != "deep_supervision"}  # a plan written before the key
    assert train_settings(old)["deep_supervision"] is False
    # a working grid the user chooses is planned for: the patch fits it instead of the default's
    fp, _, _ = compute_fingerprint(kvasir_small, progress=False)
    small = make_plan(fp, Budget("cpu", minutes=20), image_size=96)
    assert small["image_size"] == 96 and max(small["patch_size"]) <= 96 < max(kvasir["patch_size"])
    assert make_plan(fp, Budget("cpu", minutes=20), image_size="native")["image_size"] is None


def test_budget_shapes_the_plan(hippo_small):
    fp, _, _ = compute_fingerprint(hippo_small, progress=False)
    cpu_short = make_plan(fp, Budget("cpu", minutes=2))
    cpu_long = make_plan(fp, Budget("cpu", minutes=60))
    gpu = make_plan(fp, Budget("cuda", memory_gb=40))
    assert np.prod(cpu_short["patch_size"]) < np.prod(cpu_long["patch_size"])
    assert cpu_short["estimate"]["step_seconds"] < cpu_long["estimate"]["step_seconds"]
    assert gpu["features"][0] == 32 and gpu["epochs"] == 1000 and gpu["minutes"] is None
    # cases that would not fit in memory at full resolution are resampled more coarsely
    cramped = make_plan(fp, Budget("cpu", memory_gb=0.001, minutes=20))
    assert min(cramped["target_spacing"]) > 1.2 and "memory budget" in cramped["reasons"]["target_spacing"]
    assert cramped["estimate"]["dataset_memory_gb"] <= 0.001
    tiny_memory = make_plan(fp, Budget("cuda", memory_gb=0.05))
    assert tiny_memory["estimate"]["memory_gb"] <= gpu["estimate"]["memory_gb"]
    assert np.prod(tiny_memory["patch_size"]) < np.prod(gpu["patch_size"])


# ------------------------------------------------------------------------------ odd data
def test_very_anisotropic_volumes_plan_and_train(tmp_path):
    rng = np.random.default_rng(0)
    cases = [blob_case((8, 48, 48), rng) for _ in range(3)]
    data = write_volume_dataset(tmp_path / "aniso", cases, (5.0, 0.7, 0.7))
    plan = plan_dataset(data, Budget("cpu", minutes=20), progress=False)
    assert plan["fingerprint"]["anisotropy"] > 7
    assert plan["strides"][0] == [1, 2, 2] and plan["kernels"][0] == [1, 3, 3]
    assert plan["poolings_per_axis"][0] < plan["poolings_per_axis"][1]
    run = medseg.train(data, tmp_path / "run", **QUICK)
    state = json.loads((run / "run.json").read_text())
    assert state["model"]["options"]["strides"][0] == [1, 2, 2]
    assert (run / "plan.json").is_file() and state["plan"]["patch_size"] == plan["patch_size"]
    written = medseg.predict(run, data / "imagesTr", tmp_path / "pred", overlays=False)
    mask = sitk.ReadImage(str(written[0]))
    assert mask.GetSpacing() == pytest.approx((0.7, 0.7, 5.0)) and mask.GetSize() == (48, 48, 8)


def test_three_case_dataset_plans_trains_and_cross_validates(tmp_path):
    rng = np.random.default_rng(1)
    data = write_volume_dataset(tmp_path / "three", [blob_case((16, 16, 16), rng) for _ in range(3)], (1, 1, 1))
    plan = plan_dataset(data, Budget("cpu", minutes=5), progress=False)
    assert plan["fingerprint"]["cases"] == 3
    root = medseg.train(data, tmp_path / "cv", folds="all", **QUICK)
    splits = json.loads((root / "splits.json").read_text())
    assert len(splits) == 3 and sorted(c for s in splits for c in s["val"]) == ["case_000", "case_001", "case_002"]
    assert sorted(p.name for p in root.glob("fold_*")) == ["fold_0", "fold_1", "fold_2"]
    assert (root / "postprocessing.json").is_file() and (root / "crossval.json").is_file()
    written = medseg.predict(root, data / "imagesTr", tmp_path / "pred", overlays=False)
    assert len(written) == 3
    # the ensemble's probabilities are the mean of its folds'
    from medseg.io.layout import InputCase
    from medseg.inference import Predictor, read_input_case

    case = read_input_case(InputCase("case_000", (data / "imagesTr" / "case_000_0000.nii.gz",)), 1)
    ensemble = Predictor(root).probabilities(case)
    members = [Predictor(root / f"fold_{k}").probabilities(case) for k in range(3)]
    assert torch.allclose(ensemble, sum(members) / 3, atol=1e-6)
    assert torch.allclose(Predictor(root, folds=[1]).probabilities(case), members[1], atol=1e-6)


def test_class_absent_from_some_cases(tmp_path):
    rng = np.random.default_rng(2)
    cases = [blob_case((16, 24, 24), rng, classes=2) for _ in range(5)]
    for image, label in cases[:3]:
        label[label == 2] = 0          # "lesion" missing in three of five cases
    data = write_volume_dataset(tmp_path / "absent", cases, (1, 1, 1),
                                labels={"background": 0, "organ": 1, "lesion": 2})
    fp, _, _ = compute_fingerprint(data, progress=False)
    lesion = fp.class_summary()[1]
    assert lesion["cases_present"] == 2 and lesion["cases"] == 5
    run = medseg.train(data, tmp_path / "run", val_fraction=0.4, **QUICK)
    spec = json.loads((run / "postprocessing.json").read_text())
    assert [e["class"] for e in spec["evidence"]] == [1, 2]
    assert all(np.isfinite(e["dice_before"]) for e in spec["evidence"])


def test_single_huge_case(tmp_path):
    rng = np.random.default_rng(3)
    image, label = blob_case((128, 224, 224), rng)       # 6.4 M voxels, one case
    data = write_volume_dataset(tmp_path / "huge", [(image, label)], (1, 1, 1))
    plan = plan_dataset(data, Budget("cpu", minutes=20), progress=False)
    assert max(plan["patch_size"]) <= 128 and np.prod(plan["patch_size"]) < 128 * 224 * 224 / 8
    assert plan["estimate"]["steps_in_budget"] >= 1000 or min(plan["patch_size"]) <= 32
    run = medseg.train(data, tmp_path / "run", **QUICK)     # one case: trains without validation
    info = json.loads((run / "run.json").read_text())
    assert info["cases"] == {"train": 1, "val": 0, "val_used_per_epoch": 0}
    assert (run / "checkpoints" / "last.pt").is_file()


# ------------------------------------------------------------------------------ overrides and files
def test_plan_sizes_other_models_to_the_budget(hippo_small):
    fp, _, _ = compute_fingerprint(hippo_small, progress=False)
    unet = make_plan(fp, Budget("cpu", minutes=20))
    vnet = make_plan(fp, Budget("cpu", minutes=20), model="vnet")
    # V-Net's 5x5x5 stages cost several U-Nets: the plan narrows it rather than starve it of steps
    assert vnet["model"] == "vnet" and vnet["features"][0] < unet["features"][0]
    assert vnet["estimate"]["steps_in_budget"] >= 1000 and "narrowed" in vnet["reasons"]["features"]
    swin = make_plan(fp, Budget("cpu", minutes=20), model="swinunetr")
    assert all(p % 32 == 0 for p in swin["patch_size"])        # SwinUNETR's own multiple


def test_overrides_keep_the_network_consistent(hippo_small):
    plan = plan_dataset(hippo_small, Budget("cpu", minutes=20), progress=False)
    changed = apply_overrides(plan, {"patch_size": [32, 32, 32]})
    assert changed["patch_size"] == [32, 32, 32] and changed["reasons"]["patch_size"] == "set by the user"
    assert all(32 % d == 0 for d in divisors(changed["strides"], 3))
    assert len(changed["features"]) == len(changed["strides"]) + 1
    with pytest.raises(ValueError, match="unknown plan key"):
        apply_overrides(plan, {"patchsize": [32, 32, 32]})
    assert set(PLAN_KEYS) >= {"patch_size", "batch_size", "target_spacing", "normalization", "strides"}


def test_edited_plan_with_errors_names_the_file(tmp_path, hippo_small):
    plan = plan_dataset(hippo_small, Budget("cpu", minutes=20), progress=False)
    plan["patch_size"] = [30, 56, 40]        # not a multiple of the pooling
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(MedsegInputError, match="edited.json.*multiple"):
        read_plan(path)
    path.write_text("{not json")
    with pytest.raises(MedsegInputError, match="edited.json"):
        read_plan(path)


def test_cli_plan_then_train_with_edited_plan_and_set(tmp_path, hippo_small, capsys):
    plan_path = tmp_path / "hippo.plan.json"
    assert main(["plan", str(hippo_small), "--out", str(plan_path), "--minutes", "5"]) == 0
    out = capsys.readouterr().out
    assert "patch_size" in out and "batch_size" in out and str(plan_path) in out
    assert main(["plan", str(hippo_small), "--out", str(plan_path)]) == 2      # never silently replaced
    plan = json.loads(plan_path.read_text())
    plan["features"] = [8 * 2**i for i in range(len(plan["features"]))]
    plan_path.write_text(json.dumps(plan))
    run = tmp_path / "run"
    assert main(["train", str(hippo_small), "--out", str(run), "--plan", str(plan_path), "--epochs", "1",
                 "--iterations-per-epoch", "2", "--set", "batch_size=3"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["model"]["options"]["features"] == plan["features"]
    assert info["config"]["batch_size"] == 3 and info["plan"]["reasons"]["batch_size"] == "set by the user"
    assert json.loads((run / "plan.json").read_text())["batch_size"] == 3
