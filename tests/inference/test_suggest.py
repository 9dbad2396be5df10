"""medseg.inference.suggest: the ranking rule, the slices of volumes, the CSV and where it may be written.

The ranking tests use a model whose answer is known: a `Predictor` whose probabilities are a
steep threshold of the image (foreground above grey 128), so a bright disc on a dark picture is
predicted with certainty and a patch of grey 128 is a coin toss. Everything after the network
(calibration, entropy, relevant region, case score, flag, sizes, slices, CSV) is medseg's own
code, on real PNG and NIfTI files read by medseg's readers. The command itself runs on a run
trained for one step on such pictures (its ranking means nothing; its file contract does)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import medseg
from helpers import save_picture, write_volume
from medseg.cli import main
from medseg.errors import MedsegInputError
from medseg.inference import Predictor
from medseg.inference.suggest import SUGGESTIONS_CSV, suggest
from medseg.io.layout import DatasetInfo


class ThresholdModel(Predictor):
    """Foreground probability sigmoid((grey - 128) / 4): certain on dark and bright, 0.5 on grey 128."""

    def __init__(self, spatial_dims: int):  # no run folder: only what predict_uncertain and suggest read
        self.in_channels, self.num_classes, self.class_names = 1, 2, ["background", "structure"]
        self.dataset = DatasetInfo("folders")
        self.members = [type("Member", (), {"spatial_dims": spatial_dims})()]
        self.passes, self.postprocessing, self.calibration, self.cases_ahead = 1, None, {}, 0

    def probabilities(self, case, dtype=torch.float32, member_entropy=False):
        fg = torch.sigmoid((torch.from_numpy(case.image[0]).float() - 128.0) / 4.0)
        return torch.stack([1 - fg, fg]).to(dtype)


def disc(shape: tuple[int, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape)
    centre = np.array(shape)[:, None, None] / 2 if len(shape) == 2 else np.array(shape)[:, None, None, None] / 2
    return ((grid - centre) ** 2).sum(0) <= radius ** 2


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_ambiguous_region_ranks_above_a_clean_case_and_empty_cases_last(tmp_path):
    pictures = tmp_path / "unlabelled"
    clean = np.where(disc((64, 64), 12), 220, 30).astype(np.uint8)
    ambiguous = clean.copy()
    ambiguous[4:16, 40:60] = 128                       # a doubtful patch away from the structure
    big_clean = np.where(disc((64, 64), 24), 220, 30).astype(np.uint8)
    for name, image in (("a_clean", clean), ("b_ambiguous", ambiguous), ("c_big_clean", big_clean),
                        ("d_empty", np.full((64, 64), 30, np.uint8))):
        save_picture(pictures / f"{name}.png", image)
    out, ranked = suggest(ThresholdModel(2), pictures, tmp_path / "s.csv", n=None)
    assert [s.case for s in ranked][0] == "b_ambiguous" and ranked[-1].case == "d_empty"
    by_case = {s.case: s for s in ranked}
    assert by_case["b_ambiguous"].score > 100 * max(by_case["a_clean"].score, by_case["c_big_clean"].score)
    assert by_case["d_empty"].score == 0 and by_case["d_empty"].relevant_voxels == 0
    # the score does not grow with the structure: a four times larger certain disc stays near zero
    assert by_case["c_big_clean"].score < 0.01
    table = rows(out)
    assert list(table[0])[:4] == ["rank", "case", "score", "flagged"] and "area_px_structure" in table[0]
    assert [r["rank"] for r in table] == ["1", "2", "3", "4"] and table[0]["case"] == "b_ambiguous"
    assert int(float(table[-2]["area_px_structure"])) == int(disc((64, 64), 24).sum())
    assert "no foreground" in table[-1]["reason"] and "slice" not in table[0]


def test_volumes_list_the_doubtful_axial_slices(tmp_path):
    volume = np.where(disc((20, 32, 32), 8), 220, 30).astype(np.float32)  # (z, y, x)
    volume[12:15, 4:10, 4:10] = 128                                       # doubt in axial slices k = 12..14
    write_volume(tmp_path / "in" / "case_a.nii.gz", volume, (2.0, 1.0, 1.0))
    # the same doubt, in a file whose first index axis i runs head-foot: slices are counted along i
    swapped = np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))         # array (x', y, z'): axial is array axis 2
    write_volume(tmp_path / "in" / "case_b.nii.gz", swapped, direction=(0, 0, 1, 0, 1, 0, 1, 0, 0))
    out, ranked = suggest(ThresholdModel(3), tmp_path / "in", tmp_path / "s.csv", top_slices=3)
    table = {r["case"]: r for r in rows(out)}
    assert table["case_a"]["slice_axis"] == "k (axial)" and table["case_b"]["slice_axis"] == "i (axial)"
    for case in ("case_a", "case_b"):
        assert sorted(int(s) for s in table[case]["slices"].split()) == [12, 13, 14]
        assert int(table[case]["slice"]) == int(table[case]["slices"].split()[0])
    # 2 mm slices: the disc's voxels times 2 / 1000 millilitres
    assert float(table["case_a"]["volume_ml_structure"]) == pytest.approx(int((volume > 128).sum()) * 2 / 1000)


def test_the_command_writes_its_contract_and_never_into_the_input_folder(tmp_path, capsys):
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in range(3):
        image = np.where(disc((48, 48), 6 + 3 * i), 200, 40) + rng.normal(0, 5, (48, 48))
        save_picture(data / "images" / f"c{i}.png", np.clip(image, 0, 255).astype(np.uint8))
        save_picture(data / "labels" / f"c{i}.png", disc((48, 48), 6 + 3 * i).astype(np.uint8))
    run = medseg.train(data, tmp_path / "run", epochs=1, iterations_per_epoch=1, plan=False, finish=False,
                       features=(4, 8), batch_size=2, patch_size=(48, 48), val_fraction=0)
    images = data / "images"
    before = sorted(p.name for p in images.iterdir())
    inside = images / SUGGESTIONS_CSV
    assert main(["suggest", str(run), str(images), "--out", str(inside)]) == 2
    assert str(images.resolve()) in capsys.readouterr().err and not inside.exists()
    with pytest.raises(MedsegInputError, match="inside the input folder"):
        suggest(run, images, images / "sub" / "x.csv")
    out = tmp_path / "ranked.csv"
    assert main(["suggest", str(run), str(images), "--out", str(out), "--n", "2"]) == 0
    table = rows(out)
    assert len(table) == 2 and {"rank", "case", "score", "flagged", "area_px_class1", "reason"} <= set(table[0])
    assert {r["case"] for r in table} <= {"c0", "c1", "c2"} and float(table[0]["score"]) >= float(table[1]["score"])
    assert main(["suggest", str(run), str(images), "--out", str(out)]) == 2           # no --overwrite
    assert "already exists" in capsys.readouterr().err and len(rows(out)) == 2
    assert main(["suggest", str(run), str(images), "--out", str(out), "--overwrite", "--n", "all"]) == 0
    assert len(rows(out)) == 3
    foreign = tmp_path / "notes.csv"
    foreign.write_text("my,own\n1,2\n")
    assert main(["suggest", str(run), str(images), "--out", str(foreign), "--overwrite"]) == 2
    assert foreign.read_text() == "my,own\n1,2\n" and sorted(p.name for p in images.iterdir()) == before
