"""medseg.data.preprocess: a case goes onto the working grid (crop, resample, normalise) and its
prediction comes back onto exactly the original grid.

Background-aware cropping: the crop box excludes each channel's background value (the value its
corner voxels share, else 0), so a brain z-scored with a constant non-zero background (BraTS) is
cropped to the brain, a zero-background case crops exactly as before, and runs saved before the
rule keep the rule they were trained with."""
from __future__ import annotations

import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import torch

import medseg
from helpers import real_dataset, write_volume
from medseg.case import Case
from medseg.runs import load_checkpoint, save_checkpoint
from medseg.data import preprocess
from medseg.data.cache import case_key
from medseg.data.preprocess import Preprocessor, background_values, crop_box, ct_statistics, resize_label, zscore
from medseg.io.volume import read_volume, read_volume_mask
from medseg.inference import Predictor


# ------------------------------------------------------------------------------ grid: crop, resample, restore
def _case() -> Case:
    image = np.zeros((1, 30, 40, 50), np.float32)
    image[0, 5:25, 10:30, 12:40] = np.random.default_rng(0).normal(100, 10, (20, 20, 28))
    label = np.zeros((30, 40, 50), np.uint8)
    label[10:20, 15:25, 20:30] = 1
    label[12:14, 18:20, 31:34] = 2   # a small structure (3 voxels across x, 1.5 after) that must survive
    return Case("c", image, label, spacing=(2.0, 1.0, 0.5))


def test_crop_box_is_the_nonzero_bounding_box():
    case = _case()
    assert crop_box(case.image) == (slice(5, 25), slice(10, 30), slice(12, 40))
    assert crop_box(np.zeros((1, 4, 4, 4))) == (slice(0, 4),) * 3


def test_resample_to_target_spacing_and_restore_to_the_original_grid():
    case = _case()
    pre = Preprocessor(None, (1.0, 1.0, 1.0), crop_nonzero=True, num_classes=3)
    r = pre.resample(case)
    assert tuple(r.image.shape) == (1, 40, 20, 14)   # (20*2, 20*1, 28*0.5)
    assert tuple(r.label.shape) == (40, 20, 14)
    assert set(torch.unique(r.label).tolist()) == {0, 1, 2}
    x = pre.normalise(r.image)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    one_hot = torch.nn.functional.one_hot(r.label.long(), 3).permute(3, 0, 1, 2).float()
    back = pre.restore(one_hot, case.spatial_shape, r.box)
    assert tuple(back.shape) == (3, 30, 40, 50)
    mask = back.argmax(0).numpy()
    outside = np.ones(case.spatial_shape, bool)
    outside[r.box] = False
    assert (mask[outside] == 0).all()
    inter = ((mask == 1) & (case.label == 1)).sum()
    assert 2 * inter / ((mask == 1).sum() + (case.label == 1).sum()) > 0.9


def test_one_hot_label_resampling_keeps_thin_structures():
    label = torch.zeros(20, 20, dtype=torch.uint8)
    label[:, 10] = 1    # a one-pixel line, halved in width by the resampling
    down = resize_label(label, (20, 14), num_classes=2)
    assert (down == 1).any(dim=1).all()


def test_ct_statistics_use_the_foreground_only():
    image = torch.full((1, 10, 10, 10), -1000.0)
    image[0, 2:8, 2:8, 2:8] = torch.linspace(0, 100, 216).reshape(6, 6, 6)
    label = torch.zeros(10, 10, 10, dtype=torch.uint8)
    label[2:8, 2:8, 2:8] = 1
    stats = ct_statistics([image], [label], 0)
    assert stats["scheme"] == "ct" and 0 <= stats["lower"] < 1 and 99 < stats["upper"] <= 100
    assert abs(stats["mean"] - 50) < 1e-6
    pre = Preprocessor(None, None, normalization=[stats])
    assert float(pre.normalise(image).min()) == pytest.approx((stats["lower"] - stats["mean"]) / stats["std"], rel=1e-5)


