"""Data as published loads: compressed TIFF, GIF and 1-bit PNG masks, 16-bit images, CHASE_DB1's
flat folder with two observers, the Kaggle LGG per-patient folders, and splits that keep the cases
of one patient (or one child) together."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers import real_dataset
from medseg.errors import MedsegInputError
from medseg.io import (
    describe_dataset,
    prediction_inputs,
    read_case,
    read_image,
    read_image_header,
    read_mask,
    validate_dataset,
)
from medseg.io.dataset import CasePair, natural_key
from medseg.io.groups import case_grouping, case_groups, group_cases, grouped_folds, grouped_split, pattern_group
from medseg.io.side_by_side import LABEL_SUFFIXES, normalise_label_suffix
from medseg.training.cases import MAX_VAL_CASES, split_cases
from medseg.training.folds import make_splits

imagecodecs = pytest.importorskip("imagecodecs", reason="compressed TIFFs need imagecodecs (a medseg dependency)")


def chase_image(size: int = 96) -> np.ndarray:
    """A crop of a real CHASE_DB1 fundus photograph, (H, W, 3) uint8."""
    with Image.open(real_dataset("chasedb1") / "Image_05L.jpg") as im:
        return np.asarray(im)[400:400 + size, 450:450 + size + 17].copy()


def chase_vessels(size: int = 96) -> np.ndarray:
    """The same crop of its first observer's 1-bit vessel mask, as 0/1 uint8."""
    with Image.open(real_dataset("chasedb1") / "Image_05L_1stHO.png") as im:
        assert im.mode == "1"
        return np.asarray(im)[400:400 + size, 450:450 + size + 17].astype(np.uint8)


def kvasir_image() -> np.ndarray:
    src = real_dataset("kvasir-seg") / "images" / "cju0qkwl35piu0993l0dewei2.jpg"
    with Image.open(src) as im:
        return np.asarray(im)[100:180, 200:290].copy()


# ----------------------------------------------------------------------------- formats

@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd", "packbits"])
def test_compressed_tiff_images_and_masks_read_back_exactly(tmp_path, compression):
    rgb, vessels = kvasir_image(), chase_vessels()
    tifffile.imwrite(tmp_path / "img.tif", rgb, photometric="rgb", compression=compression)
    tifffile.imwrite(tmp_path / "img_mask.tif", vessels * 255, compression=compression)
    expected = {"lzw": "LZW", "zlib": "ADOBE_DEFLATE", "zstd": "ZSTD", "packbits": "PACKBITS"}[compression]
    with tifffile.TiffFile(tmp_path / "img.tif") as tif:  # really compressed as asked
        assert tif.pages[0].compression.name == expected
    image, spacing, meta = read_image(tmp_path / "img.tif")
    assert image.shape == (3, *rgb.shape[:2]) and spacing == (1.0, 1.0)
    np.testing.assert_array_equal(image, np.moveaxis(rgb, -1, 0).astype(np.float32))
    assert read_image_header(tmp_path / "img.tif")["channels"] == 3
    np.testing.assert_array_equal(read_mask(tmp_path / "img_mask.tif"), vessels * 255)


def test_jpeg_compressed_tiff_is_close_to_its_source(tmp_path):
    rgb = chase_image()
    tifffile.imwrite(tmp_path / "j.tif", rgb, photometric="rgb", compression="jpeg", compressionargs={"level": 95})
    with tifffile.TiffFile(tmp_path / "j.tif") as tif:
        assert tif.pages[0].compression.name == "JPEG"
    image, _, _ = read_image(tmp_path / "j.tif")
    assert image.shape == (3, *rgb.shape[:2])
    diff = np.abs(image - np.moveaxis(rgb, -1, 0).astype(np.float32))
    assert diff.mean() < 3 and image.std() > 10  # lossy, but the picture (not a blank) came back


