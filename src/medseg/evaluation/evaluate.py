"""Folder of predicted masks vs folder of reference masks -> per-case, per-class metrics.

    result = evaluate("runs/x/predictions", "data/kvasir-seg", csv_path="metrics.csv", json_path="summary.json")
    print(result.table())

Pairing is by file-name stem (``x.png`` predicts ``x.jpg``). The reference folder may be a mask
folder or a dataset folder with ``labels/`` or ``masks/`` inside. Every reference needs a
prediction; predictions without a reference are ignored with a warning.

Values -> classes:

* references: the dataset's `LabelMapping` when given (``mapping=``, e.g. the one stored in the
  training run), else inferred over the whole reference folder (`medseg.io.labels`);
* predictions: class-index masks as the predictor writes them (0..K-1) are taken as they are;
  otherwise, when they store classes the references' way (e.g. 0/255 like the references) the
  references' mapping is used, and failing that their own mapping is inferred over the
  prediction folder (so 0/255 binary predictions work against 0/1 references).

Metrics come from `medseg.evaluation.metrics.case_metrics` (one-vs-rest per class, never NaN): overlap
metrics and volumes for every class (background included), and for foreground classes the surface
distances (HD95, ASSD in mm), the normalised surface Dice at ``tolerance`` mm and lesion-wise
detection. Distances use the voxel spacing read from each reference file's header (3D; 2D
pictures have spacing 1, so their distances are in pixels), unless ``spacing=`` is given.

Empty masks (`medseg.evaluation.surface`): a class absent from both masks scores Dice 1 and distance 0; a
class in only one of them scores Dice 0 and the image diagonal in mm as its distances. Such rows
stay in every mean; each row's ``status`` says which case it was (found, missed, spurious,
absent) and the summary counts them per class.

The summary gives, per class and metric, the mean, std (sample standard deviation, ddof=1; 0 for
a single case), median, min, max and n over cases.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import MedsegInputError
from ..manifest import record_outputs
from ..io.dataset import LABEL_DIR_NAMES, natural_key
from ..io.labels import IGNORE_INDEX, LabelMapping, infer_label_mapping
from ..io.registry import case_stem, is_mask_file, read_image_header, read_mask
from .checks import check_output, identical_pairs
from .metrics import ALL_METRIC_NAMES, case_metrics
from .result import STATS, STATUSES, EvaluationResult, case_status, default_class_names

__all__ = ["EvaluationResult", "evaluate", "default_class_names", "STATS", "STATUSES", "case_status"]

PROGRESS_MIN_CASES = 50


def _mask_folder(path: Path, role: str) -> Path:
    if not path.exists():
        raise MedsegInputError(path, f"{role} folder not found")
    if not path.is_dir():
        raise MedsegInputError(path, f"{role} must be a folder of masks")
    wanted = {n.lower() for n in LABEL_DIR_NAMES}
    inner = sorted(p for p in path.iterdir() if p.is_dir() and p.name.lower() in wanted)
    if len(inner) > 1:
        raise MedsegInputError(path, f"has several label folders ({', '.join(p.name for p in inner)}): keep one")
    return inner[0] if inner else path


def _masks_by_stem(folder: Path, role: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or not is_mask_file(p):
            continue
        stem = case_stem(p)
        if stem in found:
            raise MedsegInputError(p, f"two {role} masks with the same name stem '{stem}' ({found[stem].name}, {p.name})")
        found[stem] = p
    if not found:
        raise MedsegInputError(folder, f"holds no {role} mask files")
    return found


def declared_class_names(*folders: Path) -> list[str] | None:
    """Class names from a dataset.json in (or above) the reference folder: MSD's {"0": "background",
    "1": "anterior"} or nnU-Net's {"background": 0, "liver": 1}; None without one (or regions)."""
    for path in dict.fromkeys(f / "dataset.json" for folder in folders for f in (folder, folder.parent)):
        try:
            labels = json.loads(path.read_text()).get("labels")
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(labels, dict):
            continue
        pairs = ([(int(k), str(v)) for k, v in labels.items()] if all(str(k).isdigit() for k in labels)
                 else [(v, str(k)) for k, v in labels.items() if isinstance(v, int)])
        found = dict(pairs)
        if found and sorted(found) == list(range(len(found))):
            return [found[k] for k in range(len(found))]
    return None


def _names(paths: Sequence[Path], limit: int = 10) -> str:
    text = ", ".join(p.name for p in paths[:limit])
    return text + (f" ... and {len(paths) - limit} more" if len(paths) > limit else "")


def _values(raw: np.ndarray) -> set[int]:
    if raw.dtype == np.uint8:
        return {int(v) for v in np.nonzero(np.bincount(raw.ravel(), minlength=256))[0]}
    return {int(v) for v in np.unique(raw)}


