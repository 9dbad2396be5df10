"""The cases of a run: which train and which validate (a deterministic case-level split, or a
given one), and loading them through the preprocessing cache in parallel threads."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.cache import CaseCache, case_key
from ..data.preprocess import Preprocessor
from ..errors import MedsegInputError
from ..io.dataset import CasePair, read_case
from ..io.groups import case_groups, grouped_split
from ..io.labels import LabelMapping
from ..locks import LOCK_NAME
from ..report.run_report import VALIDATION_DIR
from ..runs import RUN_INFO, checkpoint_path, read_run_info, run_finished

MAX_VAL_CASES = 50         # validation each epoch uses at most this many cases (fixed subset)


def split_cases(pairs: list[CasePair], val_fraction: float | None, seed: int) -> tuple[list[CasePair], list[CasePair]]:
    """Deterministic split by groups of cases (`medseg.io.groups`: a patient's slices or frames stay
    on one side); at least one training case. With every case its own group, a seeded shuffle's
    first cases validate.

    `val_fraction=None` holds out 20 % of the cases but at most MAX_VAL_CASES: beyond that,
    validation gets no more reliable while training loses data.
    """
    train_ids, val_ids = grouped_split([p.case_id for p in pairs], case_groups(pairs), val_fraction, seed,
                                       MAX_VAL_CASES)
    by_id = {p.case_id: p for p in pairs}
    return [by_id[c] for c in train_ids], [by_id[c] for c in val_ids]


def pairs_of_split(pairs: list[CasePair], split: dict, data: Path) -> tuple[list[CasePair], list[CasePair]]:
    """Training and validation cases named by a split ({"train": [...], "val": [...]})."""
    by_id = {p.case_id: p for p in pairs}
    missing = [c for c in list(split.get("train", [])) + list(split.get("val", [])) if c not in by_id]
    if missing:
        raise MedsegInputError(data, f"the split names cases the dataset does not hold: {missing[:10]}")
    overlap = set(split.get("train", [])) & set(split.get("val", []))
    if overlap:
        raise MedsegInputError(data, f"the split has cases in both train and val: {sorted(overlap)[:10]}")
    if not split.get("train"):
        raise MedsegInputError(data, "the split has no training cases")
    return [by_id[c] for c in split["train"]], [by_id[c] for c in split.get("val", [])]


def load_cases(pairs: list[CasePair], mapping: LabelMapping, pre: Preprocessor, workers: int,
               desc: str, cache: CaseCache | None = None, channels: int | None = None
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Read, crop and resample cases (not yet normalised) in parallel threads (decoding releases
    the GIL), from the on-disk cache where an entry for the same files and settings exists."""
    cache = cache or CaseCache(None)

    def one(pair: CasePair) -> tuple[torch.Tensor, torch.Tensor]:
        key = case_key(list(pair.image_files) + [pair.label], pre, mapping.to_dict())
        resampled = cache.load(key)
        if resampled is None:
            resampled = pre.resample(read_case(pair, mapping, channels))
            cache.save(key, resampled)
        return resampled.image, resampled.label

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        loaded = list(tqdm(pool.map(one, pairs), total=len(pairs), desc=desc, unit="case",
                           leave=False, disable=len(pairs) < 20))
    return [x for x, _ in loaded], [y for _, y in loaded]


def check_run_folder(out: Path, resume: bool, epochs: int | None = None, minutes: float | None = None) -> None:
    """Refuse a run folder that holds files (unless resuming), and a resume with nothing to do.

    A finished run is resumed only to be extended, explicitly: `epochs` (a total) beyond the
    epochs done or `minutes` (a total) beyond the minutes spent. Its earlier validation
    predictions and metrics (RUN/validation) belong to the old weights and are removed, so
    finishing the extended run makes them again.
    """
    if resume:
        if not checkpoint_path(out, "last").is_file():
            raise FileNotFoundError(f"{out}: nothing to resume (no checkpoints/last.pt)")
        if not run_finished(out):
            return
        info = read_run_info(out)
        done, spent = int(info.get("epochs_done") or 0), float(info.get("elapsed_s") or 0.0) / 60
        if epochs is None and minutes is None:
            raise MedsegInputError(out, f"this run's training finished ({done} epochs, {spent:.1f} minutes); nothing "
                                   f"to resume. To train it further, give --epochs more than {done} or --minutes "
                                   f"more than {spent:.1f} (totals) with --resume")
        if epochs is not None and epochs <= done:
            raise MedsegInputError(out, f"this run already trained {done} epochs; --epochs {epochs} adds none "
                                   f"(give the new total, more than {done})")
        if minutes is not None and minutes <= spent:
            raise MedsegInputError(out, f"this run already trained {spent:.1f} minutes; --minutes {minutes:g} adds "
                                   f"none (give the new total, more than {spent:.1f})")
        target = f"{epochs} epochs" if epochs is not None else f"{minutes:g} minutes"
        print(f"{out}: extending a finished run ({done} epochs, {spent:.1f} minutes) to {target}; its "
              "checkpoints, log and report are updated as it trains")
        shutil.rmtree(out / VALIDATION_DIR, ignore_errors=True)
        return
    if out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()):
        what = "a medseg run" if (out / RUN_INFO).exists() else "files"
        raise FileExistsError(f"{out}: folder already holds {what}; use --resume to continue it "
                              "or choose another --out (nothing was overwritten)")