def test_sixteen_bit_png_and_tiff_images_keep_their_values(tmp_path):
    green = chase_image()[..., 1].astype(np.uint16) * 257  # 0..65535, the full 16-bit range
    assert green.max() > 255
    Image.fromarray(green).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
    tifffile.imwrite(tmp_path / "g16.tif", green, compression="lzw")
    for name in ("g16.png", "g16.tif"):
        image, _, _ = read_image(tmp_path / name)
        assert image.shape == (1, *green.shape)
        np.testing.assert_array_equal(image[0], green.astype(np.float32))
        assert read_image_header(tmp_path / name)["channels"] == 1


def test_gif_masks_and_images(tmp_path):
    vessels = chase_vessels() * 255
    Image.fromarray(vessels).save(tmp_path / "v.gif")
    with Image.open(tmp_path / "v.gif") as im:  # GIF stores a palette, not grey values
        assert im.mode == "P" and set(np.unique(np.asarray(im))) == {0, 1}
    np.testing.assert_array_equal(read_mask(tmp_path / "v.gif"), vessels)

    grey = chase_image()[..., 1]
    Image.fromarray(grey).save(tmp_path / "g.gif")
    image, _, meta = read_image(tmp_path / "g.gif")
    assert image.shape == (1, *grey.shape) and meta["format"] == "GIF"
    np.testing.assert_array_equal(image[0], grey.astype(np.float32))
    assert read_image_header(tmp_path / "g.gif")["channels"] == 1

    three = chase_vessels() * 2
    three[:10] = 1  # classes 0, 1, 2 all used (the encoder drops unused palette entries)
    classes = Image.fromarray(three, mode="P")
    classes.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])  # colour palette: indices are the classes
    classes.save(tmp_path / "c.gif")
    np.testing.assert_array_equal(read_mask(tmp_path / "c.gif"), three)
    assert read_image(tmp_path / "c.gif")[0].shape[0] == 3


def test_one_bit_png_masks_of_chase_read_as_zero_one():
    root = real_dataset("chasedb1")
    for name in ("Image_01L_1stHO.png", "Image_14R_2ndHO.png"):
        with Image.open(root / name) as im:
            assert im.mode == "1"
            truth = np.asarray(im)
        mask = read_mask(root / name)
        assert mask.dtype == np.uint8 and mask.shape == (960, 999)
        np.testing.assert_array_equal(mask, truth.astype(np.uint8))
        assert set(np.unique(mask)) == {0, 1} and 0.03 < mask.mean() < 0.2  # vessels: a few % of the picture


# ----------------------------------------------------------------------------- CHASE_DB1

def test_chase_loads_as_published_with_the_first_observer_by_default():
    root = real_dataset("chasedb1")
    pairs, info = describe_dataset(root)
    assert len(pairs) == 28 and info.layout == "side-by-side" and info.label_suffix == "_1stHO"
    assert pairs[0] == CasePair("Image_01L", root / "Image_01L.jpg", root / "Image_01L_1stHO.png")
    assert [p.case_id for p in pairs[:3]] == ["Image_01L", "Image_01R", "Image_02L"]
    assert all(p.label.name.endswith("_1stHO.png") for p in pairs)
    mapping = validate_dataset(pairs)
    assert mapping.num_classes == 2
    assert {read_image_header(p.image)["channels"] for p in pairs} == {3}
    case = read_case(pairs[7], mapping)
    assert case.image.shape == (3, 960, 999) and set(np.unique(case.label)) == {0, 1}


@pytest.mark.parametrize("choice", ["_2ndHO", "2ndHO", "_2ndho"])
def test_chase_second_observer_is_chosen_with_label_suffix(choice):
    root = real_dataset("chasedb1")
    pairs, info = describe_dataset(root, label_suffix=choice)
    assert len(pairs) == 28 and info.label_suffix == "_2ndHO"
    assert all(p.label == root / f"{p.case_id}_2ndHO.png" for p in pairs)
    first = read_mask(root / "Image_01L_1stHO.png")
    second = read_mask(pairs[0].label)
    assert not np.array_equal(first, second)  # two observers really differ
    again, _ = describe_dataset(root, label_suffix=info.label_suffix)  # a run re-reads the same masks
    assert again == pairs


