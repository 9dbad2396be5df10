"""2D image and mask files: PNG, JPEG, BMP, GIF through Pillow; TIFF through tifffile (with
imagecodecs for LZW, deflate, JPEG, ZSTD ... compressed TIFFs).

Images (``read_image``) come back as float32 ``(C, H, W)``, not normalised:

* grey (``L``, ``1``, 16-bit ``I;16``, 32-bit ``I``/``F``) -> 1 channel, values kept (16-bit stays
  0..65535); grey + alpha -> 1 channel;
* ``RGB`` -> 3 channels; ``RGBA`` drops the alpha; palette (``P``) and other colour modes
  (CMYK, YCbCr ...) are converted to RGB;
* TIFF: grey or RGB pages as above, extra (non-alpha) samples and ImageJ channels kept as
  channels, a multi-page stack (``ZYX``) becomes one 3D image ``(C, Z, Y, X)``; palette TIFFs are
  expanded to RGB.

GIF has no grey mode: every GIF is a palette picture. A GIF whose palette is grey (each colour
has r = g = b, what a grey or black-and-white picture saved as GIF gets) reads as grey values,
image and mask alike (a 0/255 mask saved as GIF reads back 0/255, whatever indices the encoder
chose); a colour-palette GIF reads as RGB (image) or palette indices (mask), as a PNG would.
Only the first frame of an animated GIF is read.

Spacing is 1.0 per axis (PNG/JPEG DPI is a print setting, not a pixel size). ``meta`` holds
``size`` (H, W), ``mode`` (Pillow mode, or the TIFF photometric name), ``format`` and ``dtype``.

Masks (``read_mask``) keep their raw stored values, integer dtype, shape ``(H, W)``:

* grey masks as stored (8 or 16 bit); ``1``-mode masks become 0/1;
* palette (``P``) masks keep their palette *indices* (the colours are only a display aid);
* an RGB(A) mask whose three channels are equal collapses to one channel; for a JPEG (lossy)
  file, channels within `JPEG_CHANNEL_TOLERANCE` grey levels of each other count as equal (their
  rounded mean is used);
* a colour RGB mask is refused: store class indices or grey levels instead.

``write_mask`` writes PNG (uint8 when the maximum is below 256, else 16 bit) or TIFF (zlib).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageChops

from medseg.errors import MedsegInputError
from medseg.io.registry import (
    float32_array,
    register_header_reader,
    register_mask_reader,
    register_mask_writer,
    register_reader,
)

__all__ = ["PIL_SUFFIXES", "TIFF_SUFFIXES", "JPEG_CHANNEL_TOLERANCE", "COLOUR_MASK_PROBLEM"]

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TIFF_SUFFIXES = (".tif", ".tiff")
# Largest difference between the R, G and B channels of a JPEG-compressed grey mask that still
# counts as grey (lossy compression of a grey RGB picture leaves its channels within a few levels).
JPEG_CHANNEL_TOLERANCE = 8
COLOUR_MASK_PROBLEM = "colour masks are not supported: store class indices or grey levels"

_GREY_MODES = {"1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N", "LA", "La"}
_RGB_DIRECT = {"RGB", "RGBA", "RGBX", "RGBa"}


# ----------------------------------------------------------------------------- Pillow formats

def _grey_palette(im: Image.Image) -> bool:
    """A GIF palette picture whose colours are all grey (r = g = b): GIF's way to store grey."""
    if im.format != "GIF" or im.mode != "P":
        return False
    palette = im.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def _pil_channels(im: Image.Image) -> int:
    return 1 if im.mode in _GREY_MODES or _grey_palette(im) else 3


@register_reader(*PIL_SUFFIXES)
def read_pil_image(path: Path) -> tuple[np.ndarray, tuple[float, ...], dict]:
    with Image.open(path) as im:
        im.load()
        mode, fmt = im.mode, im.format
        if _grey_palette(im):
            a = np.asarray(im.convert("L"))
        elif mode == "1":
            a = np.asarray(im.convert("L"))
        elif mode in ("LA", "La"):
            a = np.asarray(im)[..., 0]
        elif mode in _GREY_MODES:
            a = np.asarray(im)
        elif mode in _RGB_DIRECT:
            a = np.asarray(im)[..., :3]
        else:  # P, PA, CMYK, YCbCr, LAB, HSV ...
            a = np.asarray(im.convert("RGB"))
    dtype = str(a.dtype)
    a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    array = np.ascontiguousarray(a, dtype=np.float32)
    meta = {"size": tuple(array.shape[1:]), "mode": mode, "format": fmt, "dtype": dtype}
    return array, (1.0, 1.0), meta


