"""What `evaluate` checks before it scores anything: that an output it writes replaces only an
earlier evaluation medseg wrote (`medseg.manifest`), and that the predictions are not the
references themselves (the same files, or byte-for-byte copies), whose perfect scores would
measure nothing: medseg once advised `--overwrite` onto a label folder and then reported
Dice 1.000 without a word."""
from __future__ import annotations

import filecmp
import os
import warnings
from pathlib import Path

from ..atomic import check_writable
from ..errors import MedsegInputError
from ..manifest import MANIFEST_NAME, is_recorded

__all__ = ["check_output", "identical_pairs"]


def check_output(path: Path, overwrite: bool) -> None:
    """An evaluation file may replace only an earlier one medseg wrote (recorded in its folder's
    medseg-outputs.json), and only with `overwrite`; it must be writable. Hidden paths are a
    caller's own temporaries."""
    if path.exists() and not path.name.startswith("."):
        if not is_recorded(path.parent, path.name):
            raise MedsegInputError(path, f"exists and medseg did not write it (it is not in {path.parent / MANIFEST_NAME}); "
                                   "medseg never writes over a file it did not write, --overwrite included. Write "
                                   "elsewhere with --csv/--json (an evaluation from before medseg recorded its "
                                   "outputs: delete it)")
        if not overwrite:
            raise FileExistsError(f"{path}: an earlier evaluation is there; use --overwrite to replace it or "
                                  "--csv/--json to write elsewhere (nothing was overwritten)")
    check_writable(path)


def identical_pairs(pairs: list[tuple[Path, Path]], pred_root: Path, accept: bool) -> int:
    """How many predictions are byte for byte their reference (the same file, or a copy). When
    all are, refuse (`accept`: warn): such scores measure nothing, and mean that the references
    were written over or the folders mixed up."""
    same = [(p, r) for p, r in pairs if os.path.samefile(p, r) or filecmp.cmp(p, r, shallow=False)]
    if not same or len(same) < len(pairs):  # a perfect prediction may be written as its reference was
        return len(same)
    problem = (f"all {len(pairs)} predicted mask(s) are byte for byte their reference masks (e.g. "
               f"{same[0][0].name} and {same[0][1]}): copies of the references, or references written over")
    if not accept:
        raise MedsegInputError(pred_root, problem + "; every score would be perfect without measuring anything. "
                               "Check the two folders (--accept-identical scores them anyway)")
    warnings.warn(f"{pred_root}: {problem}; their perfect scores measure nothing", stacklevel=3)
    return len(same)
