"""Distributed training: two gloo processes on this CPU through torchrun (`torch.distributed.run`).

The helpers of `medseg.distributed` are checked inside a real 2-process group (stop agreement,
broadcast, rank-dependent patch sampling), and `medseg train` runs a few DDP steps whose
checkpoint must then load and predict in a single process.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg import distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port())] + args
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM: torchrun stops its workers (they run in sessions of their own; killing torchrun
        # alone would leave them waiting for its store forever), then SIGKILL whatever is left
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise AssertionError(f"torchrun timed out after {timeout} s (the timeout only guards a starved CPU)\n"
                             f"stdout: {out[-2000:]}\nstderr: {err[-4000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_helpers_are_no_ops_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    model = torch.nn.Linear(2, 2)
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu")
    assert not distributed.active() and distributed.is_main()
    assert distributed.wrap(model, torch.device("cpu")) is model and distributed.unwrap(model) is model
    assert distributed.agree_to_stop(True) is True and distributed.agree_to_stop(False) is False
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.sampler_seed(5) == 5  # the single-process run draws exactly as before


WORKER = """
import json, sys
import torch
from medseg import distributed
from medseg.data.augment import AugmentConfig
from medseg.data.sampler import PatchSampler

device = distributed.init_from_env(torch.device("cpu"))
rank = distributed.rank()
out = {"rank": rank, "world": distributed.world_size(), "main": distributed.is_main()}
# stop agreement: only rank 1 wants to stop, yet both must stop; nobody wants to: both go on
out["stop_if_rank1"] = distributed.agree_to_stop(rank == 1)
out["stop_none"] = distributed.agree_to_stop(False)
out["plan"] = distributed.broadcast_object({"from": rank} if rank == 0 else None)
# the same cases on every rank, as in training: the first batches must differ between ranks
gen = torch.Generator().manual_seed(0)
images = [torch.randn(1, 24, 24, generator=gen) for _ in range(3)]
labels = [(x[0] > 0).long() for x in images]
sampler = PatchSampler(images, labels, (16, 16), 2, AugmentConfig(), seed=distributed.sampler_seed(0))
x, _ = next(sampler.epoch(0, 1))
out["first_batch"] = x.flatten()[:64].tolist()
net = distributed.wrap(torch.nn.Conv2d(1, 2, 3), device)
out["wrapped"] = type(net).__name__
out["state_keys"] = sorted(distributed.unwrap(net).state_dict())
distributed.barrier()
distributed.shutdown()
json.dump(out, open(sys.argv[1] + f"/rank{rank}.json", "w"))
"""


def test_two_gloo_processes_agree_and_sample_differently(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    result = _torchrun([str(script), str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["world"], r1["world"]) == (2, 2) and r0["main"] and not r1["main"]
    assert r0["stop_if_rank1"] and r1["stop_if_rank1"]
    assert not r0["stop_none"] and not r1["stop_none"]
    assert r0["plan"] == r1["plan"] == {"from": 0}
    assert r0["first_batch"] != r1["first_batch"]
    assert r0["wrapped"] == "DistributedDataParallel"
    assert r0["state_keys"] == ["bias", "weight"]  # no "module." prefix


def test_torchrun_trains_and_the_checkpoint_predicts_in_one_process(hippo_small, tmp_path):
    from medseg.inference import Predictor
    from medseg.runs import load_checkpoint

    run = tmp_path / "run"
    result = _torchrun(["-m", "medseg", "train", str(hippo_small), "--out", str(run), "--epochs", "1",
                        "--iterations-per-epoch", "3", "--device", "cpu", "--patch-size", "32x32x32",
                        "--batch-size", "2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run written to") == 1  # rank 0 alone reports
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] and info["iterations_done"] == 3 and info["epochs_done"] == 1
    assert (run / "plan.json").is_file() and (run / "report.html").is_file()
    log_rows = (run / "log.csv").read_text().strip().splitlines()
    assert len(log_rows) == 2  # header + one epoch, written once (rank 0)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert not any(k.startswith("module.") for k in state["model"])
    predictor = Predictor(run, device="cpu")
    case_file = next((hippo_small / "imagesTr").glob("*.nii.gz"))
    from medseg.inference import read_input_case
    from medseg.io.layout import prediction_inputs
    item = prediction_inputs(case_file, predictor.in_channels, predictor.dataset.channel_names)[0]
    case = read_input_case(item, predictor.in_channels)
    mask = predictor.segment(case)
    assert mask.shape == case.spatial_shape and mask.dtype == np.uint8


SPY = """
import os, sys
from pathlib import Path
import medseg.inference  # noqa: F401  (the package's face re-exports the function `predict`)
predict_module = sys.modules["medseg.inference.predict"]

original = predict_module.write_prediction
log = Path(sys.argv[1]) / f"rank{os.environ['RANK']}.txt"

def spy(target, *args, **kwargs):  # which rank writes which mask
    with open(log, "a") as f:
        f.write(Path(target).name + "\\n")
    return original(target, *args, **kwargs)

predict_module.write_prediction = spy
from medseg.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow  # about a minute: a training, two predictions, torchrun's start
def test_torchrun_predict_shards_the_cases_and_writes_each_once(tmp_path):
    """`torchrun --nproc_per_node 2 -m medseg predict`: each rank writes its own share of the
    masks, each mask once; the masks and the statistics are those of one process."""
    import medseg as api
    from helpers import link_subset, real_dataset
    from medseg.io import read_mask

    src = real_dataset("kvasir-seg")  # colour pictures on a 128-pixel working grid: fast to predict
    stems = tuple(sorted(p.stem for p in (src / "images").iterdir())[:5])
    data = link_subset(src, tmp_path / "data", list(stems), "images", "masks")
    run = api.train(data, tmp_path / "run", features=(8, 16, 32), batch_size=2, patch_size=(64, 64), image_size=128,
                    iterations_per_epoch=2, val_fraction=0.4, plan=False, epochs=1, finish=False, device="cpu")
    single = tmp_path / "single"
    api.predict(run, data / "images", single, device="cpu", compile=False, overlays=False)
    spy = tmp_path / "spy.py"
    spy.write_text(textwrap.dedent(SPY))
    out = tmp_path / "sharded"
    result = _torchrun([str(spy), str(tmp_path), "predict", str(run), str(data / "images"), "--out", str(out),
                        "--device", "cpu", "--no-compile", "--no-overlays"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    by_rank = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert by_rank[0] and by_rank[1] and not set(by_rank[0]) & set(by_rank[1])  # both worked, no mask twice
    assert sorted(by_rank[0] + by_rank[1]) == sorted(f"{s}.png" for s in stems)
    for stem in stems:
        assert np.array_equal(read_mask(out / f"{stem}.png"), read_mask(single / f"{stem}.png")), stem
    assert (out / "statistics.csv").read_text() == (single / "statistics.csv").read_text()
    assert result.stdout.count("mask(s) written") == 1  # rank 0 alone reports
