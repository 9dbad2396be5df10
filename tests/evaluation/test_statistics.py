"""medseg.evaluation.statistics: structure sizes from known phantoms (exact volumes from the
spacing a real volume file states), pieces, boxes and intensities; CSV and JSON agree."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from helpers import write_volume
from medseg.evaluation.statistics import structure_statistics, write_statistics
from medseg.io import read_image

SPACING = (2.5, 0.7, 0.9)  # (z, y, x) mm: anisotropic, so an axis mix-up changes the volume


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """(image (1, z, y, x), mask): class 1 a 4x5x6 box (120 voxels, intensity 100 + x), class 2
    two separate 2x2x2 cubes (16 voxels, two pieces, intensity 7), class 3 absent."""
    mask = np.zeros((12, 20, 24), np.uint8)
    image = np.zeros((1, 12, 20, 24), np.float32)
    mask[2:6, 3:8, 4:10] = 1
    image[0] += np.arange(24, dtype=np.float32)[None, None, :] + 100
    mask[8:10, 10:12, 10:12] = 2
    mask[8:10, 15:17, 18:20] = 2
    image[0][mask == 2] = 7
    return image, mask


def test_volume_is_voxels_times_voxel_volume_from_the_file_header(tmp_path):
    image, mask = phantom()
    path = write_volume(tmp_path / "phantom.nii.gz", image[0], SPACING)
    read, spacing, meta = read_image(path)
    rows = structure_statistics("phantom", mask, read, spacing, ["background", "box", "cubes", "absent"],
                                spacing_known="geometry" in meta, channel_names=["CT"])
    box, cubes, absent = rows
    assert [r["class"] for r in rows] == ["box", "cubes", "absent"]  # no background row
    assert box["voxels"] == 120 and cubes["voxels"] == 16 and absent["voxels"] == 0
    assert box["volume_ml"] == pytest.approx(120 * 2.5 * 0.7 * 0.9 / 1000, rel=1e-6)  # 0.189 ml
    assert cubes["volume_ml"] == pytest.approx(16 * 1.575 / 1000, rel=1e-6)
    assert box["components"] == 1 and cubes["components"] == 2 and absent["components"] == 0
    assert box["bbox_first"] == [2, 3, 4] and box["bbox_last"] == [5, 7, 9]
    assert box["bbox_size_mm"] == pytest.approx([4 * 2.5, 5 * 0.7, 6 * 0.9], rel=1e-6)
    xs = np.arange(4, 10) + 100.0
    assert box["CT_mean"] == pytest.approx(xs.mean()) and box["CT_min"] == 104 and box["CT_max"] == 109
    assert box["CT_std"] == pytest.approx(xs.std())
    assert cubes["CT_mean"] == 7 and cubes["CT_std"] == 0
    assert absent["volume_ml"] == 0 and absent["bbox_first"] is None and absent["CT_mean"] is None


def test_components_count_face_connectivity():
    """Two voxels touching only at an edge are two pieces (as the postprocessing counts them)."""
    mask = np.zeros((3, 3, 3), np.uint8)
    mask[0, 0, 0] = mask[0, 1, 1] = 1
    (row,) = structure_statistics("edge", mask, None, (1.0, 1.0, 1.0), ["bg", "fg"])
    assert row["components"] == 2 and "channel0_mean" not in row


def test_2d_pictures_have_pixels_and_no_invented_area():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 2:6] = 1
    image = np.stack([np.full((10, 10), v, np.float32) for v in (10, 20, 30)])
    (picture,) = structure_statistics("p", mask, image, (1.0, 1.0), ["bg", "polyp"], spacing_known=False,
                                      channel_names=["R", "G", "B"])
    assert picture["pixels"] == 12 and picture["area_mm2"] is None and "voxels" not in picture
    assert (picture["R_mean"], picture["G_mean"], picture["B_max"]) == (10, 20, 30)
    (scan,) = structure_statistics("s", mask, image, (0.5, 0.25), ["bg", "polyp"])
    assert scan["area_mm2"] == 12 * 0.125


def test_csv_and_json_agree_and_keep_earlier_cases(tmp_path):
    image, mask = phantom()
    names = ["background", "box", "cubes", "absent"]
    write_statistics(tmp_path, structure_statistics("a", mask, image, SPACING, names))
    write_statistics(tmp_path, structure_statistics("b", mask[::-1], image[:, ::-1], SPACING, names))
    write_statistics(tmp_path, structure_statistics("a", mask, image, SPACING, names))  # a again: replaced
    with open(tmp_path / "statistics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    rows = json.loads((tmp_path / "statistics.json").read_text())["rows"]
    assert sorted((r["case"], r["class"]) for r in table) == sorted((c, n) for c in "ab" for n in names[1:])
    for line, row in zip(table, rows):
        assert (line["case"], line["class"]) == (row["case"], row["class"])
        assert int(line["voxels"]) == row["voxels"]
        assert float(line["volume_ml"]) == row["volume_ml"]  # every digit written: reads back exactly
        assert line["bbox_first"] == ("" if row["bbox_first"] is None else " ".join(map(str, row["bbox_first"])))
