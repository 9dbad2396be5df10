"""medseg.io.volume: NIfTI / NRRD / MHA through SimpleITK, on real files: axis order, geometry,
channels, and empty, corrupt or non-integer label files."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from helpers import real_dataset, write_volume
from medseg.errors import MedsegInputError
from medseg.io import read_image, read_image_header, read_mask, write_mask

ROTATED = np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]])
ROTATED = ROTATED @ np.array([[1.0, 0.0, 0.0], [0.0, np.cos(0.2), -np.sin(0.2)], [0.0, np.sin(0.2), np.cos(0.2)]])


@pytest.fixture(scope="module")
def hippo() -> tuple[Path, Path]:
    root = real_dataset("msd-hippocampus")
    image = sorted((root / "imagesTr").glob("*.nii.gz"))[0]
    return image, root / "labelsTr" / image.name


def test_read_nifti_matches_nibabel(hippo):
    image, _ = hippo
    array, spacing, meta = read_image(image)
    header = read_image_header(image)
    assert array.dtype == np.float32 and array.shape == (1, *meta["size"])
    assert header["size"] == array.shape[1:] and header["channels"] == 1 == meta["channels"]
    assert spacing == (1.0, 1.0, 1.0) and header["spacing"] == spacing
    assert header["geometry"] == meta["geometry"] and meta["format"] == ".nii.gz"
    assert len(meta["geometry"]["direction"]) == 9
    expected = np.asarray(nib.load(image).get_fdata()).transpose(2, 1, 0)  # (x, y, z) -> (z, y, x)
    np.testing.assert_array_equal(array[0], expected)


def test_mask_written_with_image_geometry(hippo, tmp_path):
    _, label = hippo
    _, _, meta = read_image(label)
    mask = read_mask(label)
    assert np.issubdtype(mask.dtype, np.integer) and mask.shape == meta["size"]
    out = tmp_path / "x.nii.gz"
    write_mask(out, mask, meta)
    src, dst = nib.load(label), nib.load(out)
    assert dst.shape == src.shape
    assert np.allclose(dst.affine, src.affine, atol=1e-5)
    np.testing.assert_array_equal(read_mask(out), mask)
    with pytest.raises(MedsegInputError, match="does not match"):
        write_mask(tmp_path / "bad.nii.gz", mask[1:], meta)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_geometry_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, size=(6, 7, 8)).astype(np.int64)
    mask[0, 0, 0] = 300  # needs 16 bits
    geometry = {"spacing": [0.7, 0.8, 2.5], "origin": [10.0, -20.0, 30.0], "direction": list(ROTATED.ravel())}
    out = tmp_path / f"m{suffix}"
    write_mask(out, mask, {"size": mask.shape, "geometry": geometry})
    back = read_image_header(out)
    for key in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(back["geometry"][key], geometry[key], atol=1e-6)
    assert back["spacing"] == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_array_equal(read_mask(out), mask)


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_detached_mask_is_written_as_a_set(hippo, tmp_path, suffix, monkeypatch):
    """A header + data pair lands whole or not at all: the pair reads back, no temporary folder
    stays, and a failed write leaves the earlier pair as it was."""
    from medseg.errors import MedsegOutputError

    _, label = hippo
    _, _, meta = read_image(label)
    mask = read_mask(label)
    out = tmp_path / f"case{suffix}"
    write_mask(out, mask, meta)
    np.testing.assert_array_equal(read_mask(out), mask)
    names = sorted(p.name for p in tmp_path.iterdir())  # the header and its data file, nothing else
    assert len(names) == 2 and out.name in names and all(n.startswith("case.") for n in names), names
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr("medseg.io.registry.read_mask", lambda path: np.zeros_like(mask))  # a bad read-back
    with pytest.raises(MedsegOutputError, match=f"case{suffix}"):
        write_mask(out, mask, meta)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_mask_without_geometry_gets_itk_defaults(tmp_path):
    out = tmp_path / "plain.mha"
    write_mask(out, np.ones((2, 3, 4), np.uint8), None)
    img = sitk.ReadImage(str(out))
    assert img.GetSpacing() == (1.0, 1.0, 1.0) and img.GetOrigin() == (0.0, 0.0, 0.0)
    assert img.GetPixelID() == sitk.sitkUInt8


def test_4d_nifti_gives_channels(tmp_path):
    data = np.random.default_rng(1).random((5, 6, 7, 2)).astype(np.float32)  # nibabel (x, y, z, t)
    path = tmp_path / "multi.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 2.0, 3.0, 1.0])), path)
    array, spacing, meta = read_image(path)
    assert array.shape == (2, 7, 6, 5)
    assert meta["channels"] == 2 == read_image_header(path)["channels"]
    assert read_image_header(path)["size"] == (7, 6, 5) == meta["size"]
    assert spacing == pytest.approx((3.0, 2.0, 1.5))
    assert len(meta["geometry"]["direction"]) == 9 and len(meta["geometry"]["origin"]) == 3
    for t in range(2):
        np.testing.assert_allclose(array[t], data[..., t].transpose(2, 1, 0))
    with pytest.raises(MedsegInputError, match="single 3D volume, found 4D"):
        read_mask(path)


def test_vector_nrrd_gives_component_channels(tmp_path):
    data = np.random.default_rng(2).random((4, 5, 6, 3)).astype(np.float32)
    path = tmp_path / "vec.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(data, isVector=True), str(path))
    array, _, meta = read_image(path)
    assert array.shape == (3, 4, 5, 6) and meta["channels"] == 3
    np.testing.assert_array_equal(array, np.moveaxis(data, -1, 0))


def test_empty_and_corrupt_files(tmp_path):
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    for func in (read_image, read_image_header, read_mask):
        with pytest.raises(MedsegInputError, match="empty") as err:
            func(empty)
        assert err.value.path == empty
    junk = tmp_path / "junk.mha"
    junk.write_bytes(b"not an image" * 10)
    with pytest.raises(MedsegInputError) as err:
        read_image(junk)
    assert "\n" not in str(err.value) and "sitk" not in str(err.value)


def test_float_labels(tmp_path):
    whole = tmp_path / "whole.nii.gz"
    write_volume(whole, np.array([[[0.0, 1.0], [2.0, 0.0]]], np.float32))
    mask = read_mask(whole)
    assert np.issubdtype(mask.dtype, np.integer)
    np.testing.assert_array_equal(mask, [[[0, 1], [2, 0]]])
    half = tmp_path / "half.nii.gz"
    write_volume(half, np.array([[[0.0, 0.5], [1.0, 0.0]]], np.float32))
    with pytest.raises(MedsegInputError, match="non-integer"):
        read_mask(half)
