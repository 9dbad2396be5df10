"""3D end to end through the Python functions on real MSD Hippocampus cases: layouts, training,
prediction with the input's geometry and format, DICOM input, evaluation, and every bad-input
check before training."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import medseg
from helpers import HIPPOCAMPUS_CASES, hippocampus_msd, real_dataset
from medseg.errors import MedsegInputError
from medseg.io.layout import describe_dataset, prediction_inputs
from medseg.io.dicom import write_dicom_series

TINY3D = dict(features=(8, 16, 32), batch_size=2, patch_size=(24, 32, 24), iterations_per_epoch=2,
              val_fraction=0.34)
SRC = "msd-hippocampus"


def _image(case: str) -> Path:
    return real_dataset(SRC) / "imagesTr" / f"{case}.nii.gz"


def _label(case: str) -> Path:
    return real_dataset(SRC) / "labelsTr" / f"{case}.nii.gz"


@pytest.fixture(scope="module")
def hippo_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hippo")
    data = hippocampus_msd(root / "data")
    return medseg.train(data, root / "run", epochs=1, **TINY3D)


def test_msd_layout_is_described_from_dataset_json(hippo_small):
    pairs, info = describe_dataset(hippo_small)
    assert info.layout == "msd" and info.channel_names == ["MRI"] and info.num_classes == 3
    assert info.class_names == ["background", "Anterior", "Posterior"]
    assert [p.case_id for p in pairs] == HIPPOCAMPUS_CASES


def test_3d_run_records_volume_settings(hippo_run):
    info = json.loads((hippo_run / "run.json").read_text())
    assert info["dataset"]["layout"] == "msd"
    assert info["preprocessor"]["target_spacing"] == [1.0, 1.0, 1.0]
    assert info["preprocessor"]["crop_nonzero"] is True
    assert info["class_names"] == ["background", "Anterior", "Posterior"]
    assert info["config"]["augment"]["flip_axes"] == [2]   # RAS volumes: numpy axis 2 is left-right
    assert (hippo_run / "checkpoints" / "last.pt").is_file()


def test_prediction_keeps_shape_affine_and_format(hippo_run, tmp_path):
    case = "hippocampus_011"  # not among the training cases
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / f"{case}.nii.gz").symlink_to(_image(case))
    # the same volume as NRRD with an unusual geometry: the mask must come back as NRRD on that grid
    img = sitk.ReadImage(str(_image(case)))
    img.SetSpacing((0.9, 1.1, 1.3))
    img.SetOrigin((5.0, -7.0, 11.0))
    sitk.WriteImage(img, str(inputs / "odd.nrrd"))
    written = medseg.predict(hippo_run, inputs, tmp_path / "out")
    assert sorted(p.name for p in written) == sorted([f"{case}.nii.gz", "odd.nrrd"])
    ref, out = nib.load(_image(case)), nib.load(tmp_path / "out" / f"{case}.nii.gz")
    assert out.shape == ref.shape
    assert np.allclose(out.affine, ref.affine, atol=1e-5)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2}
    odd = sitk.ReadImage(str(tmp_path / "out" / "odd.nrrd"))
    assert odd.GetSize() == img.GetSize() and np.allclose(odd.GetSpacing(), img.GetSpacing())
    assert np.allclose(odd.GetOrigin(), img.GetOrigin()) and np.allclose(odd.GetDirection(), img.GetDirection())
    assert (tmp_path / "out" / "overlays" / f"{case}.png").is_file()
    # evaluation reads volumes back and scores them against the reference labels
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / f"{case}.nii.gz").symlink_to(_label(case))
    (labels / "odd.nii.gz").symlink_to(_label(case))
    # odd.nrrd lies on another grid than its reference: refused, naming it, unless asked to score anyway
    with pytest.raises(MedsegInputError, match=r"odd\.nrrd: voxel spacing .* differs"):
        medseg.evaluate(tmp_path / "out", labels, num_classes=3)
    result = medseg.evaluate(tmp_path / "out", labels, num_classes=3, check_spacing=False)
    assert {r["case"] for r in result.rows} == {case, "odd"}


def test_dicom_series_predicts_to_nifti_on_its_grid(hippo_run, tmp_path):
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(_image("hippocampus_011")))).astype(np.int16)
    series = tmp_path / "dicom" / "patient1"
    write_dicom_series(volume, series, spacing=(1.0, 1.0, 1.5), origin=(1.0, 2.0, 3.0))
    (written,) = medseg.predict(hippo_run, series, tmp_path / "out")
    assert written.name == "patient1.nii.gz"
    mask = sitk.ReadImage(str(written))
    assert mask.GetSize() == volume.shape[::-1]
    assert np.allclose(mask.GetSpacing(), (1.0, 1.0, 1.5), atol=1e-4)
    assert np.allclose(mask.GetOrigin(), (1.0, 2.0, 3.0), atol=1e-4)
    # a folder of series folders: one case per series
    assert [c.case_id for c in prediction_inputs(tmp_path / "dicom")] == ["patient1"]


def _nnunet(dst: Path, cases: list[str], channels: int = 2) -> Path:
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True)
    for case in cases:
        for c in range(channels):
            (dst / "imagesTr" / f"{case}_{c:04d}.nii.gz").symlink_to(_image(case))
        (dst / "labelsTr" / f"{case}.nii.gz").symlink_to(_label(case))
    names = ["T1", "T2", "FLAIR"][:channels]
    (dst / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): n for i, n in enumerate(names)},
        "labels": {"background": 0, "anterior": 1, "posterior": 2},
        "numTraining": len(cases), "file_ending": ".nii.gz"}))
    return dst


def test_nnunet_layout_trains_two_channels_and_checks_them_at_prediction(tmp_path):
    data = _nnunet(tmp_path / "data", HIPPOCAMPUS_CASES[:4])
    pairs, info = describe_dataset(data)
    assert info.layout == "nnunet" and info.channel_names == ["T1", "T2"]
    assert [len(p.image_files) for p in pairs] == [2] * 4
    run = medseg.train(data, tmp_path / "run", epochs=1, **TINY3D)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for c in range(2):
        (inputs / f"hippocampus_011_{c:04d}.nii.gz").symlink_to(_image("hippocampus_011"))
    (written,) = medseg.predict(run, inputs, tmp_path / "out")
    assert written.name == "hippocampus_011.nii.gz"
    (inputs / "hippocampus_011_0001.nii.gz").unlink()
    with pytest.raises(MedsegInputError, match=r"hippocampus_011 has channel files _0000 but the model takes 2.*T1, T2"):
        medseg.predict(run, inputs, tmp_path / "out2")


def _broken(tmp_path: Path, name: str) -> Path:
    data = hippocampus_msd(tmp_path / name)
    return data


def _replace(link: Path, image: sitk.Image | None = None, data: bytes | None = None) -> None:
    link.unlink()
    if image is not None:
        sitk.WriteImage(image, str(link))
    else:
        link.write_bytes(data or b"")


@pytest.mark.parametrize("problem, pattern", [
    ("label_spacing", r"hippocampus_003.nii.gz: label spacing .* differs"),
    ("label_size", r"hippocampus_003.nii.gz: mask size .* differs"),
    ("image_4d", r"hippocampus_003.nii.gz: case hippocampus_003 has 2 channel"),
    ("nan", r"hippocampus_003.nii.gz: holds \d+ NaN"),
    ("empty_label", r"hippocampus_003.nii.gz: file is empty"),
    ("missing_file", r"dataset.json: names 2 file\(s\) that do not exist: .*hippocampus_999"),
])
def test_bad_volume_input_stops_before_training_and_names_the_case(tmp_path, problem, pattern):
    data = hippocampus_msd(tmp_path / "data")
    case = "hippocampus_003"
    image, label = data / "imagesTr" / f"{case}.nii.gz", data / "labelsTr" / f"{case}.nii.gz"
    if problem == "label_spacing":
        lab = sitk.ReadImage(str(_label(case)))
        lab.SetSpacing((1.0, 1.0, 2.0))
        _replace(label, lab)
    elif problem == "label_size":
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(_label(case))))[:-2]
        _replace(label, sitk.GetImageFromArray(arr))
    elif problem == "image_4d":
        ref = nib.load(_image(case))
        data4 = np.stack([np.asarray(ref.dataobj, np.float32)] * 2, axis=-1)
        image.unlink()
        nib.save(nib.Nifti1Image(data4, ref.affine), image)
    elif problem == "nan":
        img = sitk.Cast(sitk.ReadImage(str(_image(case))), sitk.sitkFloat32)
        arr = sitk.GetArrayFromImage(img)
        arr[3, 4, 5] = np.nan
        nan_img = sitk.GetImageFromArray(arr)
        nan_img.CopyInformation(img)
        _replace(image, nan_img)
    elif problem == "empty_label":
        _replace(label, data=b"")
    elif problem == "missing_file":
        desc = json.loads((data / "dataset.json").read_text())
        desc["training"].append({"image": "./imagesTr/hippocampus_999.nii.gz", "label": "./labelsTr/hippocampus_999.nii.gz"})
        (data / "dataset.json").write_text(json.dumps(desc))
    with pytest.raises(MedsegInputError, match=pattern):
        medseg.train(data, tmp_path / "run", epochs=1, **TINY3D)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_preprocessed_cases_are_cached_and_a_changed_setting_rebuilds(hippo_small, tmp_path, monkeypatch):
    from medseg.data.cache import CaseCache
    from medseg.data.preprocess import Preprocessor
    from medseg.io.dataset import validate_dataset
    from medseg.training import load_cases

    pairs, info = describe_dataset(hippo_small)
    mapping = validate_dataset(pairs, info.label_mapping(), info.channels)
    pre = Preprocessor(None, (1.0, 1.0, 1.0), crop_nonzero=True, num_classes=3)
    cache = CaseCache(tmp_path / "cache")
    first, _ = load_cases(pairs, mapping, pre, 1, "x", cache=cache)
    assert (cache.hits, cache.misses) == (0, len(pairs))
    again, labels = load_cases(pairs, mapping, pre, 1, "x", cache=cache)
    assert cache.hits == len(pairs)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    coarse = Preprocessor(None, (2.0, 2.0, 2.0), crop_nonzero=True, num_classes=3)
    small, _ = load_cases(pairs, mapping, coarse, 1, "x", cache=cache)
    assert cache.hits == len(pairs) and cache.misses == 2 * len(pairs)
    assert all(s.shape[1] == round(f.shape[1] / 2) for s, f in zip(small, first))


def test_brats_converts_to_a_two_modality_nnunet_dataset(tmp_path):
    from medseg.io.convert import convert_brats

    out = convert_brats(real_dataset("brats2013-6"), tmp_path / "brats")
    pairs, info = describe_dataset(out)
    assert info.layout == "nnunet" and info.channel_names == ["FLAIR", "T1c"] and info.num_classes == 5
    assert len(pairs) == 4 and len(list((out / "imagesTs").iterdir())) == 4
    assert all(p.image.is_symlink() for p in pairs)
    with pytest.raises(FileExistsError):
        convert_brats(real_dataset("brats2013-6"), out)


def test_cli_convert_and_predict_format(hippo_run, tmp_path, capsys):
    from medseg.cli import main

    assert main(["convert", "brats", str(real_dataset("brats2013-6")), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "dataset.json").is_file()
    assert main(["predict", str(hippo_run), str(_image("hippocampus_011")), "--out", str(tmp_path / "p"),
                 "--format", ".mha", "--no-overlays"]) == 0
    assert (tmp_path / "p" / "hippocampus_011.mha").is_file()
    assert main(["predict", str(hippo_run), str(_image("hippocampus_011")), "--out", str(tmp_path / "q"),
                 "--format", ".xyz"]) == 2
    assert "cannot write masks as .xyz" in capsys.readouterr().err


def test_left_right_axis_follows_the_scan_direction():
    from medseg.data.augment import left_right_axis

    assert left_right_axis((-1, 0, 0, 0, -1, 0, 0, 0, 1)) == 2       # axial, RAS or LPS
    assert left_right_axis((0, 0, 1, 0, 1, 0, -1, 0, 0)) == 0        # i runs along z: x is the slice axis
    assert left_right_axis((0.1, 0.99, 0, 0.99, -0.1, 0, 0, 0, 1)) == 1  # rotated: j runs mostly along x
