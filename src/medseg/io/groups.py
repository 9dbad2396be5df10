"""Cases that belong together (slices of one patient, frames of one heart, both eyes of one
child) and splits that keep each such group on one side.

Slices of one patient look alike: if some land in training and others in validation, validation
measures memory, not generalisation. So every case gets a **group**, decided once per dataset,
first rule that merges cases wins:

1. **folders** -- cases whose images lie in several folders are grouped by folder (the Kaggle LGG
   set: one folder per patient). Used when some folder holds more than one case.
2. **name pattern** -- otherwise a trailing slice / frame / time index, or an eye letter, is
   stripped from the case id: ``patient004_frame01``, ``patient004_frame12`` -> ``patient004``;
   ``TCGA_CS_4941_19960909_12`` -> ``TCGA_CS_4941_19960909``; ``Image_01L``, ``Image_01R`` ->
   ``Image_01`` (CHASE_DB1: both eyes of child 01). The index must follow a separator
   (``_ - .`` or a space, optionally ``frame``/``slice``/``time``/``t``/``z`` ...), and what is
   left must still hold a digit, so ``hippocampus_001`` (the number *is* the case) and Kvasir's
   ``cju0qkwl35piu0993l0dewei2`` stay themselves.
3. **none** -- each case is its own group.

Rules 1 and 2 apply only when they merge cases into at least two groups and no group holds more
than half of the cases (a ``train/`` and a ``test/`` folder, or ids that share one prefix such as
``BraTS2021_00001`` ..., are no patients); rule 2 also needs more than half of the cases to share
their group with another (two ids that happen to differ only in a final ``L``/``R`` are no pattern).
The eye letters ``L``, ``R``, ``OD``, ``OS`` count in capitals only, after a digit.

`grouped_split` and `grouped_folds` deal whole groups; when every case is its own group they give
exactly the cases of a plain seeded split and round-robin folds (same seed, same shuffle), so
grouping changes nothing for data without groups.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from medseg.io.dataset import CasePair, natural_key

__all__ = ["CaseGrouping", "group_cases", "case_grouping", "case_groups", "pattern_group",
           "grouped_split", "grouped_folds"]

_INDEX = re.compile(r"^(?P<group>.*?\d.*?)[_\-. ]+(?:frame|slice|time|phase|sl|fr|t|z|s)?[_\-]?\d+$", re.IGNORECASE)
_EYE = re.compile(r"^(?P<group>.*\d)(?:[_\-]?(?:L|R|OD|OS)|[_\-](?i:left|right))$")


def pattern_group(case_id: str) -> str:
    """The case id without its trailing slice/frame/time index or eye letter (itself if none)."""
    for rule in (_EYE, _INDEX):
        m = rule.match(case_id)
        if m:
            return m["group"]
    return case_id


@dataclass(frozen=True)
class CaseGrouping:
    """Each case's group and the rule that decided it ("folders", "pattern" or "none")."""

    groups: dict[str, str] = field(default_factory=dict)
    rule: str = "none"

    @property
    def count(self) -> int:
        return len(set(self.groups.values()))

    def describe(self) -> str:
        """One line for `medseg plan`: how cases are kept together in splits."""
        n, cases = self.count, len(self.groups)
        if self.rule == "folders":
            return f"grouping: {n} folders ({cases} cases), a folder's cases stay on one side of every split"
        if self.rule == "pattern":
            members: dict[str, list[str]] = {}
            for case, group in self.groups.items():
                members.setdefault(group, []).append(case)
            group = min((g for g in members if len(members[g]) > 1), key=natural_key)
            example = ", ".join(sorted(members[group], key=natural_key)[:2])
            return f"grouping: by name pattern, {n} groups of {cases} cases (e.g. {example} -> {group})"
        return "grouping: none, each case its own group"


def _acceptable(groups: dict[str, str], most: bool = False) -> bool:
    """Merges cases into >= 2 groups, none holding more than half of the cases; with `most`,
    more than half of the cases share their group (a few chance look-alikes are no pattern)."""
    sizes: dict[str, int] = {}
    for g in groups.values():
        sizes[g] = sizes.get(g, 0) + 1
    shared = sum(s for s in sizes.values() if s > 1)
    return (2 <= len(sizes) < len(groups) and 2 * max(sizes.values()) <= len(groups)
            and (not most or 2 * shared > len(groups)))


