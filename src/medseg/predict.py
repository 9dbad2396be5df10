"""Prediction: a trained run plus new images in, one mask per image (and an overlay) out.

Each image goes through the run's own preprocessing (working grid, z-score), the sliding-window
inferer, and back to its original size, so the written mask has exactly the input's width and
height. Masks are PNGs of class indices 0..K-1 (README: "Output masks").
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
from .device import choose_precision, resolve_device
from .errors import MedsegInputError
from .inference import sliding_window
from .io import case_stem, list_images, read_image, write_mask
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
        self.patch_size = tuple(state["patch_size"])
        self.model = build_model(state["model_name"], self.in_channels, self.num_classes, state["spatial_dims"],
                                 **state["model_options"])
        self.model.load_state_dict(state["model"])
        self.model.to(self.device).eval()
        self.overlap = overlap
        self.mirror_axes = tuple(range(int(state["spatial_dims"]))) if mirror else ()
        # bf16 pays off only where the hardware has it; fp32 otherwise (see medseg.device)
        self.autocast = choose_precision(precision, self.device)

    def probabilities(self, case: Case) -> torch.Tensor:
        """(K, *original spatial) class probabilities for a case."""
        if case.channels != self.in_channels:
            raise MedsegInputError(case.source or case.case_id,
                                   f"has {case.channels} channel(s) but the model was trained on {self.in_channels} "
                                   f"({'grey' if self.in_channels == 1 else 'RGB' if self.in_channels == 3 else 'multi-channel'} images)")
        image = self.pre.image(case)
        probs = sliding_window(self.model, image, self.patch_size, overlap=self.overlap,
                               mirror_axes=self.mirror_axes, divisor=getattr(self.model, "divisor", 16),
                               device=self.device, autocast_dtype=self.autocast)
        return self.pre.restore(probs, case.spatial_shape)

    def segment(self, case: Case) -> np.ndarray:
        """Class-index mask (uint8) with the case's original spatial shape."""
        return self.probabilities(case).argmax(0).numpy().astype(np.uint8)


def read_input_case(path: Path) -> Case:
    image, spacing, meta = read_image(path)
    return Case(case_id=case_stem(path), image=image, spacing=spacing, source=path, meta=meta)


def predict(run: str | os.PathLike, inputs: str | os.PathLike, out: str | os.PathLike, *,
            device: str = "auto", checkpoint: str = "best", overlap: float = 0.5, mirror: bool = False,
            overlays: bool = True, overwrite: bool = False) -> list[Path]:
    """Segment an image file or a folder of images; returns the written mask paths.

    Masks go to OUT/<stem>.png, overlays to OUT/overlays/<stem>.png. Existing files are never
    replaced unless `overwrite`, and an input file is never written over in any case.
    """
    paths = list_images(inputs)
    out = Path(out)
    targets = [out / f"{case_stem(p)}.png" for p in paths]
    resolved_inputs = {p.resolve() for p in paths}
    for target in targets:
        if target.resolve() in resolved_inputs:
            raise MedsegInputError(target, "is an input image; choose an --out folder that is not the input folder")
    if not overwrite:
        existing = [t for t in targets if t.exists()]
        if existing:
            raise FileExistsError(f"{existing[0]}: already exists ({len(existing)} of the masks to write do); "
                                  "use --overwrite to replace them or choose another --out")
    predictor = Predictor(run, checkpoint=checkpoint, device=device, overlap=overlap, mirror=mirror)
    out.mkdir(parents=True, exist_ok=True)
    for path, target in tqdm(list(zip(paths, targets)), desc="predicting", unit="image", disable=None):
        case = read_input_case(path)
        mask = predictor.segment(case)
        write_mask(target, mask, case.meta)
        if overlays:
            save_overlay(out / "overlays" / target.name, case.image, mask)
    return targets