def test_chase_prediction_inputs_leave_the_masks_out():
    cases = prediction_inputs(real_dataset("chasedb1"))
    assert len(cases) == 28 and all(c.source.suffix == ".jpg" for c in cases)


# ----------------------------------------------------------------------------- Kaggle LGG

def test_lgg_per_patient_folders_load_with_csv_and_readme_ignored():
    root = real_dataset("lgg-kaggle3m-10")
    assert (root / "data.csv").is_file() and (root / "README.md").is_file()
    pairs, info = describe_dataset(root)
    assert len(pairs) == 360 and info.label_suffix == "_mask"
    ids = [p.case_id for p in pairs]
    assert len(set(ids)) == 360 and all(p.case_id == p.image.stem for p in pairs)
    assert ids[:3] == ["TCGA_CS_4941_19960909_1", "TCGA_CS_4941_19960909_2", "TCGA_CS_4941_19960909_3"]
    assert all(p.label.parent == p.image.parent and p.label.name == p.image.stem + "_mask.tif" for p in pairs)
    mapping = validate_dataset(pairs)
    assert mapping.num_classes == 2 and mapping.values == [0, 255]
    case = read_case(next(p for p in pairs if p.case_id == "TCGA_CS_4941_19960909_12"), mapping)
    assert case.image.shape == (3, 256, 256) and set(np.unique(case.label)) <= {0, 1}
    assert len(prediction_inputs(root)) == 360


