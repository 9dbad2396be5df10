"""`medseg suggest`: which unlabelled cases to label next, and in a volume which slices.

The rule (one definition, used by the command and by the labelling benchmark):

* A case's expected benefit is its case score (`medseg.inference.uncertainty.case_score`): the
  mean calibrated predictive entropy over the foreground-relevant region. Labelling teaches the
  model most where it is unsure about the structure itself; the mean over the relevant region
  does not grow with the structure's size (a large confident organ does not outrank a small
  doubtful one) and ignores the background every model is sure of.
* Foreground-aware by construction: a case where no foreground class is even possible has an
  empty relevant region, scores 0 and ranks last (nnActive found that spending labels on cases
  without foreground is what makes uncertainty sampling lose to foreground-aware random).
* Ties (equal scores, e.g. several empty cases) are broken by case name, so a ranking repeats.
* No diversity term: each row is a different image or patient, and `benchmarks/suites/labelling.py`
  measures whether the ranking beats random and foreground-aware random at equal labelled count.
* Volumes: the most informative slices are the slices (across the axial axis when the file's
  direction says which axis is axial; else across the file's third index k) with the largest
  summed entropy over the relevant region: the slice where an annotator fixes the most doubtful
  voxels. Slice numbers are the file's 0-based voxel index along that axis (ITK-SNAP shows +1).

Cases are predicted one at a time (only one case's maps in memory), with a progress bar; the CSV
is written once, atomically, never into the input folder and never over a file it did not write.
"""
from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import check_writable, write_text
from ..case import Case
from ..errors import MedsegInputError
from ..io.layout import InputCase, prediction_inputs
from .predict import check_input, read_input_case
from .predictor import Predictor
from .uncertainty import relevant_region

SUGGESTIONS_CSV = "suggestions.csv"
HEADER_START = "rank,case,score"   # how a file this command wrote begins (checked before replacing one)
TOP_SLICES = 3                     # slices listed per volume, most informative first
AXIAL_COSINE = 0.7                 # an index axis this close to head-foot (|cos|) is called axial


@dataclass
class Suggestion:
    """One unlabelled case's reason to be labelled."""
    case: str
    score: float                                  # `case_score`: mean entropy (nats) over the relevant region
    flagged: bool                                 # score at or above the run's flag threshold
    relevant_voxels: int                          # size of the relevant region
    sizes: dict[str, float] = field(default_factory=dict)  # class -> predicted mL (3D) or pixels (2D)
    slices: list[int] = field(default_factory=list)         # 3D: most informative slices, best first
    slice_axis: str = ""                          # 3D: "k (axial)", "j (axial)", ... or "k"


def slice_axis(case: Case) -> tuple[int, str]:
    """(array axis, name) across which a volume's slices are counted: the index axis whose
    direction is closest to head-foot (axial slices) when the file's direction says so, else
    the file's third index k (array axis 0). Array axis a is the file's index axis 2 - a."""
    direction = (case.meta.get("geometry") or {}).get("direction")
    if direction is not None and len(direction) == 9:
        matrix = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))  # rows: L, P, S; columns: i, j, k
        index_axis = int(np.argmax(matrix[2]))
        if matrix[2, index_axis] >= AXIAL_COSINE:
            return 2 - index_axis, f"{'ijk'[index_axis]} (axial)"
    return 0, "k"


def informative_slices(entropy: torch.Tensor, region: torch.Tensor, axis: int, top: int = TOP_SLICES) -> list[int]:
    """The `top` slices along `axis` with the largest summed entropy inside `region`, best first
    (ties: lower index first); slices with nothing doubtful are never listed."""
    weight = torch.where(region, entropy.float(), torch.zeros((), dtype=torch.float32))
    other = tuple(d for d in range(weight.ndim) if d != axis)
    per_slice = weight.sum(dim=other).double().numpy()
    order = np.lexsort((np.arange(per_slice.size), -per_slice))
    return [int(i) for i in order[:top] if per_slice[i] > 0]


def predicted_sizes(mask: np.ndarray, case: Case, class_names: list[str]) -> dict[str, float]:
    """Predicted size of every foreground class: millilitres for volumes, pixels for pictures."""
    counts = np.bincount(np.asarray(mask, dtype=np.int64).ravel(), minlength=len(class_names))
    if case.spatial_dims == 3:
        ml = float(np.prod(case.spacing)) / 1000.0
        return {name: round(float(counts[k]) * ml, 4) for k, name in enumerate(class_names) if k > 0}
    return {name: float(counts[k]) for k, name in enumerate(class_names) if k > 0}


def suggestion_for(predictor: Predictor, case: Case, top_slices: int = TOP_SLICES) -> Suggestion:
    """Predict one case with its uncertainty and say why it is worth labelling."""
    result = predictor.predict_uncertain(case)
    region = relevant_region(result.probabilities)
    suggestion = Suggestion(case.case_id, float(result.score), bool(result.flagged), int(region.sum()),
                            predicted_sizes(result.mask, case, predictor.class_names))
    if case.spatial_dims == 3:
        axis, suggestion.slice_axis = slice_axis(case)
        suggestion.slices = informative_slices(result.entropy, region, axis, top_slices)
    return suggestion


def rank(suggestions: list[Suggestion]) -> list[Suggestion]:
    """Highest case score first; equal scores by case name (the module's rule)."""
    return sorted(suggestions, key=lambda s: (-s.score, s.case))


