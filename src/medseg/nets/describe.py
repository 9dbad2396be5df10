"""`medseg models`: every registered model's size and cost for a given patch.

Models are built on PyTorch's meta device and the forward pass runs there under
`FlopCounterMode`, so the table needs no memory for weights or activations and no compute:
a 31 M-parameter U-Net on a 128^3 patch is described in well under a second.
FLOPs are PyTorch's count for one forward pass of one patch (a multiply-add is 2 FLOPs;
convolutions, matrix products and attention are counted, element-wise ops are not).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .registry import (ALIASES, FEATURES_2D, FEATURES_3D, MODELS, axis_divisors, build_on_meta, count_parameters,
                       model_spec, select_options)


@dataclass
class ModelRow:
    name: str
    summary: str
    dims: tuple[int, ...]
    divisor: tuple[int, ...] | None
    parameters: int | None
    gflops: float | None
    note: str = ""


def describe_model(name: str, patch: Sequence[int], in_channels: int = 1, num_classes: int = 2,
                   **options) -> ModelRow:
    """Parameters and forward GFLOPs of one model for one patch of shape `patch` (2 or 3 sides).

    `options` are generic settings (features, norm, ...) passed to the models that take them.
    """
    spec = model_spec(name)
    patch = tuple(int(p) for p in patch)
    dims = len(patch)
    row = ModelRow(name, spec.summary, spec.dims, None, None, None)
    if dims not in spec.dims:
        row.note = f"no {dims}D form"
        return row
    chosen = select_options(name, **options, **({"img_size": patch} if spec.needs_img_size else {}))
    try:
        model = build_on_meta(name, in_channels, num_classes, dims, **chosen)
    except ValueError as exc:
        row.note = str(exc)
        return row
    with torch.device("meta"):
        row.parameters = count_parameters(model)
        row.divisor = axis_divisors(model, dims)
        bad = [p for p, d in zip(patch, row.divisor) if p % d]
        if bad:
            row.note = f"patch sides must be multiples of {'x'.join(map(str, row.divisor))}"
            return row
        model.eval()
        counter = FlopCounterMode(display=False)
        try:
            with counter, torch.no_grad():
                model(torch.empty((1, in_channels) + patch))
        except (ValueError, RuntimeError) as exc:  # e.g. Swin's deepest stage left with one voxel
            row.note = str(exc).splitlines()[0][:120]
            return row
    row.gflops = counter.get_total_flops() / 1e9
    return row


def describe_models(patch: Sequence[int] = (64, 64, 64), in_channels: int = 1, num_classes: int = 2,
                    **options) -> list[ModelRow]:
    """One `ModelRow` per registered model (aliases left out), in registry order."""
    return [describe_model(name, patch, in_channels, num_classes, **options)
            for name in MODELS if name not in ALIASES]


def format_models_table(rows: list[ModelRow], patch: Sequence[int]) -> str:
    """A Markdown table (readable in a terminal, pasteable into the README)."""
    patch_text = "x".join(str(p) for p in patch)
    lines = [f"| model | dims | parameters | GFLOPs per {patch_text} patch | input multiple of | description |",
             "|---|---|---:|---:|---|---|"]
    for r in rows:
        params = f"{r.parameters / 1e6:.2f} M" if r.parameters is not None else "-"
        gflops = f"{r.gflops:.1f}" if r.gflops is not None else f"- ({r.note})"
        divisor = "x".join(map(str, r.divisor)) if r.divisor and len(set(r.divisor)) > 1 else (
            str(r.divisor[0]) if r.divisor else "-")
        lines.append(f"| {r.name} | {', '.join(f'{d}D' for d in r.dims)} | {params} | {gflops} | {divisor} | {r.summary} |")
    return "\n".join(lines)


DEFAULT_PATCH = {2: (256, 256), 3: (64, 64, 64)}


def models_table(patch: Sequence[int] | None = None, dims: int | None = None, in_channels: int = 1,
                 num_classes: int = 2) -> str:
    """The `medseg models` output: every model with the widths `medseg train` gives it by default.

    `patch` sets the dimensionality; without it, `dims` (default 3) picks 256x256 or 64x64x64
    (the largest 3D patch the trainer uses on a CPU).
    """
    if patch is None:
        patch = DEFAULT_PATCH[dims or 3]
    elif dims is not None and len(patch) != dims:
        raise ValueError(f"--patch has {len(patch)} sides but --dims is {dims}")
    if len(patch) not in (2, 3):
        raise ValueError(f"a patch has 2 or 3 sides, got {tuple(patch)}")
    features = FEATURES_3D if len(patch) == 3 else FEATURES_2D
    rows = describe_models(patch, in_channels, num_classes, features=features)
    return (format_models_table(rows, patch) + f"\n\n{in_channels} input channel(s), {num_classes} classes; "
            f"U-Net-like models with the trainer's default widths {'-'.join(map(str, features))}, "
            "transformers with their own defaults. FLOPs: one forward pass of one patch (torch FlopCounterMode).")