def _prediction_mapping(union: set[int], paths: list[Path], ref_mapping: LabelMapping,
                        num_classes: int) -> LabelMapping:
    """How predicted values become classes (see the module docstring)."""
    if union and min(union) >= 0 and max(union) < num_classes:
        return LabelMapping("index", num_classes=num_classes)
    if ref_mapping.mode == "levels" and union <= set(ref_mapping.values):
        return ref_mapping
    if ref_mapping.mode == "threshold":
        return ref_mapping
    return infer_label_mapping((p, read_mask(p)) for p in paths)


class _MaskCache:
    """Masks read during the first pass, kept (up to `limit` bytes) so the second pass does not
    decode them again: on small volumes (MSD Hippocampus) reading is a large part of the time."""

    def __init__(self, limit: int = 512 * 2**20):
        self.limit, self.used, self.arrays = limit, 0, {}

    def read(self, path: Path) -> np.ndarray:
        array = read_mask(path)
        if self.used + array.nbytes <= self.limit:
            self.arrays[path] = array
            self.used += array.nbytes
        return array

    def take(self, path: Path) -> np.ndarray:
        array = self.arrays.pop(path, None)
        return read_mask(path) if array is None else array


def _scan(order: list[str], refs: dict[str, Path], preds: dict[str, Path], mapping: LabelMapping | None,
          cache: _MaskCache, ignore: float | None = None):
    """One pass over the masks: the references' mapping (unless given) and the predicted values."""
    union: set[int] = set()

    def ref_masks():
        bar = tqdm(order, desc="scanning masks", unit="case", disable=len(order) <= PROGRESS_MIN_CASES, leave=False)
        for stem in bar:
            union.update(_values(cache.read(preds[stem])))
            if mapping is None:
                yield refs[stem], cache.read(refs[stem])

    if mapping is None:
        mapping = infer_label_mapping(ref_masks(), ignore=ignore)
    else:
        for _ in ref_masks():
            pass
    return mapping, union


def _case_spacing(spacing: Sequence[float] | None, ref_path: Path, ndim: int) -> tuple[float, ...]:
    """The voxel size for one case: as given, else the reference's header in 3D, else 1 per pixel."""
    if spacing is not None:
        given = np.asarray(spacing, dtype=np.float64).ravel()
        values = tuple(float(v) for v in (np.repeat(given, ndim) if given.size == 1 else given))
    elif ndim == 3:
        values = tuple(float(v) for v in (read_image_header(ref_path).get("spacing") or (1.0,) * ndim))
    else:
        values = (1.0,) * ndim
    if len(values) != ndim or not all(math.isfinite(v) and v > 0 for v in values):
        raise MedsegInputError(ref_path, f"spacing {values} is not {ndim} positive numbers")
    return values


