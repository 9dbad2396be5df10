"""Prediction: a trained run plus new images in, one mask per case (and an overlay) out.

Each case goes through the run's own preprocessing (crop, working grid, normalisation), the
sliding-window inferer, and back to its original grid, so the written mask has exactly the
input's size and, for volumes, its spacing, origin and direction. Masks hold class indices
0..K-1 (README: "Output masks"), in the input's format: PNG for 2D pictures, NIfTI / NRRD / MHA
as the input, NIfTI (``.nii.gz``) for DICOM series unless another `output_format` is asked for.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .case import Case
from .checkpoint import find_checkpoint, load_checkpoint
from .data.preprocess import Preprocessor
from .device import choose_precision, memory_format, resolve_device
from .errors import MedsegInputError
from .inference import sliding_window
from .io import write_mask
from .io.dataset import read_image_channels
from .io.layout import DatasetInfo, InputCase, prediction_inputs
from .io.registry import MASK_WRITE_SUFFIXES, match_suffix
from .io.volume import read_dicom_series
from .nets import build_model
from .report.overlay import save_overlay


class Predictor:
    """A trained model ready to segment cases (load once, predict many)."""

    def __init__(self, run: str | os.PathLike, *, checkpoint: str = "best", device: str = "auto",
                 overlap: float = 0.5, mirror: bool = False, precision: str = "auto"):
        self.run = Path(run)
        self.checkpoint_path = find_checkpoint(self.run, checkpoint)
        state = load_checkpoint(self.checkpoint_path)
        self.device = resolve_device(device)
        self.in_channels = int(state["in_channels"])
        self.num_classes = int(state["num_classes"])
        self.class_names: list[str] = list(state["class_names"])
        self.pre = Preprocessor.from_dict(state["preprocessor"])
        self.dataset = DatasetInfo.from_dict(state.get("dataset"))
        self.patch_size = tuple(state["patch_size"])
        self.model = build_model(state["model_name"], self.in_channels, self.num_classes, state["spatial_dims"],
                                 **state["model_options"])
        self.model.load_state_dict(state["model"])
        self.model.to(self.device, memory_format=memory_format(int(state["spatial_dims"]))).eval()
        self.overlap = overlap
        # mirror only along the axes the model was trained to be indifferent to (its flips)
        flips = (state.get("config") or {}).get("augment", {}).get("flip_axes")
        all_axes = tuple(range(int(state["spatial_dims"])))
        self.mirror_axes = (all_axes if flips in (None, "auto") else tuple(flips)) if mirror else ()
        # bf16 pays off only where the hardware has it; fp32 otherwise (see medseg.device)
        self.autocast = choose_precision(precision, self.device)

    def probabilities(self, case: Case) -> torch.Tensor:
        """(K, *original spatial) class probabilities for a case."""
        if case.channels != self.in_channels:
            raise MedsegInputError(case.source or case.case_id,
                                   f"has {case.channels} channel(s) but the model was trained on {self.in_channels} "
                                   f"({'grey' if self.in_channels == 1 else 'RGB' if self.in_channels == 3 else 'multi-channel'} images)")
        resampled = self.pre.resample(case, with_label=False)
        probs = sliding_window(self.model, self.pre.normalise(resampled.image), self.patch_size,
                               overlap=self.overlap, mirror_axes=self.mirror_axes,
                               divisor=getattr(self.model, "divisor", 16), device=self.device,
                               autocast_dtype=self.autocast)
        return self.pre.restore(probs, case.spatial_shape, resampled.box)

    def segment(self, case: Case) -> np.ndarray:
        """Class-index mask (uint8) with the case's original spatial shape."""
        return self.probabilities(case).argmax(0).numpy().astype(np.uint8)


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
            device: str = "auto", checkpoint: str = "best", overlap: float = 0.5, mirror: bool = False,
            overlays: bool = True, overwrite: bool = False, output_format: str | None = None) -> list[Path]:
    """Segment an image or volume file, a DICOM series folder, or a folder of them; returns the
    written mask paths.

    Masks go to OUT/<case><suffix> (`output_suffix`), overlays to OUT/overlays/<case>.png (3D:
    three orthogonal slices through the predicted structure). Existing files are never replaced
    unless `overwrite`, and an input file is never written over in any case.
    """
    predictor = Predictor(run, checkpoint=checkpoint, device=device, overlap=overlap, mirror=mirror)
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
    for item, target in tqdm(list(zip(items, targets)), desc="predicting", unit="case", disable=None):
        case = read_input_case(item, predictor.in_channels)
        mask = predictor.segment(case)
        write_mask(target, mask, case.meta)
        if overlays:
            save_overlay(out / "overlays" / f"{item.case_id}.png", case.image, mask, spacing=case.spacing)
    return targets
