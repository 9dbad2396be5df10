"""The fault and bad-input catalogue's tools (tests/reliability/): user data copied from the real
datasets, the public command run in-process or as `python -m medseg`, checksums of the user's
files, and a small full (or read-only) file system where the machine lets a test mount one.

Imported as `from reliability_helpers import ...` (tests/conftest.py puts tests/ on sys.path).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers import real_dataset

# training settings that make a run in seconds (the catalogue tests what happens around training)
TINY_2D = dict(features=(8, 16, 32), batch_size=2, patch_size=(64, 64), iterations_per_epoch=2, val_fraction=0.4,
               plan=False, epochs=1, finish=False)
TINY_3D = dict(features=(8, 16), batch_size=1, patch_size=(16, 16, 16), iterations_per_epoch=2, val_fraction=0.25,
               plan=False, epochs=1, finish=False)
HIPPO = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]


@dataclass
class Outcome:
    """What a medseg command did: exit code and its two streams."""

    code: int
    out: str
    err: str

    def one_error_line(self) -> str:
        """The error the user sees: one `medseg CMD: error: ...` line and no traceback."""
        assert self.code == 2, f"exit {self.code}, expected 2\nstdout: {self.out}\nstderr: {self.err}"
        assert "Traceback" not in self.err, self.err
        lines = [ln for ln in self.err.splitlines() if ": error: " in ln]
        assert len(lines) == 1, self.err
        return lines[0]


def medseg(capsys, *argv: str | os.PathLike) -> Outcome:
    """Run `medseg ARGV` in this process through the console entry point (`medseg.cli.main`, what
    the `medseg` script calls), so faults can be injected with monkeypatch."""
    from medseg.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse errors
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def medseg_process(*argv: str | os.PathLike, env: dict | None = None, timeout: float = 600) -> Outcome:
    """Run `python -m medseg ARGV` as a separate process (the exit code as the shell sees it)."""
    done = subprocess.run([sys.executable, "-m", "medseg", *map(str, argv)], capture_output=True, encoding="utf-8",
                          env={**os.environ, **(env or {})}, timeout=timeout)
    return Outcome(done.returncode, done.stdout, done.stderr)


def checksums(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (a file or folder each), by path: compared before and
    after a command to prove it changed none of them."""
    found = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            found[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


def leftovers(folder: Path) -> list[str]:
    """Temporary files or locks a command left behind (atomic writes and locks are dot files)."""
    if not folder.exists():
        return []
    return sorted(str(p) for p in folder.rglob(".*") if p.is_file())


def copy_isbi(dst: Path, stems: tuple[str, ...] = ("0", "1", "2", "3", "4")) -> Path:
    """images/ + labels/ with copies (not links) of ISBI 2012 slices: the user's own files."""
    src = real_dataset("isbi2012-membrane")
    for sub in ("images", "labels"):
        (dst / sub).mkdir(parents=True)
        for stem in stems:
            shutil.copy(src / sub / f"{stem}.png", dst / sub / f"{stem}.png")
    return dst


def copy_hippocampus(dst: Path, cases: list[str] = HIPPO) -> Path:
    """images/ + labels/ with copies of MSD hippocampus volumes (.nii.gz)."""
    src = real_dataset("msd-hippocampus")
    for sub, out in (("imagesTr", "images"), ("labelsTr", "labels")):
        (dst / out).mkdir(parents=True)
        for case in cases:
            shutil.copy(src / sub / f"{case}.nii.gz", dst / out / f"{case}.nii.gz")
    return dst


def namespace_available() -> bool:
    """Whether this machine lets an unprivileged test mount a small tmpfs in a user namespace."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True, timeout=30)
    return probe.returncode == 0


def in_namespace(script: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a shell script in a private user and mount namespace, where it may mount a small tmpfs
    (a really full disk) or a read-only one: the faults a user meets, not simulated ones.
    `$MEDSEG` in the script is `python -m medseg`. Needs `namespace_available()`."""
    prelude = f"set -u; MEDSEG='{sys.executable} -m medseg'; "
    return subprocess.run(["unshare", "-Urm", "sh", "-c", prelude + script], capture_output=True,
                          encoding="utf-8", timeout=timeout)
