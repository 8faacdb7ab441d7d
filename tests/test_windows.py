import numpy as np
import pytest

from hear_edge.signal.windows import blend_weights, overlap_add, plan_windows


def _official_plan(length, window=300, overlap=50):
    """The official _unfold's choice of patches, transcribed from its tensor expressions."""
    stride = window - overlap
    pad = (stride - (length - window) % stride) % stride
    num_patches = (length + pad - window) // stride + 1
    starts = np.arange(0, num_patches * stride, stride)
    needed = (starts == 0) | (length > starts - stride + window)
    keep = (starts < length) & needed
    lengths = np.clip(length - starts, 0, window)
    return [(int(s), int(v)) for s, v in zip(starts[keep], lengths[keep])]


@pytest.mark.parametrize("length", [301, 350, 549, 550, 551, 800, 801, 1000, 1250, 1499, 1500])
def test_plan_matches_the_official_unfold(length):
    assert plan_windows(length, 300, 50) == _official_plan(length)


def test_plan_covers_every_frame_once_or_twice():
    for length in range(1, 1600, 7):
        plan = plan_windows(length, 300, 50)
        covered = np.zeros(length, int)
        for start, valid in plan:
            covered[start:start + valid] += 1
        assert covered.min() >= 1 and covered.max() <= 2


def test_blend_weights_are_the_clamped_raised_cosine():
    weights = blend_weights(300, 50)
    assert weights.shape == (300,) and weights[0] == np.float32(1e-3) and weights[-1] == np.float32(1e-3)
    assert np.all(weights[50:250] == 1.0)
    np.testing.assert_array_equal(weights[250:], weights[:50][::-1])
    assert np.all(np.diff(weights[:50]) >= 0)


def test_overlap_add_of_a_constant_is_the_constant():
    plan = plan_windows(700, 300, 50)
    windows = np.full((len(plan), 300, 4), 3.0, np.float32)
    np.testing.assert_allclose(overlap_add(windows, plan, 700, blend_weights(300, 50)), 3.0, rtol=1e-6)
