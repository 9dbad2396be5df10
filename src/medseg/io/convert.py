"""Turn datasets published in their own layout into one medseg trains on (nnU-Net v2 layout).

`convert_brats` handles the BraTS 2013 folders in ``../shared/data/brats2013-6``: one folder
per case (under ``train/``, ``validation/``, ``test/``) holding ``Flair*.nii.gz``,
``T1c*.nii.gz``, ``OTMultiClass.nii.gz`` (labels 0-4) and ``brainmask.nii.gz``. The result:

    OUT/dataset.json                    channel_names FLAIR, T1c; labels 0..4; file_ending .nii.gz
    OUT/imagesTr/CASE_0000.nii.gz       FLAIR   (train/ and validation/ cases)
    OUT/imagesTr/CASE_0001.nii.gz       T1c
    OUT/labelsTr/CASE.nii.gz            OTMultiClass
    OUT/imagesTs/, OUT/labelsTs/        the same for test/ cases (for predict + evaluate)

Files are linked (symlinks to the originals), not copied, unless ``copy=True``; the source is
never written. The channel order in dataset.json is the order `medseg predict` will demand.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from medseg.errors import MedsegInputError
from medseg.io.dataset import natural_key

from ..atomic import write_text

__all__ = ["convert_brats", "BRATS_LABELS", "BRATS_CHANNELS"]

BRATS_CHANNELS = (("FLAIR", "Flair"), ("T1c", "T1c"))   # (channel name, file-name prefix)
BRATS_LABELS = {"background": 0, "necrosis": 1, "oedema": 2, "non-enhancing": 3, "enhancing": 4}
BRATS_LABEL_FILE = "OTMultiClass"
_SPLITS = {"train": "Tr", "validation": "Tr", "test": "Ts"}


def _one(folder: Path, prefix: str) -> Path:
    found = sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith((".nii.gz", ".nii")))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise MedsegInputError(folder, f"expected one {prefix}*.nii.gz file, found {what}")
    return found[0]


def _place(src: Path, dst: Path, copy: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def convert_brats(src: str | os.PathLike, out: str | os.PathLike, *, copy: bool = False) -> Path:
    """Write the nnU-Net v2 layout of a BraTS 2013 folder (module docstring); returns OUT."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise MedsegInputError(src, "BraTS folder not found")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: folder is not empty; choose a new --out (nothing was overwritten)")
    cases: list[tuple[str, Path]] = []
    for split, part in _SPLITS.items():
        if (src / split).is_dir():
            cases += [(part, d) for d in sorted((src / split).iterdir(), key=lambda d: natural_key(d.name)) if d.is_dir()]
    if not cases:
        cases = [("Tr", d) for d in sorted(src.iterdir(), key=lambda d: natural_key(d.name)) if d.is_dir()]
    if not cases:
        raise MedsegInputError(src, "holds no case folders (expected train/, validation/, test/ with one folder per case)")
    plan = []
    for part, folder in cases:  # check every case before writing anything
        files = [_one(folder, prefix) for _, prefix in BRATS_CHANNELS] + [_one(folder, BRATS_LABEL_FILE)]
        plan.append((part, folder.name, files))
    for part, case, files in plan:
        *channels, label = files
        for c, f in enumerate(channels):
            _place(f, out / f"images{part}" / f"{case}_{c:04d}.nii.gz", copy)
        _place(label, out / f"labels{part}" / f"{case}.nii.gz", copy)
    description = {
        "name": "BraTS2013-6",
        "description": f"converted by medseg from {src.resolve()}",
        "channel_names": {str(i): name for i, (name, _) in enumerate(BRATS_CHANNELS)},
        "labels": BRATS_LABELS,
        "numTraining": sum(1 for p in plan if p[0] == "Tr"),
        "file_ending": ".nii.gz",
    }
    write_text(out / "dataset.json", json.dumps(description, indent=2))
    return out
