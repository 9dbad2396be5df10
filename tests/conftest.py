"""Shared fixtures: the real datasets beside the checkout, and small datasets linked from them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_ROOT = Path(os.environ.get("MEDSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests keep their preprocessed-case cache to themselves, never in the user's ~/.cache."""
    old = os.environ.get("MEDSEG_CACHE")
    os.environ["MEDSEG_CACHE"] = str(tmp_path_factory.mktemp("medseg_cache"))
    yield
    if old is None:
        os.environ.pop("MEDSEG_CACHE", None)
    else:
        os.environ["MEDSEG_CACHE"] = old


def real_dataset(name: str) -> Path:
    path = DATA_ROOT / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name} not found under {DATA_ROOT} (set MEDSEG_DATA)")
    return path


def link_subset(src: Path, dst: Path, stems: list[str], image_dir: str = "images", label_dir: str = "labels") -> Path:
    """A dataset folder holding symlinks to some cases of a real dataset (never copies data)."""
    (dst / "images").mkdir(parents=True)
    (dst / "labels").mkdir(parents=True)
    for stem in stems:
        for sub, out in ((image_dir, "images"), (label_dir, "labels")):
            match = next((src / sub).glob(f"{stem}.*"))
            (dst / out / match.name).symlink_to(match)
    return dst


@pytest.fixture
def isbi_small(tmp_path: Path) -> Path:
    return link_subset(real_dataset("isbi2012-membrane"), tmp_path / "isbi_small", ["0", "1", "2", "3", "4"])


@pytest.fixture
def kvasir_small(tmp_path: Path) -> Path:
    src = real_dataset("kvasir-seg")
    stems = sorted(p.stem for p in (src / "images").iterdir())[:6]
    return link_subset(src, tmp_path / "kvasir_small", stems, "images", "masks")


HIPPOCAMPUS_CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006",
                     "hippocampus_007", "hippocampus_008"]


def hippocampus_msd(dst: Path, cases: list[str] = HIPPOCAMPUS_CASES) -> Path:
    """An MSD folder (dataset.json + imagesTr/labelsTr symlinks) with some hippocampus cases."""
    import json

    src = real_dataset("msd-hippocampus")
    desc = json.loads((src / "dataset.json").read_text())
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True)
        for case in cases:
            (dst / sub / f"{case}.nii.gz").symlink_to(src / sub / f"{case}.nii.gz")
    desc["training"] = [e for e in desc["training"] if Path(e["image"]).name[:-7] in cases]
    desc["numTraining"] = len(desc["training"])
    (dst / "dataset.json").write_text(json.dumps(desc))
    return dst


@pytest.fixture
def hippo_small(tmp_path: Path) -> Path:
    return hippocampus_msd(tmp_path / "hippo_small")


def crash_after_first_epoch(monkeypatch, train) -> None:
    """Call `train()` with the trainer dying right after its first epoch's checkpoint and log
    row, as a killed process would; the trainer is whole again afterwards."""
    from medseg.training import Trainer

    original_log = Trainer.log

    def crash(self, row):
        original_log(self, row)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(Trainer, "log", crash)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(Trainer, "log", original_log)
