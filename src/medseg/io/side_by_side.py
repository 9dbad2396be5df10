"""Datasets whose masks sit beside their images, named by a suffix: the layouts people download.

Two published examples, read as they are:

* CHASE_DB1: one flat folder, ``Image_01L.jpg`` + ``Image_01L_1stHO.png`` (first observer) +
  ``Image_01L_2ndHO.png`` (second observer);
* the Kaggle LGG set: one folder per patient, ``TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_1.tif``
  + ``..._1_mask.tif``, with ``data.csv`` and ``README.md`` at the top.

Rules:

* the folder is searched at any depth (hidden files and folders, and ``__MACOSX``, skipped);
  files of no supported type (``.csv``, ``.md``, ``.txt`` ...) are ignored;
* a file whose name stem ends in a label suffix is a mask; its image is the file with the stem
  before the suffix **in the same folder** (extensions may differ: ``x.jpg`` + ``x_mask.png``);
* recognised suffixes (`LABEL_SUFFIXES`, case-insensitive): ``_mask``, ``_seg``,
  ``_segmentation``, ``_label``, ``_labels``, ``_gt``, ``_1stHO``. A dataset uses one of them;
  finding two (``a_mask.png`` and ``b_seg.png``) is an error asking to choose;
* ``label_suffix`` chooses the masks explicitly: ``"_2ndHO"`` for CHASE_DB1's second observer,
  or any suffix of your own (``"_manual1"``). Files with the other recognised suffixes (and
  ``_2ndHO`` unless chosen) are masks of another kind: never cases, never used;
* case id = the image's file stem (``Image_01L``, ``TCGA_CS_4941_19960909_1``); when two nested
  folders hold the same stem, every id is prefixed with its folder path (``p1_slice_1``).
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from medseg.errors import MedsegInputError
from medseg.io.dataset import CasePair, natural_key
from medseg.io.registry import case_stem, is_image_file, is_mask_file

__all__ = [
    "LABEL_SUFFIXES",
    "CHOSEN_ONLY_SUFFIXES",
    "normalise_label_suffix",
    "label_suffix_of",
    "side_by_side_files",
    "discover_side_by_side",
]

# Used without being asked for (one per dataset); "_1stHO" is CHASE_DB1's first observer.
LABEL_SUFFIXES = ("_mask", "_seg", "_segmentation", "_label", "_labels", "_gt", "_1stHO")
# Masks too, but used only when chosen with label_suffix (CHASE_DB1's second observer).
CHOSEN_ONLY_SUFFIXES = ("_2ndHO",)
_LIST_LIMIT = 10


def normalise_label_suffix(label_suffix: str | None) -> str | None:
    """``"2ndHO"`` -> ``"_2ndHO"``: a suffix starting with a letter or digit gets an underscore, and
    a built-in suffix in other letter case takes the built-in spelling (``"_2ndho"`` -> ``"_2ndHO"``)."""
    if label_suffix is None:
        return None
    s = str(label_suffix).strip()
    if not s:
        raise ValueError("label_suffix must not be empty (e.g. '_2ndHO' or '_mask')")
    if any(c in s for c in "/\\"):
        raise ValueError(f"label_suffix is a file-name ending such as '_mask', got {label_suffix!r}")
    s = "_" + s if s[0].isalnum() else s
    return next((b for b in LABEL_SUFFIXES + CHOSEN_ONLY_SUFFIXES if b.lower() == s.lower()), s)


def label_suffix_of(stem: str, extra: str | None = None) -> str | None:
    """The label suffix ending `stem` (longest match, case-insensitive, as written in the
    suffix lists), or None; `extra` is a chosen suffix recognised besides the built-in ones."""
    low = stem.lower()
    found = None
    for s in LABEL_SUFFIXES + CHOSEN_ONLY_SUFFIXES + ((extra,) if extra else ()):
        if len(low) > len(s) and low.endswith(s.lower()) and (found is None or len(s) > len(found)):
            found = s
    return found


def _names(paths: list[Path]) -> str:
    text = ", ".join(str(p) for p in paths[:_LIST_LIMIT])
    return text + (f" ... and {len(paths) - _LIST_LIMIT} more" if len(paths) > _LIST_LIMIT else "")


def side_by_side_files(root: Path, label_suffix: str | None = None) -> tuple[dict, dict]:
    """Walk `root`: ({(folder, stem): image}, {suffix: {(folder, base stem): mask}}).

    Suffix keys are the canonical spellings of `LABEL_SUFFIXES` (or the chosen suffix)."""
    chosen = normalise_label_suffix(label_suffix)
    images: dict[tuple[Path, str], Path] = {}
    masks: dict[str, dict[tuple[Path, str], Path]] = defaultdict(dict)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")  # zip debris
        here = Path(folder)
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or not (is_image_file(path) or is_mask_file(path)):
                continue
            stem = case_stem(path)
            suffix = label_suffix_of(stem, chosen)
            if suffix is None:
                if is_image_file(path):
                    key = (here, stem)
                    if key in images:
                        raise MedsegInputError(path, f"two images with the name stem '{stem}' ({images[key].name}, "
                                               f"{name}): one case needs exactly one image file")
                    images[key] = path
                continue
            if not is_mask_file(path):
                continue
            key = (here, stem[: -len(suffix)])
            if key in masks[suffix]:
                raise MedsegInputError(path, f"two masks for image stem '{key[1]}' ({masks[suffix][key].name}, {name})")
            masks[suffix][key] = path
    return images, dict(masks)


def _choose(root: Path, masks: dict, label_suffix: str | None) -> str | None:
    """The dataset's mask suffix: the chosen one, else the one recognised suffix present."""
    if label_suffix is not None:
        if label_suffix not in masks:
            present = ", ".join(sorted(masks)) or "none"
            raise MedsegInputError(root, f"no masks named with the chosen label suffix '{label_suffix}' "
                                   f"(IMAGE{label_suffix}.png beside IMAGE.png); suffixes present: {present}")
        return label_suffix
    present = [s for s in LABEL_SUFFIXES if s in masks]
    if len(present) > 1:
        raise MedsegInputError(root, f"holds masks with several label suffixes ({', '.join(present)}): choose one "
                               f"with label_suffix (--label-suffix), e.g. '{present[0]}'")
    return present[0] if present else None


