"""Synthetic phantoms: labelled scans made on the spot, so the demo and tests need no downloads.

A phantom looks like a crude MR/CT slice (or volume): a body with a bright rim, soft-tissue
texture and distractor blobs, one irregular "organ" (label 1) and 0-3 round "lesions" inside it
(label 2). The organ is brighter than the body, but so are some distractors and the rim, and a
smooth bias field plus noise spoil any global threshold: a model has to use shape and context,
yet a small U-Net learns it in a minute or two of CPU training.

Everything is dimension-generic: the same code makes 2D slices and 3D volumes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

BACKGROUND, ORGAN, LESION = 0, 1, 2
CLASS_NAMES = ("background", "organ", "lesion")

# Marks a folder as written by write_phantom_dataset, so re-running on it may overwrite.
MARKER = ".medseg_phantoms"


LESION_KINDS = ("mixed", "small")


def make_phantom(rng: np.random.Generator, shape: tuple[int, ...], lesions: str = "mixed"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: (image float32 (*shape), label uint8 (*shape) with 0 background, 1 organ, 2 lesion).

    lesions: "mixed" (0-3 lesions, about a third of them tiny) or "small" (2-6 lesions of a few
    dozen pixels each in 2D: a small-target task where losses and metrics differ most).
    Draws only from `rng`, so the same generator state gives the same phantom.
    """
    if lesions not in LESION_KINDS:
        raise ValueError(f"lesions must be one of {LESION_KINDS}, got {lesions!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 16:
        raise ValueError(f"phantom shape needs >= 2 axes of >= 16 pixels, got {shape}")
    grid = _grid(shape)
    body = _deformed_ellipsoid(rng, grid, centre_range=0.04, radius_range=(0.82, 0.95), wobble=0.04) < 1.0
    body_depth = ndimage.distance_transform_edt(body)
    rim_width = max(1.5, 0.035 * min(shape))
    organ = _organ(rng, grid, body_depth > rim_width + 0.05 * min(shape))
    lesions = _small_lesions(rng, organ) if lesions == "small" else _lesions(rng, organ)

    label = np.zeros(shape, np.uint8)
    label[organ] = ORGAN
    label[lesions] = LESION
    image = _render(rng, grid, body, body_depth < rim_width, organ, lesions)
    return image, label


def write_phantom_dataset(out_dir: Path, n_cases: int, shape: tuple[int, int] = (128, 128), seed: int = 0,
                          lesions: str = "mixed", first_case: int = 0) -> Path:
    """Write `n_cases` 2D phantoms as `images/case_NNN.png` (8-bit grey) and `labels/case_NNN.png` (0/1/2).

    lesions: as `make_phantom` ("small": the small-lesion set of the loss study, docs/decisions.md).
    first_case: number of the first case, so a held-out set from the same seed holds other cases.
    Deterministic per seed (case i uses seed (seed, i), so adding cases keeps the earlier ones).
    Refuses to write into a non-empty folder it did not make, so it never mixes with user data.
    """
    out_dir = Path(out_dir)
    if len(shape) != 2:
        raise ValueError(f"PNG phantoms are 2D; got shape {tuple(shape)} (use make_phantom for 3D)")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
            raise FileExistsError(f"{out_dir} is not empty and was not made by write_phantom_dataset; refusing to overwrite it")
    images_dir, labels_dir = out_dir / "images", out_dir / "labels"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text(f"seed={seed} n_cases={n_cases} shape={tuple(shape)} lesions={lesions}\n")
    for old in [*images_dir.glob("case_*.png"), *labels_dir.glob("case_*.png")]:
        old.unlink()  # our own earlier output: a smaller n_cases must not leave stale cases behind

    for i in range(first_case, first_case + n_cases):
        image, label = make_phantom(np.random.default_rng((seed, i)), shape, lesions)
        Image.fromarray(to_uint8(image)).save(images_dir / f"case_{i:03d}.png")
        Image.fromarray(label).save(labels_dir / f"case_{i:03d}.png")
    (out_dir / "README.txt").write_text(
        "Synthetic phantoms made by medseg.data.synthetic.write_phantom_dataset "
        f"(seed {seed}, {n_cases} cases, {shape[0]}x{shape[1]} pixels, {lesions} lesions).\n"
        "images/case_NNN.png: 8-bit grey scan-like image.\n"
        "labels/case_NNN.png: class index per pixel: 0 background, 1 organ, 2 lesion (inside the organ).\n"
        "Not real patient data: for demos and tests only.\n"
    )
    return out_dir


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale an image to 0..255 with its 0.5/99.5 percentiles, so a few outlier pixels don't wash it out."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    return np.round(np.clip((image - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8)


# --- geometry -------------------------------------------------------------------------------

def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Per-axis coordinates in [-1, 1], so shapes scale with the image whatever its size."""
    return np.meshgrid(*[np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape], indexing="ij", sparse=True)


def _rotation(rng: np.random.Generator, dims: int) -> np.ndarray:
    """A uniformly random orthogonal matrix (any orientation, 2D or 3D)."""
    q, r = np.linalg.qr(rng.standard_normal((dims, dims)))
    return q * np.sign(np.diag(r))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], rel_sigma: float) -> np.ndarray:
    """Zero-mean unit-variance Gaussian random field with correlation length rel_sigma * size.

    Long correlation lengths are filtered on a coarse grid and zoomed up: the same field,
    without kernels wider than the image (which would make 3D volumes slow).
    """
    sigma = np.array([max(rel_sigma * s, 0.5) for s in shape])
    step = max(1, int(sigma.min() // 4))
    coarse_shape = tuple(int(np.ceil(s / step)) + 1 for s in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32), sigma / step, mode="reflect")
    if step > 1:
        field = ndimage.zoom(field, [step] * len(shape), order=1)
    field = field[tuple(slice(0, s) for s in shape)]
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def _ellipsoid_radius(grid: list[np.ndarray], centre: np.ndarray, radii: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Normalised radius field of a rotated ellipsoid: < 1 inside, 1 on its surface."""
    offsets = [g - c for g, c in zip(grid, centre)]
    total = 0.0
    for row, radius in zip(rotation, radii):
        total = total + (sum(w * o for w, o in zip(row, offsets)) / radius) ** 2
    return np.sqrt(total)


def _deformed_ellipsoid(
    rng: np.random.Generator, grid: list[np.ndarray], centre_range: float,
    radius_range: tuple[float, float], wobble: float,
) -> np.ndarray:
    """Radius field of a random ellipsoid whose surface is pushed in and out by smooth noise."""
    dims = len(grid)
    shape = tuple(g.shape[i] for i, g in enumerate(grid))
    centre = rng.uniform(-centre_range, centre_range, dims)
    radii = rng.uniform(*radius_range, dims)
    radius = _ellipsoid_radius(grid, centre, radii, _rotation(rng, dims))
    return radius * (1.0 + wobble * _smooth_noise(rng, shape, 0.12))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())[1:]
    return components == (np.argmax(sizes) + 1)


