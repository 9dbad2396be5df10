"""medseg.io.image2d: 2D pictures (PNG, JPEG, BMP, TIFF) read as images and as masks, and masks
written at the smallest bit depth, through the registry's read_image / read_mask / write_mask."""
from __future__ import annotations

import numpy as np
import tifffile
from PIL import Image

from helpers import raises_naming, save_picture
from medseg.io.registry import read_image, read_image_header, read_mask, write_mask


# --------------------------------------------------------------------------------- 2D images

def test_grey_rgb_rgba_palette_and_bitonal_images(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 9, np.uint8)], axis=-1)

    image, spacing, meta = read_image(save_picture(tmp_path / "g.PNG", grey))
    assert image.shape == (1, 5, 7) and image.dtype == np.float32 and spacing == (1.0, 1.0)
    np.testing.assert_array_equal(image[0], grey)
    assert meta["size"] == (5, 7) and meta["mode"] == "L"

    image, _, meta = read_image(save_picture(tmp_path / "c.png", rgb))
    assert image.shape == (3, 5, 7) and meta["mode"] == "RGB"
    np.testing.assert_array_equal(np.moveaxis(image, 0, -1), rgb)

    image, _, meta = read_image(save_picture(tmp_path / "a.png", rgba))
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

    jpg = save_picture(tmp_path / "photo.JPEG", rgb, quality=95)
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
    got = read_mask(save_picture(tmp_path / "grey.png", grey))
    assert got.dtype == np.uint8 and got.shape == (6, 8) and got.flags.writeable
    np.testing.assert_array_equal(got, grey)

    as_rgb = np.repeat(grey[..., None], 3, axis=-1)  # grey saved as RGB collapses to one channel
    np.testing.assert_array_equal(read_mask(save_picture(tmp_path / "rgb.png", as_rgb)), grey)
    rgba = np.concatenate([as_rgb, np.full((6, 8, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(read_mask(save_picture(tmp_path / "rgba.png", rgba)), grey)

    colour = as_rgb.copy()
    colour[grey > 0] = [255, 0, 0]
    f = save_picture(tmp_path / "colour.png", colour)
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
    jpg = save_picture(tmp_path / "lossy.jpg", np.kron(as_rgb, np.ones((8, 8, 1), np.uint8)), quality=90)
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
