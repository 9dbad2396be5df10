"""Atomic file writes: a file medseg writes is either the whole new file or the old one.

Every output (masks, overlays, checkpoints, run.json, logs, reports, cache entries, exports) is
written through `atomic_path`: to a hidden temporary file in the same folder (same file system,
so the final rename is atomic), flushed to the disk with `fsync`, checked (not empty, the
expected size, and whatever the caller's `check` reads back), and only then renamed over the
target. A failure at any step removes the temporary file, leaves the previous file untouched and
raises `MedsegOutputError` ("cannot write FILE: no space left on device", or the real cause).

Why a check after the write: some writers do not report a failed write (SimpleITK's NIfTI
writer on a full disk returns normally and leaves a truncated file), so "the writer returned"
proves nothing; the size and a read-back do.
"""
from __future__ import annotations

import errno
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import MedsegInputError, MedsegOutputError

__all__ = ["atomic_path", "atomic_file_set", "check_writable", "write_bytes", "write_text", "temporary_name", "write_problem"]

LOW_SPACE_BYTES = 64 * 1024  # below this much free space a failed write is put down to a full disk


def temporary_name(path: Path) -> Path:
    """A hidden sibling of `path` that keeps its suffixes (writers choose the format by them) and
    is unique per process and call, so parallel writers never share one."""
    suffixes = "".join(path.suffixes[-2:])
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp{suffixes}")


def _disk_full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < LOW_SPACE_BYTES


def write_problem(exc: BaseException | None, folder: Path) -> str:
    """What went wrong with a write, in a few words: the OS's reason for an `OSError` ("no space
    left on device", "permission denied"), "no space left on device" when the folder's disk is
    full whatever the writer said, else the writer's own first line."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower() if exc.errno != errno.ENOSPC else "no space left on device"
    if _disk_full(folder):
        return "no space left on device"
    if exc is None:
        return "the file was not written completely"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _sync(path: Path) -> int:
    """fsync a file; returns its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse fsync on folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, size: int | None = None,
                check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to; on leaving the block the file is
    synced, checked (non-empty; exactly `size` bytes when given; `check(tmp)` raises when the
    content is wrong) and renamed over `path`.

    A `MedsegInputError` from the block (the content itself is wrong, e.g. mask values that do
    not fit the format) passes through unchanged; every other failure becomes a
    `MedsegOutputError` naming `path`. The temporary file never outlives the block.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            written = _sync(tmp)
        except MedsegInputError as exc:  # the content is wrong: said of `path`, not of its temporary
            if Path(exc.path) == tmp:
                raise MedsegInputError(path, exc.problem) from exc
            raise
        except MedsegOutputError:
            raise
        except Exception as exc:  # writers report failures as OSError, RuntimeError, ValueError ...
            raise MedsegOutputError(path, write_problem(exc, path.parent)) from exc
        if written == 0 or (size is not None and written != size):
            raise MedsegOutputError(path, write_problem(None, path.parent))
        if check is not None:
            try:
                check(tmp)
            except Exception as exc:
                raise MedsegOutputError(path, write_problem(None, path.parent) if _disk_full(path.parent)
                                        else f"the written file does not read back ({exc})") from exc
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise MedsegOutputError(path, write_problem(exc, path.parent)) from exc
        _sync_folder(path.parent)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass


@contextmanager
def atomic_file_set(path: str | os.PathLike, *, check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """`atomic_path` for formats written as several files named after one another (MHD or NHDR
    header + raw data file): yield `path`'s name inside a hidden temporary folder beside it, so the
    header names its data file as it will be named in the end; on leaving the block every file
    there is synced, the set is checked (`check(header)`), and the files are renamed into place,
    the data files first and the header last, so the header never names data that is not there.
    A failure leaves the previous files whole and raises `MedsegOutputError` naming `path`."""
    path = Path(path)
    folder = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.tmpdir"
    try:
        try:
            folder.mkdir(parents=True)
            yield folder / path.name
            files = sorted(folder.iterdir(), key=lambda f: f.name == path.name)  # the header last
            if not files or any(_sync(f) == 0 for f in files):
                raise MedsegOutputError(path, write_problem(None, path.parent))
            if check is not None:
                check(folder / path.name)
            for f in files:
                os.replace(f, path.parent / f.name)
        except (MedsegInputError, MedsegOutputError):
            raise
        except Exception as exc:
            problem = write_problem(exc if isinstance(exc, OSError) else None, path.parent)
            if not isinstance(exc, OSError) and not _disk_full(path.parent):
                problem = f"the written files do not read back ({exc})"
            raise MedsegOutputError(path, problem) from exc
        _sync_folder(path.parent)
    finally:
        for f in folder.glob("*") if folder.is_dir() else ():
            f.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_path`); returns the path."""
    with atomic_path(path, size=len(data)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically (see `atomic_path`); returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def check_writable(path: str | os.PathLike) -> None:
    """Fail now, before any long work, when `path` could not be written (read-only folder or file
    system, a file where a folder should be, a full disk): creates and removes an empty
    temporary file beside it. Raises `MedsegOutputError`."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(b"")
        tmp.unlink()
    except OSError as exc:
        raise MedsegOutputError(path, write_problem(exc, path.parent)) from exc
