"""Nothing lost: every output is written whole or not at all, a failed write says which file and
why and leaves the previous file as it was, and one process at a time writes an output folder.

Each case runs the public command (`medseg.cli.main` in this process, where a fault is injected;
`python -m medseg` in a private mount namespace, where a really full or read-only file system
can be mounted) on copies of ../shared/data and compares checksums of the user's files.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medseg import atomic
from medseg.errors import MedsegOutputError
from medseg.io import read_mask
from medseg.runs import load_checkpoint
from medseg.locks import LOCK_NAME
from reliability_helpers import (checksums, copy_hippocampus, copy_isbi, in_namespace, leftovers, medseg,
                                 namespace_available)

needs_namespace = pytest.mark.skipif(not namespace_available(), reason="cannot mount a tmpfs in a user namespace here")


def _disk_full_on_flush(monkeypatch, name: str = "") -> None:
    """Every atomic write of a file whose name holds `name` fails as a full disk does when the
    data is flushed: with ENOSPC (delayed allocation reports it at fsync)."""
    real = atomic._sync

    def sync(path: Path) -> int:
        if name in path.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path)

    monkeypatch.setattr(atomic, "_sync", sync)


def test_full_disk_keeps_the_previous_masks(run2d, tmp_path, capsys, monkeypatch):
    """The issue's case: `--overwrite` onto a full disk destroyed the good masks and exited 0."""
    images = copy_isbi(tmp_path / "data") / "images"
    pred = tmp_path / "pred"
    assert medseg(capsys, "predict", run2d, images, "--out", pred, "--no-overlays", "--no-compile").code == 0
    before = checksums(images, pred, run2d)
    _disk_full_on_flush(monkeypatch)
    outcome = medseg(capsys, "predict", run2d, images, "--out", pred, "--no-overlays", "--overwrite", "--no-compile")
    line = outcome.one_error_line()
    assert "cannot write" in line and str(pred / "0.png") in line and "no space left on device" in line
    assert checksums(images, pred, run2d) == before
    assert leftovers(pred) == []
    assert "mask(s) written" not in outcome.out


