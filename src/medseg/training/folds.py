"""Cross-validation: a deterministic 5-fold split a user may edit, one run per fold, and the
pooled out-of-fold validation that chooses the ensemble's postprocessing.

A cross-validation folder looks like this:

    RUN/splits.json           [{"train": [...], "val": [...]}, ...] one entry per fold (editable)
    RUN/plan.json             the plan every fold trains with (computed once, editable)
    RUN/fold_0/ ... fold_4/   ordinary run folders (run.json, checkpoints/, validation/, ...)
    RUN/postprocessing.json   chosen on the pooled validation predictions of the finished folds
    RUN/crossval.json         which folds finished and their validation Dice

`medseg predict RUN` on such a folder averages the probabilities of every finished fold.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path


from ..atomic import write_text
from ..errors import MedsegInputError
from ..io.groups import case_groups, grouped_folds
from ..io.layout import describe_dataset
from ..planning import apply_overrides, read_plan, write_plan
from ..runs import PLAN_FILE, RUN_INFO, fold_dir, run_finished
from .finish import finish_crossval
from .run import plan_overrides, resolve_plan, train_single

SPLITS_FILE = "splits.json"
DEFAULT_FOLDS = 5


def make_splits(case_ids: list[str], folds: int = DEFAULT_FOLDS, seed: int = 0,
                groups: dict[str, str] | None = None) -> list[dict]:
    """Deterministic k-fold split of case ids that keeps each group (`medseg.io.groups`) in one
    fold; with no groups, a seeded shuffle dealt round-robin into folds."""
    return grouped_folds(case_ids, groups or {c: c for c in case_ids}, folds, seed)


def load_or_create_splits(root: str | os.PathLike, case_ids: list[str], folds: int = DEFAULT_FOLDS,
                          seed: int = 0, groups: dict[str, str] | None = None) -> list[dict]:
    """RUN/splits.json if present (checked against the dataset; a group split across train and
    validation is reported, since the user may have meant it), else a new deterministic one."""
    path = Path(root) / SPLITS_FILE
    if path.is_file():
        try:
            splits = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise MedsegInputError(path, f"is not valid JSON: {e}") from e
        if not isinstance(splits, list) or not all(isinstance(s, dict) and "train" in s and "val" in s for s in splits):
            raise MedsegInputError(path, 'must be a list of {"train": [...], "val": [...]} entries, one per fold')
        known = set(case_ids)
        for f, split in enumerate(splits):
            unknown = [c for c in split["train"] + split["val"] if c not in known]
            if unknown:
                raise MedsegInputError(path, f"fold {f} names cases the dataset does not hold: {unknown[:5]}")
            both = set(split["train"]) & set(split["val"])
            if both:
                raise MedsegInputError(path, f"fold {f} has cases in both train and val: {sorted(both)[:5]}")
            if groups:
                shared = {groups[c] for c in split["val"]} & {groups[c] for c in split["train"]}
                if shared:
                    warnings.warn(f"{path}: fold {f} puts cases of one group (patient) on both sides of the split: "
                                  f"{sorted(shared)[:5]}; its validation Dice will be optimistic")
        return splits
    splits = make_splits(case_ids, folds, seed, groups)
    write_text(path, json.dumps(splits, indent=1))
    return splits


def parse_folds(folds: str | int | list[int] | None, available: int) -> list[int]:
    """`all`, one fold, or a list -> fold numbers, each checked against the split."""
    if folds is None:
        return []
    if folds == "all":
        return list(range(available))
    chosen = [int(folds)] if isinstance(folds, (int, str)) else [int(f) for f in folds]
    bad = [f for f in chosen if not 0 <= f < available]
    if bad:
        raise ValueError(f"fold(s) {bad} do not exist: the split has folds 0..{available - 1}")
    return chosen


def train_folds(data: str | os.PathLike, root: str | os.PathLike, *, folds: str | list[int],
                resume: bool = False, plan: str | os.PathLike | dict | bool | None = None,
                memory_gb: float | None = None, finish: bool = True, n_folds: int = DEFAULT_FOLDS,
                **options) -> Path:
    """Train the given folds of DATA's split into ROOT/fold_K; returns ROOT.

    The plan is computed once (for the per-fold budget) and kept in ROOT/plan.json, so folds
    trained later, or on other machines, train the same configuration. `minutes` is the budget
    of the whole call, shared equally between the folds it trains.
    """
    data, root = Path(data), Path(root)
    pairs, _ = describe_dataset(data, label_suffix=options.get("label_suffix"))
    if len(pairs) < 2:
        raise MedsegInputError(data, f"cross-validation needs at least 2 cases, the dataset has {len(pairs)}")
    groups = case_groups(pairs)
    n_groups = len(set(groups.values()))
    if n_groups < n_folds:  # a tiny dataset: one validation group per fold
        print(f"{n_groups} case groups: {n_groups}-fold cross-validation instead of {n_folds}-fold")
        n_folds = n_groups
    splits = load_or_create_splits(root, [p.case_id for p in pairs], n_folds, seed=int(options.get("seed", 0)),
                                   groups=groups)
    chosen = parse_folds(folds, len(splits))
    if not chosen:
        raise ValueError("no fold to train")
    per_fold = dict(options)
    if per_fold.get("minutes"):
        per_fold["minutes"] = float(per_fold["minutes"]) / len(chosen)
    plan_path = root / PLAN_FILE
    the_plan = None
    if plan is not False and not resume:
        if plan is None and plan_path.is_file():
            the_plan = apply_overrides(read_plan(plan_path), plan_overrides(per_fold))
        else:
            the_plan = resolve_plan(data, None if plan is True else plan, per_fold, memory_gb)
            if not plan_path.is_file():
                write_plan(the_plan, plan_path)
    for fold in chosen:
        target = fold_dir(root, fold)
        if not resume and (target / RUN_INFO).is_file() and run_finished(target):
            print(f"fold {fold}: already trained in {target}; skipped (use --resume to extend it)")
            continue
        if resume and run_finished(target) and not (per_fold.get("epochs") or per_fold.get("minutes")):
            print(f"fold {fold}: already finished in {target}; skipped (--resume with --epochs or --minutes extends it)")
            continue
        print(f"fold {fold}: {len(splits[fold]['train'])} training, {len(splits[fold]['val'])} validation cases")
        train_single(data, target, {**per_fold, "fold": fold}, resume=resume,
                     plan=the_plan if the_plan is not None else False, split=splits[fold], finish=finish)
    if finish:
        finish_crossval(root)
    return root
