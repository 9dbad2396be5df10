"""Held-out splits of the real datasets in ../shared/data, and Dice computed here, not by medseg.

Every split is a folder of symlinks in a work folder (nothing is copied, the source is never
written) in a layout `medseg.train` reads, plus the held-out images and their reference masks:

  isbi         ISBI 2012: slices 0-23 train, 24-29 held out (the last six)
  kvasir       Kvasir-SEG: sorted names, every 5th held out (index % 5 == 0), 200 of 1000
  hippocampus  MSD Hippocampus: sorted case names, every 5th held out, 52 of 260
  brats        BraTS 2013: train/ + validation/ train, test/ held out (`medseg convert brats`)
  chase        CHASE_DB1: first 20 images (sorted names) train, last 8 held out; first observer
  lgg          LGG kaggle3m-10: last 3 patients (sorted folder names) held out, scored per patient

CHASE_DB1 (a flat folder: ``Image_NNX.jpg`` beside ``Image_NNX_1stHO.png`` and ``_2ndHO.png``)
and LGG (``PATIENT_N.tif`` beside ``PATIENT_N_mask.tif``, one folder per patient): medseg's reader
takes both as published (`medseg.io.side_by_side`). ``published=True`` (the generalisation suite's
default) keeps the published names and folders for their training part (symlinks); otherwise it is
laid out as ``images/`` + ``labels/`` symlinks named by case id. Held-out images always go to a
plain folder.

Scoring reads the written masks and the references with numpy, PIL, tifffile and nibabel only
(independent of `medseg.evaluation`): Dice per class per case, averaged over cases (both masks
empty: 1). Predicted masks hold class indices; references are turned into class indices as the
dataset defines them (ISBI: 255 = cell = class 1, membrane = class 0; JPEG masks thresholded at 128).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SETS = ("isbi", "kvasir", "hippocampus", "brats", "chase", "lgg")
FOLDERS = {"isbi": "isbi2012-membrane", "kvasir": "kvasir-seg", "hippocampus": "msd-hippocampus",
           "brats": "brats2013-6", "chase": "chasedb1", "lgg": "lgg-kaggle3m-10"}
CLASSES = {"isbi": {"membrane": 0, "cell": 1}, "kvasir": {"polyp": 1},
           "hippocampus": {"anterior": 1, "posterior": 2},
           "brats": {"necrosis": 1, "oedema": 2, "non-enhancing": 3, "enhancing": 4},
           "chase": {"vessel": 1}, "lgg": {"abnormality": 1}}
PROTOCOLS = {"isbi": "slices 0-23 train, 24-29 held out",
             "kvasir": "sorted names, every 5th held out (200 of 1000), original resolution",
             "hippocampus": "sorted case names, every 5th held out (52 of 260)",
             "brats": "train/ + validation/ train (4 cases), test/ held out (2)",
             "chase": "first 20 images train, last 8 held out (first observer)",
             "lgg": "last 3 of 10 patients held out, Dice per patient volume"}


@dataclass
class Split:
    """A held-out split: what `medseg.train` gets, what `medseg.predict` gets, and the answers."""

    name: str
    train: Path                                  # a dataset folder medseg reads
    test_images: Path                            # the held-out inputs (files or case files)
    references: dict[str, Path]                  # case id -> reference mask file
    images: dict[str, Path] = field(default_factory=dict)    # case id -> (first channel) image file
    groups: dict[str, str] = field(default_factory=dict)     # case id -> patient (LGG)
    observer2: dict[str, Path] = field(default_factory=dict)  # case id -> second observer (CHASE)
    notes: list[str] = field(default_factory=list)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve())


def _folders_split(name: str, src: Path, work: Path, cases: list[tuple[str, Path, Path]], held: set[str],
                   published: bool) -> Split:
    """Training cases in a folder medseg reads, held-out images in test/images/ (references kept):
    images/ + labels/ named by case id, or (CHASE_DB1, LGG with `published`) the published
    side-by-side names and sub-folders, CHASE's second-observer masks included."""
    train, test = work / "train", work / "test"
    split = Split(name, train, test / "images", {})
    for case, image, mask in cases:
        if case in held:
            _link(image, test / "images" / image.name)
            split.references[case] = mask
            split.images[case] = image
        elif published:
            for f in (image, mask, src / f"{case}_2ndHO.png") if name == "chase" else (image, mask):
                _link(f, train / f.relative_to(src))
        else:
            _link(image, train / "images" / image.name)
            _link(mask, train / "labels" / f"{case}{''.join(mask.suffixes)}")
    return split


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _natural(text: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def make_split(name: str, data: Path, work: Path, *, train_limit: int | None = None,
               test_limit: int | None = None, published: bool = False) -> Split:
    """The split of set `name` under `work` (created fresh). `train_limit` / `test_limit` keep only
    the first cases of each side (smoke runs); the full protocol uses every case. `published`:
    CHASE_DB1 and LGG train from their published layout (module docstring)."""
    src = Path(data) / FOLDERS[name]
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: dataset folder not found (--data names the folder holding {FOLDERS[name]})")
    work.mkdir(parents=True, exist_ok=True)
    if name in ("isbi", "kvasir"):
        labels = src / ("labels" if name == "isbi" else "masks")
        images = sorted((src / "images").iterdir())          # plain sorted names, as the protocols say
        cases = [(_stem(p), p, next(labels.glob(_stem(p) + ".*"))) for p in images]
        held = {c for i, (c, _, _) in enumerate(cases) if (int(c) >= 24 if name == "isbi" else i % 5 == 0)}
    elif name == "chase":
        images = sorted(src.glob("Image_*.jpg"))
        cases = [(_stem(p), p, src / f"{_stem(p)}_1stHO.png") for p in images]
        held = {c for c, _, _ in cases[20:]}
    elif name == "lgg":
        patients = sorted(p for p in src.iterdir() if p.is_dir())
        cases = []
        for patient in patients:
            for mask in sorted(patient.glob("*_mask.tif"), key=lambda p: _natural(p.name)):
                cases.append((mask.name[:-len("_mask.tif")], patient / mask.name.replace("_mask.tif", ".tif"), mask))
        held = {c for c, img, _ in cases if img.parent in patients[-3:]}
    if name in ("isbi", "kvasir", "chase", "lgg"):
        cases = _limit(cases, held, train_limit, test_limit)
        published = published and name in ("chase", "lgg")
        split = _folders_split(name, src, work, cases, held, published)
        how = ("from its layout as published (symlinks)" if published else
               "from images/ + labels/ symlinks named by case id")
        if name == "chase":
            split.observer2 = {c: src / f"{c}_2ndHO.png" for c in split.references}
            split.notes.append(f"CHASE_DB1 (first observer's masks) trains {how}")
        if name == "lgg":
            split.groups = {c: split.images[c].parent.name for c in split.references}
            split.notes.append(f"LGG trains {how}")
        return split
    if name == "hippocampus":
        return _hippocampus(src, work, train_limit, test_limit)
    return _brats(src, work, train_limit, test_limit)


def _limit(cases: list, held: set[str], train_limit: int | None, test_limit: int | None) -> list:
    train = [c for c in cases if c[0] not in held][:train_limit]
    test = [c for c in cases if c[0] in held][:test_limit]
    return train + test


def _hippocampus(src: Path, work: Path, train_limit: int | None, test_limit: int | None) -> Split:
    """An MSD folder listing the training cases only (imagesTr/labelsTr linked), held-out images in test/."""
    desc = json.loads((src / "dataset.json").read_text())
    names = sorted(Path(e["image"]).name for e in desc["training"])
    held = [n for i, n in enumerate(names) if i % 5 == 0][:test_limit]
    every_held = {n for i, n in enumerate(names) if i % 5 == 0}
    train = work / "train"
    train.mkdir(parents=True)
    for sub in ("imagesTr", "labelsTr"):
        (train / sub).symlink_to(src / sub)
    desc["training"] = [e for e in desc["training"] if Path(e["image"]).name not in every_held][:train_limit]
    desc["numTraining"] = len(desc["training"])
    (train / "dataset.json").write_text(json.dumps(desc, indent=2))
    split = Split("hippocampus", train, work / "test" / "imagesTs", {})
    for n in held:
        _link(src / "imagesTr" / n, split.test_images / n)
        split.references[_stem(Path(n))] = src / "labelsTr" / n
        split.images[_stem(Path(n))] = src / "imagesTr" / n
    return split


def _brats(src: Path, work: Path, train_limit: int | None, test_limit: int | None) -> Split:
    """`medseg convert brats` (symlinks, nnU-Net layout): imagesTr from train/ + validation/, imagesTs from test/."""
    from medseg.io.convert import convert_brats

    out = convert_brats(src, work / "brats")
    for part, limit in (("Tr", train_limit), ("Ts", test_limit)):
        if limit is not None:
            for label in sorted((out / f"labels{part}").iterdir())[limit:]:
                case = label.name[:-len(".nii.gz")]
                label.unlink()
                for image in (out / f"images{part}").glob(f"{case}_*.nii.gz"):
                    image.unlink()
    split = Split("brats", out, out / "imagesTs", {})
    for label in sorted((out / "labelsTs").iterdir()):
        case = label.name[:-len(".nii.gz")]
        split.references[case] = label
        split.images[case] = out / "imagesTs" / f"{case}_0000.nii.gz"
    return split


# ----------------------------------------------------------------------------- reading and scoring
def read_mask(name: str, path: Path, reference: bool) -> np.ndarray:
    """A mask as class indices: predictions as written; references by the dataset's own rule."""
    path = Path(path)
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj).astype(np.int64)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        array = tifffile.imread(str(path))
    else:
        from PIL import Image

        with Image.open(path) as im:
            array = np.asarray(im.convert("L") if reference and im.mode not in ("1", "L", "P") else im)
    array = np.asarray(array)
    if reference and name in ("isbi", "kvasir", "lgg"):
        return (array >= 128).astype(np.int64)      # 8-bit masks (JPEG ones compressed): threshold at 128
    if reference and name == "chase":
        return (array > 0).astype(np.int64)          # 1-bit PNG: 1 = vessel
    return array.astype(np.int64)


