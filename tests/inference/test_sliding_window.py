import torch

from medseg.inference import count_windows, gaussian_weight, sliding_window, window_starts, windows_per_call
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
