"""medseg.inference.sliding_window: tiling equals whole-image prediction, windows cover each axis with
overlap under a Gaussian weight, mirrored passes share network calls; and prediction's memory
savings (float16 output maps, row-streamed blending, skipped empty windows, in-place
normalisation, the sliced argmax) change no result."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.data.preprocess import Preprocessor, zscore
from medseg.inference import (argmax_mask, count_windows, empty_value, gaussian_weight, is_empty, sliding_window,
                              window_starts, windows_per_call)
from medseg.nets import UNet


class PixelNet(torch.nn.Module):
    """A 1x1-conv network: its output depends on each pixel alone, so tiling must not change it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 3, 1)

    def forward(self, x):
        return self.conv(x)


def test_tiled_prediction_equals_whole_image_for_a_pointwise_net():
    net = PixelNet().eval()
    image = torch.randn(1, 100, 75)
    whole = sliding_window(net, image, (128, 128), divisor=1)
    tiled = sliding_window(net, image, (32, 32), overlap=0.5, divisor=1)
    mirrored = sliding_window(net, image, (32, 32), overlap=0.25, mirror_axes=(0, 1), divisor=1)
    assert whole.shape == tiled.shape == (3, 100, 75)
    assert torch.allclose(whole, tiled, atol=1e-5) and torch.allclose(whole, mirrored, atol=1e-5)
    assert torch.allclose(tiled.sum(0), torch.ones(100, 75), atol=1e-5)


def test_sliding_window_3d_with_unet():
    net = UNet(2, 3, 3, (4, 8)).eval()
    probs = sliding_window(net, torch.randn(2, 20, 33, 18), (16, 16, 16), overlap=0.5, divisor=2)
    assert probs.shape == (3, 20, 33, 18)
    assert torch.allclose(probs.sum(0), torch.ones(20, 33, 18), atol=1e-4)


def test_windows_cover_the_axis_with_overlap():
    starts = window_starts(100, 32, 0.5)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 16 for a, b in zip(starts, starts[1:]))
    assert window_starts(20, 32, 0.5) == [0]


def test_gaussian_weight_peaks_in_the_centre():
    w = gaussian_weight((9, 9))
    assert w[4, 4] == w.max() == 1 and w[0, 0] > 0


def test_count_windows_matches_the_tiling():
    assert count_windows((100, 75), (128, 128), 0.5) == 1
    assert count_windows((100, 75), (32, 32), 0.5) == len(window_starts(100, 32, 0.5)) * len(window_starts(75, 32, 0.5))
    assert count_windows((20, 40), (32, 32), 0.5) == 2


def test_windows_per_call_follows_the_window_size():
    """About 256k voxels a call (measured: 56³ and 40x56x40 windows ran fastest in pairs, 120²
    windows in fours and eights), never fewer than 2 nor more than 8."""
    assert windows_per_call((56, 56, 56)) == 2
    assert windows_per_call((40, 56, 40)) == 2
    assert windows_per_call((128, 128, 128)) == 2
    assert windows_per_call((120, 120)) == 8
    assert windows_per_call((256, 256)) == 4
    assert windows_per_call((16, 16)) == 8
    assert windows_per_call((56, 56, 56), "cuda") == 4   # not measured on GPUs: the earlier default


def test_mirrored_passes_share_network_calls_with_the_same_result():
    """An image that fits one window runs its 4 flips in one call of 4 (calls hold up to
    `batch_size` windows), and the averaged probabilities equal those of one call per flip."""
    torch.manual_seed(0)
    net = UNet(1, 3, 2, features=(4, 8)).eval()
    calls = []
    net.register_forward_pre_hook(lambda module, args: calls.append(int(args[0].shape[0])))
    image = torch.randn(1, 24, 40)
    grouped = sliding_window(net, image, (32, 48), mirror_axes=(0, 1), batch_size=4)
    assert calls == [4]
    calls.clear()
    one_by_one = sliding_window(net, image, (32, 48), mirror_axes=(0, 1), batch_size=1)
    assert calls == [1, 1, 1, 1]
    assert torch.allclose(grouped, one_by_one, atol=1e-6)
    calls.clear()
    sliding_window(net, torch.randn(1, 64, 96), (32, 48), mirror_axes=(0, 1), batch_size=8, overlap=0.5)
    assert max(calls) <= 8 and sum(calls) == 4 * count_windows((64, 96), (32, 48), 0.5)


