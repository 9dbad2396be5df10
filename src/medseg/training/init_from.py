"""Fine-tuning: a new run that starts from another run's or a model package's weights
(`medseg train DATA --out RUN2 --init-from RUN_OR_PACKAGE`) instead of a random initialisation.

Rules, and why:
- The network must be the source's, so the new run takes the source's network settings (model,
  features, normalisation layers, strides, kernels, deep supervision), its patch and its working
  grid (target spacing, 2D image size) wherever the user set none: the weights learned features
  at that scale. The plan still chooses the rest (batch, loss, schedule).
- The channels must fit: as many input channels as the source was trained on. Other channel
  names are allowed (e.g. transfer from one MR sequence to another) and said.
- Classes may differ: the layers whose shape follows the number of classes (found by building
  the network once with one class more, on the meta device, so any architecture works) start
  fresh, and the run says so; every other weight is copied. A source with the same number of
  classes under other names gets a fresh output layer too (a class's weights must not train a
  different class).
- Anything else that does not fit (another model, a layer of another shape, a cross-validation
  folder or an ensemble package, which hold several networks) is refused with one line naming the
  source. Loading is weights-only (`runs.load_checkpoint`), packages verified first.
"""
from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..errors import MedsegInputError
from ..inference.package import unpack_package
from ..io.layout import describe_dataset
from ..io.registry import read_image_header
from ..nets import build_on_meta
from ..runs import CHECKPOINTS, find_checkpoint, fold_runs, load_checkpoint

__all__ = ["INHERITED", "check_data_fits", "check_source_fits", "inherit_network", "load_initial_weights", "source_state"]

INHERITED = ("features", "norm", "strides", "kernels", "deep_supervision")  # model_options -> TrainConfig


def source_state(source: str | os.PathLike) -> dict:
    """The checkpoint (weights-only) a fine-tuning run starts from: a run folder's best (else
    last) checkpoint, or a single-model package's."""
    source = Path(source)
    holder = None
    if source.is_file():
        holder, root = unpack_package(source)
        runs = [root] if (root / CHECKPOINTS).is_dir() else fold_runs(root)
    elif (source / CHECKPOINTS).is_dir():
        runs = [source]
    elif fold_runs(source):
        raise MedsegInputError(source, f"is a cross-validation folder (several networks); fine-tune from one "
                               f"fold, e.g. --init-from {source / 'fold_0'}")
    else:
        raise MedsegInputError(source, "is neither a medseg run folder nor a model package (--init-from)")
    try:
        if len(runs) != 1:
            raise MedsegInputError(source, f"holds {len(runs)} networks (an ensemble); fine-tune from a "
                                   "single run or a package of one")
        return load_checkpoint(find_checkpoint(runs[0], "best"))
    finally:
        if holder is not None:
            holder.cleanup()


def inherit_network(options: dict, state: dict) -> dict:
    """`options` with the source's network, patch and working grid wherever they hold none."""
    out = dict(options)
    out.setdefault("model", state["model_name"])
    for key in INHERITED:
        if key in state.get("model_options", {}) and out.get(key) is None:
            out[key] = state["model_options"][key]
    if out.get("features") is not None:
        out["features"] = tuple(out["features"])
    if out.get("patch_size") is None:
        out["patch_size"] = tuple(state["patch_size"])
    pre = state.get("preprocessor") or {}
    for key in ("target_spacing", "image_size"):
        if out.get(key, "auto") == "auto" and key in pre:
            value = pre[key]
            out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _class_dependent(model_name: str, options: dict, in_channels: int, num_classes: int, dims: int) -> set[str]:
    """Names of the weights whose shape follows the number of classes (the output layers)."""
    one = build_on_meta(model_name, in_channels, num_classes, dims, **options).state_dict()
    more = build_on_meta(model_name, in_channels, num_classes + 1, dims, **options).state_dict()
    return {k for k, v in one.items() if k in more and tuple(v.shape) != tuple(more[k].shape)}


def check_source_fits(source: str | os.PathLike, state: dict, in_channels: int, spatial_dims: int) -> None:
    """Refuse a source of other dimensions or channel count than this run's data, before any of
    the source's settings (its patch) is applied to data they cannot fit."""
    source = Path(source)
    if int(state["spatial_dims"]) != spatial_dims:
        raise MedsegInputError(source, f"is a {state['spatial_dims']}D network, this data is {spatial_dims}D")
    if int(state["in_channels"]) != in_channels:
        raise MedsegInputError(source, f"was trained on {state['in_channels']} input channel(s) "
                               f"({', '.join(map(str, (state.get('dataset') or {}).get('channel_names') or []))}), "
                               f"this data has {in_channels}; fine-tuning needs the same channels")


def check_data_fits(data: str | os.PathLike, source: str | os.PathLike, state: dict,
                    label_suffix: str | None = None) -> None:
    """`check_source_fits` from the headers of DATA's first case, before the source's settings are
    taken over (a 3D source's voxel size means nothing to 2D pictures)."""
    pairs, _ = describe_dataset(Path(data), label_suffix=label_suffix)
    if not pairs:
        return  # the dataset checks say what is wrong with DATA
    headers = [read_image_header(f) for f in pairs[0].image_files]
    channels = sum(int(h.get("channels", 1)) for h in headers)
    check_source_fits(source, state, channels, len(tuple(headers[0]["size"])))


def load_initial_weights(model: nn.Module, source: str | os.PathLike, state: dict, *, model_name: str,
                         model_options: dict, in_channels: int, spatial_dims: int, class_names: list[str],
                         channel_names: list[str] | None) -> str:
    """Copy the source's weights into `model` (built for this run); returns what was done, in a
    line for the log. Raises `MedsegInputError` naming the source when the network does not fit."""
    source = Path(source)
    check_source_fits(source, state, in_channels, spatial_dims)
    if state["model_name"] != model_name:
        raise MedsegInputError(source, f"holds a {state['model_name']} network, this run builds {model_name}; "
                               "fine-tuning needs the same network (drop --model)")
    source_classes = list(state["class_names"])
    same_classes = source_classes == list(class_names)
    reinit = set() if same_classes else _class_dependent(model_name, model_options, in_channels, len(class_names),
                                                         spatial_dims)
    target, weights = model.state_dict(), state["model"]
    if set(target) != set(weights):
        odd = sorted(set(target) ^ set(weights))
        raise MedsegInputError(source, f"its network has other layers than this run's (e.g. {odd[0]}); "
                               "fine-tuning needs the same network settings (drop --features/--norm/--set)")
    merged = {}
    for key, value in target.items():
        if key in reinit:
            merged[key] = value
            continue
        if tuple(weights[key].shape) != tuple(value.shape):
            raise MedsegInputError(source, f"layer {key} is {tuple(weights[key].shape)} there and "
                                   f"{tuple(value.shape)} here; fine-tuning needs the same network settings")
        merged[key] = weights[key]
    model.load_state_dict(merged)
    note = f"fine-tuning from {source}: {len(merged) - len(reinit)} of {len(merged)} weight tensors copied"
    if reinit:
        note += (f"; the output layer(s) ({', '.join(sorted(reinit))}) start fresh because the classes differ "
                 f"(source: {', '.join(source_classes)}; this data: {', '.join(class_names)})")
    theirs = (state.get("dataset") or {}).get("channel_names")
    if theirs and channel_names and [c.lower() for c in theirs] != [c.lower() for c in channel_names]:
        note += f"; channels named {', '.join(theirs)} there and {', '.join(channel_names)} here"
    return note
