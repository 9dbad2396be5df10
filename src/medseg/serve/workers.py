"""Prediction workers: `--workers N` processes, each loading every served model once (at start)
and reusing it for every job; the API process hands them jobs and never runs a network itself,
so the page and status calls stay responsive while a volume is segmented.

A job's worker reads the checked upload, segments it with the run's Predictor (the same call as
`medseg predict`, so the same mask), and writes into ``<job>/.result.partial``: the mask in the
input's format and geometry (`write_prediction`, as `medseg predict`), the viewer's NIfTI files
(`viewer`), the statistics (`structure_statistics`), the uncertainty map where asked; the
folder is renamed to ``result`` only when complete. Progress goes to ``<job>/progress.json``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text
from ..errors import MedsegInputError
from ..evaluation.statistics import structure_statistics
from ..inference.clinical import write_prediction
from ..inference.predict import read_input_case
from ..inference.predictor import Predictor
from ..io.layout import InputCase
from .viewer import write_viewer_image, write_viewer_map

PROGRESS = "progress.json"
PARTIAL = ".result.partial"
_PREDICTORS: dict[str, Predictor] = {}


def start_worker(models: dict[str, str], device: str, threads: int) -> None:
    """Process initialiser: leave Ctrl-C to the server (which finishes or fails the running
    jobs), share the CPU cores between the workers, and load every model once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(max(1, threads))
    for name, path in models.items():
        _PREDICTORS[name] = Predictor(path, device=device, compile=False)


def _progress(folder: Path, value: float, stage: str) -> None:
    write_text(folder / PROGRESS, json.dumps({"progress": value, "stage": stage}))


def read_progress(folder: Path) -> dict | None:
    try:
        return json.loads((folder / PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_job(folder: str, model: str, item: InputCase, suffix: str, uncertainty: bool) -> dict:
    """In a worker: segment one checked case; returns {"outputs": {name: file}, "seconds": s,
    "score": case score or None}. A bad input raises MedsegInputError (the job fails with it)."""
    folder = Path(folder)
    predictor = _PREDICTORS[model]
    start = time.perf_counter()
    partial = folder / PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    _progress(folder, 0.1, "reading the image")
    case = read_input_case(item, predictor.in_channels)
    _progress(folder, 0.2, "segmenting")
    result = predictor.predict_uncertain(case) if uncertainty else None
    mask = result.mask if result is not None else predictor.segment(case)
    _progress(folder, 0.85, "writing the results")
    outputs = {"mask": f"mask{suffix}", "image": "image.nii.gz", "overlay": "mask.nii.gz",
               "statistics": "statistics.json"}
    write_prediction(partial / outputs["mask"], mask, case, None, predictor.class_names, predictor.run.name)
    write_viewer_image(partial / outputs["image"], case)
    write_viewer_map(partial / outputs["overlay"], mask, case, np.uint8)
    rows = structure_statistics(case.case_id, mask, case.image, case.spacing, predictor.class_names,
                                spacing_known="geometry" in case.meta, channel_names=predictor.dataset.channel_names)
    summary = {"model": model, "classes": predictor.class_names, "structures": rows}
    if result is not None:
        outputs["uncertainty"] = "uncertainty.nii.gz"
        write_viewer_map(partial / outputs["uncertainty"], result.entropy.numpy(), case, np.float32)
        summary["uncertainty"] = {"score": result.score, "flagged": result.flagged, "members": result.members,
                                  "unit": "nats (predictive entropy)"}
    write_text(partial / outputs["statistics"], json.dumps(summary, indent=1, default=float))
    os.replace(partial, folder / "result")
    return {"outputs": outputs, "seconds": time.perf_counter() - start,
            "score": None if result is None else result.score}


def failure_message(exc: BaseException, shown: str) -> str:
    """A worker's exception as the job's error: an input problem with the client's file name in
    place of the server's path; anything else by its type and first line."""
    if isinstance(exc, MedsegInputError):
        return f"{shown}: {exc.problem.replace(str(Path(exc.path)), shown)}"
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"prediction failed ({type(exc).__name__}: {text})"
