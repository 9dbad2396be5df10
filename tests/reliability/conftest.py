"""Trained runs the fault and bad-input catalogue shares: one 2D (ISBI slices) and one 3D (MSD
hippocampus volumes), trained once per session in seconds. A test that changes a run works on
its own copy (`run_copy`)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reliability_helpers import TINY_2D, TINY_3D, copy_hippocampus, copy_isbi


@pytest.fixture(scope="session")
def run2d(tmp_path_factory) -> Path:
    import medseg

    root = tmp_path_factory.mktemp("run2d")
    return medseg.train(copy_isbi(root / "data"), root / "run", **TINY_2D)


@pytest.fixture(scope="session")
def run3d(tmp_path_factory) -> Path:
    import medseg

    root = tmp_path_factory.mktemp("run3d")
    return medseg.train(copy_hippocampus(root / "data"), root / "run", **TINY_3D)


@pytest.fixture
def run_copy(tmp_path: Path):
    """A private copy of a shared run: `run_copy(run2d)`."""
    def copy(run: Path) -> Path:
        return Path(shutil.copytree(run, tmp_path / f"{run.parent.name}_copy"))
    return copy
