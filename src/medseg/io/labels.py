"""From stored mask values to class indices 0..K-1: the dataset's `LabelMapping`.

Masks store classes in different ways: class indices (0, 1, 2 ...), a few grey levels that are
easier to see (0/255, or 0/128/255), or a binary mask saved as JPEG whose edges became a smear of
grey values. medseg decides **once per dataset**, from the union of the values found in all its
masks, and stores the decision with the run, so prediction and evaluation apply the same one.

The rule (`infer_label_mapping`), first match wins:

1. **index** -- every value is a whole number in 0..31: the stored value *is* the class index;
   ``num_classes = max + 1`` (at least 2, so an all-background dataset is still binary).
2. **levels** -- otherwise, if the union has at most 8 distinct values: the sorted distinct values
   become classes 0..n-1 (0/255 -> 0/1, 0/128/255 -> 0/1/2). A lone value v > 0 is read as
   0/v, so the mapping is always at least binary.
3. **threshold** -- otherwise (many grey levels: a lossy-compressed binary mask such as JPEG):
   ``value >= half the range -> 1, else 0`` (128 for 8-bit values; the range is 0..255 when no
   value exceeds 255, else 0..65535). Accepted only when, in every mask, at least 97 % of the
   pixels lie within 20 % of the range from either end (<= 51 or >= 204 for 8-bit), and some
   pixels do reach the upper end. Otherwise the masks are not label masks (e.g. a grey-scale
   image, a probability map or an instance map was put in the mask folder) and a
   `MedsegInputError` names the worst file and its fraction of mid-grey pixels.

Kvasir-SEG's JPEG masks fall under rule 3 far inside the allowance (docs/decisions.md, "Three
rules from mask values to classes").

**Not annotated** (sparse labels): a dataset may set aside one stored value (``ignore``; nnU-Net
v2's convention is a label named "ignore" with the highest value, e.g. 255) for voxels nobody
labelled. It is no class: the K classes are decided without it, and `apply` maps it to
`IGNORE_INDEX` (255), which losses, the patch sampler, validation Dice and `medseg evaluate` leave
out (README: "Sparse labels").

`LabelMapping.apply_checked(raw, path)` turns a raw mask into uint8 class indices and refuses a
mask holding a value the mapping does not know (e.g. 128 under a 0/255 "levels" mapping, 5 under
an "index" mapping with 3 classes, or a mid-grey smear under "threshold").
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from medseg.errors import MedsegInputError

__all__ = [
    "LabelMapping",
    "infer_label_mapping",
    "MODES",
    "MAX_INDEX",
    "MAX_LEVELS",
    "BAND_FRACTION",
    "MIN_BINARY_FRACTION",
    "NOT_A_LABEL_MASK",
    "IGNORE_INDEX",
]

MODES = ("index", "levels", "threshold")
MAX_INDEX = 31  # rule 1: values 0..31 are class indices
MAX_LEVELS = 8  # rule 2: at most 8 distinct grey levels
BAND_FRACTION = 0.2  # rule 3: "near an end" = within 20 % of the range from 0 or from the top
MIN_BINARY_FRACTION = 0.97  # rule 3: share of pixels that must be near an end, in every mask
IGNORE_INDEX = 255  # class-index value of "not annotated" voxels after `apply` (uint8; never a class)
_RANGES = (255, 65535, 2**32 - 1)  # candidate value ranges for rule 3 (8, 16, 32 bit)

NOT_A_LABEL_MASK = (
    "not a label mask: expected class indices 0..K-1, a few grey levels like 0/255, "
    "or a lossy-compressed binary mask"
)


def _bands(range_max: int) -> tuple[int, int]:
    """(low, high): values <= low or >= high count as near an end of 0..range_max."""
    width = int(BAND_FRACTION * range_max)  # 51 for 8-bit
    return width, range_max - width  # (51, 204) for 8-bit


def _fmt_values(values, limit: int = 8) -> str:
    vals = [_native(v) for v in values]
    text = ", ".join(str(v) for v in vals[:limit])
    return text + (f", ... ({len(vals)} values)" if len(vals) > limit else "")


def _native(v):
    f = float(v)
    return int(f) if f.is_integer() else f


@dataclass
class LabelMapping:
    """How a dataset's stored mask values become class indices 0..num_classes-1.

    mode:        "index" (value = class), "levels" (i-th sorted value = class i) or
                 "threshold" (value >= threshold -> 1, else 0).
    values:      the stored values, sorted, for "levels" (empty otherwise).
    threshold:   the cut for "threshold" (128 for 8-bit masks), else None.
    num_classes: K, background included.
    ignore:      the stored value meaning "not annotated" (-> IGNORE_INDEX), or None.
    """

    mode: str
    values: list = field(default_factory=list)
    threshold: float | None = None
    num_classes: int = 2
    ignore: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"label mapping mode must be one of {MODES}, got {self.mode!r}")
        self.values = [_native(v) for v in self.values]
        if self.mode == "levels":
            if not self.values or sorted(set(self.values)) != self.values:
                raise ValueError(f"'levels' needs sorted distinct values, got {self.values}")
            self.num_classes = len(self.values)
        elif self.mode == "threshold":
            if self.threshold is None:
                raise ValueError("'threshold' mode needs a threshold")
            self.threshold = _native(self.threshold)
            self.num_classes = 2
        if int(self.num_classes) < 1 or int(self.num_classes) > 255:
            raise ValueError(f"num_classes must be in 1..255, got {self.num_classes}")
        self.num_classes = int(self.num_classes)
        if self.ignore is not None:
            self.ignore = _native(self.ignore)
            if self.num_classes > IGNORE_INDEX - 1:
                raise ValueError(f"with an ignore value at most {IGNORE_INDEX - 1} classes, got {self.num_classes}")
            if self.mode == "index" and 0 <= self.ignore < self.num_classes:
                raise ValueError(f"ignore value {self.ignore} is also class {self.ignore} of 0..{self.num_classes - 1}")
            if self.mode == "levels" and self.ignore in self.values:
                raise ValueError(f"ignore value {self.ignore} is also one of the grey levels {self.values}")

    @property
    def ignore_index(self) -> int | None:
        """IGNORE_INDEX when the dataset has a "not annotated" value, else None (for losses, metrics)."""
        return IGNORE_INDEX if self.ignore is not None else None

    # --------------------------------------------------------------------------------- use

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Class indices (uint8, same shape) for a raw mask; unknown values raise (see `apply_checked`)."""
        return self.apply_checked(raw, "<mask>")

    def apply_checked(self, raw: np.ndarray, path: str | os.PathLike) -> np.ndarray:
        """Like `apply`, but a value the mapping does not know raises MedsegInputError naming `path`."""
        raw = np.asarray(raw)
        if raw.dtype == bool:
            raw = raw.astype(np.uint8)
        if raw.size == 0:
            return np.zeros(raw.shape, np.uint8)
        if self.ignore is not None:
            ignored = raw == self.ignore
            if ignored.any():
                filler = self.values[0] if self.mode == "levels" else 0  # any known value; overwritten below
                out = self._apply_known(np.where(ignored, np.asarray(filler).astype(raw.dtype), raw), path)
                out[ignored] = IGNORE_INDEX
                return out
        return self._apply_known(raw, path)

    def _apply_known(self, raw: np.ndarray, path) -> np.ndarray:
        if self.mode == "index":
            return self._apply_index(raw, path)
        if self.mode == "levels":
            return self._apply_levels(raw, path)
        return self._apply_threshold(raw, path)

    def _unknown(self, path, bad_values, what: str) -> MedsegInputError:
        return MedsegInputError(
            path,
            f"mask holds value(s) {_fmt_values(bad_values)} that the dataset's label mapping does not know "
            f"({what}); every mask of a dataset must store its classes the same way",
        )

    def _apply_index(self, raw: np.ndarray, path) -> np.ndarray:
        k = self.num_classes
        lo, hi = raw.min(), raw.max()
        if lo < 0 or hi >= k or (not np.issubdtype(raw.dtype, np.integer) and not np.array_equal(raw, np.round(raw))):
            vals = np.unique(raw)
            bad = vals[(vals < 0) | (vals >= k) | (vals != np.round(vals))]
            raise self._unknown(path, bad, f"class indices 0..{k - 1}")
        return raw.astype(np.uint8)

    def _apply_levels(self, raw: np.ndarray, path) -> np.ndarray:
        levels = np.asarray(self.values)
        what = "grey levels " + "/".join(str(v) for v in self.values)
        if raw.dtype in (np.uint8, np.uint16) and np.all(levels == np.round(levels)):
            lut = np.full(256 if raw.dtype == np.uint8 else 65536, 255, np.uint8)
            inside = (levels >= 0) & (levels < lut.size)
            lut[levels[inside].astype(np.int64)] = np.nonzero(inside)[0]
            out = lut[raw]
            if self.num_classes < 255 and (out == 255).any():
                raise self._unknown(path, np.unique(raw[out == 255]), what)
            return out
        idx = np.clip(np.searchsorted(levels, raw), 0, len(levels) - 1)
        ok = levels[idx] == raw
        if not ok.all():
            raise self._unknown(path, np.unique(raw[~ok]), what)
        return idx.astype(np.uint8)

    def _apply_threshold(self, raw: np.ndarray, path) -> np.ndarray:
        range_max = int(2 * self.threshold - 1)
        lo, hi = raw.min(), raw.max()
        if lo < 0 or hi > range_max:
            bad = np.unique(raw[(raw < 0) | (raw > range_max)])
            raise self._unknown(path, bad, f"a binary mask thresholded at {self.threshold} in 0..{range_max}")
        low, high = _bands(range_max)
        mid = float(np.count_nonzero((raw > low) & (raw < high))) / raw.size
        if mid > 1.0 - MIN_BINARY_FRACTION:
            raise MedsegInputError(
                path,
                f"{NOT_A_LABEL_MASK}; {mid:.1%} of its pixels are mid-grey ({low + 1}..{high - 1}), "
                f"more than the {1.0 - MIN_BINARY_FRACTION:.0%} a compressed binary mask has",
            )
        return (raw >= self.threshold).astype(np.uint8)

    # --------------------------------------------------------------------------------- storage

    def to_dict(self) -> dict:
        d = {"mode": self.mode, "values": list(self.values), "threshold": self.threshold,
             "num_classes": self.num_classes}
        if self.ignore is not None:  # only when set: older runs' dicts (and cache keys) stay as they were
            d["ignore"] = self.ignore
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LabelMapping":
        return cls(mode=d["mode"], values=list(d.get("values") or []), threshold=d.get("threshold"),
                   num_classes=int(d.get("num_classes", 2)), ignore=d.get("ignore"))

    def with_ignore(self, ignore: float | None) -> "LabelMapping":
        """The same mapping with `ignore` as its "not annotated" value (None: unchanged)."""
        if ignore is None or ignore == self.ignore:
            return self
        return LabelMapping(self.mode, list(self.values), self.threshold, self.num_classes, ignore)

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``levels: 0->0, 255->1``."""
        if self.mode == "index":
            text = f"index: stored values are class indices 0..{self.num_classes - 1}"
        elif self.mode == "levels":
            text = "levels: " + ", ".join(f"{v}->{i}" for i, v in enumerate(self.values))
        else:
            text = f"threshold: value >= {self.threshold} -> 1, else 0"
        return text + (f"; {self.ignore} = not annotated (ignored)" if self.ignore is not None else "")


# ------------------------------------------------------------------------------------- inference

class _MaskStats:
    """What rule 3 needs from one mask, gathered in a single pass over it."""

    __slots__ = ("path", "mid", "max", "n_values")

    def __init__(self, path, values: np.ndarray, counts: np.ndarray) -> None:
        self.path = path
        total = max(int(counts.sum()), 1)
        self.mid = []  # fraction of mid-grey pixels for each candidate range
        for range_max in _RANGES:
            low, high = _bands(range_max)
            self.mid.append(float(counts[(values > low) & (values < high)].sum()) / total)
        self.max = values[-1] if values.size else 0
        self.n_values = int(values.size)


def _histogram(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and their counts (fast path for 8-bit masks)."""
    if raw.dtype == np.uint8:
        counts = np.bincount(raw.ravel(), minlength=256)
        values = np.nonzero(counts)[0]
        return values, counts[values]
    return np.unique(raw, return_counts=True)


