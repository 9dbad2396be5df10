"""medseg.inference.onnx_backend: ONNX export and the ONNX Runtime prediction backend give the
same masks as PyTorch, 2D and 3D."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import medseg  # noqa: E402
from helpers import link_subset, real_dataset  # noqa: E402
from medseg.inference import Predictor, read_input_case  # noqa: E402
from medseg.io.layout import prediction_inputs  # noqa: E402

TINY2D = dict(features=(8, 16, 32), batch_size=2, patch_size=(128, 128), iterations_per_epoch=3, val_fraction=0.4)
TINY3D = dict(features=(8, 16, 32), batch_size=2, patch_size=(24, 32, 24), iterations_per_epoch=2, val_fraction=0.34)


def _case(predictor: Predictor, path: Path):
    item = prediction_inputs(path, predictor.in_channels, predictor.dataset.channel_names)[0]
    return read_input_case(item, predictor.in_channels)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    fg_a, fg_b = a > 0, b > 0
    total = fg_a.sum() + fg_b.sum()
    return 1.0 if total == 0 else float(2 * (fg_a & fg_b & (a == b)).sum() / total)


def _same_predictions(run: Path, image: Path) -> None:
    torch_pred = Predictor(run, device="cpu")
    onnx_pred = Predictor(run, device="cpu", backend="onnx")
    case = _case(torch_pred, image)
    p_torch, p_onnx = torch_pred.probabilities(case), onnx_pred.probabilities(case)
    assert p_torch.shape == p_onnx.shape
    assert float((p_torch - p_onnx).abs().max()) < 1e-4
    m_torch, m_onnx = torch_pred.segment(case), onnx_pred.segment(case)
    assert (m_torch == m_onnx).all() or _dice(m_torch, m_onnx) >= 0.999


@pytest.fixture(scope="module")
def run2d(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, run): a tiny 2D run shared by the tests here (each copies it before changing it)."""
    root = tmp_path_factory.mktemp("onnx2d")
    data = link_subset(real_dataset("isbi2012-membrane"), root / "data", ["0", "1", "2", "3", "4"])
    return data, medseg.train(data, root / "run", epochs=1, plan=False, finish=False, **TINY2D)


def test_2d_export_refuses_overwrite_and_onnx_predicts_like_torch(run2d, tmp_path):
    isbi_small, run = run2d[0], shutil.copytree(run2d[1], tmp_path / "run")
    path = medseg.export_onnx(run)
    assert path == run / "model.onnx" and path.stat().st_size > 0
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        medseg.export_onnx(run)
    assert path.read_bytes() == before
    _same_predictions(run, next((isbi_small / "images").iterdir()))


def test_3d_onnx_backend_exports_on_first_use_and_matches_torch(hippo_small, tmp_path, capsys):
    run = medseg.train(hippo_small, tmp_path / "run", epochs=1, plan=False, finish=False, **TINY3D)
    assert not (run / "model.onnx").exists()
    _same_predictions(run, next((hippo_small / "imagesTr").glob("*.nii.gz")))
    assert (run / "model.onnx").is_file() and "exporting" in capsys.readouterr().out


def test_stale_onnx_file_is_refused(run2d, tmp_path):
    run = shutil.copytree(run2d[1], tmp_path / "run")
    medseg.export_onnx(run, run / "model_last.onnx", checkpoint="last")
    import medseg.runs as ck
    state = ck.load_checkpoint(run / "checkpoints" / "last.pt")
    state["iteration"] = 999  # the run "went on" after the export
    ck.save_checkpoint(state, run / "checkpoints" / "last.pt")
    with pytest.raises(RuntimeError, match="other weights"):
        Predictor(run, device="cpu", checkpoint="last", backend="onnx")


def test_cli_export_and_predict_with_onnx_backend(run2d, tmp_path):
    isbi_small, run = run2d[0], shutil.copytree(run2d[1], tmp_path / "run")
    cli = [sys.executable, "-m", "medseg"]
    done = subprocess.run(cli + ["export", str(run), "--onnx", "--out", str(tmp_path / "net.onnx")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = subprocess.run(cli + ["export", str(run), "--onnx", "--out", str(tmp_path / "net.onnx")],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
    image = next((isbi_small / "images").iterdir())
    done = subprocess.run(cli + ["predict", str(run), str(image), "--out", str(tmp_path / "pred"), "--device", "cpu",
                                 "--backend", "onnx", "--no-overlays"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "pred").glob("*.png"))) == 1 and (run / "model.onnx").is_file()


# The other registered models, sized small enough to export in seconds (the transformers'
# default sizes export the same graph, ~30 M parameters: checked by hand, minutes here).
OTHER_MODELS = {
    "resunet": {"features": [8, 16, 32]},
    "vnet": {"features": [8, 16, 32]},
    "fcn": {"features": [8, 16, 32]},
    "unetr": {"img_size": [128, 128], "hidden_size": 96, "mlp_dim": 192, "num_heads": 4},
    "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1]},
}


@pytest.mark.parametrize("name", sorted(OTHER_MODELS))
def test_every_model_exports_and_predicts_like_torch(name, run2d, tmp_path):
    """A checkpoint of each model (random weights in the tiny run's place) exports, passes the
    export check, and the ONNX backend predicts the same probabilities as PyTorch."""
    import torch

    import medseg.runs as ck
    from medseg.nets import build_model

    isbi_small, run = run2d[0], shutil.copytree(run2d[1], tmp_path / "run")
    for which in ("best", "last"):
        path = ck.find_checkpoint(run, which)
        state = ck.load_checkpoint(path)
        torch.manual_seed(0)
        model = build_model(name, int(state["in_channels"]), int(state["num_classes"]), 2, **OTHER_MODELS[name])
        state.update(model_name=name, model_options=OTHER_MODELS[name], model=model.state_dict())
        ck.save_checkpoint(state, path)
    assert medseg.export_onnx(run).is_file()
    _same_predictions(run, next((isbi_small / "images").iterdir()))
