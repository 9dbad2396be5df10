"""Errors that medseg raises about its inputs.

Every problem with a user's files (missing, unreadable, wrong size, unexpected values) is a
`MedsegInputError` whose message starts with the offending file or folder, so the user knows
which file to look at without reading a traceback. A file medseg cannot write (full disk,
read-only folder) is a `MedsegOutputError`: "cannot write FILE: no space left on device".
"""
from __future__ import annotations

import os

__all__ = ["MedsegInputError", "MedsegOutputError", "error_line"]


class MedsegInputError(ValueError):
    """A bad input file or folder: ``str(err) == f"{path}: {problem}"``.

    `path` is the file or folder at fault (kept as given, str or Path); `problem` says what is
    wrong with it and, where it helps, what was expected.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def __reduce__(self):  # keep both fields across pickling (e.g. DataLoader worker processes)
        return (type(self), (self.path, self.problem))


class MedsegOutputError(OSError):
    """An output medseg could not write: ``str(err) == f"cannot write {path}: {problem}"``.

    An `OSError`, so code that treats a failed write as a lost convenience (the preprocessing
    cache) keeps catching it; the previous file at `path`, if any, is left as it was.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"cannot write {path}: {problem}")
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.problem}"

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


def error_line(exc: BaseException) -> str:
    """An error as one line that names the file: an OSError from the system ("[Errno 13]
    Permission denied: 'x'") becomes "x: permission denied"."""
    if isinstance(exc, OSError) and not isinstance(exc, MedsegOutputError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror[0].lower()}{exc.strerror[1:]}"
    text = str(exc).strip()
    return text or type(exc).__name__
