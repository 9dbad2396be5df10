"""Prediction: a trained run plus new images in, one mask per case (and an overlay) out.

Each case goes through the run's own preprocessing (crop, working grid, normalisation), the
sliding-window inferer, and back to its original grid, so the written mask has exactly the
input's size and, for volumes, its spacing, origin and direction. Masks hold class indices
0..K-1 (README: "Output masks"), in the input's format: PNG for 2D pictures, NIfTI / NRRD / MHA
as the input, NIfTI (``.nii.gz``) for DICOM series unless another `output_format` is asked for.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .case import Case
from .checkpoint import find_checkpoint, load_checkpoint
from .data.preprocess import Preprocessor
from .device import choose_precision, compile_model, has_cpp_compiler, memory_format, resolve_device
from .errors import MedsegInputError
from .inference import argmax_mask, count_windows, mirror_sets, sliding_window, windows_per_call
from .io import write_mask
from .io.dataset import read_image_channels
from .io.layout import DatasetInfo, InputCase, prediction_inputs
from .io.registry import MASK_WRITE_SUFFIXES, match_suffix
from .io.volume import read_dicom_series
from .nets import axis_divisors, build_model
from .crossval import fold_runs
from .postprocess import apply_postprocessing, read_postprocessing
from .report.overlay import save_overlay


def mirrors(mirror: bool | str, spatial_dims: int) -> bool:
    """Whether to average over flips (mirroring test-time augmentation).

    ``"auto"`` mirrors 2D images and not volumes: in 2D the 4 flips cost little (Kvasir-SEG:
    200 images in 32 s instead of 19 s) and raised held-out polyp Dice from 0.797 to 0.810
    (BENCHMARKS.md), while in 3D the 8 flips multiply the minutes a CPU spends per volume by 8.
    """
    if mirror == "auto":
        return spatial_dims == 2
    if isinstance(mirror, bool):
        return mirror
    raise ValueError(f"mirror must be True, False or 'auto', got {mirror!r}")


# "auto" compiles when the work still ahead repays it: compiling a 3D U-Net takes ~18 s here.
# Compiled windows ran 1.77x faster while the eager instance norm used var_mean (session 7), 6 %
# faster once it took two passes (session 8), and with windows in pairs (`windows_per_call`,
# session 9) between 4 % faster and 10 % slower (benchmarks/profile_unet.py): so "auto" compiles
# only for jobs of about a thousand seconds of windows; BENCHMARKS.md
COMPILE_COST_S = 20.0
COMPILE_SAVES = 0.02


class CompilingNetwork:
    """Runs `model` eagerly and switches to `torch.compile(model)` for one input shape once the
    calls still expected with that shape would, at their measured eager time, save more than the
    compilation costs (`COMPILE_COST_S`); `at_once` compiles at the first call instead.

    The caller says how many calls lie ahead (`expect`): the sliding window's full batches of
    patch-sized windows, in this case and, estimated from it, the cases still to come. Only that
    shape compiles; short last batches and images run whole (their shapes vary) stay eager and
    never trigger a recompilation.
    """

    def __init__(self, model: torch.nn.Module, at_once: bool, fall_back: bool):
        self.model, self.at_once, self.fall_back = model, at_once, fall_back
        self.compiled: torch.nn.Module | None = None
        self.shape: tuple[int, ...] | None = None
        self.ahead: dict[tuple[int, ...], int] = {}
        self.seen: set[tuple[int, ...]] = set()

    def expect(self, shape: tuple[int, ...], calls: int) -> None:
        """`calls` more calls with inputs of `shape` are coming (replaces the earlier figure)."""
        self.ahead = {tuple(shape): calls}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key in self.ahead:
            self.ahead[key] = max(0, self.ahead[key] - 1)
        if self.compiled is not None:
            return self.compiled(x) if key == self.shape else self.model(x)
        if self.at_once:
            self.compiled, self.shape = compile_model(self.model, self.fall_back), key
            return self.compiled(x)
        start = time.perf_counter()
        out = self.model(x)
        seconds = time.perf_counter() - start
        warm = key in self.seen  # a shape's first call also sets up its kernels: not its cost
        self.seen.add(key)
        if warm and self.ahead.get(key, 0) * seconds * COMPILE_SAVES > COMPILE_COST_S:
            self.compiled, self.shape = compile_model(self.model, self.fall_back), key
        return out


def prediction_network(model, setting: bool | str, device: torch.device, backend: str):
    """The callable that runs the windows: the model, or a `CompilingNetwork` around it."""
    if setting not in ("auto", True, False):
        raise ValueError(f"compile must be True, False or 'auto', got {setting!r}")
    if backend != "torch" or setting is False or (setting == "auto" and not (device.type == "cpu" and has_cpp_compiler())):
        return model
    return CompilingNetwork(model, at_once=setting is True, fall_back=setting == "auto")


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
        self.model = build_model(state["model_name"], int(state["in_channels"]), int(state["num_classes"]),
                                 self.spatial_dims, **state["model_options"])
        self.model.load_state_dict(state["model"])
        self.model.to(device, memory_format=memory_format(self.spatial_dims)).eval()
        self.divisor = axis_divisors(self.model, self.spatial_dims)
        # mirror only along the axes the model was trained to be indifferent to (its flips)
        flips = (state.get("config") or {}).get("augment", {}).get("flip_axes")
        all_axes = tuple(range(self.spatial_dims))
        trained_flips = all_axes if flips in (None, "auto") else tuple(flips)
        self.mirror_axes = trained_flips if mirrors(mirror, self.spatial_dims) else ()
        # bf16 pays off only where the hardware has it; fp32 otherwise (see medseg.device)
        self.autocast = choose_precision(precision, device)
        if backend == "onnx":  # ONNX Runtime runs the windows (fp32, CPU); see medseg.onnx_backend
            from .onnx_backend import onnx_model_for
            self.model = onnx_model_for(run, checkpoint, state, self.checkpoint_path)
            self.autocast = None
        self.network = prediction_network(self.model, compile, device, backend)


class Predictor:
    """Trained model(s) ready to segment cases (load once, predict many).

    `run` is a run folder, or a cross-validation folder (`medseg train --folds`): then the class
    probabilities of every finished fold (or of `folds`) are averaged, each fold preprocessing
    the case its own way. The postprocessing stored with the run (RUN/postprocessing.json,
    chosen on validation data) is applied to the masks unless `postprocess=False`.
    `batch_size`: windows per network call; None picks it from the patch (`windows_per_call`).
    """

    def __init__(self, run: str | os.PathLike, *, checkpoint: str = "best", device: str = "auto",
                 overlap: float = 0.5, mirror: bool | str = "auto", precision: str = "auto",
                 folds: list[int] | None = None, postprocess: bool = True, backend: str = "torch",
                 skip_empty: bool = False, batch_size: int | None = None, compile: bool | str = "auto"):
        self.run = Path(run)
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
        # windows of pure background not run: off by default, it changed masks of the BraTS run (BENCHMARKS.md)
        self.skip_empty = skip_empty
        self.batch_size = batch_size or windows_per_call(self.patch_size, self.device)  # windows per call
        self.cases_ahead = 0  # cases still to come after this one (`predict` sets it): compile="auto" weighs them
        self.postprocessing = read_postprocessing(self.run) if postprocess else None

    @torch.inference_mode()
    def probabilities(self, case: Case, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(K, *original spatial) class probabilities for a case (averaged over the ensemble).

        `dtype=torch.float16` halves the memory of the maps (blending stays float32; each
        probability is rounded once, by at most 2.5e-4); `segment` uses it."""
        if case.channels != self.in_channels:
            raise MedsegInputError(case.source or case.case_id,
                                   f"has {case.channels} channel(s) but the model was trained on {self.in_channels} "
                                   f"({'grey' if self.in_channels == 1 else 'RGB' if self.in_channels == 3 else 'multi-channel'} images)")
        total: torch.Tensor | None = None
        for member in self.members:
            probs = self._member_probabilities(member, case, dtype)
            total = probs if total is None else total.add_(probs)
            del probs
        assert total is not None
        return total.div_(len(self.members)) if len(self.members) > 1 else total

    def _member_probabilities(self, member: _Member, case: Case, dtype: torch.dtype) -> torch.Tensor:
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
                               out_dtype=dtype, skip_empty=self.skip_empty)
        del image
        return member.pre.restore(probs, case.spatial_shape, box)

    def segment(self, case: Case) -> np.ndarray:
        """Class-index mask (uint8) with the case's original spatial shape, postprocessed."""
        mask = argmax_mask(self.probabilities(case, dtype=torch.float16))
        return apply_postprocessing(mask, self.postprocessing)