def test_preprocessor_policy_and_restore():
    pre = Preprocessor(image_size=320)
    assert pre.working_shape((1080, 1350)) == (256, 320)
    assert pre.working_shape((200, 100)) == (200, 100)
    assert Preprocessor(None).working_shape((1080, 1350)) == (1080, 1350)
    probs = torch.softmax(torch.randn(2, 256, 320), 0)
    assert pre.restore(probs, (1080, 1350)).shape == (2, 1080, 1350)
    z = zscore(torch.randn(3, 50, 50) * 7 + 3)
    assert torch.allclose(z.mean((1, 2)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std((1, 2)), torch.ones(3), atol=1e-3)


# ------------------------------------------------------------------------------ background-aware crop
def _object_in_background(shape=(30, 40, 50), background=(-3.6, 1.25), seed=0) -> np.ndarray:
    """(2, *shape): constant non-zero background per channel, noise inside two boxes (one per
    channel, so the crop must take the union)."""
    rng = np.random.default_rng(seed)
    image = np.empty((2,) + shape, np.float32)
    for c, value in enumerate(background):
        image[c] = value
    image[0, 5:20, 10:30, 12:40] = rng.normal(0, 1, (15, 20, 28))
    image[1, 12:25, 8:20, 20:30] = rng.normal(0, 1, (13, 12, 10))
    return image


def test_constant_non_zero_background_crops_to_the_object():
    image = _object_in_background()
    assert background_values(image) == pytest.approx([-3.6, 1.25])
    assert crop_box(image) == (slice(5, 25), slice(8, 30), slice(12, 40))   # union of both channels' boxes
    assert crop_box(torch.from_numpy(image)) == crop_box(image)
    # the old rule (background 0) keeps the whole volume: every voxel is non-zero
    assert crop_box(image, "zero") == (slice(0, 30), slice(0, 40), slice(0, 50))


def test_zero_background_crops_as_before():
    image = np.zeros((1, 30, 40, 50), np.float32)
    image[0, 5:25, 10:30, 12:40] = np.random.default_rng(0).normal(100, 10, (20, 20, 28))
    assert background_values(image) == [0.0]
    assert crop_box(image) == crop_box(image, "zero") == (slice(5, 25), slice(10, 30), slice(12, 40))
    assert crop_box(np.zeros((1, 4, 4, 4))) == (slice(0, 4),) * 3
    assert crop_box(np.full((2, 4, 5, 6), -2.0)) == (slice(0, 4), slice(0, 5), slice(0, 6))  # all background


def test_corners_that_disagree_mean_background_zero():
    image = np.full((1, 10, 12, 14), -1.0, np.float32)
    image[0, 0, 0, 0] = -1.5                      # one corner differs: no shared value, so 0 is background
    assert background_values(image) == [0.0]
    assert crop_box(image) == (slice(0, 10), slice(0, 12), slice(0, 14))
    image[0, 0, 0, 0] = np.nan                    # NaN never agrees with anything
    assert background_values(image) == [0.0]


def test_crop_box_memory_stays_small(monkeypatch):
    """The comparison runs a slab of rows at a time, so its memory is bounded by the slab, not
    by the volume (a bool mask of one 512x512x400 CT channel alone would be 100 MB)."""
    monkeypatch.setattr(preprocess, "CROP_SLAB_VOXELS", 1 << 20)     # 1 MB slabs: 16 rows here
    image = np.full((2, 96, 256, 256), -1000.0, np.float32)   # 50 MB of CT padding
    image[:, 20:70, 40:200, 30:220] = 40.0
    tracemalloc.start()
    try:
        box = crop_box(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert box == (slice(20, 70), slice(40, 200), slice(30, 220))
    assert peak < 3 * (1 << 20)             # one channel's bool mask would be 6.3 MB


def test_resample_and_restore_with_a_non_zero_background():
    image = _object_in_background()
    label = np.zeros(image.shape[1:], np.uint8)
    label[8:15, 12:25, 15:30] = 1
    case = Case("c", image, label, spacing=(2.0, 1.0, 0.5))
    pre = Preprocessor(None, (1.0, 1.0, 1.0), crop_nonzero=True, num_classes=2)
    r = pre.resample(case)
    assert r.box == (slice(5, 25), slice(8, 30), slice(12, 40))
    assert tuple(r.image.shape) == (2, 40, 22, 14)
    one_hot = torch.nn.functional.one_hot(r.label.long(), 2).permute(3, 0, 1, 2).float()
    back = pre.restore(one_hot, case.spatial_shape, r.box)
    assert tuple(back.shape) == (2,) + case.spatial_shape
    outside = np.ones(case.spatial_shape, bool)
    outside[r.box] = False
    assert (back.argmax(0).numpy()[outside] == 0).all()


def test_old_run_dicts_keep_the_zero_rule_and_the_cache_key_follows_the_rule(tmp_path):
    old = {"image_size": None, "target_spacing": [1.0, 1.0, 1.0], "crop_nonzero": True,
           "normalization": [{"scheme": "zscore"}], "num_classes": 3}   # run.json before this rule
    pre_old = Preprocessor.from_dict(old)
    assert pre_old.crop_background == "zero"
    case = Case("c", _object_in_background(), None, spacing=(1.0, 1.0, 1.0))
    assert pre_old.box(case) == (slice(0, 30), slice(0, 40), slice(0, 50))   # what it was trained on
    pre_new = Preprocessor.from_dict({**old, "crop_background": "corners"})
    assert pre_new.box(case) == (slice(5, 25), slice(8, 30), slice(12, 40))
    assert Preprocessor.from_dict(pre_new.to_dict()) == pre_new
    f = tmp_path / "c.nii.gz"
    f.write_bytes(b"x")
    assert case_key([f], pre_old, None) != case_key([f], pre_new, None)
    with pytest.raises(ValueError, match="crop_background"):
        Preprocessor(crop_background="median")


def test_real_brats_case_crops_to_the_brain_and_keeps_every_label():
    case_dir = real_dataset("brats2013-6") / "test" / "brats_2013_pat0001_1"
    flair, _, _ = read_volume(case_dir / "Flair_subtrMeanDivStd.nii.gz")
    t1c, _, _ = read_volume(case_dir / "T1c_subtrMeanDivStd.nii.gz")
    image = np.concatenate([flair, t1c]).astype(np.float32)
    label = read_volume_mask(case_dir / "OTMultiClass.nii.gz")
    assert all(v != 0 for v in background_values(image))      # z-scored: the background is not 0
    box = crop_box(image)
    kept = np.prod([b.stop - b.start for b in box]) / np.prod(label.shape)
    assert kept < 0.5                                          # about 0.35: the brain, not the volume
    inside = np.zeros(label.shape, bool)
    inside[box] = True
    assert (label > 0).any() and not ((label > 0) & ~inside).any()


def _sphere_case(shape=(28, 32, 30), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    inside = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= 8 ** 2
    image = np.full(shape, -2.5, np.float32)          # z-scored brain style: constant non-zero outside
    head = ((zz - centre[0]) ** 2 / 12 ** 2 + (yy - centre[1]) ** 2 / 13 ** 2 + (xx - centre[2]) ** 2 / 12 ** 2) <= 1
    image[head] = rng.normal(0, 0.3, int(head.sum()))
    image[inside] += 2.0
    return image, inside.astype(np.uint8)


def test_predicted_mask_keeps_the_input_geometry_with_a_non_zero_background(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for i in range(3):
        image, label = _sphere_case(seed=i)
        write_volume(data / "images" / f"case{i}.nii.gz", image)
        write_volume(data / "labels" / f"case{i}.nii.gz", label)
    run = medseg.train(data, tmp_path / "run", plan=False, finish=False, epochs=1, features=(4, 8),
                       batch_size=2, patch_size=(16, 16, 16), iterations_per_epoch=1, val_fraction=0.34)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["preprocessor"]["crop_nonzero"] is True and state["preprocessor"]["crop_background"] == "corners"
    inputs = tmp_path / "in"
    inputs.mkdir()
    image, _ = _sphere_case(shape=(26, 34, 29), seed=7)
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    write_volume(inputs / "new.nii.gz", image, (1.3, 1.1, 0.9), origin_xyz=(5.0, -7.0, 11.0), direction=direction)
    pre = Predictor(run, checkpoint="last").pre
    box = crop_box(image[None])
    assert np.prod([b.stop - b.start for b in box]) < 0.8 * image.size   # really cropped
    for name, st in (("new", state), ("old", {**state, "preprocessor": {
            k: v for k, v in state["preprocessor"].items() if k != "crop_background"}})):
        save_checkpoint(st, run / "checkpoints" / "last.pt")   # "old": a run saved before the rule
        out = tmp_path / f"out_{name}"
        medseg.predict(run, inputs, out, checkpoint="last", overlays=False)
        ref, got = nib.load(inputs / "new.nii.gz"), nib.load(out / "new.nii.gz")
        assert got.shape == ref.shape and np.allclose(got.affine, ref.affine, atol=1e-5)
        mask = np.asarray(got.dataobj)
        assert set(np.unique(mask)) <= {0, 1}
        if name == "new":
            outside = np.ones(mask.shape, bool)
            # nibabel's axes are SimpleITK's reversed
            outside[tuple(reversed(box))] = False
            assert (mask[outside] == 0).all()
    assert pre.crop_background == "corners"
