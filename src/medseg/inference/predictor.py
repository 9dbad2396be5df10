"""The Predictor: trained model(s) loaded once, segmenting cases one after another.

Each case goes through the run's own preprocessing (crop, working grid, normalisation), the
sliding-window inferer, and back to its original grid, so the probabilities (and the mask) have
exactly the input's size. A cross-validation folder's finished folds are averaged.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..case import Case
from ..data.preprocess import Preprocessor
from ..device import choose_precision, memory_format, resolve_device
from ..errors import MedsegInputError
from ..io.layout import DatasetInfo
from ..nets import axis_divisors
from ..runs import (CHECKPOINTS, find_checkpoint, fold_runs, load_checkpoint, model_from_state, not_a_run,
                    read_calibration)
from .compile import CompilingNetwork, prediction_network
from .onnx_backend import onnx_model_for
from .package import unpack_package
from .postprocess import apply_postprocessing, read_postprocessing
from .sliding_window import argmax_mask, count_windows, mirror_sets, sliding_window, windows_per_call
from .uncertainty import (UncertainPrediction, apply_temperature, case_score, mutual_information_from,
                          predictive_entropy)

def mirrors(mirror: bool | str, spatial_dims: int) -> bool:
    """Whether to average over flips (mirroring test-time augmentation).

    ``"auto"`` mirrors 2D images and not volumes: in 2D the 4 flips cost little and raise
    held-out Dice, while in 3D the 8 flips multiply a CPU's minutes per volume by 8 for almost
    no gain (docs/decisions.md, "Mirroring on for 2D, off for 3D").
    """
    if mirror == "auto":
        return spatial_dims == 2
    if isinstance(mirror, bool):
        return mirror
    raise ValueError(f"mirror must be True, False or 'auto', got {mirror!r}")


class _Member:
    """One trained model with its own preprocessing (a run, or one fold of a cross-validation)."""

    def __init__(self, run: Path, checkpoint: str, device: torch.device, mirror: bool | str, precision: str,
                 backend: str = "torch", compile: bool | str = False):
        self.checkpoint_path = find_checkpoint(run, checkpoint)
        state = load_checkpoint(self.checkpoint_path)
        self.state = state
        self.spatial_dims = int(state["spatial_dims"])
        self.pre = Preprocessor.from_dict(state["preprocessor"])
        self.patch_size = tuple(state["patch_size"])
        self.model = model_from_state(state).to(device, memory_format=memory_format(self.spatial_dims))
        self.divisor = axis_divisors(self.model, self.spatial_dims)
        # mirror only along the axes the model was trained to be indifferent to (its flips)
        flips = (state.get("config") or {}).get("augment", {}).get("flip_axes")
        all_axes = tuple(range(self.spatial_dims))
        trained_flips = all_axes if flips in (None, "auto") else tuple(flips)
        self.mirror_axes = trained_flips if mirrors(mirror, self.spatial_dims) else ()
        # bf16 pays off only where the hardware has it; fp32 otherwise (see medseg.device)
        self.autocast = choose_precision(precision, device)
        if backend == "onnx":  # ONNX Runtime runs the windows (fp32, CPU); see medseg.inference.onnx_backend
            self.model = onnx_model_for(run, checkpoint, state, self.checkpoint_path)
            self.autocast = None
        self.network = prediction_network(self.model, compile, device, backend)


class Predictor:
    """Trained model(s) ready to segment cases (load once, predict many).

    `run` is a run folder, a model package (`medseg export --package`: checked against its
    manifest before anything is loaded; it holds one set of weights per member, so `checkpoint`
    does not apply), or a cross-validation folder (`medseg train --folds`): then the class
    probabilities of every finished fold (or of `folds`) are averaged, each fold preprocessing
    the case its own way. The postprocessing stored with the run (RUN/postprocessing.json,
    chosen on validation data) is applied to the masks unless `postprocess=False`. The
    calibration stored with the run (RUN/calibration.json: a temperature and a flag threshold,
    fitted on validation data) is applied to the probabilities of `predict_uncertain` unless
    `calibrate=False`; it never changes a mask, and a run without it predicts as it always did.
    `batch_size`: windows per network call; None picks it from the patch (`windows_per_call`).
    """

    def __init__(self, run: str | os.PathLike, *, checkpoint: str = "best", device: str = "auto",
                 overlap: float = 0.5, mirror: bool | str = "auto", precision: str = "auto",
                 folds: list[int] | None = None, postprocess: bool = True, backend: str = "torch",
                 skip_empty: bool = False, batch_size: int | None = None, compile: bool | str = "auto",
                 calibrate: bool = True):
        self.run = Path(run)
        self.package = None  # a model package (a file): verified, unpacked, then read as a run folder
        if self.run.is_file():
            self.package, self.run = unpack_package(self.run)
            checkpoint = "best"
        self.device = resolve_device(device)
        runs = member_runs(self.run, folds)
        if backend not in ("torch", "onnx"):
            raise ValueError(f"unknown backend {backend!r}: use torch or onnx")
        if backend == "onnx" and self.device.type != "cpu":
            if device != "auto":
                raise ValueError("the onnx backend runs on the CPU; use --device cpu (or the torch backend on GPUs)")
            self.device = torch.device("cpu")
        self.backend = backend
        self.members = [_Member(r, checkpoint, self.device, mirror, precision, backend, compile) for r in runs]
        first = self.members[0].state
        self.checkpoint_path = self.members[0].checkpoint_path
        self.in_channels = int(first["in_channels"])
        self.num_classes = int(first["num_classes"])
        self.class_names: list[str] = list(first["class_names"])
        self.dataset = DatasetInfo.from_dict(first.get("dataset"))
        for run_dir, member in zip(runs[1:], self.members[1:]):
            st = member.state
            if (int(st["in_channels"]), int(st["num_classes"]), st["label_mapping"]) != (
                    self.in_channels, self.num_classes, first["label_mapping"]):
                raise MedsegInputError(run_dir, "cannot be ensembled with the other folds: its channels, classes "
                                       "or label mapping differ")
        self.pre = self.members[0].pre
        self.patch_size = self.members[0].patch_size
        self.model = self.members[0].model
        self.mirror_axes = self.members[0].mirror_axes
        self.autocast = self.members[0].autocast
        self.overlap = overlap
        # background-only windows run unless asked: skipping them changed masks (docs/decisions.md)
        self.skip_empty = skip_empty
        self.batch_size = batch_size or windows_per_call(self.patch_size, self.device)  # windows per call
        self.cases_ahead = 0  # cases still to come after this one (`predict` sets it): compile="auto" weighs them
        self.postprocessing = read_postprocessing(self.run) if postprocess else None
        self.calibration = (read_calibration(self.run) if calibrate else None) or {}
        # passes averaged per voxel: each member's mirrored flips (overlapping windows add more)
        self.passes = sum(len(mirror_sets(m.mirror_axes)) for m in self.members)

    @torch.inference_mode()
    def probabilities(self, case: Case, dtype: torch.dtype = torch.float32,
                      member_entropy: bool = False) -> torch.Tensor:
        """(K, *original spatial) class probabilities for a case (averaged over the ensemble).

        `dtype=torch.float16` halves the memory of the maps (blending stays float32; each
        probability is rounded once, by at most 2.5e-4); `segment` uses it. `member_entropy`
        appends the passes' mean entropy as channel K (`sliding_window`)."""
        if case.channels != self.in_channels:
            raise MedsegInputError(case.source or case.case_id,
                                   f"has {case.channels} channel(s) but the model was trained on {self.in_channels} "
                                   f"({'grey' if self.in_channels == 1 else 'RGB' if self.in_channels == 3 else 'multi-channel'} images)")
        total: torch.Tensor | None = None
        for member in self.members:
            probs = self._member_probabilities(member, case, dtype, member_entropy)
            total = probs if total is None else total.add_(probs)
            del probs
        assert total is not None
        return total.div_(len(self.members)) if len(self.members) > 1 else total

    def _member_probabilities(self, member: _Member, case: Case, dtype: torch.dtype,
                              member_entropy: bool = False) -> torch.Tensor:
        """One model's probabilities on the case's grid; each full-size intermediate (resampled
        image, network input, working-grid maps) is released as soon as the next one exists."""
        resampled = member.pre.resample(case, with_label=False)
        box = resampled.box
        image = member.pre.normalise(resampled.image)
        del resampled
        if isinstance(member.network, CompilingNetwork) and any(s > p for s, p in zip(image.shape[1:], member.patch_size)):
            windows = count_windows(tuple(image.shape[1:]), member.patch_size, self.overlap)
            calls = windows // self.batch_size * len(mirror_sets(member.mirror_axes))  # full batches
            shape = (self.batch_size, image.shape[0], *member.patch_size)
            member.network.expect(shape, calls * (1 + self.cases_ahead))  # later cases: like this one
        probs = sliding_window(member.network, image, member.patch_size, overlap=self.overlap,
                               mirror_axes=member.mirror_axes, divisor=member.divisor, device=self.device,
                               autocast_dtype=member.autocast, batch_size=self.batch_size,
                               out_dtype=dtype, skip_empty=self.skip_empty, member_entropy=member_entropy)
        del image
        return member.pre.restore(probs, case.spatial_shape, box)

    def segment(self, case: Case) -> np.ndarray:
        """Class-index mask (uint8) with the case's original spatial shape, postprocessed."""
        mask = argmax_mask(self.probabilities(case, dtype=torch.float16))
        return apply_postprocessing(mask, self.postprocessing)

    def predict_uncertain(self, case: Case) -> UncertainPrediction:
        """The mask `segment` gives (the same network passes, the same float16 maps, so the same
        mask), with the calibrated probabilities, their entropy, the passes' mutual information
        (when more than one pass is averaged: mirrors, folds) and the case score and flag."""
        k = self.num_classes
        several = self.passes > 1
        probs = self.probabilities(case, dtype=torch.float16, member_entropy=several)
        mask = apply_postprocessing(argmax_mask(probs[:k]), self.postprocessing)
        calibrated = apply_temperature(probs[:k], self.calibration.get("temperature")).float()
        entropy = predictive_entropy(calibrated)
        information = mutual_information_from(probs[:k], probs[k]) if several else None
        del probs
        score = case_score(calibrated, entropy)
        threshold = self.calibration.get("flag_threshold")
        return UncertainPrediction(mask=mask, probabilities=calibrated, entropy=entropy,
                                   mutual_information=information, members=self.passes, score=score,
                                   flagged=threshold is not None and score >= float(threshold))


def member_runs(run: Path, folds: list[int] | None = None) -> list[Path]:
    """The run folders a prediction uses: RUN itself, or the (chosen) finished folds under it."""
    if (run / CHECKPOINTS).is_dir():
        if folds:
            raise ValueError(f"{run}: is a single run, not a cross-validation folder; --folds does not apply")
        return [run]
    runs = fold_runs(run)
    if not runs:
        raise not_a_run(run, "no checkpoints/ and no trained fold_K/ folders")
    if folds:
        wanted = {f"fold_{int(f)}" for f in folds}
        missing = sorted(wanted - {r.name for r in runs})
        if missing:
            raise FileNotFoundError(f"{run}: {', '.join(missing)} not trained (have {', '.join(r.name for r in runs)})")
        runs = [r for r in runs if r.name in wanted]
    return runs
