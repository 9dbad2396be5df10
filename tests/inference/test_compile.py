"""medseg.inference.compile: prediction through torch.compile, when the switch happens, and that it
changes no output."""
from __future__ import annotations

import importlib
import shutil

import pytest
import torch

from medseg.inference import CompilingNetwork, prediction_network, sliding_window
from medseg.nets import UNet

predict_module = importlib.import_module("medseg.inference.compile")


class Counted(torch.nn.Module):
    """Stands in for a compiled network: the same outputs, and a count of its calls."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x):
        self.calls += 1
        return self.model(x)


def test_switches_when_the_calls_ahead_repay_the_compilation(monkeypatch):
    made = []
    monkeypatch.setattr(predict_module, "compile_model", lambda m, fall_back: made.append(Counted(m)) or made[-1])
    monkeypatch.setattr(predict_module, "COMPILE_COST_S", 1e-9)
    net = UNet(1, 2, 2, (4, 8)).eval()
    runner = CompilingNetwork(net, at_once=False, fall_back=True)
    big, small = torch.randn(4, 1, 32, 32), torch.randn(1, 1, 16, 16)
    first = runner(big)  # nothing announced: no work ahead, stays eager
    assert not made
    runner.expect(big.shape, 5)
    runner(big)  # eager (its second call: warm), and the 4 calls still ahead repay the (tiny) compilation
    assert len(made) == 1 and made[0].calls == 0 and runner.shape == (4, 1, 32, 32)
    again = runner(big)
    assert made[0].calls == 1 and torch.allclose(first, again)
    runner(small)  # another shape: eager, no second compilation
    assert len(made) == 1 and made[0].calls == 1

    monkeypatch.setattr(predict_module, "COMPILE_COST_S", 1e9)  # never repaid: stays eager
    patient = CompilingNetwork(net, at_once=False, fall_back=True)
    patient.expect(big.shape, 1000)
    for _ in range(4):
        patient(big)
    assert patient.compiled is None
    at_once = CompilingNetwork(net, at_once=True, fall_back=True)
    at_once(small)
    assert len(made) == 2 and at_once.shape == (1, 1, 16, 16)


def test_prediction_network_settings():
    net = torch.nn.Conv2d(1, 2, 1)
    cpu = torch.device("cpu")
    assert prediction_network(net, False, cpu, "torch") is net
    assert prediction_network(net, True, cpu, "onnx") is net  # ONNX Runtime runs its own graph
    assert prediction_network(net, "auto", torch.device("cuda"), "torch") is net
    forced = prediction_network(net, True, cpu, "torch")
    assert isinstance(forced, CompilingNetwork) and forced.at_once and not forced.fall_back
    if shutil.which("c++") or shutil.which("g++"):
        auto = prediction_network(net, "auto", cpu, "torch")
        assert not auto.at_once and auto.fall_back
    with pytest.raises(ValueError, match="compile"):
        prediction_network(net, "yes", cpu, "torch")


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="inductor needs a C++ compiler")
def test_compiled_sliding_window_matches_eager():
    torch.manual_seed(0)
    net = UNet(1, 3, 2, (4, 8)).eval()
    image = torch.randn(1, 70, 50)
    with torch.inference_mode():
        eager = sliding_window(net, image, (32, 32), overlap=0.5, divisor=2, batch_size=4)
        compiled = sliding_window(CompilingNetwork(net, at_once=True, fall_back=False), image, (32, 32),
                                  overlap=0.5, divisor=2, batch_size=4)
    assert torch.allclose(eager, compiled, atol=1e-4)


def test_predict_announces_the_work_ahead_and_keeps_the_masks(isbi_small, tmp_path, monkeypatch):
    import medseg
    from PIL import Image

    run = medseg.train(isbi_small, tmp_path / "run", epochs=1, features=(8, 16, 32), batch_size=2,
                       patch_size=(64, 64), iterations_per_epoch=2, val_fraction=0.4)
    medseg.predict(run, isbi_small / "images", tmp_path / "eager", compile=False, overlays=False)
    made = []
    monkeypatch.setattr(predict_module, "compile_model", lambda m, fall_back: made.append(Counted(m)) or made[-1])
    monkeypatch.setattr(predict_module, "has_cpp_compiler", lambda: True)
    monkeypatch.setattr(predict_module, "COMPILE_COST_S", 1e-9)
    medseg.predict(run, isbi_small / "images", tmp_path / "auto", overlays=False)  # compile="auto"
    assert len(made) == 1 and made[0].calls > 0  # tiled 512^2 slices: full batches went to the "compiled" net
    for mask in (tmp_path / "eager").glob("*.png"):
        assert (Image.open(mask).tobytes() == Image.open(tmp_path / "auto" / mask.name).tobytes())
