"""File-type registry: which function reads or writes which file, chosen by file-name suffix.

Format modules register their functions with decorators; everything else calls the generic
`read_image` / `read_mask` / `write_mask` and never branches on file types itself::

    @register_reader(".png", ".jpg")
    def read_png(path: Path) -> tuple[np.ndarray, tuple[float, ...], dict]: ...

    @register_mask_reader(".nii.gz", ".nii")
    def read_nifti_mask(path: Path) -> np.ndarray: ...

Contracts of the registered functions
-------------------------------------
* image reader ``(path) -> (array, spacing, meta)``: array float32 shaped ``(C, *spatial)``
  (not normalised), spacing one float per spatial axis (1.0 where the file does not say), meta a
  dict with at least ``"size"`` (the spatial shape) and whatever a writer needs to put a mask
  back on the same geometry (3D: origin, direction ...).
* header reader ``(path) -> dict`` with ``"size"`` (spatial shape) and ``"channels"``, reading as
  little as possible (optional: without one, the full image reader is used).
* mask reader ``(path) -> array`` shaped ``(*spatial)`` with an integer dtype holding the raw
  stored values (turning them into class indices is `medseg.io.labels`' job).
* mask writer ``(path, mask, meta)``.

Suffixes are matched case-insensitively against the end of the file name, longest first, so
``scan.nii.gz`` matches ``.nii.gz`` even when ``.gz`` is registered too, and ``a.b.png`` is a PNG.
Registering a suffix again replaces the previous function (the last registration wins).

Any failure inside a reader (missing, truncated or corrupt file, wrong content) comes out as
`MedsegInputError` naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from medseg.atomic import atomic_file_set, atomic_path
from medseg.errors import MedsegInputError

__all__ = [
    "IMAGE_SUFFIXES",
    "MASK_SUFFIXES",
    "MASK_WRITE_SUFFIXES",
    "register_reader",
    "register_header_reader",
    "register_mask_reader",
    "register_mask_writer",
    "match_suffix",
    "case_stem",
    "is_image_file",
    "is_mask_file",
    "float32_array",
    "read_image",
    "read_image_header",
    "read_mask",
    "write_mask",
]

ImageReader = Callable[[Path], "tuple[np.ndarray, tuple[float, ...], dict]"]
HeaderReader = Callable[[Path], dict]
MaskReader = Callable[[Path], np.ndarray]
MaskWriter = Callable[[Path, np.ndarray, "dict | None"], None]
F = TypeVar("F", bound=Callable)

_IMAGE_READERS: dict[str, ImageReader] = {}
_HEADER_READERS: dict[str, HeaderReader] = {}
_MASK_READERS: dict[str, MaskReader] = {}
_MASK_WRITERS: dict[str, MaskWriter] = {}

# Live sets of the registered suffixes (lower case, with the dot). They are updated in place by
# the register_* decorators, so `from medseg.io.registry import IMAGE_SUFFIXES` stays current.
# Treat them as read-only: register functions instead of editing them.
IMAGE_SUFFIXES: set[str] = set()
MASK_SUFFIXES: set[str] = set()
MASK_WRITE_SUFFIXES: set[str] = set()


def _normalise_suffix(suffix: str) -> str:
    s = suffix.strip().lower()
    if not s.startswith("."):
        s = "." + s
    if len(s) < 2 or any(c in s for c in "/\\"):
        raise ValueError(f"not a file suffix: {suffix!r}")
    return s


def _registrar(table: dict, live: set[str], suffixes: tuple[str, ...]) -> Callable[[F], F]:
    if not suffixes:
        raise ValueError("give at least one suffix, e.g. register_reader('.png')")
    normalised = [_normalise_suffix(s) for s in suffixes]

    def decorate(func: F) -> F:
        for s in normalised:
            table[s] = func
            live.add(s)
        return func

    return decorate


def register_reader(*suffixes: str) -> Callable[[F], F]:
    """Decorator: `func(path) -> (array (C, *spatial) float32, spacing, meta)` reads these suffixes."""
    return _registrar(_IMAGE_READERS, IMAGE_SUFFIXES, suffixes)


def register_header_reader(*suffixes: str) -> Callable[[F], F]:
    """Decorator: `func(path) -> {"size": spatial shape, "channels": C, ...}` without reading pixels."""
    return _registrar(_HEADER_READERS, set(), suffixes)


def register_mask_reader(*suffixes: str) -> Callable[[F], F]:
    """Decorator: `func(path) -> array (*spatial)` of raw stored integer values."""
    return _registrar(_MASK_READERS, MASK_SUFFIXES, suffixes)


def register_mask_writer(*suffixes: str) -> Callable[[F], F]:
    """Decorator: `func(path, mask, meta)` writes an integer mask in this format."""
    return _registrar(_MASK_WRITERS, MASK_WRITE_SUFFIXES, suffixes)


def match_suffix(path: str | os.PathLike, suffixes=None) -> str | None:
    """The longest of `suffixes` (default: every registered one) that ends the file name, or None.

    Case-insensitive; the suffix must leave a non-empty stem (a file named just ``.png`` has none).
    """
    name = Path(path).name.lower()
    if suffixes is None:
        suffixes = IMAGE_SUFFIXES | MASK_SUFFIXES | MASK_WRITE_SUFFIXES
    best = None
    for s in suffixes:
        if len(name) > len(s) and name.endswith(s) and (best is None or len(s) > len(best)):
            best = s
    return best


def case_stem(path: str | os.PathLike) -> str:
    """File name without its registered suffix: ``case_01.nii.gz`` -> ``case_01``.

    Falls back to `Path.stem` for names with no registered suffix.
    """
    p = Path(path)
    s = match_suffix(p)
    return p.name[: -len(s)] if s else p.stem


def is_image_file(path: str | os.PathLike) -> bool:
    """True when a registered image reader handles this file name (the file is not opened)."""
    return match_suffix(path, IMAGE_SUFFIXES) is not None


def is_mask_file(path: str | os.PathLike) -> bool:
    """True when a registered mask reader handles this file name (the file is not opened)."""
    return match_suffix(path, MASK_SUFFIXES) is not None


def _lookup(path: Path, table: dict, what: str, supported: set[str]):
    suffix = match_suffix(path, table.keys())
    if suffix is None:
        have = ", ".join(sorted(supported)) or "none registered"
        raise MedsegInputError(path, f"unsupported {what} file type (supported: {have})")
    return table[suffix]


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise MedsegInputError(path, "file not found")
    if path.is_dir():
        raise MedsegInputError(path, "is a folder, expected a file")


def _call(func: Callable, path: Path, what: str, *args):
    """Run a registered function; any failure becomes a MedsegInputError naming the file."""
    try:
        return func(path, *args)
    except MedsegInputError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # corrupt files raise OSError, SyntaxError, ValueError, EOFError, zlib.error ...
        raise MedsegInputError(path, f"cannot {what}: {type(e).__name__}: {e}") from e


def float32_array(array: np.ndarray, path: Path) -> np.ndarray:
    """`array` as contiguous float32, the type medseg computes in. Finite values beyond its range
    (about ±3.4e38, e.g. in a float64 file) are refused rather than turned into infinities."""
    array = np.asarray(array)
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and array.size:
        finite = array[np.isfinite(array)]
        largest = float(np.abs(finite).max()) if finite.size else 0.0
        if largest > float(np.finfo(np.float32).max):
            raise MedsegInputError(path, f"holds values up to {largest:.3g}, beyond the float32 range (±3.4e38) "
                                   "medseg computes in; rescale the image")
    return np.ascontiguousarray(array, dtype=np.float32)


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...], dict]:
    """Read an image file: ``(array (C, *spatial) float32, spacing per spatial axis, meta)``."""
    path = Path(path)
    reader = _lookup(path, _IMAGE_READERS, "image", IMAGE_SUFFIXES)
    _check_exists(path)
    array, spacing, meta = _call(reader, path, "read image")
    array = float32_array(array, path)
    if array.ndim < 3:
        raise MedsegInputError(path, f"reader returned shape {array.shape}, expected (channels, *spatial)")
    spacing = tuple(float(s) for s in spacing) if spacing else (1.0,) * (array.ndim - 1)
    if len(spacing) != array.ndim - 1:
        raise MedsegInputError(path, f"spacing {spacing} does not match {array.ndim - 1} spatial axes")
    meta = dict(meta or {})
    meta.setdefault("size", tuple(int(s) for s in array.shape[1:]))
    return array, spacing, meta


def read_image_header(path: str | os.PathLike) -> dict:
    """Spatial size and channel count of an image, reading only its header where the format allows.

    Returns a dict with at least ``"size"`` (spatial shape tuple) and ``"channels"``.
    """
    path = Path(path)
    reader = _lookup(path, _IMAGE_READERS, "image", IMAGE_SUFFIXES)
    suffix = match_suffix(path, _HEADER_READERS.keys())
    _check_exists(path)
    if suffix is not None and match_suffix(path, _IMAGE_READERS.keys()) == suffix:
        header = dict(_call(_HEADER_READERS[suffix], path, "read image header"))
        header["size"] = tuple(int(s) for s in header["size"])
        return header
    array, _, meta = _call(reader, path, "read image")
    return {**meta, "size": tuple(int(s) for s in np.shape(array)[1:]), "channels": int(np.shape(array)[0])}


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file: its raw stored values, shaped (*spatial), integer dtype."""
    path = Path(path)
    reader = _lookup(path, _MASK_READERS, "mask", MASK_SUFFIXES)
    _check_exists(path)
    mask = np.asarray(_call(reader, path, "read mask"))
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise MedsegInputError(path, f"mask reader returned dtype {mask.dtype}, expected integers")
    if mask.ndim < 2:
        raise MedsegInputError(path, f"mask has shape {mask.shape}, expected at least 2 spatial axes")
    if not mask.flags.writeable:  # arrays viewing a decoder's buffer are read-only
        mask = mask.copy()
    return mask


