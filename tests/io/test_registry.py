"""medseg.io.registry: readers and writers by file suffix, and the input errors they raise (missing,
unsupported, corrupt and truncated files, naming the file)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import raises_naming, save_picture
from medseg.io import registry
from medseg.io.registry import (
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    case_stem,
    is_image_file,
    is_mask_file,
    match_suffix,
    read_image,
    read_image_header,
    read_mask,
    register_mask_reader,
    register_reader,
)


@pytest.fixture
def scratch_registry():
    """Let a test register fake formats without leaking them into other tests."""
    tables = [registry._IMAGE_READERS, registry._HEADER_READERS, registry._MASK_READERS, registry._MASK_WRITERS]
    sets = [registry.IMAGE_SUFFIXES, registry.MASK_SUFFIXES, registry.MASK_WRITE_SUFFIXES]
    saved = [dict(t) for t in tables], [set(s) for s in sets]
    yield
    for t, old in zip(tables, saved[0]):
        t.clear()
        t.update(old)
    for s, old in zip(sets, saved[1]):
        s.clear()
        s.update(old)


def test_builtin_suffixes_are_registered_case_insensitively():
    for s in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
        assert s in IMAGE_SUFFIXES and s in MASK_SUFFIXES
    assert is_image_file("a/B.PNG") and is_image_file("x.JPeG") and is_image_file("stack.TIFF")
    assert is_mask_file("m.Png")
    assert not is_image_file("README") and not is_image_file("notes.txt") and not is_image_file(".png")


def test_double_suffixes_match_longest_first(scratch_registry, tmp_path):
    @register_reader(".gz")
    def read_gz(path):
        return np.zeros((1, 2, 2), np.float32), (1.0, 1.0), {"which": "gz"}

    @register_reader(".TST.gz")  # registered with odd case: matching is case-insensitive
    def read_tst(path):
        return np.ones((2, 3, 4, 5), np.float32), (2.0, 1.0, 1.0), {"which": "tst.gz"}

    @register_mask_reader(".tst.gz")
    def read_tst_mask(path):
        return np.zeros((3, 4, 5), np.uint8)

    assert ".tst.gz" in IMAGE_SUFFIXES  # the live set sees late registrations
    assert match_suffix("case.01.tst.gz") == ".tst.gz"
    assert match_suffix("case.01.GZ") == ".gz"
    assert case_stem("dir/case.01.TST.GZ") == "case.01"
    assert case_stem("dir/case_7.png") == "case_7"
    assert case_stem("dir/unknown.xyz") == "unknown"
    f = tmp_path / "vol.tst.gz"
    f.write_bytes(b"")
    image, spacing, meta = read_image(f)
    assert image.shape == (2, 3, 4, 5) and spacing == (2.0, 1.0, 1.0) and meta["which"] == "tst.gz"
    assert meta["size"] == (3, 4, 5)
    assert read_image_header(f)["size"] == (3, 4, 5)  # no header reader: falls back to the full read
    assert read_mask(f).shape == (3, 4, 5)


def test_reader_failures_become_input_errors(scratch_registry, tmp_path):
    @register_reader(".boom")
    def read_boom(path):
        raise KeyError("tag 42")

    f = tmp_path / "scan.boom"
    f.write_bytes(b"x")
    with raises_naming(f, "KeyError"):
        read_image(f)


def test_missing_unsupported_and_folder_inputs(tmp_path):
    with raises_naming(tmp_path / "nope.png", "not found"):
        read_image(tmp_path / "nope.png")
    with raises_naming(tmp_path / "nope.png", "not found"):
        read_mask(tmp_path / "nope.png")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with raises_naming(txt, "unsupported image file type"):
        read_image(txt)
    with raises_naming(txt, "unsupported mask file type"):
        read_mask(txt)
    folder = tmp_path / "odd.png"
    folder.mkdir()
    with raises_naming(folder, "folder"):
        read_image(folder)


@pytest.mark.parametrize("name", ["garbage.png", "garbage.jpg", "garbage.bmp", "garbage.tif"])
def test_corrupt_files_raise_input_errors(tmp_path, name):
    f = tmp_path / name
    f.write_bytes(b"this is not an image at all" * 10)
    with raises_naming(f, "cannot read"):
        read_image(f)
    with raises_naming(f, "cannot read"):
        read_mask(f)
    with raises_naming(f):
        read_image_header(f)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_raise_input_errors(tmp_path, suffix):
    rng = np.random.default_rng(0)
    full = save_picture(tmp_path / f"full{suffix}", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with raises_naming(cut):
        read_image(cut)
    with raises_naming(cut):
        read_mask(cut)