def member_runs(run: Path, folds: list[int] | None = None) -> list[Path]:
    """The run folders a prediction uses: RUN itself, or the (chosen) finished folds under it."""
    if (run / "checkpoints").is_dir():
        if folds:
            raise ValueError(f"{run}: is a single run, not a cross-validation folder; --folds does not apply")
        return [run]
    runs = fold_runs(run)
    if not runs:
        raise FileNotFoundError(f"{run}: not a medseg run folder (no checkpoints/ and no trained fold_K/ folders); "
                                "train one with `medseg train`")
    if folds:
        wanted = {f"fold_{int(f)}" for f in folds}
        missing = sorted(wanted - {r.name for r in runs})
        if missing:
            raise FileNotFoundError(f"{run}: {', '.join(missing)} not trained (have {', '.join(r.name for r in runs)})")
        runs = [r for r in runs if r.name in wanted]
    return runs


def read_input_case(item: InputCase, channels: int | None = None) -> Case:
    """Read a case to predict (its channel files, or its DICOM series) as an unlabelled Case."""
    if item.dicom:
        image, spacing, meta = read_dicom_series(item.source)
        if channels is not None and image.shape[0] != channels:
            raise MedsegInputError(item.source, f"a DICOM series has 1 channel but the model takes {channels}")
    else:
        image, spacing, meta = read_image_channels(item.files, item.case_id, channels, "the model takes")
    return Case(case_id=item.case_id, image=image, spacing=spacing, source=item.source, meta=meta)


