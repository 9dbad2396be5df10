"""On-disk cache of resampled cases, so a second run (or fold) does no decoding or resampling.

A cached case is the output of `Preprocessor.resample` (cropped, resampled, not yet normalised)
saved as one uncompressed ``.npz``. Its key hashes everything that could change it: the files'
absolute paths, sizes and modification times, the preprocessing settings (the crop rule
included: ``crop_nonzero`` and ``crop_background``) and the label mapping,
so an edited file or a changed setting simply misses the cache and is rebuilt; stale entries
are never read. Entries are written atomically (`medseg.atomic`), so an interrupted run never
leaves a half-written entry behind; an entry that is unreadable anyway (a disk error, a copy cut
short) is rebuilt and replaced, and the cache says so once per run instead of failing.

Location: ``$MEDSEG_CACHE`` if set, else ``~/.cache/medseg/preprocessed``. Deleting the folder
is always safe.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from .preprocess import Preprocessor, Resampled

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("MEDSEG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "medseg" / "preprocessed"


def case_key(files: list[Path], pre: Preprocessor, mapping: dict | None) -> str:
    """Hash of the inputs and settings that determine a resampled case."""
    stats = []
    for f in files:
        st = Path(f).stat()
        stats.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    # every setting but normalisation (applied after the cache); the crop rule changes the key
    settings = {k: v for k, v in pre.to_dict().items() if k != "normalization"}
    blob = json.dumps({"v": CACHE_VERSION, "files": stats, "pre": settings, "labels": mapping}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()


class CaseCache:
    """Load and store `Resampled` cases by key; `root=None` turns caching off."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self.hits = self.misses = self.rebuilt = 0

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str) -> Resampled | None:
        if self.root is None or not self._path(key).is_file():
            self.misses += 1
            return None
        try:
            with np.load(self._path(key)) as z:
                label = torch.from_numpy(z["label"]) if "label" in z.files else None
                box = tuple(slice(int(a), int(b)) for a, b in z["box"])
                result = Resampled(torch.from_numpy(z["image"]), label, box)
        except Exception:  # unreadable entry (truncated zip, bad header, ...): rebuilt and replaced
            self.misses += 1
            self.rebuilt += 1
            if self.rebuilt == 1:
                print(f"medseg: {self._path(key)}: unreadable cache entry; rebuilding it (and any other "
                      "unreadable ones) from the original files", file=sys.stderr)
            return None
        self.hits += 1
        return result

    def save(self, key: str, case: Resampled) -> None:
        if self.root is None:
            return
        arrays = {"image": case.image.numpy(), "box": np.array([[b.start, b.stop] for b in case.box])}
        if case.label is not None:
            arrays["label"] = case.label.numpy()
        try:
            with atomic_path(self._path(key)) as tmp:
                np.savez(tmp, **arrays)
        except OSError:  # a full or read-only disk only costs speed
            pass
