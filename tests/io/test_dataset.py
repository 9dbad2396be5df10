"""medseg.io.dataset: discovering, validating and reading cases (tmp datasets and real data)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from helpers import real_dataset, save_picture
from medseg.case import Case
from medseg.errors import MedsegInputError
from medseg.io.dataset import CasePair, discover_pairs, natural_key, read_case, validate_dataset
from medseg.io.layout import prediction_inputs
from medseg.io.labels import LabelMapping


def make_dataset(root: Path, stems, *, image_ext=".png", mask_ext=".png", mask_dir="labels", size=(12, 16),
                 levels=(0, 255)) -> Path:
    rng = np.random.default_rng(0)
    for stem in stems:
        save_picture(root / "images" / f"{stem}{image_ext}", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        mask = np.asarray(levels, np.uint8)[rng.integers(0, len(levels), size)]
        save_picture(root / mask_dir / f"{stem}{mask_ext}", mask)
    return root


def snapshot(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def assert_error(excinfo, *fragments):
    message = str(excinfo.value)
    for f in fragments:
        assert str(f) in message, message


# --------------------------------------------------------------------------------- discover

def test_natural_key_orders_numbers_by_value():
    names = ["case10", "case2", "Case1", "10", "9", "a", "case02b"]
    assert sorted(names, key=natural_key) == ["9", "10", "a", "Case1", "case2", "case02b", "case10"]


def test_discover_pairs_natural_order_mixed_extensions_and_ignored_files(tmp_path):
    root = make_dataset(tmp_path / "d", ["10", "2", "1"], image_ext=".jpg", mask_ext=".png", mask_dir="masks")
    (root / "images" / "README.md").write_text("not an image")
    (root / "images" / ".DS_Store").write_bytes(b"\0")
    (root / "images" / "._2.jpg").write_bytes(b"\0")  # macOS resource fork: hidden
    (root / "masks" / "Thumbs.db").write_bytes(b"\0")
    (root / "images" / "extra_folder").mkdir()
    before = snapshot(root)
    pairs = discover_pairs(root)
    assert [p.case_id for p in pairs] == ["1", "2", "10"]
    assert pairs[0] == CasePair("1", root / "images" / "1.jpg", root / "masks" / "1.png")
    assert snapshot(root) == before  # nothing written


def test_discover_without_labels(tmp_path):
    root = tmp_path / "d"
    save_picture(root / "images" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(MedsegInputError) as e:
        discover_pairs(root)
    assert_error(e, root, "labels/")
    assert discover_pairs(root, require_labels=False) == [CasePair("a", root / "images" / "a.png", None)]


def test_discover_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(MedsegInputError) as e:
        discover_pairs(tmp_path / "missing_data")
    assert_error(e, "missing_data", "not found")

    (tmp_path / "no_images").mkdir()
    with pytest.raises(MedsegInputError) as e:
        discover_pairs(tmp_path / "no_images")
    assert_error(e, "no_images", "no images/ folder")

    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    (empty / "images" / "README.txt").write_text("x")
    with pytest.raises(MedsegInputError) as e:
        discover_pairs(empty)
    assert_error(e, "images", "no image files", "README.txt")

    both = make_dataset(tmp_path / "both", ["a"])
    (both / "masks").mkdir()
    with pytest.raises(MedsegInputError) as e:
        discover_pairs(both)
    assert_error(e, "both", "labels/", "masks/")


def test_images_without_masks_are_listed_with_a_count(tmp_path):
    root = make_dataset(tmp_path / "d", ["0"])
    for i in range(1, 13):
        save_picture(root / "images" / f"img{i}.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(MedsegInputError) as e:
        discover_pairs(root)
    assert_error(e, "labels", "12 image(s) have no mask", "img1.png", "img10.png", "and 2 more")
    assert "img12.png" not in str(e.value)  # only the first 10, in natural order


def test_mask_without_image_and_duplicate_stems(tmp_path):
    root = make_dataset(tmp_path / "d", ["a", "b"])
    save_picture(root / "labels" / "ghost.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(MedsegInputError) as e:
        discover_pairs(root)
    assert_error(e, "1 mask(s)", "ghost.png")

    dup = make_dataset(tmp_path / "dup", ["a"])
    save_picture(dup / "images" / "a.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(MedsegInputError) as e:
        discover_pairs(dup)
    assert_error(e, "a.jpg", "a.png", "same name stem")


# --------------------------------------------------------------------------------- validate

def test_validate_returns_the_dataset_mapping(tmp_path):
    assert validate_dataset(discover_pairs(make_dataset(tmp_path / "bin", ["a", "b"]))) == LabelMapping(
        "levels", values=[0, 255])
    three = validate_dataset(discover_pairs(make_dataset(tmp_path / "tri", ["a", "b"], levels=(0, 128, 255))))
    assert three.values == [0, 128, 255]
    idx = validate_dataset(discover_pairs(make_dataset(tmp_path / "idx", ["a", "b"], levels=(0, 1, 2, 3))))
    assert (idx.mode, idx.num_classes) == ("index", 4)


def test_validate_reports_size_mismatch_with_both_files_and_sizes(tmp_path):
    root = make_dataset(tmp_path / "d", ["a", "b"], size=(12, 16))
    save_picture(root / "labels" / "b.png", np.zeros((16, 12), np.uint8))
    with pytest.raises(MedsegInputError) as e:
        validate_dataset(discover_pairs(root))
    assert_error(e, "labels/b.png", "images/b.png", "16x12", "12x16")


def test_validate_reports_unreadable_files_and_collects_problems(tmp_path):
    root = make_dataset(tmp_path / "d", ["a", "b", "c"])
    (root / "labels" / "b.png").write_bytes(b"broken")
    (root / "images" / "c.png").write_bytes(b"also broken")
    before = snapshot(root)
    with pytest.raises(MedsegInputError) as e:
        validate_dataset(discover_pairs(root))
    assert_error(e, "labels/b.png", "images/c.png", "1 more problem")
    assert snapshot(root) == before


def test_validate_refuses_masks_that_are_pictures(tmp_path):
    root = make_dataset(tmp_path / "d", ["a", "b"])
    save_picture(root / "labels" / "b.png", np.random.default_rng(1).integers(0, 256, (12, 16), dtype=np.uint8))
    with pytest.raises(MedsegInputError) as e:
        validate_dataset(discover_pairs(root))
    assert_error(e, "b.png", "not a label mask", "mid-grey")


def test_validate_shows_progress_for_many_files(tmp_path, capsys):
    root = make_dataset(tmp_path / "d", [f"c{i}" for i in range(60)], size=(4, 4))
    validate_dataset(discover_pairs(root))
    assert "checking dataset" in capsys.readouterr().err
    validate_dataset(discover_pairs(root)[:10])
    assert "checking dataset" not in capsys.readouterr().err


# --------------------------------------------------------------------------------- read / list

def test_read_case(tmp_path):
    root = make_dataset(tmp_path / "d", ["a"], image_ext=".jpg", size=(12, 16))
    pair = discover_pairs(root)[0]
    mapping = validate_dataset([pair])
    case = read_case(pair, mapping)
    assert isinstance(case, Case)
    assert case.case_id == "a" and case.image.shape == (3, 12, 16) and case.image.dtype == np.float32
    assert case.image.max() > 1.0  # not normalised
    assert case.label.dtype == np.uint8 and set(np.unique(case.label)) <= {0, 1}
    assert case.spacing == (1.0, 1.0) and case.source == pair.image and case.label_source == pair.label
    assert case.meta["size"] == (12, 16) and case.meta["format"] == "JPEG"
    np.testing.assert_array_equal(read_case(pair).label, case.label)  # mapping inferred from this mask

    with pytest.raises(MedsegInputError) as e:  # a value the dataset mapping does not know
        read_case(pair, LabelMapping("levels", values=[0, 128]))
    assert_error(e, "a.png", "255")

    save_picture(root / "labels" / "a.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(MedsegInputError) as e:
        read_case(pair, mapping)
    assert_error(e, "a.png", "a.jpg", "5x5", "12x16")

    unlabelled = read_case(CasePair("a", pair.image, None))
    assert unlabelled.label is None and unlabelled.image.shape == (3, 12, 16)


def test_prediction_inputs_of_pictures(tmp_path):
    folder = tmp_path / "in"
    for name in ["img10.png", "img2.jpg", "img1.tif", ".hidden.png", "notes.txt"]:
        if name.endswith(".txt"):
            (folder / name).write_text("x")
        else:
            save_picture(folder / name, np.zeros((4, 4), np.uint8))
    assert [c.source.name for c in prediction_inputs(folder)] == ["img1.tif", "img2.jpg", "img10.png"]
    assert [c.case_id for c in prediction_inputs(folder)] == ["img1", "img2", "img10"]
    assert [c.files for c in prediction_inputs(folder / "img2.jpg")] == [(folder / "img2.jpg",)]

    dataset = make_dataset(tmp_path / "d", ["3", "20", "100"])  # a dataset folder: its images/
    assert [c.source.name for c in prediction_inputs(dataset)] == ["3.png", "20.png", "100.png"]

    with pytest.raises(MedsegInputError) as e:
        prediction_inputs(folder / "notes.txt")
    assert_error(e, "notes.txt", "not a supported image")
    (tmp_path / "void").mkdir()
    with pytest.raises(MedsegInputError) as e:
        prediction_inputs(tmp_path / "void")
    assert_error(e, "void", "no image files")
    with pytest.raises(MedsegInputError) as e:
        prediction_inputs(tmp_path / "absent")
    assert_error(e, "absent", "not found")
    save_picture(folder / "img2.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(MedsegInputError) as e:
        prediction_inputs(folder)
    assert_error(e, "img2.jpg", "img2.png")


# --------------------------------------------------------------------------------- real data

def test_isbi2012_membrane():
    root = real_dataset("isbi2012-membrane")
    pairs = discover_pairs(root)
    assert len(pairs) == 30
    assert [p.case_id for p in pairs[:12]] == [str(i) for i in range(12)]  # natural order: 2 before 10
    mapping = validate_dataset(pairs)
    assert (mapping.mode, mapping.values, mapping.num_classes) == ("levels", [0, 255], 2)
    for pair in pairs[:3]:
        case = read_case(pair, mapping)
        assert case.image.shape == (1, 512, 512) and case.label.shape == (512, 512)
        assert set(np.unique(case.label)) == {0, 1}
        assert 0.5 < case.label.mean() < 0.95  # cell interior (255 -> 1) is most of the picture


def test_kvasir_seg_full_validation():
    root = real_dataset("kvasir-seg")
    pairs = discover_pairs(root)
    assert len(pairs) == 1000 and all(p.image.suffix == ".jpg" and p.label.parent.name == "masks" for p in pairs)
    start = time.perf_counter()
    mapping = validate_dataset(pairs)  # reads all 1000 masks once
    seconds = time.perf_counter() - start
    print(f"kvasir-seg validation: {seconds:.1f} s for {len(pairs)} pairs")
    assert seconds < 20  # target < 15 s (about 4 s measured); headroom for shared CPUs
    assert (mapping.mode, mapping.threshold, mapping.num_classes) == ("threshold", 128, 2)
    sizes = set()
    for pair in pairs[::250]:
        case = read_case(pair, mapping)
        assert case.channels == 3 and case.label.shape == case.spatial_shape
        assert set(np.unique(case.label)) <= {0, 1} and case.label.any()
        sizes.add(case.spatial_shape)
    assert len(sizes) > 1  # original resolutions differ