def test_mask_that_does_not_read_back_is_refused(run3d, tmp_path, capsys, monkeypatch):
    """SimpleITK's NIfTI writer returns normally on a full disk and leaves a cut-off file: the
    read-back after every mask write catches it, and the previous mask stays."""
    import SimpleITK as sitk

    images = copy_hippocampus(tmp_path / "data", ["hippocampus_007"]) / "images"
    pred = tmp_path / "pred"
    assert medseg(capsys, "predict", run3d, images, "--out", pred, "--no-overlays", "--no-compile").code == 0
    before = checksums(images, pred)
    real_write = sitk.WriteImage

    def cut_short(image, name, *args):
        real_write(image, name, *args)
        data = Path(name).read_bytes()
        Path(name).write_bytes(data[: len(data) // 3])  # what a full disk left, without an error

    monkeypatch.setattr(sitk, "WriteImage", cut_short)
    line = medseg(capsys, "predict", run3d, images, "--out", pred, "--no-overlays", "--overwrite", "--no-compile").one_error_line()
    assert f"cannot write {pred / 'hippocampus_007.nii.gz'}" in line and "read back" in line
    assert checksums(images, pred) == before and leftovers(pred) == []


def test_full_disk_while_training_names_the_checkpoint(tmp_path, capsys, monkeypatch):
    data = copy_isbi(tmp_path / "data")
    before = checksums(data)
    _disk_full_on_flush(monkeypatch, ".pt")
    run = tmp_path / "run"
    line = medseg(capsys, "train", data, "--out", run, "--epochs", "1", "--no-plan", "--features", "8,16",
                  "--patch-size", "64x64", "--batch-size", "2", "--iterations-per-epoch", "1").one_error_line()
    assert "cannot write" in line and "checkpoints" in line and ".pt: no space left on device" in line
    assert "inline_container" not in line
    assert not list(run.rglob("*.pt")) and leftovers(run) == []
    assert checksums(data) == before


def test_full_disk_keeps_the_previous_checkpoint(run2d, run_copy, capsys, monkeypatch):
    run = run_copy(run2d)
    data = Path(json.loads((run / "run.json").read_text())["data"])
    last = run / "checkpoints" / "last.pt"
    before = checksums(last, data)
    _disk_full_on_flush(monkeypatch, "last.pt")
    line = medseg(capsys, "train", data, "--out", run, "--resume", "--epochs", "2").one_error_line()
    assert f"cannot write {last}: no space left on device" in line
    assert checksums(last, data) == before and leftovers(run) == []
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] in (1, 2)  # whole, old or new


@needs_namespace
def test_really_full_disk(run3d, tmp_path):
    """On a 100 kB tmpfs: predicting two volumes fails with the real cause, and no mask is left
    cut short (the issue saw masks of 0 and 4096 bytes and "2 mask(s) written")."""
    images = copy_hippocampus(tmp_path / "data", ["hippocampus_007", "hippocampus_008"]) / "images"
    disk = tmp_path / "disk"
    disk.mkdir()
    before = checksums(images, run3d)
    done = in_namespace(
        f"mount -t tmpfs -o size=24k tmpfs '{disk}' || exit 99; $MEDSEG predict '{run3d}' '{images}' "
        f"--out '{disk}/pred' --no-compile; echo \"exit=$?\"; find '{disk}' -type f -printf '%s %p\\n'")
    assert "exit=99" not in done.stdout, done.stderr
    assert "exit=2" in done.stdout, done.stdout + done.stderr
    assert "no space left on device" in done.stderr and "Traceback" not in done.stderr
    assert "mask(s) written" not in done.stdout
    for line in done.stdout.splitlines():
        if line.endswith(".nii.gz"):  # whatever is there is a whole mask: never 0 bytes or a temporary
            size, name = line.split(" ", 1)
            assert int(size) > 0 and not Path(name).name.startswith("."), line
    assert checksums(images, run3d) == before


@needs_namespace
def test_read_only_output_folder(run2d, tmp_path):
    images = copy_isbi(tmp_path / "data", ("0",)) / "images"
    disk = tmp_path / "ro"
    disk.mkdir()
    done = in_namespace(f"mount -t tmpfs -o size=1m,ro tmpfs '{disk}' || exit 99; "
                        f"$MEDSEG predict '{run2d}' '{images}' --out '{disk}/pred' --no-compile")
    assert done.returncode == 2, done.stderr
    assert f"cannot write {disk / 'pred'}: read-only file system" in done.stderr and "Traceback" not in done.stderr


@needs_namespace
def test_evaluate_into_read_only_folder_refuses_before_scoring(run2d, tmp_path, capsys):
    data = copy_isbi(tmp_path / "data", ("3", "4"))
    pred = tmp_path / "pred"
    assert medseg(capsys, "predict", run2d, data / "images", "--out", pred, "--no-compile").code == 0
    done = in_namespace(f"mount --bind '{pred}' '{pred}' && mount -o remount,bind,ro '{pred}' || exit 99; "
                        f"$MEDSEG evaluate '{pred}' '{data / 'labels'}'")
    assert done.returncode == 2, done.stderr
    assert f"cannot write {pred / 'evaluation.csv'}: read-only file system" in done.stderr
    assert "evaluating" not in done.stderr and "dice" not in done.stdout.lower()  # refused before scoring


def test_output_that_is_a_file(run2d, tmp_path, capsys):
    images = copy_isbi(tmp_path / "data", ("0",)) / "images"
    taken = tmp_path / "notes.txt"
    taken.write_text("the user's notes\n")
    before = checksums(taken, images)
    for argv in (["predict", run2d, images, "--out", taken, "--no-compile"],
                 ["train", images.parent, "--out", taken, "--epochs", "1", "--no-plan"]):
        line = medseg(capsys, *argv).one_error_line()
        assert f"{taken}: is a file, not a folder" in line
    assert checksums(taken, images) == before


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another medseg process holding FOLDER's lock (as a running `medseg predict` would)."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom medseg.locks import output_lock\n"
        f"with output_lock({str(folder)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n")],
        stdout=subprocess.PIPE, encoding="utf-8")
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_second_process_on_one_output_folder_is_refused(run2d, tmp_path, capsys):
    images = copy_isbi(tmp_path / "data", ("0", "1")) / "images"
    pred, run_out = tmp_path / "pred", tmp_path / "run"
    holders = [_hold_lock(pred), _hold_lock(run_out)]
    try:
        line = medseg(capsys, "predict", run2d, images, "--out", pred, "--no-compile").one_error_line()
        assert f"{pred}: is in use by another medseg process (pid {holders[0].pid}" in line
        line = medseg(capsys, "train", images.parent, "--out", run_out, "--epochs", "1", "--no-plan").one_error_line()
        assert f"{run_out}: is in use by another medseg process (pid {holders[1].pid}" in line
        assert sorted(p.name for p in pred.iterdir()) == [LOCK_NAME]  # nothing written beside the lock
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def test_stale_lock_is_taken_over(run2d, tmp_path, capsys):
    """A lock left by a process that died (kill -9) does not block the folder for ever."""
    images = copy_isbi(tmp_path / "data", ("0",)) / "images"
    pred = tmp_path / "pred"
    holder = _hold_lock(pred)
    holder.kill()  # dies holding it: the file stays, the kernel drops the lock
    holder.wait()
    assert (pred / LOCK_NAME).is_file()
    outcome = medseg(capsys, "predict", run2d, images, "--out", pred, "--no-compile")
    assert outcome.code == 0, outcome.err
    assert f"stale lock (its process, pid {holder.pid}, is no longer running)" in outcome.err
    assert (pred / "0.png").is_file() and not (pred / LOCK_NAME).exists()