def reason(s: Suggestion, volumes: bool) -> str:
    """One readable line: the score, the region it was judged on, what was predicted."""
    unit = "mL" if volumes else "px"
    sizes = ", ".join(f"{name} {value:g} {unit}" for name, value in s.sizes.items())
    if s.relevant_voxels == 0:
        text = "no foreground predicted or likely anywhere"
    else:
        text = f"mean entropy {s.score:.3f} nats over {s.relevant_voxels} relevant {'voxels' if volumes else 'pixels'}"
    return text + (f"; predicted {sizes}" if sizes else "") + ("; flagged as likely wrong" if s.flagged else "")


def suggestions_csv(ranked: list[Suggestion], class_names: list[str], volumes: bool) -> str:
    """The CSV text: rank, case, score, flagged, (3D: slice, slices, slice_axis), sizes, reason."""
    size_columns = [f"{'volume_ml' if volumes else 'area_px'}_{name}" for name in class_names[1:]]
    columns = ["rank", "case", "score", "flagged"] + (["slice", "slices", "slice_axis"] if volumes else []) \
        + size_columns + ["reason"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for position, s in enumerate(ranked, start=1):
        row = [position, s.case, f"{s.score:.6f}", int(s.flagged)]
        if volumes:
            row += [s.slices[0] if s.slices else "", " ".join(map(str, s.slices)), s.slice_axis]
        row += [f"{s.sizes.get(name, 0.0):g}" for name in class_names[1:]] + [reason(s, volumes)]
        writer.writerow(row)
    return buffer.getvalue()


def check_destination(out: Path, inputs: Path, overwrite: bool) -> None:
    """Refuse an output inside the input folder (named), and an existing file unless `overwrite`
    and it is a suggestions file this command wrote (its header); fail now if it cannot be written."""
    folder = inputs.resolve() if inputs.is_dir() else inputs.resolve().parent
    target = out.resolve()
    if target == folder or folder in target.parents:
        raise MedsegInputError(out, f"is inside the input folder {folder}; suggest never writes into the folder of "
                               f"unlabelled cases: choose --out elsewhere, e.g. ./{SUGGESTIONS_CSV}")
    if out.is_dir():
        raise MedsegInputError(out, f"is a folder; --out names the CSV file to write, e.g. {out / SUGGESTIONS_CSV}")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out}: already exists; use --overwrite to replace it or choose another --out")
        with open(out, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        if not first.startswith(HEADER_START):
            raise MedsegInputError(out, "exists and is not a suggestions file medseg wrote (its first line does not "
                                   f"start with {HEADER_START}); medseg never writes over it, --overwrite included")
    check_writable(out)


def usable_inputs(predictor: Predictor, inputs: Path, keep_going: bool) -> tuple[list[InputCase], list[MedsegInputError]]:
    """The cases under `inputs` that fit the model (`check_input`, as `medseg predict` checks
    them); a bad one raises unless `keep_going`, which sets it aside."""
    items = prediction_inputs(inputs, predictor.in_channels, predictor.dataset.channel_names)
    good, failures = [], []
    dims = predictor.members[0].spatial_dims
    for item in tqdm(items, desc="checking", unit="case", disable=None):
        try:
            check_input(item, predictor.in_channels, dims)
            good.append(item)
        except MedsegInputError as err:
            failures.append(err)
    if failures and not keep_going:
        more = f" (and {len(failures) - 1} more bad input(s); --keep-going ranks the others)" if len(failures) > 1 else ""
        raise MedsegInputError(failures[0].path, failures[0].problem + more)
    return good, failures


def suggest(run: str | os.PathLike | Predictor, inputs: str | os.PathLike, out: str | os.PathLike | None = None, *,
            n: int | None = 10, device: str = "auto", checkpoint: str = "best", overwrite: bool = False,
            keep_going: bool = False, top_slices: int = TOP_SLICES) -> tuple[Path, list[Suggestion]]:
    """Rank the unlabelled cases under `inputs` (a file, folder or DICOM series, as `predict`
    takes) by expected benefit of labelling (module docstring); write the best `n` (None: all)
    to `out` (default ./suggestions.csv) and return (path, the full ranking).

    `run` is a run folder or model package (loaded once), or a `Predictor` already loaded. Bad
    inputs stop the command before any prediction unless `keep_going` (then they are skipped and
    named on stderr)."""
    inputs = Path(inputs)
    out = Path(out) if out is not None else Path(SUGGESTIONS_CSV)
    if n is not None and n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if not inputs.exists():
        raise MedsegInputError(inputs, "not found")
    check_destination(out, inputs, overwrite)
    predictor = run if isinstance(run, Predictor) else Predictor(run, checkpoint=checkpoint, device=device)
    items, failures = usable_inputs(predictor, inputs, keep_going)
    if not items:
        raise MedsegInputError(inputs, "holds no case that can be ranked")
    suggestions: list[Suggestion] = []
    for index, item in enumerate(tqdm(items, desc="ranking", unit="case", disable=None)):
        predictor.cases_ahead = len(items) - index - 1
        try:
            case = read_input_case(item, predictor.in_channels)
        except MedsegInputError as err:
            if not keep_going:
                raise
            failures.append(err)
            continue
        suggestions.append(suggestion_for(predictor, case, top_slices))
        del case
    ranked = rank(suggestions)
    volumes = predictor.members[0].spatial_dims == 3
    write_text(out, suggestions_csv(ranked[:n] if n else ranked, predictor.class_names, volumes))
    for err in failures:
        tqdm.write(f"skipped {err}", file=sys.stderr)
    return out, ranked