def output_suffix(item: InputCase, output_format: str | None) -> str:
    """The mask file suffix for a case: asked-for format, else the input's where masks can be
    written in it (NIfTI, NRRD, MHA, PNG), else ``.nii.gz`` for volumes and ``.png`` for pictures."""
    if output_format:
        suffix = output_format if output_format.startswith(".") else "." + output_format
        if suffix.lower() not in MASK_WRITE_SUFFIXES:
            raise ValueError(f"cannot write masks as {suffix} (supported: {', '.join(sorted(MASK_WRITE_SUFFIXES))})")
        return suffix.lower()
    if item.dicom:
        return ".nii.gz"
    suffix = match_suffix(item.source)
    if suffix in MASK_WRITE_SUFFIXES and suffix not in (".mhd", ".nhdr"):  # detached formats -> one file
        return suffix
    return ".png" if suffix in (".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".png") else ".nii.gz"


def predict(run: str | os.PathLike, inputs: str | os.PathLike, out: str | os.PathLike, *,
            device: str = "auto", checkpoint: str = "best", overlap: float = 0.5, mirror: bool | str = "auto",
            overlays: bool = True, overwrite: bool = False, output_format: str | None = None,
            folds: list[int] | None = None, postprocess: bool = True, backend: str = "torch",
            skip_empty: bool = False, compile: bool | str = "auto") -> list[Path]:
    """Segment an image or volume file, a DICOM series folder, or a folder of them; returns the
    written mask paths.

    Masks go to OUT/<case><suffix> (`output_suffix`), overlays to OUT/overlays/<case>.png (3D:
    three orthogonal slices through the predicted structure). Existing files are never replaced
    unless `overwrite`, and an input file is never written over in any case. `skip_empty=True`
    does not run the network on windows that hold nothing but background (`Predictor`).
    `compile`: "auto" switches the windows to `torch.compile` on a CPU once the windows still
    ahead (this case's, and as many for every case to come) would repay the compilation
    (`CompilingNetwork`); True compiles at once; False never.
    """
    predictor = Predictor(run, checkpoint=checkpoint, device=device, overlap=overlap, mirror=mirror,
                          folds=folds, postprocess=postprocess, backend=backend, skip_empty=skip_empty,
                          compile=compile)
    items = prediction_inputs(inputs, predictor.in_channels, predictor.dataset.channel_names)
    out = Path(out)
    targets = [out / f"{item.case_id}{output_suffix(item, output_format)}" for item in items]
    if len(set(targets)) != len(targets):
        dup = sorted({t.name for t in targets if targets.count(t) > 1})
        raise MedsegInputError(Path(inputs), f"several inputs would write the same mask: {dup[:5]}")
    resolved_inputs = {f.resolve() for item in items for f in item.files}
    for target in targets:
        if target.resolve() in resolved_inputs:
            raise MedsegInputError(target, "is an input image; choose an --out folder that is not the input folder")
    if not overwrite:
        existing = [t for t in targets if t.exists()]
        if existing:
            raise FileExistsError(f"{existing[0]}: already exists ({len(existing)} of the masks to write do); "
                                  "use --overwrite to replace them or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    for index, (item, target) in enumerate(tqdm(list(zip(items, targets)), desc="predicting", unit="case",
                                                 disable=None)):
        predictor.cases_ahead = len(items) - index - 1
        case = read_input_case(item, predictor.in_channels)
        mask = predictor.segment(case)
        write_mask(target, mask, case.meta)
        if overlays:
            save_overlay(out / "overlays" / f"{item.case_id}.png", case.image, mask, spacing=case.spacing)
    return targets
