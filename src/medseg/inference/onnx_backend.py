"""ONNX export of a trained run, and ONNX Runtime as a prediction backend.

`export_onnx(run)` writes RUN/model.onnx from the best checkpoint (RUN/model_last.onnx from the
last one): the network with dynamic batch and spatial axes, because the sliding window feeds
patch-sized windows but pads small images only up to the network's divisor. Before writing, the
exported graph is run once in ONNX Runtime on a random patch and compared with PyTorch, so a
file that exists is one that computes the same logits.

`OnnxModel` is the adapter the sliding window calls instead of the torch module (a torch batch
in, a torch logits tensor out), so `medseg.inference.sliding_window` does not know which
backend runs. The default backend stays `torch`: ONNX Runtime was no faster where prediction
time matters (docs/decisions.md, "ONNX Runtime stays opt-in").

Export detail: medseg's own InstanceNorm (reductions written out, fast for channels-last in
PyTorch) trips the legacy TorchScript exporter with dynamic shapes, so the exported copy uses
`nn.InstanceNormNd(affine=True)` with the same weights: the same arithmetic, one ONNX
InstanceNormalization node.
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import MedsegInputError
from ..nets.unet import InstanceNorm
from ..runs import find_checkpoint, load_checkpoint, model_from_state

MAX_EXPORT_DIFFERENCE = 1e-3   # largest |logit| difference ORT vs torch accepted at export


def default_onnx_path(run: Path, checkpoint: str = "best") -> Path:
    """RUN/model.onnx for the best checkpoint, RUN/model_<name>.onnx for another."""
    return Path(run) / ("model.onnx" if checkpoint == "best" else f"model_{checkpoint}.onnx")


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("the ONNX backend needs onnx and onnxruntime: pip install 'medseg[onnx]'") from exc


def export_ready(model: nn.Module, spatial_dims: int) -> nn.Module:
    """A copy of `model` in eval mode with medseg InstanceNorm layers swapped for torch's."""
    model = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    norm_cls = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, InstanceNorm):
                new = norm_cls(child.weight.numel(), eps=child.eps, affine=True)
                with torch.no_grad():
                    new.weight.copy_(child.weight)
                    new.bias.copy_(child.bias)
                setattr(module, name, new)
            else:
                swap(child)

    swap(model)
    return model


def _stamp(state: dict, checkpoint: Path) -> dict[str, str]:
    """What identifies the weights an ONNX file was made from (stored in its metadata)."""
    return {"medseg_checkpoint": checkpoint.name, "medseg_iteration": str(state.get("iteration")),
            "medseg_epoch": str(state.get("epoch")), "medseg_model": str(state["model_name"])}


def export_onnx(run: str | os.PathLike, out: str | os.PathLike | None = None, *, checkpoint: str = "best",
                opset: int = 17) -> Path:
    """Export a run's network to ONNX (default RUN/model.onnx); returns the file.

    Never replaces an existing file: delete it first to export again.
    """
    _require_onnx()
    import onnx

    run = Path(run)
    ckpt = find_checkpoint(run, checkpoint)
    out = Path(out) if out is not None else default_onnx_path(run, checkpoint)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; delete it to export again or choose another --out "
                              "(nothing was overwritten)")
    state = load_checkpoint(ckpt)
    dims = int(state["spatial_dims"])
    model = export_ready(model_from_state(state), dims)
    sample = torch.randn(1, int(state["in_channels"]), *[int(p) for p in state["patch_size"]])
    axes = {0: "batch", **{2 + i: f"axis{i}" for i in range(dims)}}
    with atomic_path(out) as tmp:  # written whole and checked, or not at all
        with warnings.catch_warnings():  # the legacy exporter's deprecation and train-mode notes
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (sample,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": axes, "logits": axes})
        proto = onnx.load(str(tmp))
        for key, value in _stamp(state, ckpt).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        with torch.no_grad():
            expected = model(sample).numpy()
        got = OnnxModel(tmp)(sample).numpy()
        difference = float(np.abs(got - expected).max())
        if not difference <= MAX_EXPORT_DIFFERENCE:
            raise MedsegInputError(ckpt, f"its ONNX export does not reproduce PyTorch (max logit difference "
                                   f"{difference:.3g}); model {state['model_name']} is not supported by the ONNX "
                                   "backend")
    return out


class OnnxModel:
    """Runs windows through an onnxruntime InferenceSession: called like the torch module
    (a (B, C, *spatial) tensor in, (B, K, *spatial) float32 logits out), on the CPU provider
    with as many intra-op threads as torch uses."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        _require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def onnx_model_for(run: Path, checkpoint: str, state: dict, checkpoint_path: Path) -> OnnxModel:
    """The ONNX Runtime model for a run's checkpoint, exported on first use; refuses a file
    made from other weights (e.g. before the run was resumed)."""
    path = default_onnx_path(run, checkpoint)
    if not path.exists():
        print(f"medseg: {path} missing; exporting {checkpoint_path.name} to ONNX first")
        export_onnx(run, path, checkpoint=checkpoint)
    model = OnnxModel(path)
    expected = _stamp(state, checkpoint_path)
    made_from = {k: model.metadata.get(k) for k in expected}
    if made_from != expected:
        raise RuntimeError(f"{path} was exported from other weights ({made_from}) than {checkpoint_path} "
                           f"({expected}); delete it to export again")
    return model
