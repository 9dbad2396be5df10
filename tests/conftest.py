"""Shared fixtures: a private preprocessing cache, and small datasets linked from the real ones.

Helpers that build data (real_dataset, link_subset, hippocampus_msd, write_volume, ...) live in
tests/helpers.py; this file puts tests/ on sys.path so every test folder imports them as
`from helpers import ...` (pytest's importlib mode adds no test folder to sys.path itself).
"""
from __future__ import annotations

import locale
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

# hippocampus_msd and real_dataset are also imported from here by the golden run and the published layouts.
from helpers import hippocampus_msd, link_subset, real_dataset  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests keep their preprocessed-case cache to themselves, never in the user's ~/.cache."""
    old = os.environ.get("MEDSEG_CACHE")
    os.environ["MEDSEG_CACHE"] = str(tmp_path_factory.mktemp("medseg_cache"))
    yield
    if old is None:
        os.environ.pop("MEDSEG_CACHE", None)
    else:
        os.environ["MEDSEG_CACHE"] = old


SESSION_LOCALE = locale.setlocale(locale.LC_ALL)


@pytest.fixture(autouse=True)
def _locale_restored():
    """Every test runs, and ends, in the locale the session started with. SimpleITK's DICOM writer
    switches the process to the "C" locale (ASCII), after which a `read_text()` without an encoding
    fails on UTF-8 files (torch's kernel templates, this package's sources): test order decided
    failures. Restored before the test too, since module fixtures (set up first) may write DICOM."""
    if locale.setlocale(locale.LC_ALL) != SESSION_LOCALE:
        locale.setlocale(locale.LC_ALL, SESSION_LOCALE)
    yield
    if locale.setlocale(locale.LC_ALL) != SESSION_LOCALE:
        locale.setlocale(locale.LC_ALL, SESSION_LOCALE)


SESSION_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _torch_state_kept():
    """A test leaves torch's process state as it found it: gradients on, the session's thread
    count. A leak here made later tests fail far from their cause (a generator suspended inside
    `no_grad` left the main thread without gradients; a test that lowered the thread count made
    the plans after it plan for one thread), so the leaking test fails itself, by name."""
    yield
    leaks = []
    if not torch.is_grad_enabled():
        leaks.append("gradients left disabled")
        torch.set_grad_enabled(True)
    if torch.get_num_threads() != SESSION_THREADS:
        leaks.append(f"thread count left at {torch.get_num_threads()} (session: {SESSION_THREADS})")
        torch.set_num_threads(SESSION_THREADS)
    assert not leaks, "this test changed torch's process state: " + "; ".join(leaks)


@pytest.fixture
def isbi_small(tmp_path: Path) -> Path:
    return link_subset(real_dataset("isbi2012-membrane"), tmp_path / "isbi_small", ["0", "1", "2", "3", "4"])


@pytest.fixture
def kvasir_small(tmp_path: Path) -> Path:
    src = real_dataset("kvasir-seg")
    stems = sorted(p.stem for p in (src / "images").iterdir())[:6]
    return link_subset(src, tmp_path / "kvasir_small", stems, "images", "masks")


@pytest.fixture
def hippo_small(tmp_path: Path) -> Path:
    return hippocampus_msd(tmp_path / "hippo_small")
