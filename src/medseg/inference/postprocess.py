"""Postprocessing chosen on validation data: keep only the largest connected component of a class
when, and only when, that raises the class's mean validation Dice.

A single organ (liver, spleen, hippocampus) is one connected structure, so stray islands of
prediction are errors and removing them helps; lesions come in many pieces, and removing all but
one would destroy true detections. Rather than guess which kind a class is, the choice is made
per class on the run's own validation predictions, stored in RUN/postprocessing.json with the
evidence (Dice before and after), and applied by `medseg predict`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..atomic import write_text
from ..evaluation.metrics import confusion, dice_from_confusion
from ..io.labels import IGNORE_INDEX

POSTPROCESSING_FILE = "postprocessing.json"
MIN_GAIN = 1e-4   # a smaller "improvement" is numerical noise, not evidence


def largest_component(mask: np.ndarray, class_index: int) -> np.ndarray:
    """A copy of `mask` where only the largest connected component (face connectivity) of
    `class_index` keeps its label; its other components become background (0)."""
    region = mask == class_index
    labelled, n = ndimage.label(region)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    out = mask.copy()
    out[region & (labelled != int(np.argmax(sizes)))] = 0
    return out


def apply_postprocessing(mask: np.ndarray, spec: dict | None) -> np.ndarray:
    """Apply a stored postprocessing spec (None or an empty spec leaves the mask unchanged)."""
    for k in (spec or {}).get("largest_component_classes", []):
        mask = largest_component(mask, int(k))
    return mask


def choose_postprocessing(cases: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int,
                          class_names: Sequence[str] | None = None) -> dict:
    """Decide, per foreground class, whether keeping its largest component raises mean Dice over
    the (prediction, reference) pairs given; returns the spec with its evidence."""
    before: list[np.ndarray] = []
    after: list[np.ndarray] = []
    for pred, ref in cases:
        before.append(dice_from_confusion(confusion(pred, ref, num_classes, IGNORE_INDEX)))
        row = np.zeros(num_classes)
        known = ref != IGNORE_INDEX  # sparse labels: "not annotated" voxels count for nothing
        for k in range(1, num_classes):
            row[k] = dice_from_confusion(confusion((largest_component(pred, k) == k)[known], ref[known] == k, 2))[1]
        after.append(row)
    names = list(class_names or [f"class{k}" for k in range(num_classes)])
    chosen, evidence = [], []
    if before:
        b, a = np.mean(before, axis=0), np.mean(after, axis=0)
        for k in range(1, num_classes):
            keep = bool(a[k] > b[k] + MIN_GAIN)
            evidence.append({"class": k, "name": names[k], "dice_before": round(float(b[k]), 5),
                             "dice_after": round(float(a[k]), 5), "applied": keep})
            if keep:
                chosen.append(k)
    return {"largest_component_classes": chosen, "evidence": evidence, "cases": len(before),
            "rule": f"keep only the largest component of a class when its mean validation Dice rises by > {MIN_GAIN}"}


def read_postprocessing(run: str | os.PathLike) -> dict | None:
    """The spec stored in a run (or cross-validation) folder, or None."""
    path = Path(run) / POSTPROCESSING_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_postprocessing(run: str | os.PathLike, spec: dict) -> Path:
    path = Path(run) / POSTPROCESSING_FILE
    return write_text(path, json.dumps(spec, indent=2))


def describe(spec: dict | None) -> str:
    """One line for logs: what was chosen and why."""
    if not spec or not spec.get("evidence"):
        return "postprocessing: none (no validation cases)"
    parts = [f"{e['name']} {e['dice_before']:.4f}->{e['dice_after']:.4f} {'kept' if e['applied'] else 'not used'}"
             for e in spec["evidence"]]
    return "postprocessing (largest component): " + "; ".join(parts)
