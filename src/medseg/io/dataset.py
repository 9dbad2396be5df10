"""Finding, checking and reading the cases of a dataset folder.

A dataset folder ("DATA") holds ``images/`` and ``labels/`` (or ``masks/``; the Decathlon names
``imagesTr/`` and ``labelsTr/`` work too). An image and its mask share the file-name stem; their
extensions may differ (``x.jpg`` + ``x.png``). Hidden files and files of no supported type (a
README, ``Thumbs.db``) are ignored. Cases come in natural order of their stem (``2`` before ``10``).

    pairs = discover_pairs("data/kvasir-seg")     # names only: fast, catches layout mistakes
    mapping = validate_dataset(pairs)             # reads every mask once: sizes, values -> LabelMapping
    case = read_case(pairs[0], mapping)           # a Case with image (C, H, W) and label (H, W)

Nothing in DATA is ever written. Every problem is a `MedsegInputError` naming the folder or file.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from tqdm.auto import tqdm

from medseg.case import Case
from medseg.errors import MedsegInputError
from medseg.io.labels import LabelMapping, infer_label_mapping
from medseg.io.registry import (
    IMAGE_SUFFIXES,
    case_stem,
    is_image_file,
    is_mask_file,
    read_image,
    read_image_header,
    read_mask,
)

__all__ = [
    "CasePair",
    "IMAGE_DIR_NAMES",
    "LABEL_DIR_NAMES",
    "PROGRESS_MIN_FILES",
    "natural_key",
    "discover_pairs",
    "validate_dataset",
    "read_case",
    "read_image_channels",
]

IMAGE_DIR_NAMES = ("images", "imagesTr")
LABEL_DIR_NAMES = ("labels", "masks", "labelsTr")
PROGRESS_MIN_FILES = 50  # show a progress bar above this many files
_LIST_LIMIT = 10  # names listed in an error message


@dataclass
class CasePair:
    """One case on disk: its id, its image file (first channel), its mask file (or None) and,
    for layouts with one file per channel (nnU-Net ``_0001`` ...), the further channel files."""

    case_id: str
    image: Path
    label: Path | None = None
    extra_channels: tuple[Path, ...] = ()

    @property
    def image_files(self) -> tuple[Path, ...]:
        return (self.image,) + tuple(self.extra_channels)


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value: ``case2 < case10``; ties broken by the raw text."""
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), text


def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def _names(paths: Iterable[Path]) -> str:
    paths = list(paths)
    text = ", ".join(p.name for p in paths[:_LIST_LIMIT])
    return text + (f" ... and {len(paths) - _LIST_LIMIT} more" if len(paths) > _LIST_LIMIT else "")


def _subdir(root: Path, names: tuple[str, ...], what: str) -> Path | None:
    """The one child folder of `root` whose name is in `names` (case-insensitive), or None."""
    wanted = {n.lower() for n in names}
    found = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in wanted)
    if len(found) > 1:
        raise MedsegInputError(root, f"has several {what} folders ({', '.join(p.name + '/' for p in found)}): keep one")
    return found[0] if found else None