def group_cases(case_ids: Sequence[str], folders: Sequence[str | os.PathLike] | None = None) -> CaseGrouping:
    """Group cases by folder, else by name pattern, else not at all (see the module docstring).

    `folders`: each case's image folder (None: names only)."""
    ids = list(case_ids)
    if folders is not None:
        parents = [Path(f) for f in folders]
        if len(parents) != len(ids):
            raise ValueError(f"{len(ids)} case ids but {len(parents)} folders")
        if len(set(parents)) > 1:
            common = Path(os.path.commonpath([str(p) for p in parents]))
            by_folder = {c: p.relative_to(common).as_posix() for c, p in zip(ids, parents)}
            if _acceptable(by_folder):
                return CaseGrouping(by_folder, "folders")
    by_name = {c: pattern_group(c) for c in ids}
    if _acceptable(by_name, most=True):
        return CaseGrouping(by_name, "pattern")
    return CaseGrouping({c: c for c in ids}, "none")


def case_grouping(pairs: Sequence[CasePair]) -> CaseGrouping:
    """The grouping of a dataset's cases (by their image folders, else their names)."""
    return group_cases([p.case_id for p in pairs], [p.image.parent for p in pairs])


def case_groups(pairs: Sequence[CasePair]) -> dict[str, str]:
    """case id -> group name for a dataset's cases (`case_grouping`'s groups)."""
    return case_grouping(pairs).groups


def _members(case_ids: Sequence[str], groups: Mapping[str, str]) -> dict[str, list[str]]:
    """group -> its cases, groups in order of their first case in `case_ids`; a case missing
    from `groups` is its own group."""
    members: dict[str, list[str]] = {}
    for c in case_ids:
        members.setdefault(str(groups.get(c, c)), []).append(c)
    return members


def grouped_split(case_ids: Sequence[str], groups: Mapping[str, str], val_fraction: float | None, seed: int,
                  max_val_cases: int | None = None) -> tuple[list[str], list[str]]:
    """(train ids, val ids), each naturally sorted, with every group wholly on one side.

    Validation aims at ``round(n * val_fraction)`` cases (`val_fraction=None`: 20 %, at most
    `max_val_cases`); groups are visited in a seeded shuffle and each is taken when it brings the
    validation count closer to that aim (the first one always, when the aim is at least one case).
    At least one group stays in training. With one case per group this is exactly the ungrouped
    split: the same shuffle of the same order, the first n_val cases.
    """
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = list(case_ids)
    members = _members(ids, groups)
    names = list(members)
    order = np.random.default_rng(seed).permutation(len(names))
    n = len(ids)
    if val_fraction is None:
        n_val = int(round(n * 0.2))
        n_val = min(max_val_cases, n_val) if max_val_cases is not None else n_val
        val_fraction = 0.2
    else:
        n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, n - 1)
    chosen: list[str] = []
    count = 0
    for i in order:
        if len(chosen) >= len(names) - 1 or n_val <= 0:
            break
        size = len(members[names[i]])
        if not chosen or abs(count + size - n_val) < abs(count - n_val):
            chosen.append(names[i])
            count += size
    val = sorted((c for g in chosen for c in members[g]), key=natural_key)
    taken = set(val)
    train = sorted((c for c in ids if c not in taken), key=natural_key)
    return train, val


def grouped_folds(case_ids: Sequence[str], groups: Mapping[str, str], folds: int = 5, seed: int = 0) -> list[dict]:
    """k folds ``[{"train": [...], "val": [...]}, ...]`` with every group wholly in one fold.

    Groups (ordered by their first case in natural order) are shuffled with `seed`, then dealt
    largest first (ties in shuffled order) each to the fold holding the fewest cases so far (ties:
    the lowest fold). With one case per group this is the ungrouped round-robin deal of the
    shuffled cases.
    """
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    ids = sorted(case_ids, key=natural_key)
    members = _members(ids, groups)
    names = list(members)
    if len(names) < folds:
        raise ValueError(f"{len(ids)} cases in {len(names)} groups cannot make {folds} folds "
                         "(each fold needs a validation group)")
    order = np.random.default_rng(seed).permutation(len(names))
    dealt = sorted(order, key=lambda i: -len(members[names[i]]))  # stable: ties keep the shuffle
    fold_cases: list[list[str]] = [[] for _ in range(folds)]
    for i in dealt:
        target = min(range(folds), key=lambda f: (len(fold_cases[f]), f))
        fold_cases[target].extend(members[names[i]])
    splits = []
    for f in range(folds):
        val = sorted(fold_cases[f], key=natural_key)
        train = sorted((c for g in range(folds) if g != f for c in fold_cases[g]), key=natural_key)
        splits.append({"train": train, "val": val})
    return splits