def _organ(rng: np.random.Generator, grid: list[np.ndarray], allowed: np.ndarray) -> np.ndarray:
    """One smooth, irregular, solid blob inside `allowed` (the body minus its rim)."""
    min_size = 0.03 * allowed.sum()
    organ = np.zeros(allowed.shape, bool)
    for _ in range(20):  # redraw blobs the body would visibly cut (a straight edge looks fake) or shrink
        blob = _deformed_ellipsoid(rng, grid, centre_range=0.22, radius_range=(0.22, 0.42), wobble=0.22) < 1.0
        organ = ndimage.binary_fill_holes(_largest_component(blob & allowed))
        if organ.sum() >= max(min_size, 0.98 * blob.sum()):
            break
    return organ


def _lesions(rng: np.random.Generator, organ: np.ndarray) -> np.ndarray:
    """0-3 small round lesions fully inside the organ; about a third of them tiny (a few pixels)."""
    lesions = np.zeros(organ.shape, bool)
    count = rng.choice(4, p=[0.2, 0.3, 0.3, 0.2])
    if count == 0:
        return lesions
    depth = ndimage.distance_transform_edt(organ)
    scale = min(organ.shape) / 128.0
    index = np.indices(organ.shape, sparse=True)
    for _ in range(count):
        tiny = rng.random() < 0.35
        radius = rng.uniform(1.2, 2.5) if tiny else rng.uniform(3.0, 7.0) * max(scale, 0.5)
        candidates = np.argwhere(depth > radius + 2.0)
        if len(candidates) == 0:
            continue
        centre = candidates[rng.integers(len(candidates))]
        radii = radius * rng.uniform(0.8, 1.2, organ.ndim)
        lesions |= sum(((i - c) / r) ** 2 for i, c, r in zip(index, centre, radii)) <= 1.0
    return lesions & organ


