"""Errors that medseg raises about its inputs.

Every problem with a user's files (missing, unreadable, wrong size, unexpected values) is a
`MedsegInputError` whose message starts with the offending file or folder, so the user knows
which file to look at without reading a traceback.
"""
from __future__ import annotations

import os

__all__ = ["MedsegInputError"]


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
