"""Bad input a user can hand medseg: each one ends in one line naming the file and the problem,
exit code 2, no traceback, and the user's files unchanged (checksums before and after).

Every case is built from copies of ../shared/data and runs the public command.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from helpers import real_dataset
from reliability_helpers import checksums, copy_hippocampus, copy_isbi, medseg

TRAIN_FAST = ("--epochs", "1", "--no-plan", "--features", "8,16", "--patch-size", "32x32", "--batch-size", "1",
              "--iterations-per-epoch", "1")


def _train_refused(capsys, data: Path, out: Path, *, naming: Path, saying: str) -> None:
    before = checksums(data)
    line = medseg(capsys, "train", data, "--out", out, *TRAIN_FAST).one_error_line()
    assert str(naming) in line and saying in line, line
    assert checksums(data) == before
    assert not out.exists()  # refused before anything was written


def _rewrite_volume(src: Path, dst: Path, change) -> None:
    """A copy of a volume with its array changed by `change(array) -> array` (same geometry)."""
    image = sitk.ReadImage(str(src))
    out = sitk.GetImageFromArray(change(sitk.GetArrayFromImage(image)))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(dst))


def test_train_on_mixed_2d_and_3d(tmp_path, capsys):
    data = copy_isbi(tmp_path / "data", ("0", "1", "2"))
    hippo = copy_hippocampus(tmp_path / "hippo", ["hippocampus_001"])
    for sub in ("images", "labels"):
        shutil.copy(hippo / sub / "hippocampus_001.nii.gz", data / sub)
    _train_refused(capsys, data, tmp_path / "run", naming=data / "images" / "hippocampus_001.nii.gz",
                   saying="is 3D (35x51x35) but")


def test_train_on_single_pixel_images(tmp_path, capsys):
    data = tmp_path / "data"
    for sub in ("images", "labels"):
        (data / sub).mkdir(parents=True)
    isbi = copy_isbi(tmp_path / "isbi", ("0",))
    pixel = np.asarray(Image.open(isbi / "images" / "0.png"))[:1, :1]
    for i in range(3):
        Image.fromarray(pixel).save(data / "images" / f"{i}.png")
        Image.fromarray((pixel > 128).astype(np.uint8)).save(data / "labels" / f"{i}.png")
    _train_refused(capsys, data, tmp_path / "run", naming=data / "images" / "0.png", saying="single pixel (1x1)")


def test_train_on_float64_beyond_float32(tmp_path, capsys):
    data = copy_hippocampus(tmp_path / "data", ["hippocampus_001", "hippocampus_003"])
    bad = data / "images" / "hippocampus_003.nii.gz"

    def huge(a):
        a = a.astype(np.float64)
        a[0, 0, 0] = 1e300
        return a

    _rewrite_volume(bad, bad, huge)
    _train_refused(capsys, data, tmp_path / "run", naming=bad, saying="beyond the float32 range")


def test_nan_in_a_mask_is_an_error_not_background(tmp_path, capsys):
    """SimpleITK reads NaN in a NIfTI as 0: the mask would have trained as background."""
    data = copy_hippocampus(tmp_path / "data", ["hippocampus_001", "hippocampus_003"])
    bad = data / "labels" / "hippocampus_001.nii.gz"

    def nan_for_class_1(a):
        a = a.astype(np.float32)
        a[a == 1] = np.nan
        return a

    _rewrite_volume(bad, bad, nan_for_class_1)
    _train_refused(capsys, data, tmp_path / "run", naming=bad, saying="NaN")


def test_train_on_an_empty_image_file(tmp_path, capsys):
    data = copy_isbi(tmp_path / "data", ("0", "1", "2"))
    (data / "images" / "1.png").write_bytes(b"")
    _train_refused(capsys, data, tmp_path / "run", naming=data / "images" / "1.png", saying="")


def test_2d_image_to_a_3d_model_and_the_reverse(run2d, run3d, tmp_path, capsys):
    picture = copy_isbi(tmp_path / "isbi", ("0",)) / "images" / "0.png"
    volume = copy_hippocampus(tmp_path / "hippo", ["hippocampus_007"]) / "images" / "hippocampus_007.nii.gz"
    before = checksums(picture, volume, run2d, run3d)
    for run, image, saying in ((run3d, picture, "is a 2D image (512x512) but the model segments 3D volumes"),
                               (run2d, volume, "is a 3D volume (40x47x34) but the model segments 2D images")):
        out = tmp_path / f"pred_{run.parent.name}"
        line = medseg(capsys, "predict", run, image, "--out", out, "--no-compile").one_error_line()
        assert f"{image}: {saying}" in line
        assert not out.exists()  # no empty output folder left behind
    assert checksums(picture, volume, run2d, run3d) == before


def test_predict_checks_every_input_before_writing(run2d, tmp_path, capsys):
    """A file cut short after a good header, in the middle of a folder: nothing is written
    (the issue saw predict stop halfway, after writing some masks)."""
    images = copy_isbi(tmp_path / "data") / "images"
    cut = images / "3.png"
    cut.write_bytes(cut.read_bytes()[:20000])
    before = checksums(images)
    pred = tmp_path / "pred"
    line = medseg(capsys, "predict", run2d, images, "--out", pred, "--no-compile").one_error_line()
    assert str(cut) in line
    assert not pred.exists() and checksums(images) == before


def test_keep_going_predicts_the_rest_and_lists_the_bad(run2d, tmp_path, capsys):
    images = copy_isbi(tmp_path / "data") / "images"
    cut, empty = images / "3.png", images / "1.png"
    cut.write_bytes(cut.read_bytes()[:20000])
    empty.write_bytes(b"")
    before = checksums(images)
    pred = tmp_path / "pred"
    outcome = medseg(capsys, "predict", run2d, images, "--out", pred, "--keep-going", "--no-compile")
    assert outcome.code == 2 and "Traceback" not in outcome.err
    assert "2 of 5 input(s) could not be predicted" in outcome.err
    assert f"\n  {empty}: " in outcome.err and f"\n  {cut}: " in outcome.err
    assert sorted(p.name for p in pred.glob("*.png")) == ["0.png", "2.png", "4.png"]
    assert checksums(images) == before


def test_grey_model_given_a_colour_picture(run2d, tmp_path, capsys):
    kvasir = sorted((real_dataset("kvasir-seg") / "images").glob("*.jpg"))
    picture = Path(shutil.copy(kvasir[0], tmp_path / kvasir[0].name))
    line = medseg(capsys, "predict", run2d, picture, "--out", tmp_path / "pred", "--no-compile").one_error_line()
    assert f"{picture}: has 3 channel(s) but the model was trained on 1" in line


def _prediction_at_other_spacing(data: Path, pred: Path, spacing: tuple[float, float, float]) -> Path:
    """The reference masks saved again with another voxel spacing: same shape, other grid."""
    pred.mkdir()
    for ref in (data / "labels").iterdir():
        image = sitk.ReadImage(str(ref))
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(pred / ref.name))
    return pred


def test_evaluate_refuses_another_spacing(tmp_path, capsys):
    """The issue's case: a 2 mm prediction scored against a 1 mm reference without a word."""
    data = copy_hippocampus(tmp_path / "data", ["hippocampus_001"])
    pred = _prediction_at_other_spacing(data, tmp_path / "pred", (2.0, 2.0, 2.0))
    before = checksums(data, pred)
    line = medseg(capsys, "evaluate", pred, data / "labels").one_error_line()
    assert f"{pred / 'hippocampus_001.nii.gz'}: voxel spacing 2x2x2 mm differs from the reference's 1x1x1 mm" in line
    assert "--accept-spacing" in line and checksums(data, pred) == before
    with pytest.warns(UserWarning, match="scored on the reference's spacing"):
        accepted = medseg(capsys, "evaluate", pred, data / "labels", "--accept-spacing")
    assert accepted.code == 0 and (pred / "evaluation.json").is_file()