def _small_lesions(rng: np.random.Generator, organ: np.ndarray) -> np.ndarray:
    """2-6 round lesions of radius 2.5-4 pixels (about 20-50 pixels each in 2D) inside the organ,
    apart from each other, so each stays one connected lesion for lesion-wise F1."""
    lesions = np.zeros(organ.shape, bool)
    depth = ndimage.distance_transform_edt(organ)
    index = np.indices(organ.shape, sparse=True)
    for _ in range(int(rng.integers(2, 7))):
        radius = rng.uniform(2.5, 4.0)
        room = ndimage.distance_transform_edt(~lesions) if lesions.any() else np.full(organ.shape, np.inf)
        candidates = np.argwhere((depth > radius + 2.0) & (room > 2 * radius + 3.0))
        if len(candidates) == 0:
            break
        centre = candidates[rng.integers(len(candidates))]
        radii = radius * rng.uniform(0.8, 1.2, organ.ndim)
        lesions |= sum(((i - c) / r) ** 2 for i, c, r in zip(index, centre, radii)) <= 1.0
    return lesions & organ


# --- appearance -----------------------------------------------------------------------------

def _render(
    rng: np.random.Generator, grid: list[np.ndarray], body: np.ndarray, rim: np.ndarray,
    organ: np.ndarray, lesions: np.ndarray,
) -> np.ndarray:
    """Paint intensities: air, textured body, bright rim, distractors, organ, lesions; then blur, bias, noise."""
    shape = body.shape
    image = np.full(shape, 0.03, np.float32)
    tissue = 0.28 + 0.06 * _smooth_noise(rng, shape, 0.04) + 0.025 * _smooth_noise(rng, shape, 0.008)
    image[body] = tissue[body]
    image[body & rim] = rng.uniform(0.55, 0.7)

    # Distractors: blobs as bright as the organ or darker (vessels), never quite the organ's level,
    # so the organ boundary stays visible where they touch it.
    organ_level = rng.uniform(0.56, 0.64)
    inner = np.argwhere(body & ~rim)
    blob_texture = 0.03 * _smooth_noise(rng, shape, 0.02)
    for _ in range(rng.integers(3, 7)):
        centre_px = inner[rng.integers(len(inner))]
        centre = np.array([g.ravel()[c] for g, c in zip(grid, centre_px)])
        small = rng.random() < 0.4
        radii = rng.uniform(0.025, 0.05, len(shape)) if small else rng.uniform(0.06, 0.16, len(shape))
        blob = (_ellipsoid_radius(grid, centre, radii, _rotation(rng, len(shape))) < 1.0) & body & ~rim
        level = rng.choice([rng.uniform(0.08, 0.16), rng.uniform(0.42, 0.48), rng.uniform(0.74, 0.85)])
        image[blob] = level + blob_texture[blob]

    image[organ] = organ_level + 0.04 * _smooth_noise(rng, shape, 0.03)[organ]
    lesion_shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.3)
    image[lesions] = organ_level + lesion_shift + 0.02 * _smooth_noise(rng, shape, 0.01)[lesions]

    image = ndimage.gaussian_filter(image, 0.6)  # partial-volume edges, as a scanner blurs them
    image *= np.exp(0.2 * _smooth_noise(rng, shape, 0.35))  # coil / beam-hardening bias field
    image += rng.normal(0.0, rng.uniform(0.025, 0.045), shape).astype(np.float32)
    return image.astype(np.float32)
