"""medseg.data.augment: spatial transforms (exact crops when off, flips, rotations, elastic warps)
and intensity changes, seeded, with labels moving with the image."""
from __future__ import annotations

import torch

from medseg.data.augment import AugmentConfig, augment_intensity, spatial_transform
from medseg.data.stack import sample_patch
from medseg.data.sampler import PatchSampler


def _ramp(shape):
    image = torch.arange(torch.tensor(shape).prod().item(), dtype=torch.float32).reshape(1, *shape)
    return image, (image[0].long() % 5).to(torch.uint8)


def test_identity_transform_is_an_exact_crop_2d_and_3d():
    for shape, start, size in [((60, 50), (10, 7), (32, 16)), ((20, 24, 18), (2, 4, 1), (8, 16, 8))]:
        image, label = _ramp(shape)
        centre = torch.tensor([s + (p - 1) / 2 for s, p in zip(start, size)])
        patch, plabel = sample_patch(image, label, centre, size, torch.eye(len(shape), dtype=torch.float64))
        crop = tuple(slice(s, s + p) for s, p in zip(start, size))
        assert torch.allclose(patch[0], image[(0,) + crop], atol=1e-2)
        assert torch.equal(plabel, label[crop].long())


def test_flip_matrix_flips_the_crop():
    image, label = _ramp((40, 40))
    matrix = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    patch, plabel = sample_patch(image, label, torch.tensor([19.5, 19.5]), (16, 16), matrix)
    assert torch.allclose(patch[0], image[0, 12:28, 12:28].flip(1), atol=1e-2)
    assert torch.equal(plabel, label[12:28, 12:28].flip(1).long())


def test_rotation_keeps_label_values_and_is_seeded():
    image, label = _ramp((64, 64))
    cfg = AugmentConfig(p_rotate=1.0, p_scale=1.0)
    m1 = spatial_transform(2, torch.Generator().manual_seed(3), cfg)
    m2 = spatial_transform(2, torch.Generator().manual_seed(3), cfg)
    assert torch.equal(m1, m2) and not torch.allclose(m1, torch.eye(2, dtype=torch.float64))
    _, plabel = sample_patch(image, label, torch.tensor([31.5, 31.5]), (32, 32), m1)
    assert set(plabel.unique().tolist()) <= set(label.unique().tolist())


def test_intensity_augmentation_disabled_is_identity():
    x = torch.randn(1, 8, 8)
    assert torch.equal(augment_intensity(x, torch.Generator(), AugmentConfig(enabled=False)), x)


def test_unaugmented_patches_are_exact_crops_of_the_image():
    """Patch centres snap to the voxel grid: without rotation or scaling a training patch holds
    the image's own voxel values (no bilinear blur) and its label lines up with them."""
    for shape, size in [((50, 40), (16, 16)), ((50, 40), (15, 17)), ((20, 18, 16), (8, 7, 6))]:
        image, label = _ramp(shape)
        label = label.clone()
        label[label == 0] = 1  # every voxel foreground: both centre rules get drawn
        sampler = PatchSampler([image], [label], size, 16, AugmentConfig(enabled=False), seed=3)
        x, y = sampler.batch(torch.Generator().manual_seed(0))
        values = torch.round(x[:, 0])
        # bilinear blending of neighbours would leave fractions (a half-voxel offset: .5)
        assert torch.allclose(x[:, 0], values, atol=1e-3), (shape, size)
        expected = values.long() % 5
        expected[expected == 0] = 1
        assert torch.equal(y, expected), (shape, size)  # each label on its own voxel's value


def test_elastic_warp_is_smooth_seeded_and_moves_labels_with_the_image():
    from medseg.data.augment import elastic_displacement

    cfg = AugmentConfig(p_elastic=1.0, elastic_sigma=0.05)
    field = elastic_displacement((64, 48), torch.Generator().manual_seed(5), cfg)
    again = elastic_displacement((64, 48), torch.Generator().manual_seed(5), cfg)
    assert field.shape == (2, 64, 48) and torch.equal(field, again)
    assert 0.5 < float(field.abs().max()) < 20  # pixels: a real warp, not a tear
    assert float(field.diff(dim=1).abs().max()) < 0.5  # smooth: neighbours move together
    assert elastic_displacement((64, 48), torch.Generator(), AugmentConfig()) is None  # off by default
    # the image is a label-coloured ramp: warped image and warped label must still agree
    label = (torch.arange(80)[:, None] // 10 + torch.zeros(1, 80, dtype=torch.long)).to(torch.uint8)
    image = label[None].float() * 10
    patch, plabel = sample_patch(image, label, torch.tensor([39.5, 39.5]), (64, 48),
                                 torch.eye(2, dtype=torch.float64), field)
    plain, _ = sample_patch(image, label, torch.tensor([39.5, 39.5]), (64, 48), torch.eye(2, dtype=torch.float64))
    assert not torch.allclose(patch, plain)
    inside = (patch[0] / 10 - plabel.float()).abs() < 0.51  # nearest label vs bilinear image
    assert float(inside.float().mean()) > 0.9


def test_elastic_warp_3d_shape():
    from medseg.data.augment import elastic_displacement

    field = elastic_displacement((8, 16, 12), torch.Generator().manual_seed(0), AugmentConfig(p_elastic=1.0))
    assert field.shape == (3, 8, 16, 12)
    image, label = _ramp((20, 24, 18))
    patch, plabel = sample_patch(image, label, torch.tensor([9.5, 11.5, 8.5]), (8, 16, 12),
                                 torch.eye(3, dtype=torch.float64), field)
    assert patch.shape == (1, 8, 16, 12) and plabel.shape == (8, 16, 12)


def test_displacement_is_in_voxels_along_array_axes():
    image, label = _ramp((60, 50))
    shift = torch.zeros(2, 16, 16)
    shift[0] = 3.0  # three rows down along axis 0
    patch, plabel = sample_patch(image, label, torch.tensor([25.5, 20.5]), (16, 16),
                                 torch.eye(2, dtype=torch.float64), shift)
    assert torch.allclose(patch[0], image[0, 21:37, 13:29], atol=1e-2)
    assert torch.equal(plabel, label[21:37, 13:29].long())


def test_gaussian_blur_keeps_the_mean_and_removes_fine_detail():
    from medseg.data.augment import gaussian_blur
    for shape in [(2, 32, 24), (1, 12, 16, 20)]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        y = gaussian_blur(x, 1.0)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.allclose(y.mean(dim=tuple(range(1, x.ndim))), x.mean(dim=tuple(range(1, x.ndim))), atol=0.02)
        assert y.std() < 0.5 * x.std()  # white noise loses most of its variance
    impulse = torch.zeros(1, 15, 15)
    impulse[0, 7, 7] = 1
    out = gaussian_blur(impulse, 1.0)[0]
    assert torch.allclose(out, out.T) and torch.allclose(out, out.flip(0))  # isotropic, centred
    assert abs(float(out.sum()) - 1) < 1e-5


def test_noise_reaches_the_configured_variance():
    cfg = AugmentConfig(p_brightness=0, p_contrast=0, p_gamma=0, p_blur=0, p_noise=1.0, noise_std=0.3)
    stds = [float(augment_intensity(torch.zeros(1, 64, 64), torch.Generator().manual_seed(s), cfg).std())
            for s in range(40)]
    assert max(stds) > 0.25 and max(stds) < 0.31  # std drawn from U(0, 0.3)
