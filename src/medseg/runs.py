"""The run folder: where a run keeps its files, how its checkpoints are written and read, and
how a model is rebuilt from one. Every other module goes through here for these paths.

    RUN/run.json              settings, dataset summary, label mapping, split, timings
    RUN/plan.json             the plan the run trained with
    RUN/log.csv               one row per epoch
    RUN/checkpoints/{last,best}.pt
    RUN/fold_K/               the folds of a cross-validation folder (each an ordinary run)

A checkpoint is self-contained: weights plus everything prediction needs (model spec, label
mapping, preprocessing, patch size), so `medseg predict` needs nothing but the run folder. It is
written atomically, so a crash never leaves a half-written file behind.
"""
from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from .atomic import write_bytes
from .errors import MedsegInputError
from .io.dataset import natural_key
from .nets import build_model

RUN_INFO = "run.json"
PLAN_FILE = "plan.json"
LOG_CSV = "log.csv"
CHECKPOINTS = "checkpoints"
CALIBRATION_FILE = "calibration.json"  # temperature, ECE before/after, flag threshold (training.calibrate)


def checkpoint_path(run: str | os.PathLike, which: str = "last") -> Path:
    """RUN/checkpoints/{which}.pt (which: last, best)."""
    return Path(run) / CHECKPOINTS / f"{which}.pt"


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a checkpoint atomically (`medseg.atomic`): serialised in memory first, so a failed
    write is an `OSError` naming the file, never a torch-internal message, and the previous
    checkpoint stays whole."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, loaded weights-only: tensors, numbers, strings and plain
    containers. A checkpoint holding anything else (a pickled object can run code when it is
    loaded) is refused unopened, as is a file that is empty, truncated or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here")
    if path.stat().st_size == 0:
        raise MedsegInputError(path, "checkpoint file is empty (0 bytes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        raise MedsegInputError(path, "refused: the checkpoint holds more than weights (a pickled object, which "
                               "could run code when loaded); medseg loads tensors, numbers and strings only"
                               + (f" ({found[0].rstrip('.')})" if found else "")) from exc
    except Exception as exc:  # a truncated zip, a text file, a broken pickle ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
        raise MedsegInputError(path, f"is truncated or not a medseg checkpoint ({type(exc).__name__}: {first})") from exc
    if not isinstance(state, dict) or "model" not in state or "model_name" not in state:
        raise MedsegInputError(path, "is not a medseg checkpoint (no model weights and settings in it)")
    return state


def not_a_run(path: str | os.PathLike, missing: str = "no run.json, no checkpoints/") -> MedsegInputError:
    """The error for a path given as a run folder that is none: "not found" when nothing is
    there; the run inside when it holds one (a demo folder keeps its run in OUT/run); else what
    is missing."""
    path = Path(path)
    if not path.exists():
        return MedsegInputError(path, "not found (a run folder made by `medseg train` was expected)")
    inside = sorted(p.parent for p in path.glob(f"*/{RUN_INFO}")) if path.is_dir() else []
    if inside:
        what = "a demo folder" if (path / "run" / RUN_INFO).is_file() else "a folder holding run folders"
        names = ", ".join(str(p) for p in inside[:3])
        return MedsegInputError(path, f"is {what}, not a run folder; the run is inside it: use {names}")
    return MedsegInputError(path, f"is not a medseg run folder ({missing}); train one with `medseg train`")


def find_checkpoint(run: Path, which: str = "best") -> Path:
    """RUN/checkpoints/{which}.pt, falling back from best to last (a run without validation)."""
    run = Path(run)
    for name in ([which, "last"] if which == "best" else [which]):
        candidate = checkpoint_path(run, name)
        if candidate.is_file():
            return candidate
    raise not_a_run(run, f"no checkpoints/{which}.pt")


def model_from_state(state: dict, device: torch.device | str | None = None) -> nn.Module:
    """The network a checkpoint describes, with its weights ("model": the averaged weights when
    the run used EMA), in eval mode."""
    model = build_model(state["model_name"], int(state["in_channels"]), int(state["num_classes"]),
                        int(state["spatial_dims"]), **state.get("model_options", {}))
    model.load_state_dict(state["model"])
    if device is not None:
        model.to(device)
    return model.eval()


def read_run_info(run_dir: str | os.PathLike) -> dict:
    """run.json of a run folder, with a clear error when it is not one."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise not_a_run(run_dir, "no run.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MedsegInputError(path, f"is not valid JSON ({exc})") from exc


def run_label_suffix(info: dict) -> str | None:
    """The mask suffix a run trained with (side-by-side layouts), so its dataset is re-read with
    the same masks: a run on CHASE_DB1's second observer is scored against the second observer."""
    return (info.get("dataset") or {}).get("label_suffix")


def run_finished(run: Path) -> bool:
    """Whether run.json says the run's training ended (False when it cannot be read)."""
    try:
        return bool(json.loads((Path(run) / RUN_INFO).read_text()).get("finished"))
    except (OSError, json.JSONDecodeError):
        return False


def fold_dir(root: str | os.PathLike, fold: int) -> Path:
    return Path(root) / f"fold_{int(fold)}"


def fold_runs(root: str | os.PathLike) -> list[Path]:
    """Fold run folders under a cross-validation folder that hold a checkpoint, in fold order."""
    root = Path(root)
    found = [p for p in root.glob("fold_*") if p.is_dir() and (p / CHECKPOINTS).is_dir()
             and any((p / CHECKPOINTS).glob("*.pt"))]
    return sorted(found, key=lambda p: natural_key(p.name))


def read_calibration(run: str | os.PathLike) -> dict | None:
    """RUN/calibration.json (temperature, ECE before and after, the flag threshold), or None for
    a run calibrated never (runs older than calibration predict as they always did)."""
    path = Path(run) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MedsegInputError(path, f"is not readable JSON ({exc}); delete it and run `medseg report "
                               f"{Path(run)}` to fit the calibration again") from exc
