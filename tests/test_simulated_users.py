"""Simulated users (Zhang et al. 2017; colorization-pytorch's add_color_patches_rand_gt): the
number of points is geometric with p = 1/8, corners are placed by a clipped normal centred on
the crop (σ a quarter of it) or uniformly, sides are uniform in 1-9, and each hint is the true
mean ab over its patch. Checked statistically against independent numpy draws, and exactly
against a float64 numpy painter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from zhangcolor.options import HintConfig
from zhangcolor.simulated_users import corners, draw_points, expected_count, paint_points

SAMPLES = 20_000


def draws(config: HintConfig, n: int = SAMPLES) -> torch.Tensor:
    return torch.stack([draw_points(torch.Generator().manual_seed(i), config) for i in range(n)])


@pytest.fixture(scope="module")
def normal_points() -> torch.Tensor:
    return draws(HintConfig())


def test_the_number_of_points_is_geometric_with_p_one_eighth(normal_points):
    counts = (normal_points[..., 0] > 0).sum(1).numpy()
    assert stats.binomtest(int((counts == 0).sum()), SAMPLES, 1 / 8).pvalue > 1e-3
    assert abs(counts.mean() - expected_count(1 / 8)) < 0.25  # 7, sd of the mean about 0.05
    top = 30
    observed = np.bincount(np.minimum(counts, top), minlength=top + 1)
    expected = stats.geom.pmf(np.arange(1, top + 1), 1 / 8) * SAMPLES
    expected = np.append(expected, SAMPLES - expected.sum())  # the tail, 30 and more
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_sides_are_uniform_from_one_to_nine(normal_points):
    sides = normal_points[..., 0][normal_points[..., 0] > 0].long().numpy()
    observed = np.bincount(sides, minlength=10)[1:]
    assert stats.chisquare(observed).pvalue > 1e-3 and sides.min() == 1 and sides.max() == 9


def test_corners_follow_a_clipped_normal_centred_on_the_crop(normal_points):
    """Against colorization-pytorch's placement drawn by numpy:
    int(clip(normal((H - P + 1) / 2, (H - P + 1) / 4), 0, H - P))."""
    height, width = 96, 128
    used = normal_points[..., 0] > 0
    ours = corners(normal_points, height, width, "normal")[used].numpy()  # (n, 2)
    sides = normal_points[..., 0][used].numpy()
    rng = np.random.default_rng(1)
    for axis, size in enumerate((height, width)):
        span = size - sides + 1
        theirs = np.clip(rng.normal(span / 2, span / 4), 0, size - sides).astype(int)
        assert stats.ks_2samp(ours[:, axis], theirs).pvalue > 1e-3
        assert ours[:, axis].min() >= 0 and (ours[:, axis] + sides <= size).all()


def test_uniform_corners_cover_the_crop_evenly():
    points = draws(HintConfig(location="uniform", min_side=4, max_side=4), 4000)
    used = points[..., 0] > 0
    placed = corners(points, 64, 64, "uniform")[used].numpy()  # corners in [0, 60]
    for axis in (0, 1):
        observed = np.bincount(placed[:, axis], minlength=61)
        assert len(observed) == 61 and stats.chisquare(observed).pvalue > 1e-3


def test_each_hint_is_the_true_mean_ab_over_its_patch_and_later_points_win():
    torch.manual_seed(0)
    b, h, w = 3, 40, 56
    ab = torch.randn(b, 2, h, w, dtype=torch.float64) * 30
    mask = torch.rand(b, h, w) > 0.1
    mask[1, :20] = False  # half of one crop transparent: patches there use what remains
    config = HintConfig(stop_probability=0.2)
    points = torch.stack(
        [draw_points(torch.Generator().manual_seed(10 + i), config) for i in range(b)]
    )
    hints = paint_points(ab, mask, points, "normal").numpy()
    expected = np.zeros((b, 3, h, w))
    top_left = corners(points, h, w, "normal").numpy()
    for i in range(b):
        for n in range(points.shape[1]):
            side = int(points[i, n, 0])
            if side == 0:
                continue
            y, x = top_left[i, n]
            patch = np.s_[y : y + side, x : x + side]
            valid = mask[i][patch].numpy()
            if not valid.any():
                continue
            mean = ab[i][(slice(None), *patch)].numpy()[:, valid].mean(1)
            expected[i, :2][(slice(None), *patch)] = (mean / 110.0)[:, None, None]
            expected[i, 2][patch] = 1.0
    assert np.abs(hints - expected).max() < 1e-9
    assert expected[:, 2].sum() > 0  # there were points to check


def test_the_same_seed_gives_the_same_points_and_none_is_all_zeros():
    config = HintConfig()
    a = draw_points(torch.Generator().manual_seed(5), config)
    assert torch.equal(a, draw_points(torch.Generator().manual_seed(5), config))
    none = torch.zeros(1, config.max_points, 3, dtype=torch.float64)
    ab = torch.randn(1, 2, 16, 16)
    hints = paint_points(ab, torch.ones(1, 16, 16, dtype=torch.bool), none, "normal")
    assert hints.dtype == ab.dtype and not hints.any()


def test_hint_config_checks_its_fields():
    with pytest.raises(ValueError, match="stop_probability"):
        HintConfig(stop_probability=0)
    with pytest.raises(ValueError, match="location"):
        HintConfig(location="edges")
    with pytest.raises(ValueError, match="below min_side"):
        HintConfig(min_side=5, max_side=2)