def link(dst: Path, src: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


def test_side_by_side_rules_and_errors(tmp_path):
    lgg = real_dataset("lgg-kaggle3m-10") / "TCGA_CS_4941_19960909"
    img, mask = lgg / "TCGA_CS_4941_19960909_12.tif", lgg / "TCGA_CS_4941_19960909_12_mask.tif"
    # nested folders repeating a stem: ids get their folder
    for patient in ("p1", "p2"):
        link(tmp_path / "rep" / patient / "slice_1.tif", img)
        link(tmp_path / "rep" / patient / "slice_1_seg.tif", mask)
    (tmp_path / "rep" / "notes.txt").write_text("ignored")
    pairs, info = describe_dataset(tmp_path / "rep")
    assert [p.case_id for p in pairs] == ["p1_slice_1", "p2_slice_1"] and info.label_suffix == "_seg"
    # two recognised suffixes in one dataset: choose one
    link(tmp_path / "two" / "a.tif", img)
    link(tmp_path / "two" / "a_mask.tif", mask)
    link(tmp_path / "two" / "b.tif", img)
    link(tmp_path / "two" / "b_gt.tif", mask)
    with pytest.raises(MedsegInputError, match="several label suffixes.*_mask, _gt"):
        describe_dataset(tmp_path / "two")
    with pytest.raises(MedsegInputError, match=r"b\.tif"):  # chosen _mask: b has none
        describe_dataset(tmp_path / "two", label_suffix="_mask")
    # an own suffix
    link(tmp_path / "own" / "21_training.tif", img)
    link(tmp_path / "own" / "21_training_manual1.tif", mask)
    pairs, info = describe_dataset(tmp_path / "own", label_suffix="manual1")
    assert pairs == [CasePair("21_training", tmp_path / "own" / "21_training.tif",
                              tmp_path / "own" / "21_training_manual1.tif")]
    # a mask without its image names the mask
    link(tmp_path / "orphan" / "a.tif", img)
    link(tmp_path / "orphan" / "a_mask.tif", mask)
    link(tmp_path / "orphan" / "zz_mask.tif", mask)
    with pytest.raises(MedsegInputError) as e:
        describe_dataset(tmp_path / "orphan")
    assert "zz_mask.tif" in str(e.value) and "no image" in str(e.value)
    # images only: the error says what was looked for
    link(tmp_path / "bare" / "a.tif", img)
    with pytest.raises(MedsegInputError, match="no images/ folder.*_mask"):
        describe_dataset(tmp_path / "bare")


def test_label_suffix_is_refused_where_masks_are_named_by_folders(kvasir_small):
    with pytest.raises(MedsegInputError, match="label_suffix"):
        describe_dataset(kvasir_small, label_suffix="_2ndHO")
    assert normalise_label_suffix("mask") == "_mask" and normalise_label_suffix("-manual") == "-manual"
    assert "_mask" in LABEL_SUFFIXES and "_1stHO" in LABEL_SUFFIXES and "_2ndHO" not in LABEL_SUFFIXES


# ----------------------------------------------------------------------------- grouping

def test_lgg_groups_are_its_patient_folders():
    pairs, _ = describe_dataset(real_dataset("lgg-kaggle3m-10"))
    grouping = case_grouping(pairs)
    assert grouping.rule == "folders" and grouping.count == 10
    assert grouping.groups["TCGA_CS_4941_19960909_12"] == "TCGA_CS_4941_19960909"
    assert grouping.describe().startswith("grouping: 10 folders (360 cases)")


def test_chase_groups_both_eyes_of_a_child():
    pairs, _ = describe_dataset(real_dataset("chasedb1"))
    grouping = case_grouping(pairs)
    assert grouping.rule == "pattern" and grouping.count == 14
    groups = grouping.groups
    assert groups["Image_01L"] == groups["Image_01R"] == "Image_01" and groups["Image_02L"] != groups["Image_01L"]
    assert grouping.describe() == "grouping: by name pattern, 14 groups of 28 cases (e.g. Image_01L, Image_01R -> Image_01)"


def test_names_that_are_their_own_group():
    hippo = sorted(p.name[:-7] for p in (real_dataset("msd-hippocampus") / "imagesTr").glob("*.nii.gz"))
    grouping = group_cases(hippo)
    assert grouping.rule == "none" and grouping.count == len(hippo) == 260
    assert grouping.describe() == "grouping: none, each case its own group"
    brats = real_dataset("brats2013-6")
    folders = sorted(d for d in brats.glob("*/*") if d.is_dir())
    grouping = group_cases([d.name for d in folders], folders)  # one case per folder
    assert grouping.rule == "none" and grouping.count == 6
    assert group_cases([f"BraTS2021_{i:05d}" for i in range(20)]).rule == "none"  # one shared prefix: no patient
    kvasir = [p.stem for p in sorted((real_dataset("kvasir-seg") / "images").iterdir())[:200]]
    assert group_cases(kvasir).rule == "none"


def test_name_patterns():
    assert pattern_group("patient004_frame01") == pattern_group("patient004_frame12") == "patient004"
    assert pattern_group("TCGA_CS_4941_19960909_12") == "TCGA_CS_4941_19960909"
    assert pattern_group("hippocampus_001") == "hippocampus_001"
    assert pattern_group("case12_left") == "case12" and pattern_group("Image_01l") == "Image_01l"
    acdc = [f"patient{p:03d}_frame{f:02d}" for p in range(1, 6) for f in (1, 12)]
    grouping = group_cases(acdc)
    assert grouping.rule == "pattern" and grouping.count == 5


# ----------------------------------------------------------------------------- splits

def ungrouped_split(ids: list[str], val_fraction: float | None, seed: int, max_val: int) -> tuple[list, list]:
    """The case-level split medseg made before cases were grouped (kept here as the reference)."""
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = min(max_val, int(round(len(ids) * 0.2))) if val_fraction is None else int(round(len(ids) * val_fraction))
    if (val_fraction is None or val_fraction > 0) and len(ids) >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, len(ids) - 1)
    return (sorted((ids[i] for i in order[n_val:]), key=natural_key),
            sorted((ids[i] for i in order[:n_val]), key=natural_key))