def _compare_spacing(pred_path: Path, ref_path: Path, ref_spacing: tuple[float, ...], refuse: bool) -> None:
    """A prediction must lie on its reference's voxel grid: the same shape is not enough."""
    pred_spacing = tuple(float(v) for v in (read_image_header(pred_path).get("spacing") or ref_spacing))
    if len(pred_spacing) == len(ref_spacing) and np.allclose(pred_spacing, ref_spacing, rtol=1e-3, atol=1e-6):
        return
    problem = (f"voxel spacing {'x'.join(f'{v:g}' for v in pred_spacing)} mm differs from the reference's "
               f"{'x'.join(f'{v:g}' for v in ref_spacing)} mm ({ref_path})")
    if refuse:
        raise MedsegInputError(pred_path, problem + "; distances and volumes would be wrong. Resample the "
                               "prediction, or pass --accept-spacing to score it on the reference's spacing")
    warnings.warn(f"{pred_path}: {problem}; scored on the reference's spacing", stacklevel=3)


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def evaluate(
    pred_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    csv_path: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    mapping: LabelMapping | dict | None = None,
    cases: Sequence[str] | None = None,
    spacing: Sequence[float] | None = None,
    tolerance: float = 1.0,
    percentile: float = 95.0,
    distances: bool = True,
    lesions: bool = True,
    ignore_label: float | None = None,
    overwrite: bool = True,
    check_spacing: bool = True,
    accept_identical: bool = False,
    only_predicted: bool = False,
) -> EvaluationResult:
    """Score every reference mask against the prediction with the same stem.

    num_classes: K; default: the reference mapping's (or ``len(class_names)``).
    class_names: one name per class (list, or {index: name}); default: the labels of a dataset.json
                 beside the references (MSD, nnU-Net), else background, class1, ...
    mapping:     the references' LabelMapping (or its dict); default: inferred from the references.
    csv_path / json_path: where to write the per-case rows / summary + settings.
    cases:       evaluate only these case ids (name stems), e.g. a run's validation split out of
                 a dataset's label folder; each needs a reference and a prediction.
    only_predicted: evaluate only the references that have a prediction (a few predicted cases
                 against a whole label folder); by default a reference without one is an error.
    spacing:     voxel size in mm per axis for every case; default: each reference's header (3D)
                 or 1 (2D pictures).
    tolerance:   NSD tolerance in mm. percentile: of the surface distances (95: HD95).
    distances / lesions: switch off the surface-distance / lesion-wise metrics (faster).
    ignore_label: reference value meaning "not annotated" (sparse labels; a run's mapping carries
                 it): those voxels count in no metric (`medseg.evaluation.metrics.case_metrics`).
    overwrite:   False refuses a csv_path / json_path that already exists (an earlier evaluation).
                 A file there that medseg did not write (not in its folder's medseg-outputs.json)
                 is refused in any case; written files are recorded there.
    check_spacing: refuse a 3D prediction whose header spacing differs from its reference's (a
                 mask on another grid scores wrong distances and volumes); False only warns.
    accept_identical: score predictions that are byte for byte their references (refused when
                 all of them are, or when both folders are one: the scores would measure nothing).
    Output files are checked for writability before any case is scored.
    """

    pred_root, ref_root = Path(pred_dir), Path(label_dir)
    if not pred_root.exists():
        raise MedsegInputError(pred_root, "prediction folder not found")
    if not pred_root.is_dir():
        raise MedsegInputError(pred_root, "predictions must be a folder of masks")
    ref_folder = _mask_folder(ref_root, "reference")
    if pred_root.resolve() == ref_folder.resolve() and not accept_identical:
        raise MedsegInputError(pred_root, f"is the reference folder itself ({ref_folder}): every prediction would be "
                               "scored against itself, perfectly. Give the folder of predicted masks and the folder "
                               "of reference masks")
    for out in (Path(p) for p in (csv_path, json_path) if p is not None):
        check_output(out, overwrite)
    refs = _masks_by_stem(ref_folder, "reference")
    preds = _masks_by_stem(pred_root, "predicted")

    if cases is not None:
        wanted = [str(c) for c in cases]
        unknown = [c for c in wanted if c not in refs]
        if unknown:
            raise MedsegInputError(ref_folder, f"{len(unknown)} case(s) to evaluate have no reference mask here: "
                                               f"{', '.join(unknown[:10])}")
        preds = {c: p for c, p in preds.items() if c in wanted or c not in refs}  # others: not asked for
        refs = {c: refs[c] for c in wanted}
    if only_predicted:
        refs = {c: r for c, r in refs.items() if c in preds}
        if not refs:
            raise MedsegInputError(pred_root, f"none of its predictions has a reference mask in {ref_folder}")
    order = sorted(refs, key=natural_key)
    missing = [refs[s] for s in order if s not in preds]
    if missing:
        raise MedsegInputError(pred_root, f"{len(missing)} reference mask(s) have no prediction here: {_names(missing)}; "
                               "--only-predicted scores only the cases predicted, --cases the ones named")
    extra = [preds[s] for s in sorted(preds, key=natural_key) if s not in refs]
    if extra:
        warnings.warn(f"{pred_root}: {len(extra)} prediction(s) have no reference mask and are ignored: {_names(extra)}",
                      stacklevel=2)
    identical = identical_pairs([(preds[s], refs[s]) for s in order], pred_root, accept_identical)

    # values -> classes
    if isinstance(mapping, dict):
        mapping = LabelMapping.from_dict(mapping)
    if mapping is not None:
        mapping = mapping.with_ignore(ignore_label)
    cache = _MaskCache()
    ref_mapping, pred_values = _scan(order, refs, preds, mapping, cache, ignore_label)
    names = None
    if class_names is not None:
        names = ([class_names[k] for k in sorted(class_names)] if isinstance(class_names, Mapping)
                 else [str(n) for n in class_names])
    if num_classes is None:
        num_classes = len(names) if names is not None else ref_mapping.num_classes
    num_classes = int(num_classes)
    if num_classes < ref_mapping.num_classes and ref_mapping.mode != "index":
        raise MedsegInputError(ref_folder, f"num_classes={num_classes} but the reference masks store "
                                           f"{ref_mapping.num_classes} classes ({ref_mapping.describe()})")
    if names is None:
        declared = declared_class_names(ref_root, ref_folder)  # MSD / nnU-Net: dataset.json names its classes
        names = declared if declared and len(declared) == num_classes else default_class_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for {num_classes} classes")
    pred_paths = [preds[s] for s in order]
    pred_mapping = _prediction_mapping(pred_values, pred_paths, ref_mapping, num_classes)

    rows: list[dict] = []
    spacings: set[tuple[float, ...]] = set()
    for stem in tqdm(order, desc="evaluating", unit="case", disable=len(order) <= PROGRESS_MIN_CASES, leave=False):
        ref_path, pred_path = refs[stem], preds[stem]
        ref = ref_mapping.apply_checked(cache.take(ref_path), ref_path)
        pred = pred_mapping.apply_checked(cache.take(pred_path), pred_path)
        if pred.shape != ref.shape:
            raise MedsegInputError(
                pred_path, f"prediction size {'x'.join(map(str, pred.shape))} differs from the reference's "
                           f"{'x'.join(map(str, ref.shape))} ({ref_path})")
        known = ref[ref != IGNORE_INDEX] if ref_mapping.ignore is not None else ref
        for arr, path, role in ((known, ref_path, "reference"), (pred, pred_path, "prediction")):
            if arr.size and int(arr.max()) >= num_classes:
                raise MedsegInputError(path, f"{role} holds class {int(arr.max())}, but num_classes={num_classes}")
        case_spacing = _case_spacing(spacing, ref_path, ref.ndim)
        if spacing is None and ref.ndim == 3:
            _compare_spacing(pred_path, ref_path, case_spacing, check_spacing)
        spacings.add(case_spacing)
        scores = case_metrics(pred, ref, num_classes, case_spacing, tolerance=tolerance, percentile=percentile,
                              distances=distances, lesions=lesions, ignore_index=ref_mapping.ignore_index)
        ref_counts = np.bincount(known.ravel(), minlength=num_classes)
        pred_counts = np.bincount(pred.ravel(), minlength=num_classes)
        for k in sorted(scores):
            rows.append({"case": stem, "class": int(k), "class_name": names[k],
                         "status": case_status(int(ref_counts[k]), int(pred_counts[k])),
                         **{m: float(scores[k][m]) for m in ALL_METRIC_NAMES if m in scores[k]},
                         "ref_pixels": int(ref_counts[k]), "pred_pixels": int(pred_counts[k])})

    metric_names = tuple(m for m in ALL_METRIC_NAMES if any(m in r for r in rows))
    classes = sorted({r["class"] for r in rows})
    summary = {}
    for k in classes:
        mine = [r for r in rows if r["class"] == k]
        summary[k] = {"class_name": names[k],
                      "cases": {st: sum(r["status"] == st for r in mine) for st in STATUSES},
                      **{m: _stats([r[m] for r in mine]) for m in metric_names if m in mine[0]}}
    dims = len(next(iter(spacings))) if spacings else 0
    settings = {
        "pred_dir": str(pred_root.resolve()),
        "label_dir": str(ref_folder.resolve()),
        "num_classes": num_classes,
        "class_names": names,
        "reference_mapping": ref_mapping.to_dict(),
        "prediction_mapping": pred_mapping.to_dict(),
        "cases": len(order),
        "ignored_predictions": [p.name for p in extra],
        "identical_to_reference": identical,
        "std": "sample standard deviation over cases (ddof=1)",
        "spacing_source": "given" if spacing is not None else ("reference headers" if dims == 3 else "1 per pixel"),
        "spacings": sorted(list(s) for s in spacings)[:20],
        "distance_unit": "mm" if (spacing is not None or dims == 3) else "px",
        "nsd_tolerance_mm": float(tolerance),
        "hd_percentile": float(percentile),
        "volume_unit": "mL" if dims == 3 else ("mm²" if spacing is not None else "px"),
        "conventions": {
            "absent": "class in neither mask: Dice/IoU/precision/sensitivity/NSD/lesion F1 1, HD95/ASSD 0, RVD 0",
            "missed": "class only in the reference: Dice 0, NSD 0, HD95/ASSD = image diagonal in mm, RVD -1",
            "spurious": "class only in the prediction: Dice 0, NSD 0, HD95/ASSD = image diagonal in mm, RVD +1",
            "lesions": "connected components (full connectivity); a reference lesion is found if any voxel is predicted",
        },
    }
    result = EvaluationResult(rows=rows, summary=summary, settings=settings, metric_names=metric_names)
    for out in (Path(p) for p in (csv_path, json_path) if p is not None and not Path(p).name.startswith(".")):
        record_outputs(out.parent, [out.name], "medseg evaluate")
    if csv_path is not None:
        result.to_csv(csv_path)
    if json_path is not None:
        result.to_json(json_path)
    return result
