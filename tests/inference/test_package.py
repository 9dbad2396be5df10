"""medseg.inference.package: `medseg export RUN --package` and `medseg predict PACKAGE`: the same
masks as the run, a model card and a manifest; a flipped byte, a truncated zip, an added file or a
checkpoint holding a pickled object is refused before anything is loaded, naming the package."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import medseg  # noqa: F401
from helpers import hippocampus_msd, raises_naming
from medseg.cli import main
from medseg.inference import Predictor
from medseg.inference.package import MANIFEST, read_package

TINY = dict(features=(4, 8, 16), batch_size=2, patch_size=(24, 32, 24), iterations_per_epoch=2, val_fraction=0.25,
            device="cpu")
CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run, package, data): a tiny hippocampus run and its package, with an intended-use card."""
    root = tmp_path_factory.mktemp("package")
    data = hippocampus_msd(root / "data", CASES)
    run = medseg.train(data, root / "run", epochs=1, plan=False, finish=False, **TINY)
    card = root / "card.txt"
    card.write_text("Research only: adult hippocampus MR, 1 mm. Not for clinical decisions.")
    package = root / "hippo.medseg.zip"
    assert main(["export", str(run), "--package", str(package), "--card", str(card)]) == 0
    return run, package, data


def masks(folder) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*.nii.gz"))}


def test_package_predicts_the_same_masks_as_its_run(exported, tmp_path):
    run, package, data = exported
    images = data / "imagesTr"
    for source, out in ((run, tmp_path / "from_run"), (package, tmp_path / "from_package")):
        assert main(["predict", str(source), str(images), "--out", str(out), "--device", "cpu", "--no-overlays"]) == 0
    from_run, from_package = masks(tmp_path / "from_run"), masks(tmp_path / "from_package")
    assert len(from_run) == len(CASES) and from_run.keys() == from_package.keys()
    for name in from_run:
        np.testing.assert_array_equal(from_run[name], from_package[name])
    assert (tmp_path / "from_run" / "statistics.csv").read_text() == (tmp_path / "from_package" / "statistics.csv").read_text()


def test_package_holds_card_manifest_and_weights_only(exported):
    run, package, _ = exported
    files = read_package(package)
    assert {"checkpoints/best.pt", "run.json", "package.json", "MODEL_CARD.md"} <= set(files)
    with zipfile.ZipFile(package) as z:
        listed = dict(line.split("  ")[::-1] for line in z.read(MANIFEST).decode().splitlines())
    assert listed == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    card = files["MODEL_CARD.md"].decode()
    assert "Research only: adult hippocampus MR" in card and f"torch {torch.__version__}" in card
    meta = json.loads(files["package.json"])
    info = json.loads((run / "run.json").read_text())
    assert meta["class_names"] == info["class_names"] and meta["channel_names"] == ["MRI"]
    assert meta["label_mapping"] == info["label_mapping"] and meta["preprocessing"] == info["preprocessor"]
    state = torch.load(io.BytesIO(files["checkpoints/best.pt"]), weights_only=True)
    assert "optimiser" not in state and "torch_rng" not in state  # prediction's needs only
    assert json.loads(files["run.json"])["data"] == "data"  # the folder's name, not where it was
    with pytest.raises(FileExistsError):
        medseg.api.export_package(run, package)


def test_flipped_byte_is_refused_naming_the_package(exported, tmp_path, capsys):
    _, package, data = exported
    damaged = tmp_path / "damaged.medseg.zip"
    raw = bytearray(package.read_bytes())
    with zipfile.ZipFile(package) as z:
        info = z.getinfo("checkpoints/best.pt")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0x01
    damaged.write_bytes(bytes(raw))
    with raises_naming(damaged, "refused"):
        read_package(damaged)
    code = main(["predict", str(damaged), str(data / "imagesTr"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "damaged.medseg.zip" in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_truncated_or_extended_package_is_refused(exported, tmp_path):
    _, package, _ = exported
    truncated = tmp_path / "cut.medseg.zip"
    truncated.write_bytes(package.read_bytes()[: package.stat().st_size * 2 // 3])
    with raises_naming(truncated, "truncated or damaged"):
        Predictor(truncated, device="cpu")
    extended = shutil.copy(package, tmp_path / "extra.medseg.zip")
    with zipfile.ZipFile(extended, "a") as z:
        z.writestr("hook.py", "print('hello')")
    with raises_naming(extended, "not in its manifest"):
        read_package(extended)


class Payload:
    """Stands for an object whose unpickling would run code."""


def test_a_checkpoint_with_a_pickled_object_is_refused_even_with_a_valid_manifest(exported, tmp_path):
    _, package, _ = exported
    files = read_package(package)
    state = torch.load(io.BytesIO(files["checkpoints/best.pt"]), weights_only=True)
    state["extra"] = Payload()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files["checkpoints/best.pt"] = buffer.getvalue()
    forged = tmp_path / "forged.medseg.zip"
    with zipfile.ZipFile(forged, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(MANIFEST, "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items())))
    read_package(forged)  # the manifest fits ...
    with raises_naming(forged, "more than weights"):  # ... but the loader runs nothing
        Predictor(forged, device="cpu")


def test_model_card_summarises_the_plan_fingerprint():
    from pathlib import Path

    from medseg.inference.package import _fingerprint_lines

    plan = json.loads((Path(__file__).resolve().parents[1] / "golden" / "3d" / "plan.json").read_text())
    lines = "\n".join(_fingerprint_lines(plan, {}))
    fp = plan["fingerprint"]
    assert f"{fp['cases']} cases, 3D" in lines and "channels MRI" in lines
    assert "class 1 Anterior: present in" in lines and f"median spacing {fp['median_spacing']}" in lines
