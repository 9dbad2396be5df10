"""Exclusive output folders: one medseg process at a time writes a run folder or a prediction
folder.

`output_lock(folder)` holds FOLDER/.medseg.lock for the length of a command: a file holding the
owner's pid and command line, locked with `flock`. The kernel drops an flock when its process
ends however it ends (kill -9 included), so a lock file left behind by a dead process is stale
by construction: the next command takes it over and says so. A second live process is refused
with a message naming the folder and the owner's pid, before it writes anything.

The lock file is hidden (dataset and mask discovery skip dot files) and removed on release; a
folder the lock created and nothing else used is removed again, so a refused or failed command
leaves no empty output folder behind.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import MedsegInputError, MedsegOutputError

__all__ = ["LOCK_NAME", "output_lock", "lock_owner"]

LOCK_NAME = ".medseg.lock"


def lock_owner(folder: str | os.PathLike) -> dict | None:
    """What FOLDER's lock file says about its owner ({"pid", "command"}), or None."""
    try:
        return json.loads((Path(folder) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None


def _open_locked(path: Path) -> int | None:
    """An fd holding an flock on the file now at `path`, or None when a live process holds it.
    Retries when the file was replaced between open and lock (its owner released it)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the owner removed the file we locked: lock the one there now


@contextmanager
def output_lock(folder: str | os.PathLike, what: str = "output folder") -> Iterator[Path]:
    """Hold FOLDER/.medseg.lock while the block runs (see the module docstring); yields the folder.

    Raises `MedsegInputError` naming the folder when another live medseg process holds it, and
    `MedsegOutputError` when the folder cannot be created or written (read-only, a file there).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise MedsegInputError(folder, f"is a file, not a folder (the {what})")
    created = not folder.exists()
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path)
    except OSError as exc:
        raise MedsegOutputError(folder, os.strerror(exc.errno).lower() if exc.errno else str(exc)) from exc
    if fd is None:
        owner = lock_owner(folder) or {}
        raise MedsegInputError(folder, f"is in use by another medseg process (pid {owner.get('pid', '?')}: "
                               f"{owner.get('command', '?')}); wait for it to finish or choose another folder")
    try:
        stale = os.read(fd, 4096)
        if stale.strip():
            try:
                pid = json.loads(stale).get("pid", "?")
            except ValueError:
                pid = "?"
            print(f"medseg: {path}: taking over a stale lock (its process, pid {pid}, is no longer running)",
                  file=sys.stderr)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": " ".join(["medseg", *sys.argv[1:]])}).encode())
    except OSError as exc:
        os.close(fd)
        raise MedsegOutputError(folder, os.strerror(exc.errno).lower() if exc.errno else str(exc)) from exc
    try:
        yield folder
    finally:
        try:
            path.unlink()
        except OSError:
            pass
        os.close(fd)
        if created:
            try:
                folder.rmdir()  # only when empty: nothing was written
            except OSError:
                pass
