"""medseg.planning.rules: the pooling rule (coarse axes wait until the spacing catches up, and
pooling stops at the smallest feature map)."""
from __future__ import annotations

from medseg.planning import MIN_FEATURE_SIZE, divisors, pooling_plan


def test_pooling_rule_keeps_coarse_axis_until_spacing_catches_up():
    strides, kernels = pooling_plan([20, 160, 160], [5.0, 0.7, 0.7], max_poolings=4, min_feature=4)
    # 0.7 mm axes are pooled first; the 5 mm axis only once the others are within 2x of it
    assert strides[0] == [1, 2, 2] and strides[1] == [1, 2, 2]
    assert kernels[0] == [1, 3, 3]
    assert any(s[0] == 2 for s in strides[2:])
    assert kernels[-1] == [3, 3, 3]
    assert divisors(strides, 3)[1] == 2 ** len(strides)


def test_pooling_rule_stops_at_min_feature_size():
    strides, _ = pooling_plan([36, 50, 35], [1, 1, 1], max_poolings=5, min_feature=MIN_FEATURE_SIZE[3])
    assert len(strides) == 3  # 36 -> 4.5 after three halvings; a fourth would leave 2
