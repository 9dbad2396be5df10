"""Pick the device and the arithmetic precision, measuring rather than assuming.

bf16 autocast doubles convolution speed on CPUs with native bf16 (AVX512-BF16, AMX) but is
many times slower where it is emulated (plain AVX2), so on CPU `auto` runs a short timed probe
of the actual model and keeps bf16 only if it wins.
"""
from __future__ import annotations

import copy
import shutil
import time

import torch
from torch import nn


def memory_format(spatial_dims: int) -> torch.memory_format:
    """Channels-last for 3D: a CPU training step with oneDNN's 3D convolutions runs faster in
    that layout (docs/decisions.md); 2D keeps the default layout."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.contiguous_format


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` -> CUDA when present, else CPU; `cuda` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but PyTorch sees no CUDA GPU (use --device cpu or auto)")
    return device


def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _time_step(model: nn.Module, sample: torch.Tensor, dtype: torch.dtype | None, repeats: int = 2) -> float:
    """Fastest of `repeats` timed training steps (after one warm-up): the minimum is the
    figure least disturbed by other work on a shared machine."""
    def step() -> None:
        with torch.autocast(sample.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(sample)
        out = out[0] if isinstance(out, (list, tuple)) else out  # deep supervision: full resolution first
        out.float().mean().backward()

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return min(times)


PROBE_ROUNDS = 3  # alternating fp32 / bf16 rounds of the probe


def choose_precision(requested: str, device: torch.device, model: nn.Module | None = None,
                     sample: torch.Tensor | None = None) -> torch.dtype | None:
    """Autocast dtype to use (None = float32). `requested`: auto, fp32 or bf16.

    On a CPU with native bf16, `auto` times both in alternating rounds and keeps bf16 only if
    its fastest step beats fp32's fastest by 20 %: a single pair of timings on a busy machine
    flipped the choice from run to run (and with it the arithmetic of a resumed run)."""
    if requested == "fp32":
        return None
    if requested == "bf16":
        return torch.bfloat16
    if requested != "auto":
        raise ValueError(f"unknown precision {requested!r}: use auto, fp32 or bf16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if not cpu_has_native_bf16() or model is None or sample is None:
        return None
    weights = copy.deepcopy(model.state_dict())  # the probe must not move normalisation statistics
    fp32, bf16 = [], []
    for _ in range(PROBE_ROUNDS):
        fp32.append(_time_step(model, sample, None))
        bf16.append(_time_step(model, sample, torch.bfloat16))
    model.load_state_dict(weights)
    return torch.bfloat16 if min(bf16) < 0.8 * min(fp32) else None


def has_cpp_compiler() -> bool:
    """Whether a C++ compiler is on the PATH: torch.compile's CPU backend (inductor) needs one."""

    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def compile_model(model: nn.Module, fall_back: bool) -> nn.Module:
    """`torch.compile(model)`; with `fall_back` a compiler failure runs the eager model instead of
    raising (medseg's "auto" settings must never stop a run for an optimisation)."""
    if fall_back:
        import torch._dynamo as dynamo

        dynamo.config.suppress_errors = True
    return torch.compile(model)