def _files_by_stem(folder: Path, accept: Callable[[Path], bool], what: str) -> dict[str, Path]:
    """stem -> file for the accepted, non-hidden files of `folder`; two files with one stem raise."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for p in folder.iterdir():
        if not _hidden(p) and accept(p) and p.is_file():
            by_stem[case_stem(p)].append(p)
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            paths = sorted(paths)
            raise MedsegInputError(
                paths[0],
                f"two {what}s with the same name stem '{stem}' ({_names(paths)}): one case needs exactly one {what} file",
            )
    return {stem: paths[0] for stem, paths in by_stem.items()}


def _supported() -> str:
    return ", ".join(sorted(IMAGE_SUFFIXES))


def discover_pairs(data_dir: str | os.PathLike, *, require_labels: bool = True) -> list[CasePair]:
    """Pair every image of ``DATA/images/`` with its mask in ``DATA/labels/`` (or ``masks/``).

    Reads file names only. With ``require_labels=False`` a dataset without a label folder gives
    pairs whose ``label`` is None; when a label folder exists, every image needs a mask anyway.
    """
    root = Path(data_dir)
    if not root.exists():
        raise MedsegInputError(root, "dataset folder not found")
    if not root.is_dir():
        raise MedsegInputError(root, "is a file, expected a dataset folder holding images/ and labels/")
    images_dir = _subdir(root, IMAGE_DIR_NAMES, "image")
    if images_dir is None:
        raise MedsegInputError(root, "no images/ folder: a dataset folder holds images/ and labels/ (or masks/)")
    labels_dir = _subdir(root, LABEL_DIR_NAMES, "label")

    images = _files_by_stem(images_dir, is_image_file, "image")
    if not images:
        others = [p for p in images_dir.iterdir() if not _hidden(p)]
        found = f"; found only {_names(sorted(others))}" if others else ""
        raise MedsegInputError(images_dir, f"holds no image files (supported: {_supported()}){found}")

    order = sorted(images, key=natural_key)
    if labels_dir is None:
        if require_labels:
            raise MedsegInputError(root, "no labels/ (or masks/) folder beside images/: training needs a mask per image")
        return [CasePair(stem, images[stem], None) for stem in order]

    masks = _files_by_stem(labels_dir, is_mask_file, "mask")
    lonely_images = [images[s] for s in order if s not in masks]
    if lonely_images:
        raise MedsegInputError(
            labels_dir,
            f"{len(lonely_images)} image(s) have no mask with the same name stem here: {_names(lonely_images)}",
        )
    lonely_masks = [masks[s] for s in sorted(masks, key=natural_key) if s not in images]
    if lonely_masks:
        raise MedsegInputError(
            images_dir,
            f"{len(lonely_masks)} mask(s) in {labels_dir.name}/ have no image with the same name stem here: "
            f"{_names(lonely_masks)}",
        )
    return [CasePair(stem, images[stem], masks[stem]) for stem in order]


def _fmt_size(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _size_problem(pair: CasePair, mask_shape, image_shape) -> MedsegInputError:
    axes = "height x width" if len(image_shape) == 2 else "spatial axes"
    return MedsegInputError(
        pair.label,
        f"mask size {_fmt_size(mask_shape)} differs from its image's size {_fmt_size(image_shape)} "
        f"({axes}; image: {pair.image})",
    )


def _combine(problems: list[MedsegInputError]) -> MedsegInputError:
    """One error for many problems: the first one in full, then the others one per line."""
    first = problems[0]
    if len(problems) == 1:
        return first
    rest = problems[1:]
    lines = [str(p) for p in rest[:_LIST_LIMIT]]
    if len(rest) > _LIST_LIMIT:
        lines.append(f"... and {len(rest) - _LIST_LIMIT} more")
    return MedsegInputError(first.path, f"{first.problem}\n{len(rest)} more problem(s):\n" + "\n".join(lines))


GEOMETRY_TOLERANCE = 1e-3  # mm (spacing, origin) and cosine (direction) that count as equal


def _geometry_problem(a: dict, b: dict) -> str | None:
    """Which of spacing / origin / direction differ between two headers' geometry, or None."""
    ga, gb = a.get("geometry"), b.get("geometry")
    if not ga or not gb:
        return None
    for key in ("spacing", "origin", "direction"):
        va, vb = np.asarray(ga[key], float), np.asarray(gb[key], float)
        if va.shape != vb.shape or not np.allclose(va, vb, atol=GEOMETRY_TOLERANCE, rtol=0):
            fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
            return f"{key} {fmt(vb)} differs from its image's {fmt(va)}"
    return None


def _channel_problem(pair: CasePair, channels: int, expected: int,
                     by: str = "the dataset declares") -> MedsegInputError:
    kind = f"has {channels} channel(s) (a 4D volume, or a colour picture)" if channels > 1 else "has 1 channel"
    return MedsegInputError(pair.image, f"case {pair.case_id} {kind} where {by} {expected} "
                                        f"(modalities / colour channels)")


def _header(pair: CasePair, expected_channels: int | None) -> dict:
    """Header of a case's image (all channel files): size, channels, geometry; checks they agree."""
    headers = [read_image_header(f) for f in pair.image_files]
    first = headers[0]
    for f, h in zip(pair.image_files[1:], headers[1:]):
        if tuple(h["size"]) != tuple(first["size"]):
            raise MedsegInputError(f, f"channel size {_fmt_size(h['size'])} differs from {pair.image.name}'s "
                                      f"{_fmt_size(first['size'])}")
        problem = _geometry_problem(first, h)
        if problem:
            raise MedsegInputError(f, f"channel {problem.replace('its image', pair.image.name)}")
    channels = sum(int(h.get("channels", 1)) for h in headers)
    if expected_channels is not None and channels != expected_channels:
        raise _channel_problem(pair, channels, expected_channels)
    if max(first["size"], default=0) < 2:
        raise MedsegInputError(pair.image, f"image is a single pixel ({_fmt_size(first['size'])}): nothing to segment")
    return {**first, "channels": channels}