def _check_written_mask(tmp: Path, mask: np.ndarray) -> None:
    """Read a just-written mask back: the same shape and values, or the write failed unseen."""
    back = read_mask(tmp)
    if back.shape != mask.shape:
        raise ValueError(f"reads back with shape {back.shape} instead of {mask.shape}")
    if not np.array_equal(back, mask):
        raise ValueError("reads back with other values than were written")


def write_mask(path: str | os.PathLike, mask: np.ndarray, meta: dict | None = None) -> None:
    """Write an integer mask; the format follows the suffix (``.png`` for 2D masks).

    `meta` is the image's reader meta: writers use it to restore geometry (3D formats).
    Parent folders are created. The write is atomic (`medseg.atomic`): to a temporary file,
    read back and compared with `mask`, then renamed; a failure leaves any previous file whole
    and raises `MedsegOutputError` ("cannot write FILE: no space left on device"). Writers
    marked ``in_place`` (formats whose data file is named after the header) write the set in a
    temporary folder beside it, moved into place data first, header last.
    """
    path = Path(path)
    writer = _lookup(path, _MASK_WRITERS, "mask output", MASK_WRITE_SUFFIXES)
    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        if mask.size and not np.array_equal(mask, np.round(mask)):
            raise MedsegInputError(path, f"mask to write holds non-integer values (dtype {mask.dtype})")
        mask = mask.astype(np.int64)
    if getattr(writer, "in_place", False):  # header + data file: written as a set (`atomic_file_set`)
        with atomic_file_set(path, check=lambda tmp: _check_written_mask(tmp, mask)) as tmp:
            writer(tmp, mask, meta)
        return
    with atomic_path(path, check=lambda tmp: _check_written_mask(tmp, mask)) as tmp:
        writer(tmp, mask, meta)
