"""Synthetic phantoms: deterministic, well-formed labels, and a dataset folder that reads back exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from medseg.data.synthetic import LESION, MARKER, ORGAN, make_phantom, write_phantom_dataset


def phantom(seed: int, shape=(128, 128)):
    return make_phantom(np.random.default_rng(seed), shape)


def test_same_seed_same_phantom_and_different_seed_differs():
    image_a, label_a = phantom(3)
    image_b, label_b = phantom(3)
    image_c, label_c = phantom(4)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)
    assert not np.array_equal(label_a, label_c)


def test_types_shapes_and_label_values():
    image, label = phantom(0, (96, 112))
    assert image.shape == label.shape == (96, 112)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert np.isfinite(image).all()
    assert set(np.unique(label)) <= {0, ORGAN, LESION}
    assert (label == ORGAN).sum() > 100


def test_lesions_lie_inside_the_organ_and_vary_in_number():
    counts = []
    for seed in range(30):
        _, label = phantom(seed)
        organ_with_lesions = label > 0
        # a lesion never touches background: growing it by one pixel stays within the organ
        grown = ndimage.binary_dilation(label == LESION)
        assert not (grown & ~organ_with_lesions).any()
        assert ndimage.label(organ_with_lesions)[1] == 1  # one solid organ
        counts.append(ndimage.label(label == LESION)[1])
    assert 0 in counts and max(counts) >= 2


def test_organ_is_brighter_than_background_and_lesions_differ_from_organ():
    for seed in range(10):
        image, label = phantom(seed)
        organ = ndimage.binary_erosion(label == ORGAN, iterations=2)
        assert np.median(image[organ]) > np.median(image[label == 0]) + 0.1
        if (label == LESION).sum() > 20:
            lesion = ndimage.binary_erosion(label == LESION)
            assert abs(np.median(image[lesion]) - np.median(image[organ])) > 0.08


def test_a_threshold_alone_does_not_segment_the_organ():
    image, label = phantom(1)
    organ = label > 0
    best = max(
        2 * (m & organ).sum() / (m.sum() + organ.sum())
        for m in (image > t for t in np.quantile(image, np.linspace(0.5, 0.99, 50)))
    )
    assert best < 0.9


def test_3d_phantom():
    image, label = phantom(5, (32, 48, 40))
    assert image.shape == label.shape == (32, 48, 40)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert (label == ORGAN).sum() > 200
    assert set(np.unique(label)) <= {0, ORGAN, LESION}


def test_too_small_shape_is_refused():
    with pytest.raises(ValueError):
        phantom(0, (8, 8))


def test_written_pngs_read_back_identically(tmp_path: Path):
    out = write_phantom_dataset(tmp_path / "phantoms", n_cases=3, shape=(64, 80), seed=7)
    assert (out / "README.txt").read_text().strip()
    images = sorted((out / "images").glob("*.png"))
    labels = sorted((out / "labels").glob("*.png"))
    assert [p.name for p in images] == [p.name for p in labels] == ["case_000.png", "case_001.png", "case_002.png"]
    for i, (image_png, label_png) in enumerate(zip(images, labels)):
        expected_image, expected_label = make_phantom(np.random.default_rng((7, i)), (64, 80))
        with Image.open(label_png) as im:
            assert im.mode == "L"
            np.testing.assert_array_equal(np.asarray(im), expected_label)
        with Image.open(image_png) as im:
            pixels = np.asarray(im)
        assert im.mode == "L" and pixels.shape == (64, 80)
        assert pixels.min() == 0 and pixels.max() == 255
        # the 8-bit image keeps the phantom's ordering of intensities
        assert np.corrcoef(pixels.ravel(), expected_image.ravel())[0, 1] > 0.98


def test_dataset_is_deterministic_and_rerunnable(tmp_path: Path):
    first = write_phantom_dataset(tmp_path / "a", n_cases=2, shape=(48, 48), seed=1)
    second = write_phantom_dataset(tmp_path / "b", n_cases=2, shape=(48, 48), seed=1)
    for sub in ("images", "labels"):
        for name in ("case_000.png", "case_001.png"):
            assert (first / sub / name).read_bytes() == (second / sub / name).read_bytes()
    assert (first / MARKER).exists()
    write_phantom_dataset(first, n_cases=1, shape=(48, 48), seed=1)  # its own output: fine
    assert [p.name for p in (first / "images").iterdir()] == ["case_000.png"]


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path):
    foreign = tmp_path / "my_scans"
    foreign.mkdir()
    (foreign / "precious.nii.gz").write_bytes(b"data")
    with pytest.raises(FileExistsError, match="my_scans"):
        write_phantom_dataset(foreign, n_cases=1)
    assert [p.name for p in foreign.iterdir()] == ["precious.nii.gz"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_phantom_dataset(empty, n_cases=1, shape=(32, 32))  # an empty folder is fine


def test_small_lesion_phantoms_hold_several_separate_small_lesions(tmp_path: Path):
    counts, sizes = [], []
    for i in range(12):
        _, label = make_phantom(np.random.default_rng((7, i)), (128, 128), lesions="small")
        components, n = ndimage.label(label == LESION)
        counts.append(n)
        sizes += list(np.bincount(components.ravel())[1:])
        assert ((label == LESION) <= (ndimage.binary_erosion(label > 0))).all()  # inside the organ
    assert min(counts) >= 1 and max(counts) <= 6 and np.mean(counts) >= 3
    assert 10 <= min(sizes) and max(sizes) <= 80  # a few dozen pixels each
    default = make_phantom(np.random.default_rng((7, 0)), (128, 128))[1]
    assert np.array_equal(default, make_phantom(np.random.default_rng((7, 0)), (128, 128), lesions="mixed")[1])
    with pytest.raises(ValueError, match="lesions must be one of"):
        make_phantom(np.random.default_rng(0), (64, 64), lesions="large")
    test = write_phantom_dataset(tmp_path / "test", 2, (64, 64), seed=7, lesions="small", first_case=1000)
    assert sorted(p.name for p in (test / "labels").iterdir()) == ["case_1000.png", "case_1001.png"]
