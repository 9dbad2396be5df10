"""Checkpoints written atomically, so a crash never leaves a half-written file behind.

A checkpoint is self-contained: weights plus everything prediction needs (model spec, label
mapping, preprocessing, patch size), so `medseg predict` needs nothing but the run folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def save_checkpoint(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here")
    return torch.load(path, map_location="cpu", weights_only=False)


def find_checkpoint(run: Path, which: str = "best") -> Path:
    """RUN/checkpoints/{which}.pt, falling back from best to last (a run without validation)."""
    run = Path(run)
    folder = run / "checkpoints"
    for name in ([which, "last"] if which == "best" else [which]):
        candidate = folder / f"{name}.pt"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{run}: not a medseg run folder (no checkpoints/{which}.pt); train one with `medseg train`")