def prediction_file(pred_dir: Path, case: str) -> Path:
    found = sorted(p for p in Path(pred_dir).glob(f"{case}.*") if p.is_file())
    if not found:
        raise FileNotFoundError(f"{pred_dir}: no predicted mask for case {case}")
    return found[0]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    den = int(a.sum()) + int(b.sum())
    return 1.0 if den == 0 else 2.0 * int((a & b).sum()) / den


def score(split: Split, pred_dir: Path) -> dict:
    """Dice per class (mean over held-out cases) and per case; for 3D also whether every written
    mask has its image's shape and affine; for LGG per-patient Dice and empty-slice false alarms;
    for CHASE the second observer's Dice against the first."""
    classes = CLASSES[split.name]
    per_case: dict[str, dict[str, float]] = {}
    masks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    geometry_ok = 0
    for case, ref_path in split.references.items():
        pred_path = prediction_file(pred_dir, case)
        pred, ref = read_mask(split.name, pred_path, False), read_mask(split.name, ref_path, True)
        if pred.shape != ref.shape:
            raise ValueError(f"{pred_path}: prediction {pred.shape} vs reference {ref.shape} ({ref_path})")
        if split.name in ("hippocampus", "brats"):
            geometry_ok += int(_same_geometry(pred_path, split.images[case]))
        per_case[case] = {c: round(dice(pred == v, ref == v), 5) for c, v in classes.items()}
        masks[case] = (pred, ref)
    out: dict = {"dice": {c: round(float(np.mean([d[c] for d in per_case.values()])), 5) for c in classes},
                 "dice_per_case": per_case, "test_cases": len(per_case)}
    if split.name in ("hippocampus", "brats"):
        out["geometry_identical"] = f"{geometry_ok}/{len(per_case)}"
    if split.name == "lgg":
        out.update(_per_patient(split, masks))
    if split.name == "chase":
        second = [dice(read_mask("chase", split.observer2[c], True) == 1, masks[c][1] == 1) for c in per_case]
        out["second_observer_dice"] = round(float(np.mean(second)), 5)
    return out