# ------------------------------------------------------------------------------ memory savings
class CountingNet(torch.nn.Module):
    """Wraps a network and counts the windows it is run on."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.windows = net, 0

    def forward(self, x):
        self.windows += x.shape[0]
        return self.net(x)


class AirNet(torch.nn.Module):
    """Background where a 3x3x3 neighbourhood is air (-1), foreground in the body (+1): decided,
    so on all-air windows it is as sure of background as a trained CT model is."""

    def __init__(self):
        super().__init__()
        self.mean = torch.nn.Conv3d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
        torch.nn.init.constant_(self.mean.weight, 1 / 27)

    def forward(self, x):
        m = self.mean(x)
        return torch.cat([-20 * m, 20 * m], dim=1)


def body_in_air(shape=(40, 72, 56), seed=0) -> torch.Tensor:
    """(1, *shape): air (-1) around a noisy ellipsoid body (about +1), CT after clipping."""
    g = torch.Generator().manual_seed(seed)
    zz, yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")
    body = (zz / 0.5) ** 2 + (yy / 0.45) ** 2 + (xx / 0.5) ** 2 <= 1
    image = torch.full(shape, -1.0)
    image[body] = 1.0 + 0.3 * torch.randn(int(body.sum()), generator=g)
    return image[None]


def test_float16_output_matches_float32_within_one_rounding():
    torch.manual_seed(0)
    net = UNet(2, 4, 3, (4, 8)).eval()
    image = torch.randn(2, 30, 41, 26)
    p32 = sliding_window(net, image, (16, 16, 16), divisor=2, mirror_axes=(2,))
    p16 = sliding_window(net, image, (16, 16, 16), divisor=2, mirror_axes=(2,), out_dtype=torch.float16)
    assert p16.dtype == torch.float16 and p16.shape == p32.shape
    # blending is float32 either way; float16 rounds each probability in [0, 1] once: <= 2**-12
    assert (p16.float() - p32).abs().max() <= 2 ** -12
    assert torch.allclose(p32.sum(0), torch.ones(p32.shape[1:]), atol=1e-5)


def test_restore_keeps_float16_and_matches_float32():
    pre = Preprocessor(target_spacing=(2.0, 1.0, 1.0), crop_nonzero=True)
    probs = torch.softmax(torch.randn(3, 12, 20, 18), 0)
    box = (slice(2, 26), slice(5, 25), slice(0, 18))
    r32 = pre.restore(probs, (30, 30, 18), box)
    r16 = pre.restore(probs.half(), (30, 30, 18), box)
    assert r16.dtype == torch.float16 and r16.shape == r32.shape == (3, 30, 30, 18)
    assert (r16.float() - r32).abs().max() <= 2 * 2 ** -12   # input rounding + output rounding
    assert r16[0, 0].eq(1).all() and r16[1:, 0].eq(0).all()  # outside the box: background


def test_skipped_empty_windows_give_the_probabilities_of_running_them():
    image = body_in_air()
    net = CountingNet(AirNet()).eval()
    ran = sliding_window(net, image, (16, 24, 16), overlap=0.5, divisor=8)
    every = net.windows
    net.windows = 0
    skipped = sliding_window(net, image, (16, 24, 16), overlap=0.5, divisor=8, skip_empty=True)
    assert 0 < net.windows < every                    # some windows are all air, some are not
    assert torch.allclose(skipped, ran, atol=1e-5)
    assert torch.equal(skipped.argmax(0), ran.argmax(0))
    assert (skipped.argmax(0) == 1).sum() > 1000         # the body is found


def test_a_window_with_one_body_voxel_is_not_empty():
    image = torch.full((2, 8, 8, 8), -1.0)
    image[1] = 0.0
    background = empty_value(image)
    assert is_empty(image, background)
    image[0, 7, 7, 7] = -0.99
    assert not is_empty(image, background)
    # an image of nothing but background still predicts (one window runs, the class count comes from it)
    net = CountingNet(AirNet()).eval()
    probs = sliding_window(net, torch.full((1, 40, 40, 40), -1.0), (16, 16, 16), skip_empty=True)
    assert probs.shape == (2, 40, 40, 40) and net.windows == 1
    assert probs[0].min() > 0.999


@pytest.mark.parametrize("scheme", [{"scheme": "ct", "lower": -100.0, "upper": 300.0, "mean": 40.0, "std": 80.0},
                                    {"scheme": "zscore"}])
def test_in_place_normalisation_gives_the_same_values(scheme):
    image = torch.randn(2, 10, 12, 14) * 300 + 20
    pre = Preprocessor(normalization=[scheme, {"scheme": "zscore"}])
    got = pre.normalise(image)
    first = image[:1]
    if scheme["scheme"] == "ct":
        want = (first.clamp(scheme["lower"], scheme["upper"]) - scheme["mean"]) / scheme["std"]
    else:
        want = zscore(first)
    assert torch.equal(got[:1], want) and torch.equal(got[1:], zscore(image[1:]))
    assert image.abs().max() > 300  # the input is left alone


def test_argmax_mask_matches_torch_argmax_including_ties():
    probs = torch.softmax(torch.randn(4, 37, 9, 11), 0).half()
    probs[:, 3, 4] = 0.25                               # exact ties go to the lowest class
    mask = argmax_mask(probs, chunk_voxels=50)
    assert mask.dtype == np.uint8
    assert np.array_equal(mask, probs.argmax(0).numpy()) and (mask[3, 4] == 0).all()