def validate_dataset(pairs: Iterable[CasePair], mapping: LabelMapping | None = None,
                     expected_channels: int | None = None, ignore: float | None = None) -> LabelMapping:
    """Check a dataset before any training and decide its LabelMapping.

    Every image header and every mask is read once: unreadable or empty files, masks whose size
    or geometry (spacing, origin, direction) differs from their image, images whose channel count
    differs from `expected_channels` (e.g. a 4D file where one modality is declared), and mask
    values that fit no labelling rule (`medseg.io.labels`), or not the given `mapping`, raise one
    MedsegInputError listing every problem found (the first in full). Shows a progress bar for
    more than `PROGRESS_MIN_FILES` cases. `ignore`: a stored value meaning "not annotated"
    (`LabelMapping.ignore`), added to the given mapping or left out when inferring one.
    """
    pairs = list(pairs)
    if mapping is not None:
        mapping = mapping.with_ignore(ignore)
    if not pairs:
        raise MedsegInputError("(dataset)", "no cases to validate")
    problems: list[MedsegInputError] = []
    first_of_dims: dict[int, Path] = {}  # one image per dimensionality: a dataset is 2D or 3D, not both

    def masks():
        bar = tqdm(pairs, desc="checking dataset", unit="case", disable=len(pairs) <= PROGRESS_MIN_FILES,
                   leave=False)
        for pair in bar:
            try:
                header = _header(pair, expected_channels)
            except MedsegInputError as e:
                problems.append(e)
                header = None
            if header is not None:
                dims = len(header["size"])
                first_of_dims.setdefault(dims, pair.image)
                if len(first_of_dims) > 1 and first_of_dims[dims] == pair.image:
                    other = next(d for d in first_of_dims if d != dims)
                    problems.append(MedsegInputError(pair.image, f"is {dims}D ({_fmt_size(header['size'])}) but "
                                                     f"{first_of_dims[other]} is {other}D: a dataset holds 2D images "
                                                     "or 3D volumes, not both"))
            if pair.label is None:
                problems.append(MedsegInputError(pair.image, "has no mask"))
                continue
            try:
                raw = read_mask(pair.label)
            except MedsegInputError as e:
                problems.append(e)
                continue
            if header is not None and tuple(raw.shape) != tuple(header["size"]):
                problems.append(_size_problem(pair, raw.shape, header["size"]))
                continue
            if header is not None and header.get("geometry"):
                problem = _geometry_problem(header, read_image_header(pair.label))
                if problem:
                    problems.append(MedsegInputError(pair.label, f"label {problem} ({pair.image})"))
                    continue
            if mapping is not None:
                try:
                    mapping.apply_checked(raw, pair.label)
                except MedsegInputError as e:
                    problems.append(e)
                continue
            yield pair.label, raw

    try:
        if mapping is None:
            mapping = infer_label_mapping(masks(), ignore=ignore)
        else:
            for _ in masks():
                pass
    except MedsegInputError as e:
        raise _combine(problems + [e]) from None
    if problems:
        raise _combine(problems)
    return mapping


def read_image_channels(files: Sequence[Path], case_id: str, expected_channels: int | None = None,
                        expected_by: str = "the dataset declares") -> tuple[np.ndarray, tuple[float, ...], dict]:
    """Read a case's channel files into one (C, *spatial) float32 array, checking that they
    share one grid, that the channel count is the expected one and that no voxel is NaN or inf."""
    arrays, spacing, meta = [], None, {}
    for f in files:
        array, sp, m = read_image(f)
        if spacing is None:
            spacing, meta = sp, m
        elif tuple(array.shape[1:]) != tuple(arrays[0].shape[1:]):
            raise MedsegInputError(f, f"channel size {_fmt_size(array.shape[1:])} differs from {files[0].name}'s "
                                      f"{_fmt_size(arrays[0].shape[1:])}")
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise MedsegInputError(f, f"holds {bad} NaN or infinite voxel value(s); fix or mask them before training")
        arrays.append(array)
    image = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    if expected_channels is not None and image.shape[0] != expected_channels:
        raise _channel_problem(CasePair(case_id, Path(files[0])), image.shape[0], expected_channels, expected_by)
    return image, spacing, meta


def read_case(pair: CasePair, mapping: LabelMapping | None = None, expected_channels: int | None = None) -> Case:
    """Read one case: image (C, *spatial) float32 as stored (not normalised), label as class indices.

    `mapping` is the dataset's LabelMapping (from `validate_dataset` or a run); without one, it is
    inferred from this mask alone, which is only safe when every class appears in it.
    """
    image, spacing, meta = read_image_channels(pair.image_files, pair.case_id, expected_channels)
    label = None
    if pair.label is not None:
        raw = read_mask(pair.label)
        if tuple(raw.shape) != tuple(image.shape[1:]):
            raise _size_problem(pair, raw.shape, image.shape[1:])
        if mapping is None:
            mapping = infer_label_mapping([(pair.label, raw)])
        label = mapping.apply_checked(raw, pair.label)
    return Case(
        case_id=pair.case_id,
        image=image,
        label=label,
        spacing=spacing,
        source=pair.image,
        label_source=pair.label,
        meta=meta,
    )