def test_evaluate_never_replaces_an_earlier_evaluation(tmp_path, capsys):
    data = copy_hippocampus(tmp_path / "data", ["hippocampus_001"])
    pred = _prediction_at_other_spacing(data, tmp_path / "pred", (1.0, 1.0, 1.0))
    assert medseg(capsys, "evaluate", pred, data / "labels").code == 0
    before = checksums(pred)
    line = medseg(capsys, "evaluate", pred, data / "labels", "--no-distances").one_error_line()
    assert f"{pred / 'evaluation.csv'}: an earlier evaluation is there; use --overwrite" in line
    assert checksums(pred) == before
    assert medseg(capsys, "evaluate", pred, data / "labels", "--no-distances", "--overwrite").code == 0
    assert checksums(pred) != before


def test_missing_input_and_debug_traceback(run2d, tmp_path, capsys, monkeypatch):
    """One line by default; the traceback with --debug or MEDSEG_DEBUG=1 (here: the exception
    leaves `main`, as it does for the interpreter)."""
    from medseg.errors import MedsegInputError

    missing = tmp_path / "no_such_image.png"
    line = medseg(capsys, "predict", run2d, missing, "--out", tmp_path / "pred").one_error_line()
    assert f"{missing}: not found" in line
    with pytest.raises(MedsegInputError, match="no_such_image"):
        medseg(capsys, "predict", run2d, missing, "--out", tmp_path / "pred", "--debug")
    monkeypatch.setenv("MEDSEG_DEBUG", "1")
    with pytest.raises(MedsegInputError, match="no_such_image"):
        medseg(capsys, "predict", run2d, missing, "--out", tmp_path / "pred")