def ungrouped_folds(ids: list[str], folds: int, seed: int) -> list[dict]:
    """The round-robin folds medseg dealt before cases were grouped (the reference)."""
    ids = sorted(ids, key=natural_key)
    order = np.random.default_rng(seed).permutation(len(ids))
    members = [[ids[i] for i in order[f::folds]] for f in range(folds)]
    return [{"train": sorted((c for g in range(folds) if g != f for c in members[g]), key=natural_key),
             "val": sorted(members[f], key=natural_key)} for f in range(folds)]


@pytest.mark.parametrize("dataset", ["msd-hippocampus", "chasedb1"])
def test_singleton_groups_reproduce_the_ungrouped_split_and_folds(dataset):
    pairs, _ = describe_dataset(real_dataset(dataset))
    ids = [p.case_id for p in pairs]
    own = {c: c for c in ids}
    for seed in (0, 1, 7):
        for fraction in (None, 0.0, 0.1, 0.25, 0.9):
            assert grouped_split(ids, own, fraction, seed, MAX_VAL_CASES) == ungrouped_split(ids, fraction, seed,
                                                                                              MAX_VAL_CASES)
        for folds in (2, 5):
            assert grouped_folds(ids, own, folds, seed) == ungrouped_folds(ids, folds, seed)


def test_training_split_is_grouped_and_unchanged_where_every_case_is_its_own_group():
    hippo, _ = describe_dataset(real_dataset("msd-hippocampus"))     # no groups: the split of before
    train, val = split_cases(hippo, None, 0)
    assert ([p.case_id for p in train], [p.case_id for p in val]) == ungrouped_split(
        [p.case_id for p in hippo], None, 0, MAX_VAL_CASES)
    chase, _ = describe_dataset(real_dataset("chasedb1"))            # both eyes of a child on one side
    train, val = split_cases(chase, None, 0)
    child = lambda case: case[:-1]  # noqa: E731  (Image_01L -> Image_01)
    assert {child(p.case_id) for p in train}.isdisjoint({child(p.case_id) for p in val})
    folds = make_splits([p.case_id for p in chase], 5, 0, {p.case_id: child(p.case_id) for p in chase})
    assert all({child(c) for c in f["train"]}.isdisjoint({child(c) for c in f["val"]}) for f in folds)


def test_grouped_split_and_folds_keep_patients_together():
    pairs, _ = describe_dataset(real_dataset("lgg-kaggle3m-10"))
    ids, groups = [p.case_id for p in pairs], case_groups(pairs)
    for seed in range(4):
        train, val = grouped_split(ids, groups, None, seed, 50)
        assert sorted(train + val) == sorted(ids) and val and train
        assert not {groups[c] for c in train} & {groups[c] for c in val}
        assert 20 <= len(val) <= 80  # about 50 cases: whole patients of about 36 slices
    folds = grouped_folds(ids, groups, 5, 0)
    seen = [g for f in folds for g in {groups[c] for c in f["val"]}]
    assert sorted(seen) == sorted(set(groups.values()))  # each patient validated in exactly one fold
    for f in folds:
        assert not {groups[c] for c in f["train"]} & {groups[c] for c in f["val"]}
        assert 50 <= len(f["val"]) <= 100
    with pytest.raises(ValueError, match="10 groups cannot make 11 folds"):
        grouped_folds(ids, groups, 11, 0)
    chase, _ = describe_dataset(real_dataset("chasedb1"))
    chase_groups = case_groups(chase)
    train, val = grouped_split([p.case_id for p in chase], chase_groups, 0.25, 3)
    assert len(val) % 2 == 0 and not {chase_groups[c] for c in train} & {chase_groups[c] for c in val}