@register_header_reader(*PIL_SUFFIXES)
def read_pil_header(path: Path) -> dict:
    with Image.open(path) as im:  # Pillow reads only the header until pixels are asked for
        return {"size": (im.height, im.width), "channels": _pil_channels(im), "mode": im.mode,
                "format": im.format}


def _collapse_rgb(rgb: np.ndarray, path: Path, lossy: bool) -> np.ndarray:
    """(H, W, 3) -> (H, W) when the mask is grey stored as RGB; refuse colour masks."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(r, b):
        return np.ascontiguousarray(r)
    if lossy and np.issubdtype(rgb.dtype, np.integer):
        wide = rgb.astype(np.int32)
        spread = int((wide.max(axis=-1) - wide.min(axis=-1)).max())
        if spread <= JPEG_CHANNEL_TOLERANCE:
            return np.rint(wide.mean(axis=-1)).astype(rgb.dtype)
    raise MedsegInputError(path, COLOUR_MASK_PROBLEM)


def _integral(a: np.ndarray, path: Path) -> np.ndarray:
    """Float mask -> int64 when every value is a whole number, else refuse."""
    if not np.issubdtype(a.dtype, np.floating):
        return a
    if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
        raise MedsegInputError(
            path, "mask holds non-integer values (a probability map?): store class indices or grey levels"
        )
    return a.astype(np.int64)


@register_mask_reader(*PIL_SUFFIXES)
def read_pil_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        mode, lossy = im.mode, im.format in ("JPEG", "MPO")
        if _grey_palette(im):
            return np.asarray(im.convert("L"))
        if mode == "1":
            return np.asarray(im).astype(np.uint8)
        if mode in ("L", "P") or mode.startswith("I"):
            return _integral(np.asarray(im), path)
        if mode in ("LA", "La", "PA"):
            return np.ascontiguousarray(np.asarray(im)[..., 0])
        if mode == "F":
            return _integral(np.asarray(im), path)
        rgb_im = im if mode in ("RGB", "RGBA", "RGBX") else im.convert("RGB")
        r, g, b = rgb_im.split()[:3]
        # grey stored as RGB: compare the bands in Pillow's C code, convert only one to numpy
        if ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(r, b).getbbox() is None:
            return np.asarray(r)
        rgb = np.stack([np.asarray(r), np.asarray(g), np.asarray(b)], axis=-1)
    return _collapse_rgb(rgb, path, lossy)


def _mask_for_8_or_16_bit(path: Path, mask: np.ndarray) -> np.ndarray:
    if mask.ndim != 2:
        raise MedsegInputError(path, f"a PNG mask must be 2D, got shape {mask.shape} (write 3D masks as TIFF or NIfTI)")
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise MedsegInputError(path, f"mask values {lo}..{hi} do not fit an unsigned 16-bit PNG")
    return mask.astype(np.uint8 if hi < 256 else np.uint16)


@register_mask_writer(".png")
def write_png_mask(path: Path, mask: np.ndarray, meta: dict | None = None) -> None:
    out = _mask_for_8_or_16_bit(path, mask)
    Image.fromarray(out).save(path, format="PNG")  # `write_mask` makes it atomic


# ----------------------------------------------------------------------------- TIFF

def _tiff_layout(series) -> tuple[str, int | None, list[int]]:
    """(axes, channel axis or None, spatial axes) of a tifffile series; refuses >3 spatial axes."""
    axes = series.axes
    channel = [i for i, ax in enumerate(axes) if ax in "SC"]
    spatial = [i for i, ax in enumerate(axes) if ax not in "SC"]
    if len(channel) > 1:
        raise ValueError(f"TIFF has several channel axes ({axes}); store one channel axis")
    if len(spatial) > 3:
        raise ValueError(f"TIFF has axes {axes}: more than 3 spatial axes")
    return axes, (channel[0] if channel else None), spatial


def _read_tiff(path: Path):
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError("TIFF holds no image")
        series = tif.series[0]
        page = series.keyframe
        axes, channel, spatial = _tiff_layout(series)
        a = series.asarray()
        info = {
            "axes": axes,
            "photometric": page.photometric.name.lower() if hasattr(page.photometric, "name") else str(page.photometric),
            "extrasamples": tuple(int(x) for x in (page.extrasamples or ())),
            "colormap": None if page.colormap is None else np.asarray(page.colormap),
            "lossy": int(page.compression) in (6, 7, 33003, 33005, 34712, 34892, 50001, 50002),
        }
    if a.dtype == bool:
        a = a.astype(np.uint8)
    # channels first, then the spatial axes in file order; drop length-1 extra spatial axes
    order = ([channel] if channel is not None else []) + spatial
    a = np.transpose(a, order)
    if channel is None:
        a = a[None]
    while a.ndim > 3 and a.shape[1] == 1:
        a = a[:, 0]
    return a, info


def _drop_alpha(a: np.ndarray, info: dict) -> np.ndarray:
    """Remove alpha samples (TIFF ExtraSamples 1 = associated, 2 = unassociated alpha)."""
    extra = info["extrasamples"]
    if not extra or a.shape[0] <= len(extra):
        return a
    base = a.shape[0] - len(extra)
    keep = list(range(base)) + [base + i for i, kind in enumerate(extra) if kind not in (1, 2)]
    return a[keep]


@register_reader(*TIFF_SUFFIXES)
def read_tiff_image(path: Path) -> tuple[np.ndarray, tuple[float, ...], dict]:
    a, info = _read_tiff(path)
    dtype = str(a.dtype)
    if info["photometric"] == "palette" and info["colormap"] is not None:
        cmap = info["colormap"].astype(np.float32)  # (3, 2**bits), 16-bit colours
        if cmap.max() > 255:
            cmap /= 257.0
        a = cmap[:, a[0]]
    else:
        a = _drop_alpha(a, info)
    array = float32_array(a, path)
    meta = {"size": tuple(array.shape[1:]), "mode": info["photometric"], "format": "TIFF",
            "dtype": dtype, "axes": info["axes"]}
    return array, (1.0,) * (array.ndim - 1), meta


@register_header_reader(*TIFF_SUFFIXES)
def read_tiff_header(path: Path) -> dict:
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError("TIFF holds no image")
        series = tif.series[0]
        axes, channel, spatial = _tiff_layout(series)
        shape = series.shape
        page = series.keyframe
        photometric = page.photometric.name.lower() if hasattr(page.photometric, "name") else str(page.photometric)
        n_alpha = sum(1 for x in (page.extrasamples or ()) if int(x) in (1, 2))
    size = tuple(shape[i] for i in spatial)
    while len(size) > 2 and size[0] == 1:
        size = size[1:]
    channels = 3 if photometric == "palette" else (shape[channel] - n_alpha if channel is not None else 1)
    return {"size": size, "channels": max(1, channels), "mode": photometric, "format": "TIFF"}


@register_mask_reader(*TIFF_SUFFIXES)
def read_tiff_mask(path: Path) -> np.ndarray:
    a, info = _read_tiff(path)  # palette TIFFs keep their indices
    a = _integral(_drop_alpha(a, info), path)
    if a.shape[0] == 1:
        return np.ascontiguousarray(a[0])
    if a.shape[0] == 3:
        return _collapse_rgb(np.moveaxis(a, 0, -1), path, info["lossy"])
    raise MedsegInputError(path, f"mask has {a.shape[0]} channels, expected one")


@register_mask_writer(*TIFF_SUFFIXES)
def write_tiff_mask(path: Path, mask: np.ndarray, meta: dict | None = None) -> None:
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if lo >= 0:
        dtype = np.uint8 if hi < 256 else np.uint16 if hi < 65536 else np.uint32
    else:
        dtype = np.int16 if -32768 <= lo and hi < 32768 else np.int32
    out = np.ascontiguousarray(mask.astype(dtype))
    tifffile.imwrite(path, out, photometric="minisblack", compression="zlib")  # `write_mask` makes it atomic