def infer_label_mapping(masks: Iterable[tuple[Path, np.ndarray]], ignore: float | None = None) -> LabelMapping:
    """Decide the dataset's LabelMapping from all its masks (see the module docstring for the rule).

    `ignore`: a stored value meaning "not annotated": left out of the rule, kept in the mapping.
    `masks` yields ``(path, raw mask)``; it is consumed once, so a generator that reads each file
    as it goes keeps memory flat. Raises MedsegInputError naming the offending file when the
    values fit none of the three rules.
    """
    union = np.zeros(0)
    stats: list[_MaskStats] = []
    first_fraction = first_negative = None
    for path, raw in masks:
        raw = np.asarray(raw)
        if raw.dtype == bool:
            raw = raw.astype(np.uint8)
        if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
            raise MedsegInputError(path, f"mask has dtype {raw.dtype}, expected numbers")
        if raw.size == 0:
            continue
        if np.issubdtype(raw.dtype, np.floating) and not np.all(np.isfinite(raw)):
            raise MedsegInputError(path, f"{NOT_A_LABEL_MASK}; it holds NaN or infinite values")
        values, counts = _histogram(raw)
        if ignore is not None:
            keep = values != ignore
            values, counts = values[keep], counts[keep]
            if values.size == 0:
                continue
        if first_fraction is None and np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
            first_fraction = path
        if first_negative is None and values[0] < 0:
            first_negative = path
        union = np.union1d(union, values.astype(np.float64))
        stats.append(_MaskStats(path, values, counts))
    if not stats:
        raise MedsegInputError("(no masks)", "no non-empty masks to infer the label mapping from")

    integer = first_fraction is None
    # 1. class indices
    if integer and union[0] >= 0 and union[-1] <= MAX_INDEX:
        return LabelMapping("index", num_classes=max(int(union[-1]) + 1, 2), ignore=ignore)
    # 2. a few grey levels
    if union.size <= MAX_LEVELS:
        values = [_native(v) for v in union]
        if len(values) == 1:
            values = sorted({0, values[0]})
        return LabelMapping("levels", values=values, ignore=ignore)
    # 3. a lossy-compressed binary mask, or not a label mask at all
    n = union.size
    if first_fraction is not None:
        raise MedsegInputError(first_fraction, f"{NOT_A_LABEL_MASK}; it holds non-integer values "
                                               f"(the masks hold {n} distinct values)")
    if first_negative is not None:
        raise MedsegInputError(first_negative, f"{NOT_A_LABEL_MASK}; it holds negative values "
                                               f"(the masks hold {n} distinct values)")
    r = next(i for i, m in enumerate(_RANGES) if union[-1] <= m)
    range_max = _RANGES[r]
    low, high = _bands(range_max)
    worst = max(stats, key=lambda s: s.mid[r])
    if worst.mid[r] > 1.0 - MIN_BINARY_FRACTION:
        raise MedsegInputError(
            worst.path,
            f"{NOT_A_LABEL_MASK}; the masks hold {n} distinct values, and {worst.mid[r]:.1%} of this "
            f"file's pixels are mid-grey ({low + 1}..{high - 1} of 0..{range_max}), more than the "
            f"{1.0 - MIN_BINARY_FRACTION:.0%} a compressed binary mask has",
        )
    if union[-1] < high:
        richest = max(stats, key=lambda s: s.n_values)
        raise MedsegInputError(
            richest.path,
            f"{NOT_A_LABEL_MASK}; the masks hold {n} distinct values from {_native(union[0])} to "
            f"{_native(union[-1])} ({richest.n_values} in this file): too many for grey levels, and "
            f"none near {range_max} as a compressed binary mask would have (more than "
            f"{MAX_INDEX + 1} classes, or an instance map?)",
        )
    return LabelMapping("threshold", threshold=(range_max + 1) // 2, ignore=ignore)
