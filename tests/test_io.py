"""medseg.errors, medseg.io.registry, medseg.io.image2d and medseg.io.labels."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.errors import MedsegInputError
from medseg.io import registry
from medseg.io.labels import NOT_A_LABEL_MASK, LabelMapping, infer_label_mapping
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
    write_mask,
)

from conftest import real_dataset  # noqa: E402


def save(path: Path, array: np.ndarray, mode: str | None = None, **kw) -> Path:
    im = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    im.save(path, **kw)
    return path


def raises_naming(path: Path, match: str | None = None):
    """pytest.raises for a MedsegInputError whose message holds the file name (and `match`)."""

    class _Ctx:
        def __enter__(self):
            self._ctx = pytest.raises(MedsegInputError)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._ctx.__exit__(*exc)
            message = str(self.info.value)
            assert Path(path).name in message, message
            if match is not None:
                assert match in message, message
            return handled

    return _Ctx()


# --------------------------------------------------------------------------------- errors

def test_error_message_names_the_file_and_survives_pickling():
    err = MedsegInputError(Path("/data/x.png"), "mask is empty")
    assert isinstance(err, ValueError)
    assert str(err) == "/data/x.png: mask is empty"
    assert err.path == Path("/data/x.png") and err.problem == "mask is empty"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.problem == "mask is empty"


# --------------------------------------------------------------------------------- registry

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
    full = save(tmp_path / f"full{suffix}", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with raises_naming(cut):
        read_image(cut)
    with raises_naming(cut):
        read_mask(cut)


# --------------------------------------------------------------------------------- 2D images

def test_grey_rgb_rgba_palette_and_bitonal_images(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 9, np.uint8)], axis=-1)

    image, spacing, meta = read_image(save(tmp_path / "g.PNG", grey))
    assert image.shape == (1, 5, 7) and image.dtype == np.float32 and spacing == (1.0, 1.0)
    np.testing.assert_array_equal(image[0], grey)
    assert meta["size"] == (5, 7) and meta["mode"] == "L"

    image, _, meta = read_image(save(tmp_path / "c.png", rgb))
    assert image.shape == (3, 5, 7) and meta["mode"] == "RGB"
    np.testing.assert_array_equal(np.moveaxis(image, 0, -1), rgb)

    image, _, meta = read_image(save(tmp_path / "a.png", rgba))
    assert image.shape == (3, 5, 7) and meta["mode"] == "RGBA"
    np.testing.assert_array_equal(np.moveaxis(image, 0, -1), rgb)

    pal = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    pal.save(tmp_path / "p.png")
    image, _, meta = read_image(tmp_path / "p.png")
    assert image.shape == (3, 2, 2) and meta["mode"] == "P"
    np.testing.assert_array_equal(image[:, 0, 1], [255, 0, 0])
    np.testing.assert_array_equal(image[:, 1, 0], [0, 0, 255])

    Image.fromarray(grey > 127).save(tmp_path / "b.bmp")
    image, _, _ = read_image(tmp_path / "b.bmp")
    assert image.shape == (1, 5, 7) and set(np.unique(image)) <= {0.0, 255.0}

    jpg = save(tmp_path / "photo.JPEG", rgb, quality=95)
    image, _, meta = read_image(jpg)
    assert image.shape == (3, 5, 7) and meta["format"] == "JPEG"
    assert read_image_header(jpg) == {"size": (5, 7), "channels": 3, "mode": "RGB", "format": "JPEG"}


def test_16bit_png_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    values = rng.integers(0, 65536, (33, 21), dtype=np.uint16)
    values[0, 0] = 65535
    f = tmp_path / "deep.png"
    write_mask(f, values)
    assert Image.open(f).mode.startswith("I;16")
    back = read_mask(f)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, values)
    image, _, meta = read_image(f)  # 16-bit grey is kept, not squeezed to 8 bits
    assert image.shape == (1, 33, 21) and image.max() == 65535.0
    np.testing.assert_array_equal(image[0], values.astype(np.float32))
    assert meta["dtype"] == "uint16"


def test_tiff_images_and_masks_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    grey16 = rng.integers(0, 65536, (12, 9), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", grey16)
    image, spacing, meta = read_image(tmp_path / "g.tif")
    assert image.shape == (1, 12, 9) and spacing == (1.0, 1.0) and meta["format"] == "TIFF"
    np.testing.assert_array_equal(image[0], grey16)
    assert read_image_header(tmp_path / "g.tif")["size"] == (12, 9)

    rgb = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c.TIFF", rgb, photometric="rgb")
    image, _, _ = read_image(tmp_path / "c.TIFF")
    assert image.shape == (3, 12, 9)
    np.testing.assert_array_equal(np.moveaxis(image, 0, -1), rgb)
    assert read_image_header(tmp_path / "c.TIFF")["channels"] == 3

    rgba = np.concatenate([rgb, np.full((12, 9, 1), 255, np.uint8)], axis=-1)
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert read_image(tmp_path / "a.tif")[0].shape == (3, 12, 9)

    stack = rng.integers(0, 256, (4, 12, 9), dtype=np.uint8)  # multi-page: a 3D image
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    image, spacing, _ = read_image(tmp_path / "stack.tif")
    assert image.shape == (1, 4, 12, 9) and spacing == (1.0, 1.0, 1.0)

    mask = rng.integers(0, 3, (12, 9)).astype(np.uint8)
    write_mask(tmp_path / "m.tif", mask)
    back = read_mask(tmp_path / "m.tif")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask)
    big = (mask.astype(np.uint16) * 1000)
    write_mask(tmp_path / "m16.tiff", big)
    np.testing.assert_array_equal(read_mask(tmp_path / "m16.tiff"), big)
    write_mask(tmp_path / "m3d.tif", stack % 4)
    np.testing.assert_array_equal(read_mask(tmp_path / "m3d.tif"), stack % 4)


# --------------------------------------------------------------------------------- 2D masks

def test_mask_reading_rules(tmp_path):
    rng = np.random.default_rng(4)
    grey = (rng.random((6, 8)) > 0.5).astype(np.uint8) * 255
    got = read_mask(save(tmp_path / "grey.png", grey))
    assert got.dtype == np.uint8 and got.shape == (6, 8) and got.flags.writeable
    np.testing.assert_array_equal(got, grey)

    as_rgb = np.repeat(grey[..., None], 3, axis=-1)  # grey saved as RGB collapses to one channel
    np.testing.assert_array_equal(read_mask(save(tmp_path / "rgb.png", as_rgb)), grey)
    rgba = np.concatenate([as_rgb, np.full((6, 8, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(read_mask(save(tmp_path / "rgba.png", rgba)), grey)

    colour = as_rgb.copy()
    colour[grey > 0] = [255, 0, 0]
    f = save(tmp_path / "colour.png", colour)
    with raises_naming(f, "colour masks are not supported: store class indices or grey levels"):
        read_mask(f)

    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)  # palette masks keep their indices
    pal = Image.fromarray(indices, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "pal.png"), indices)

    Image.fromarray(grey > 0).save(tmp_path / "bits.png")  # mode "1" -> 0/1
    np.testing.assert_array_equal(read_mask(tmp_path / "bits.png"), (grey > 0).astype(np.uint8))

    # a grey mask saved as an RGB JPEG: channels equal up to compression noise -> one channel
    jpg = save(tmp_path / "lossy.jpg", np.kron(as_rgb, np.ones((8, 8, 1), np.uint8)), quality=90)
    got = read_mask(jpg)
    assert got.ndim == 2 and got.shape == (48, 64) and np.issubdtype(got.dtype, np.integer)

    colour_tif = tmp_path / "colour.tif"
    tifffile.imwrite(colour_tif, colour, photometric="rgb")
    with raises_naming(colour_tif, "colour masks are not supported"):
        read_mask(colour_tif)
    float_tif = tmp_path / "prob.tif"
    tifffile.imwrite(float_tif, rng.random((6, 8)).astype(np.float32))
    with raises_naming(float_tif, "non-integer"):
        read_mask(float_tif)
    whole_float = tmp_path / "whole.tif"
    tifffile.imwrite(whole_float, grey.astype(np.float32))
    np.testing.assert_array_equal(read_mask(whole_float), grey)


def test_write_mask_picks_bit_depth_and_refuses_bad_output(tmp_path):
    small = np.array([[0, 1], [2, 255]], np.int64)
    write_mask(tmp_path / "sub" / "small.png", small)  # parent folder created
    assert Image.open(tmp_path / "sub" / "small.png").mode == "L"
    np.testing.assert_array_equal(read_mask(tmp_path / "sub" / "small.png"), small)
    write_mask(tmp_path / "wide.png", np.array([[0, 256]]))
    assert Image.open(tmp_path / "wide.png").mode.startswith("I;16")
    write_mask(tmp_path / "bool.png", np.array([[True, False]]))
    np.testing.assert_array_equal(read_mask(tmp_path / "bool.png"), [[1, 0]])
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary files left behind

    with raises_naming(tmp_path / "neg.png", "16-bit"):
        write_mask(tmp_path / "neg.png", np.array([[-1, 0]]))
    with raises_naming(tmp_path / "vol.png", "2D"):
        write_mask(tmp_path / "vol.png", np.zeros((2, 3, 4), np.uint8))
    with raises_naming(tmp_path / "lossy.jpg", "unsupported mask output"):
        write_mask(tmp_path / "lossy.jpg", np.zeros((3, 4), np.uint8))
    with raises_naming(tmp_path / "half.png", "non-integer"):
        write_mask(tmp_path / "half.png", np.array([[0.5, 1.0]]))


# --------------------------------------------------------------------------------- labels

def masks_of(*arrays):
    return [(Path(f"m{i}.png"), np.asarray(a)) for i, a in enumerate(arrays)]


def jpeg_like(shape=(40, 40), seed=0, smear=0.02, dtype=np.uint8, top=255):
    """A binary mask whose edge pixels took a few grey values near 0 or the top, plus `smear` mid-grey."""
    rng = np.random.default_rng(seed)
    m = np.where(rng.random(shape) > 0.5, top - rng.integers(0, 10, shape), rng.integers(0, 10, shape))
    mid = rng.random(shape) < smear
    m[mid] = top // 2
    return m.astype(dtype)


def test_index_mapping():
    m = infer_label_mapping(masks_of([[0, 1], [2, 2]], [[0, 0], [1, 0]]))
    assert m.mode == "index" and m.num_classes == 3
    np.testing.assert_array_equal(m.apply(np.array([[2, 0]], np.uint16)), [[2, 0]])
    assert m.apply(np.array([[2, 0]])).dtype == np.uint8
    assert infer_label_mapping(masks_of(np.zeros((3, 3)))).num_classes == 2  # all background: still binary
    assert infer_label_mapping(masks_of(np.full((2, 2), 31))).num_classes == 32
    with raises_naming(Path("test_case.png"), "5"):
        m.apply_checked(np.array([[0, 5]]), Path("test_case.png"))
    with pytest.raises(MedsegInputError):
        m.apply(np.array([[-1, 0]]))


def test_levels_mapping():
    m = infer_label_mapping(masks_of(np.array([[0, 255]], np.uint8), np.array([[0, 0]], np.uint8)))
    assert (m.mode, m.values, m.num_classes) == ("levels", [0, 255], 2)
    np.testing.assert_array_equal(m.apply(np.array([[255, 0]], np.uint8)), [[1, 0]])
    m3 = infer_label_mapping(masks_of(np.array([[0, 128]], np.uint8), np.array([[255, 0]], np.uint8)))
    assert (m3.mode, m3.values, m3.num_classes) == ("levels", [0, 128, 255], 3)
    np.testing.assert_array_equal(m3.apply(np.array([[0, 128, 255]], np.uint8)), [[0, 1, 2]])
    np.testing.assert_array_equal(m3.apply(np.array([[0, 128, 255]], np.int32)), [[0, 1, 2]])  # non-LUT path
    wide = infer_label_mapping(masks_of(np.array([[0, 1000, 65535]], np.uint16)))
    assert wide.values == [0, 1000, 65535]
    np.testing.assert_array_equal(wide.apply(np.array([[65535, 1000]], np.uint16)), [[2, 1]])
    assert infer_label_mapping(masks_of(np.full((2, 2), 255, np.uint8))).values == [0, 255]  # lone value v -> 0/v
    # a value the mapping does not know
    with raises_naming(Path("odd_case.png"), "128"):
        m.apply_checked(np.array([[0, 128, 255]], np.uint8), Path("odd_case.png"))
    with raises_naming(Path("odd_case.png"), "7"):
        m.apply_checked(np.array([[0, 7]], np.int64), Path("odd_case.png"))


def test_threshold_mapping_for_lossy_binary_masks():
    masks = masks_of(jpeg_like(seed=0), jpeg_like(seed=1), jpeg_like(seed=2, smear=0.0))
    m = infer_label_mapping(masks)
    assert (m.mode, m.threshold, m.num_classes) == ("threshold", 128, 2)
    raw = masks[0][1]
    np.testing.assert_array_equal(m.apply(raw), (raw >= 128).astype(np.uint8))
    # 16-bit values: the range is 0..65535, the cut half of it
    m16 = infer_label_mapping(masks_of(jpeg_like(dtype=np.uint16, top=65535)))
    assert (m16.mode, m16.threshold) == ("threshold", 32768)
    # a grey-scale picture put among the masks: named, with its fraction of mid-grey pixels
    picture = np.random.default_rng(5).integers(0, 256, (40, 40), dtype=np.uint8)
    bad = [(Path("ok.png"), jpeg_like()), (Path("photo_not_mask.png"), picture)]
    with raises_naming(Path("photo_not_mask.png"), NOT_A_LABEL_MASK) as info:
        infer_label_mapping(bad)
    assert "%" in str(info.value)
    # just over the 3 % allowance fails, just under passes
    with raises_naming(Path("m0.png"), "mid-grey"):
        infer_label_mapping(masks_of(jpeg_like(smear=0.05)))
    assert infer_label_mapping(masks_of(jpeg_like(smear=0.01))).mode == "threshold"
    # applying the mapping to a smeared mask is refused too
    with raises_naming(Path("smear.png"), "mid-grey"):
        m.apply_checked(picture, Path("smear.png"))
    with raises_naming(Path("deep.png")):
        m.apply_checked(np.array([[0, 300]], np.uint16), Path("deep.png"))


def test_values_that_fit_no_rule():
    many_classes = np.arange(41, dtype=np.uint8).reshape(1, 41)  # 41 classes: too many for rule 1 or 2
    with raises_naming(Path("m0.png"), NOT_A_LABEL_MASK):
        infer_label_mapping(masks_of(many_classes))
    probs = np.random.default_rng(6).random((5, 5))
    with raises_naming(Path("m1.png"), "non-integer"):
        infer_label_mapping(masks_of(np.zeros((5, 5)), probs))
    with raises_naming(Path("m0.png"), "negative"):
        infer_label_mapping(masks_of(np.arange(-5, 5).reshape(2, 5)))
    with pytest.raises(MedsegInputError):
        infer_label_mapping([])


def test_mapping_round_trips_through_json():
    for m in (LabelMapping("index", num_classes=4), LabelMapping("levels", values=[0, 128, 255]),
              LabelMapping("threshold", threshold=128)):
        d = json.loads(json.dumps(m.to_dict()))
        assert LabelMapping.from_dict(d) == m
        assert m.describe()
    assert LabelMapping("levels", values=[0, 255]).num_classes == 2
    with pytest.raises(ValueError):
        LabelMapping("guess")
    with pytest.raises(ValueError):
        LabelMapping("levels", values=[255, 0])


def test_kvasir_masks_are_lossy_binary():
    """Kvasir-SEG masks are RGB JPEGs: grey (channels equal), values near 0 or 255 only."""
    root = real_dataset("kvasir-seg")
    files = sorted((root / "masks").glob("*.jpg"))[:25]
    masks = [(f, read_mask(f)) for f in files]
    for f, m in masks:
        assert m.ndim == 2 and m.dtype == np.uint8, f
    m = infer_label_mapping(masks)
    assert (m.mode, m.threshold) == ("threshold", 128)
    fg = np.mean([m.apply_checked(raw, f).mean() for f, raw in masks])
    assert 0.02 < fg < 0.6  # polyps cover a minority of the frame