def _case_ids(root: Path, keys: list[tuple[Path, str]]) -> list[str]:
    """File stems, or folder-prefixed stems when nested folders repeat a stem."""
    ids = [stem for _, stem in keys]
    if len(set(ids)) == len(ids):
        return ids
    ids = ["_".join(folder.relative_to(root).parts + (stem,)) for folder, stem in keys]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise MedsegInputError(root, f"several images get the same case name even with their folder: {dup[:_LIST_LIMIT]}")
    return ids


def discover_side_by_side(data_dir: str | os.PathLike, label_suffix: str | None = None,
                          require_labels: bool = True) -> tuple[list[CasePair], str | None]:
    """The cases of a folder whose masks sit beside their images (see the module docstring), and
    the label suffix their masks use (None: no masks, only with ``require_labels=False``).

    Cases come in natural order of their ids. Raises MedsegInputError when no image has a mask
    beside it (with `require_labels`), when an image lacks its mask, or a mask its image.
    """
    root = Path(data_dir)
    chosen = normalise_label_suffix(label_suffix)
    images, masks = side_by_side_files(root, chosen)
    suffix = _choose(root, masks, chosen)
    if suffix is None:
        if require_labels or not images:
            known = ", ".join(LABEL_SUFFIXES + CHOSEN_ONLY_SUFFIXES)
            raise MedsegInputError(root, f"no images/ folder, and no images with their masks beside them "
                                   f"(IMAGE.png + IMAGE_mask.png; recognised mask suffixes: {known})")
        keys = sorted(images)
        pairs = [CasePair(i, images[k], None) for i, k in zip(_case_ids(root, keys), keys)]
        return sorted(pairs, key=lambda p: natural_key(p.case_id)), None
    chosen_masks = masks[suffix]
    lonely = [images[k] for k in sorted(images) if k not in chosen_masks]
    if lonely and require_labels:
        raise MedsegInputError(root, f"{len(lonely)} image(s) have no mask named IMAGE{suffix} beside them: "
                               f"{_names(lonely)}")
    orphans = [chosen_masks[k] for k in sorted(chosen_masks) if k not in images]
    if orphans:
        raise MedsegInputError(orphans[0], f"{len(orphans)} mask(s) have no image with the name before "
                               f"'{suffix}' in their folder: {_names(orphans)}")
    keys = sorted(images)
    pairs = [CasePair(i, images[k], chosen_masks.get(k)) for i, k in zip(_case_ids(root, keys), keys)]
    return sorted(pairs, key=lambda p: natural_key(p.case_id)), suffix