def _per_patient(split: Split, masks: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Each patient's slices stacked into a volume (slice order), Dice on the volume; and the share
    of slices whose reference is empty that got any predicted pixel."""
    patients: dict[str, list[str]] = {}
    for case in sorted(masks, key=_natural):
        patients.setdefault(split.groups[case], []).append(case)
    per_patient, empty, alarms = {}, 0, 0
    for patient, cases in patients.items():
        pred = np.stack([masks[c][0] == 1 for c in cases])
        ref = np.stack([masks[c][1] == 1 for c in cases])
        per_patient[patient] = round(dice(pred, ref), 5)
        for c in cases:
            if not (masks[c][1] == 1).any():
                empty += 1
                alarms += int((masks[c][0] == 1).any())
    return {"dice_per_patient": per_patient,
            "dice_patient_mean": round(float(np.mean(list(per_patient.values()))), 5),
            "empty_slices": empty, "empty_slices_with_prediction": round(alarms / empty, 4) if empty else None}


def _same_geometry(pred_path: Path, image_path: Path) -> bool:
    import nibabel as nib

    out, image = nib.load(str(pred_path)), nib.load(str(image_path))
    return out.shape[:3] == image.shape[:3] and bool(np.allclose(out.affine, image.affine, atol=1e-5))


def run_speed(run: Path) -> dict:
    """From a finished run: steps, epochs and the median training images/s of its log.csv."""
    import csv

    info = json.loads((Path(run) / "run.json").read_text())
    with (Path(run) / "log.csv").open() as f:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(f) if r.get("images_per_s")]
    config = info.get("config") or {}
    return {"iterations": info.get("iterations_done"), "epochs": info.get("epochs_done"),
            "images_per_s": round(float(np.median(rates)), 2) if rates else None,
            "patch_size": config.get("patch_size"), "batch_size": config.get("batch_size"),
            "features": config.get("features"), "model": (info.get("model") or {}).get("name"),
            "parameters": (info.get("model") or {}).get("parameters"),
            "image_size": (info.get("preprocessor") or {}).get("image_size")}
