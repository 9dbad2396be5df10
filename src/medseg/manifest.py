"""What medseg wrote in an output folder, so that it never writes over anything else.

Every command that writes into a folder the user names (`medseg predict --out`, `evaluate`'s
CSV and JSON, `medseg demo --out`) records its outputs in FOLDER/medseg-outputs.json before it
writes them: file paths relative to the folder, and folders it made whole (ending in "/"),
each with the command that wrote it. The rules that follow from the record:

* a folder holding anything the record does not list (reference labels, images, a user's notes)
  is refused, with the reason and a new folder to use instead: "use --overwrite" must never
  be advice that destroys ground truth;
* `--overwrite` replaces only recorded files;
* a folder medseg made whole (the demo's) may be removed and made again by the same command.

The record is written before the outputs (an interrupted command leaves entries for files it
never wrote, which is harmless) and only when it changes. It is a visible file, so a user sees
which files are medseg's; dot files (locks, temporary files of atomic writes) are not checked.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from .atomic import write_text
from .errors import MedsegInputError

__all__ = ["MANIFEST_NAME", "read_outputs", "record_outputs", "is_recorded", "foreign_entries", "new_folder_name",
           "check_output_folder", "remove_recorded"]

MANIFEST_NAME = "medseg-outputs.json"
MANIFEST_FORMAT = "medseg-outputs-1"


def read_outputs(folder: str | os.PathLike) -> dict[str, str]:
    """The recorded outputs of FOLDER ({relative path: writer}); empty without a readable record."""
    try:
        data = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    outputs = data.get("outputs") if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None
    return {str(k): str(v) for k, v in outputs.items()} if isinstance(outputs, dict) else {}


def _key(rel: str | os.PathLike) -> str:
    """A path relative to the folder as the record keys it: "/" separated; folders end in "/"."""
    text = str(rel)
    key = Path(text).as_posix()
    if Path(text).is_absolute() or key == ".." or key.startswith("../"):
        raise ValueError(f"{rel}: outputs are recorded relative to their folder, inside it")
    return key + "/" if text.endswith(("/", os.sep)) else key


def record_outputs(folder: str | os.PathLike, paths: Iterable[str | os.PathLike], writer: str) -> None:
    """Add `paths` (relative to FOLDER: files, or folders written as "name/") to FOLDER's record,
    writing it only when something is new. Called before the outputs are written."""
    folder = Path(folder)
    outputs = read_outputs(folder)
    new = {_key(p): writer for p in paths}
    if all(key in outputs for key in new):
        return
    outputs.update({k: v for k, v in new.items() if k not in outputs})
    write_text(folder / MANIFEST_NAME, json.dumps(
        {"format": MANIFEST_FORMAT,
         "about": "what medseg wrote in this folder: --overwrite replaces only these, and medseg refuses to "
                  "write where anything else is",
         "outputs": dict(sorted(outputs.items()))}, indent=1) + "\n")


def is_recorded(folder: str | os.PathLike, rel: str | os.PathLike, outputs: dict[str, str] | None = None) -> bool:
    """Whether `rel` (relative to FOLDER) is a recorded output, or lies in a recorded folder."""
    outputs = read_outputs(folder) if outputs is None else outputs
    rel = _key(rel).rstrip("/")
    parts = rel.split("/")
    return rel in outputs or any("/".join(parts[:i]) + "/" in outputs for i in range(1, len(parts) + 1))


def foreign_entries(folder: str | os.PathLike, limit: int = 5) -> list[Path]:
    """Up to `limit` files under FOLDER that medseg did not record (dot files and the record itself
    left out): what an output must never be written beside."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    outputs = read_outputs(folder)
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        inside = here.relative_to(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not is_recorded(folder, inside / d, outputs))
        for name in sorted(files):
            if name.startswith(".") or (here == folder and name == MANIFEST_NAME):
                continue
            if not is_recorded(folder, inside / name, outputs):
                found.append(here / name)
                if len(found) >= limit:
                    return found
    return found


def new_folder_name(folder: str | os.PathLike, tag: str) -> Path:
    """A folder beside FOLDER that does not exist yet: NAME-TAG, NAME-TAG-2, ..."""
    folder = Path(folder)
    candidate, n = folder.with_name(f"{folder.name}-{tag}"), 2
    while candidate.exists():
        candidate, n = folder.with_name(f"{folder.name}-{tag}-{n}"), n + 1
    return candidate


def check_output_folder(folder: str | os.PathLike, targets: Iterable[Path], *, overwrite: bool, what: str,
                        flag: str = "--out", tag: str = "medseg") -> None:
    """Refuse to write `targets` into FOLDER when it holds anything medseg did not write
    (`MedsegInputError`, naming some of the files and a new folder), or, without `overwrite`,
    when targets are already there (`FileExistsError`). A missing or empty folder passes."""
    folder = Path(folder)
    foreign = foreign_entries(folder)
    if foreign:
        names = ", ".join(str(p.relative_to(folder)) for p in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise MedsegInputError(folder, f"holds files medseg did not write ({names}); they may be reference labels or "
                               f"other data, and medseg never writes over or beside files it did not write, "
                               f"--overwrite included. Choose a new {flag} folder, e.g. {new_folder_name(folder, tag)}")
    existing = [t for t in targets if Path(t).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: already exists ({len(existing)} of the {what} to write do, written by "
                              "medseg earlier); use --overwrite to replace them or choose another --out")


def remove_recorded(folder: str | os.PathLike) -> None:
    """Delete every output FOLDER's record lists, then the record: for a command that makes its
    folder again (the demo). Only recorded paths are touched."""
    folder = Path(folder)
    for rel in sorted(read_outputs(folder), reverse=True):
        path = folder / rel.rstrip("/")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
