"""Which layout a dataset folder uses, and what its ``dataset.json`` says about it.

Four layouts are recognised by `describe_dataset` (first match wins):

* **nnunet** -- nnU-Net v2: ``dataset.json`` with ``channel_names``, ``labels`` (name -> value)
  and ``file_ending``; images ``imagesTr/CASE_0000<ending>``, ``CASE_0001<ending>`` ... (one file
  per channel), labels ``labelsTr/CASE<ending>``.
* **msd** -- Medical Segmentation Decathlon: ``dataset.json`` with ``modality``, ``labels``
  (value -> name) and a ``training`` list of image/label paths; several modalities of a case live
  in one 4D file.
* **folders** -- no ``dataset.json``: ``images/`` + ``labels/`` (or ``masks/``), paired by name
  stem (`medseg.io.dataset.discover_pairs`); 2D or 3D.
* **side-by-side** -- neither: each mask sits beside its image, named with a suffix
  (``Image_01L.jpg`` + ``Image_01L_1stHO.png``; ``P1/P1_3.tif`` + ``P1/P1_3_mask.tif``), in one
  folder or in per-patient folders (`medseg.io.side_by_side`). ``label_suffix`` chooses which
  masks (``"_2ndHO"``: CHASE_DB1's second observer); the suffix used is recorded in DatasetInfo.

The description fixes the input channels (their order and modality names, checked again at
prediction time), the class names and the class count, so a class that no case happens to contain
still has an output channel. Modality "CT" selects CT normalisation (`medseg.data.preprocess`).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from medseg.errors import MedsegInputError
from medseg.io.dataset import CasePair, _files_by_stem, _subdir, _supported, discover_pairs, natural_key
from medseg.io.labels import LabelMapping
from medseg.io.dataset import IMAGE_DIR_NAMES
from medseg.io.registry import case_stem, is_image_file
from medseg.io.side_by_side import (
    discover_side_by_side,
    label_suffix_of,
    normalise_label_suffix,
    side_by_side_files,
)
from medseg.io.dicom import is_dicom_folder

__all__ = ["DatasetInfo", "describe_dataset", "InputCase", "prediction_inputs", "CHANNEL_SUFFIX"]

CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net: CASE_0000
_LIST_LIMIT = 10


@dataclass
class DatasetInfo:
    """What a dataset folder declares about itself (stored in every run)."""

    layout: str                                # "folders", "side-by-side", "msd" or "nnunet"
    channel_names: list[str] | None = None     # modality of each input channel, in order
    class_names: list[str] | None = None       # names of classes 0..K-1 (background first)
    num_classes: int | None = None             # K from the description, None: from the masks
    file_ending: str | None = None             # nnU-Net's file_ending (".nii.gz")
    ignore_label: int | None = None            # stored value of a label named "ignore" (not annotated)
    label_suffix: str | None = None            # side-by-side: the masks' name suffix ("_mask", "_2ndHO")

    @property
    def channels(self) -> int | None:
        return len(self.channel_names) if self.channel_names else None

    def label_mapping(self) -> LabelMapping | None:
        """Declared datasets store class indices; folders are decided from the masks."""
        return LabelMapping("index", num_classes=self.num_classes, ignore=self.ignore_label) if self.num_classes else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "DatasetInfo":
        return cls(**d) if d else cls("folders")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise MedsegInputError(path, f"cannot read: {e}") from e
    except json.JSONDecodeError as e:
        raise MedsegInputError(path, f"is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise MedsegInputError(path, "must hold a JSON object")
    return data


def _ordered_names(mapping: dict, path: Path, key: str) -> list[str]:
    """{"0": "a", "1": "b"} -> ["a", "b"], refusing gaps and non-integer keys."""
    try:
        by_index = {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise MedsegInputError(path, f'"{key}" keys must be integers as strings ("0", "1", ...), got {list(mapping)}') from None
    if sorted(by_index) != list(range(len(by_index))):
        raise MedsegInputError(path, f'"{key}" must number its entries 0..N-1, got {sorted(by_index)}')
    return [by_index[i] for i in range(len(by_index))]


def _missing(path: Path, files: list[Path]) -> MedsegInputError:
    names = ", ".join(str(f) for f in files[:_LIST_LIMIT])
    more = f" ... and {len(files) - _LIST_LIMIT} more" if len(files) > _LIST_LIMIT else ""
    return MedsegInputError(path, f"names {len(files)} file(s) that do not exist: {names}{more}")


def _split_ignore(labels: dict, path: Path) -> tuple[dict, int | None]:
    """{name: value} without the label named "ignore" (nnU-Net v2: "not annotated", the highest
    value), and that value (None if there is none)."""
    names = [k for k in labels if str(k).strip().lower() == "ignore"]
    if not names:
        return labels, None
    value = labels[names[0]]
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise MedsegInputError(path, f'the "ignore" label needs one integer value, got {value!r}') from None
    rest = {k: v for k, v in labels.items() if k != names[0]}
    if any(int(v) >= value for v in rest.values()):
        raise MedsegInputError(path, f'the "ignore" label ({value}) must have the highest value, above every class '
                               f"(nnU-Net v2's convention); classes: {rest}")
    return rest, value


def _msd(root: Path, path: Path, desc: dict) -> tuple[list[CasePair], DatasetInfo]:
    modality = desc.get("modality")
    if not isinstance(modality, dict) or not modality:
        raise MedsegInputError(path, 'MSD dataset.json needs a "modality" object, e.g. {"0": "MRI"}')
    channels = _ordered_names(modality, path, "modality")
    labels = desc.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise MedsegInputError(path, 'dataset.json needs a "labels" object, e.g. {"0": "background", "1": "tumour"}')
    by_name, ignore = _split_ignore({name: value for value, name in labels.items()}, path)
    classes = _ordered_names({value: name for name, value in by_name.items()}, path, "labels")
    training = desc.get("training")
    if not isinstance(training, list) or not training:
        raise MedsegInputError(path, 'MSD dataset.json needs a non-empty "training" list of {"image": ..., "label": ...}')
    pairs, missing = [], []
    for i, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise MedsegInputError(path, f'"training" entry {i} must have "image" and "label": {entry!r}')
        image, label = root / entry["image"], root / entry["label"]
        missing += [f for f in (image, label) if not f.is_file()]
        pairs.append(CasePair(case_stem(image), image, label))
    if missing:
        raise _missing(path, missing)
    ids = [p.case_id for p in pairs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise MedsegInputError(path, f"several training entries share a case name: {dup[:_LIST_LIMIT]}")
    pairs.sort(key=lambda p: natural_key(p.case_id))
    return pairs, DatasetInfo("msd", channels, classes, len(classes), ignore_label=ignore)


def _nnunet(root: Path, path: Path, desc: dict) -> tuple[list[CasePair], DatasetInfo]:
    channels = _ordered_names(desc.get("channel_names") or {}, path, "channel_names")
    if not channels:
        raise MedsegInputError(path, '"channel_names" must name at least one channel, e.g. {"0": "CT"}')
    labels = desc.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise MedsegInputError(path, 'dataset.json needs a "labels" object, e.g. {"background": 0, "tumour": 1}')
    if any(not isinstance(v, int) for v in labels.values()):
        raise MedsegInputError(path, "region-based labels (lists of values) are not supported; give each label one integer")
    labels, ignore = _split_ignore(labels, path)
    classes = _ordered_names({str(v): k for k, v in labels.items()}, path, "labels")
    ending = desc.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise MedsegInputError(path, '"file_ending" must be a file suffix such as ".nii.gz"')
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise MedsegInputError(d, "folder not found (nnU-Net layout: imagesTr/ and labelsTr/ beside dataset.json)")
    by_case: dict[str, dict[int, Path]] = {}
    for f in images_dir.iterdir():
        if f.name.startswith(".") or not f.name.endswith(ending):
            continue
        m = CHANNEL_SUFFIX.match(f.name[: -len(ending)])
        if not m:
            raise MedsegInputError(f, f"image name must end in _XXXX{ending} (channel number), e.g. case_001_0000{ending}")
        by_case.setdefault(m["case"], {})[int(m["channel"])] = f
    if not by_case:
        raise MedsegInputError(images_dir, f"holds no *_0000{ending} images")
    pairs, missing = [], []
    for case in sorted(by_case, key=natural_key):
        files = by_case[case]
        expected = [images_dir / f"{case}_{c:04d}{ending}" for c in range(len(channels))]
        missing += [e for e in expected if e not in files.values()]
        extra = sorted(set(files) - set(range(len(channels))))
        if extra:
            raise MedsegInputError(files[extra[0]], f"channel {extra[0]} but dataset.json lists {len(channels)} channel(s) {channels}")
        label = labels_dir / f"{case}{ending}"
        if not label.is_file():
            missing.append(label)
        pairs.append(CasePair(case, expected[0], label, tuple(expected[1:])))
    if missing:
        raise _missing(path, missing)
    return pairs, DatasetInfo("nnunet", channels, classes, len(classes), ending)


def describe_dataset(data_dir: str | os.PathLike,
                     label_suffix: str | None = None) -> tuple[list[CasePair], DatasetInfo]:
    """The cases of a dataset folder and what it declares (see the module docstring).

    `label_suffix` chooses the masks of a side-by-side folder (``"_2ndHO"``); re-reading a run's
    dataset, pass the run's ``DatasetInfo.label_suffix`` so the same masks are found again. Other
    layouts name their masks themselves and refuse the setting.
    """
    root = Path(data_dir)
    path = root / "dataset.json"
    side_by_side = root.is_dir() and not path.is_file() and _subdir(root, IMAGE_DIR_NAMES, "image") is None
    if label_suffix is not None and not side_by_side and root.is_dir():
        raise MedsegInputError(root, f"label_suffix ({label_suffix!r}) chooses masks that sit beside their images; "
                               "this folder names its masks itself (images/ + labels/, or dataset.json)")
    if side_by_side:
        pairs, suffix = discover_side_by_side(root, normalise_label_suffix(label_suffix))
        return pairs, DatasetInfo("side-by-side", label_suffix=suffix)
    if root.is_dir() and path.is_file():
        desc = _read_json(path)
        if "channel_names" in desc:
            return _nnunet(root, path, desc)
        if "modality" in desc or "training" in desc:
            return _msd(root, path, desc)
        raise MedsegInputError(path, 'is neither nnU-Net v2 ("channel_names", "labels", "file_ending") nor '
                               'Medical Segmentation Decathlon ("modality", "labels", "training") format')
    return discover_pairs(root), DatasetInfo("folders")


@dataclass
class InputCase:
    """One case to predict: its name, its channel files (or a DICOM series folder)."""

    case_id: str
    files: tuple[Path, ...]
    dicom: bool = False

    @property
    def source(self) -> Path:
        return self.files[0]


def _group_channels(files: list[Path], channels: int, channel_names: list[str] | None) -> list[InputCase]:
    """nnU-Net names (CASE_0000, CASE_0001 ...) -> one InputCase per CASE with every channel."""
    groups: dict[str, dict[int, Path]] = {}
    for f in files:
        m = CHANNEL_SUFFIX.match(case_stem(f))
        groups.setdefault(m["case"], {})[int(m["channel"])] = f
    cases = []
    names = f" ({', '.join(channel_names)})" if channel_names else ""
    for case in sorted(groups, key=natural_key):
        found = groups[case]
        if sorted(found) != list(range(channels)):
            have = ", ".join(f"_{c:04d}" for c in sorted(found))
            missing = [c for c in range(channels) if c not in found]
            what = ", ".join(f"_{c:04d}" + (f" ({channel_names[c]})" if channel_names and c < len(channel_names) else "")
                             for c in missing)
            raise MedsegInputError(found[min(found)], f"case {case} has channel files {have} but the model takes "
                                   f"{channels} channel(s) _0000.._{channels - 1:04d}{names}, in that order"
                                   + (f"; missing: {what}" if missing else ""))
        cases.append(InputCase(case, tuple(found[c] for c in range(channels))))
    return cases


def _without_masks(by_stem: dict[str, Path]) -> dict[str, Path]:
    """Drop the masks that sit beside their images (``x_mask.png`` when ``x.png`` is there)."""
    def is_mask(stem: str) -> bool:
        suffix = label_suffix_of(stem)
        return suffix is not None and stem[: -len(suffix)] in by_stem
    return {stem: f for stem, f in by_stem.items() if not is_mask(stem)}


def _nested_images(folder: Path) -> list[InputCase]:
    """Images in sub-folders (side-by-side datasets with per-patient folders), masks left out."""
    if not any(d.is_dir() and not d.name.startswith(".") for d in folder.iterdir()):
        return []
    images, _ = side_by_side_files(folder)
    if not images:
        return []
    pairs, _ = discover_side_by_side(folder, require_labels=False)
    return [InputCase(p.case_id, (p.image,)) for p in pairs]


def prediction_inputs(path: str | os.PathLike, channels: int = 1,
                      channel_names: list[str] | None = None) -> list[InputCase]:
    """The cases to predict under `path`: an image/volume file, a DICOM series folder, or a
    folder of files (a dataset folder's ``imagesTs/``, else ``images/``, else ``imagesTr/``).

    A mask beside its image (``x.png`` + ``x_mask.png``; any suffix of
    `medseg.io.side_by_side.LABEL_SUFFIXES`, and ``_2ndHO``) is no case. A folder holding only sub-folders of
    images (one per patient) gives the images found in them, named as in training.

    In a folder, files named like nnU-Net channel files (``CASE_0000.nii.gz`` ...) are grouped
    into cases and must provide exactly the model's channels; other files are one case each. A
    folder of DICOM series folders gives one case per series folder.
    """
    path = Path(path)
    if not path.exists():
        raise MedsegInputError(path, "not found")
    if path.is_file():
        if not is_image_file(path):
            raise MedsegInputError(path, f"not a supported image file (supported: {_supported()})")
        return [InputCase(case_stem(path), (path,))]
    if is_dicom_folder(path):
        return [InputCase(path.name, (path,), dicom=True)]
    folder = next((d for names in (("imagesTs",), ("images",), ("imagesTr",)) if (d := _subdir(path, names, "image"))), path)
    by_stem = _without_masks(_files_by_stem(folder, is_image_file, "image"))
    if not by_stem:
        series = sorted((d for d in folder.iterdir() if d.is_dir() and is_dicom_folder(d)), key=lambda d: natural_key(d.name))
        if series:
            return [InputCase(d.name, (d,), dicom=True) for d in series]
        nested = _nested_images(folder)
        if nested:
            return nested
        raise MedsegInputError(folder, f"holds no image files or DICOM series (supported: {_supported()})")
    files = [by_stem[s] for s in sorted(by_stem, key=natural_key)]
    if all(CHANNEL_SUFFIX.match(s) for s in by_stem) and (channels > 1 or channel_names):
        return _group_channels(files, channels, channel_names)
    return [InputCase(case_stem(f), (f,)) for f in files]
