"""When prediction switches its windows to `torch.compile`: only once the work still ahead
repays the compilation (docs/decisions.md has the measurements behind the two constants)."""
from __future__ import annotations

import time

import torch

from ..device import compile_model, has_cpp_compiler

# "auto" compiles a shape only when the windows still ahead would save more than the compilation
# (~18 s for a 3D U-Net): against eager windows in pairs with the two-pass norm, compiled ones save
# only a few per cent, so that takes about a thousand seconds of windows (docs/decisions.md).
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