def test_atomic_write_helper_keeps_old_content_on_any_failure(tmp_path):
    """The one helper every output goes through: old content stays on a failure in the writer,
    a file written short, or a check that fails; nothing temporary is left."""
    target = tmp_path / "out" / "table.csv"
    atomic.write_text(target, "old\n")
    failures = [lambda tmp: (_ for _ in ()).throw(RuntimeError("encoder broke")),  # writer raises
                lambda tmp: tmp.write_bytes(b"")]                                   # writer leaves 0 bytes
    for write in failures:
        with pytest.raises(MedsegOutputError, match="cannot write .*table.csv"):
            with atomic.atomic_path(target) as tmp:
                write(tmp)
    with pytest.raises(MedsegOutputError, match="does not read back"):
        with atomic.atomic_path(target, check=lambda tmp: np.load(tmp)) as tmp:
            tmp.write_text("not an array")
    assert target.read_text() == "old\n" and leftovers(target.parent) == []


def test_masks_read_back_equal(run2d, tmp_path, capsys):
    """A written mask is the predicted one: what predict wrote reads back as class indices."""
    images = copy_isbi(tmp_path / "data", ("2",)) / "images"
    assert medseg(capsys, "predict", run2d, images, "--out", tmp_path / "pred", "--no-compile").code == 0
    mask = read_mask(tmp_path / "pred" / "2.png")
    assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 1}


def test_help_answers_without_torch():
    """`medseg --help` and an argument error answer before torch loads (under a second)."""
    script = ("import sys, time\nstart = time.perf_counter()\nfrom medseg.cli import main\n"
              "for argv in (['--help'], ['predict', '--help'], ['predict']):\n"
              "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
              "print('SECONDS', time.perf_counter() - start, 'TORCH', 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8", timeout=60)
    seconds, torch_loaded = done.stdout.split("SECONDS")[1].split("TORCH")
    assert torch_loaded.strip() == "False" and float(seconds) < 1.0, done.stdout
    assert "the following arguments are required: run, input, --out" in done.stderr
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medseg", "--help"], capture_output=True, check=True, timeout=60)
    assert time.perf_counter() - start < 5.0  # the interpreter's start included; torch alone takes ~5 s
