"""Class rebalancing against a float64 numpy/scipy re-derivation and the paper's properties."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from zhangcolor.bins import ab_bins, grid_index
from zhangcolor.rebalance import class_weights, prior_from_counts, smooth_prior


def reference_weights(p: np.ndarray, lam: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The paper's recipe in numpy: smooth on the 2-D ab grid with scipy, mix, invert, normalise."""
    rows, cols, n = (t.numpy() if hasattr(t, "numpy") else t for t in grid_index(ab_bins()))
    grid = np.zeros((n, n))
    grid[rows, cols] = p
    smoothed = gaussian_filter(grid, sigma=sigma / 10.0, mode="constant", truncate=12.0)[rows, cols]
    smoothed /= smoothed.sum()
    w = 1.0 / ((1 - lam) * smoothed + lam / len(p))
    return smoothed, w / (smoothed * w).sum()


def skewed_prior(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.random(313) ** 6  # heavy-tailed, like real photos
    p[rng.choice(313, 40, replace=False)] = 0  # never-seen bins
    return p / p.sum()


@pytest.mark.parametrize("lam,sigma", [(0.5, 5.0), (0.2, 5.0), (0.5, 10.0), (0.9, 2.5)])
def test_class_weights_match_numpy_scipy_reference(lam, sigma):
    p = skewed_prior()
    ref_smoothed, ref_w = reference_weights(p, lam, sigma)
    prior = torch.from_numpy(p)
    np.testing.assert_allclose(
        smooth_prior(prior, sigma=sigma).numpy(), ref_smoothed, rtol=1e-10, atol=1e-15
    )
    np.testing.assert_allclose(
        class_weights(smooth_prior(prior, sigma=sigma), lam).numpy(), ref_w, rtol=1e-10
    )


def test_expected_weight_under_smoothed_prior_is_one():
    prior = torch.from_numpy(skewed_prior(1))
    w = class_weights(smooth_prior(prior))
    assert torch.isclose((smooth_prior(prior) * w).sum(), torch.tensor(1.0, dtype=torch.float64))


def test_rarer_colors_get_larger_weights():
    prior = torch.from_numpy(skewed_prior(2))
    smoothed = smooth_prior(prior)
    w = class_weights(smoothed)
    order = torch.argsort(smoothed)
    assert bool((w[order][1:] <= w[order][:-1] + 1e-12).all())  # w is decreasing in p̃


def test_lambda_one_gives_uniform_weights_and_lambda_zero_inverse_prior():
    prior = torch.from_numpy(skewed_prior(3))
    smoothed = smooth_prior(prior)
    assert torch.allclose(class_weights(smoothed, lam=1.0), torch.ones(313, dtype=torch.float64))
    w0 = class_weights(smoothed, lam=0.0)
    assert torch.allclose(w0 * smoothed, torch.full_like(smoothed, 1 / 313))


def test_a_uniform_prior_stays_close_to_uniform_weights():
    w = class_weights(smooth_prior(torch.full((313,), 1 / 313, dtype=torch.float64)))
    assert w.min() > 0.5 and w.max() < 2.5  # only the gamut's edge loses smoothed mass


def test_prior_from_counts_normalises_and_rejects_bad_counts():
    counts = torch.tensor([0, 1, 3], dtype=torch.int64)
    assert torch.allclose(prior_from_counts(counts), torch.tensor([0, 0.25, 0.75]).double())
    with pytest.raises(ValueError, match="no mass"):
        prior_from_counts(torch.zeros(313))
    with pytest.raises(ValueError, match="non-negative"):
        prior_from_counts(torch.tensor([-1.0, 2.0]))


def test_bad_arguments_raise():
    prior = torch.from_numpy(skewed_prior())
    with pytest.raises(ValueError, match=r"lam"):
        class_weights(prior, lam=1.5)
    with pytest.raises(ValueError, match="sigma"):
        smooth_prior(prior, sigma=0.0)
    with pytest.raises(ValueError, match=r"\(Q,\)"):
        class_weights(prior.view(1, -1))
    with pytest.raises(ValueError, match="centers"):
        smooth_prior(prior[:10])


def test_class_weights_are_eq_4_of_the_smoothed_prior_given_with_no_second_smoothing():
    """Eq. 4 is a function of p̃ and λ alone: given p̃, the weights are exactly
    ((1 - λ) p̃ + λ / Q)^-1 normalised, not those of p̃ smoothed once more (which were up to
    35 % off)."""
    smoothed = smooth_prior(torch.from_numpy(skewed_prior(4)))
    p = smoothed.numpy()
    expected = 1.0 / (0.5 * p + 0.5 / 313)
    expected /= (p * expected).sum()
    np.testing.assert_allclose(class_weights(smoothed, 0.5).numpy(), expected, rtol=1e-12)
    twice = class_weights(smooth_prior(smoothed), 0.5).numpy()
    assert np.abs(twice / expected - 1).max() > 0.05  # smoothing again is not the same thing


def reference_inverse_prior(ab: np.ndarray, centers: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """1 / p̃ of each pixel's nearest bin in float64 numpy: every distance, then the smallest."""
    points = ab.transpose(0, 2, 3, 1)[..., None, :]  # (B, H, W, 1, 2)
    nearest = np.square(points - centers).sum(-1).argmin(-1)  # (B, H, W)
    return 1.0 / np.maximum(prior[nearest], 1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inverse_prior_weights_against_numpy(dtype):
    from zhangcolor.rebalance import inverse_prior_weights

    centers = ab_bins(torch.float64)
    prior = torch.from_numpy(skewed_prior(3))  # never-seen bins: p̃ = 0 weighs 1e12
    rng = np.random.default_rng(1)
    ab = rng.uniform(-120, 120, (2, 2, 9, 7))  # out of gamut too
    ab[0, :, 0, 0] = centers[int(np.argmin(prior.numpy()))].numpy()  # on a bin without mass
    expected = reference_inverse_prior(ab, centers.numpy(), prior.numpy())
    got = inverse_prior_weights(torch.from_numpy(ab).to(dtype), centers.to(dtype), prior.to(dtype))
    assert got.shape == (2, 9, 7) and got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-6)
    assert got[0, 0, 0] == pytest.approx(1e12, rel=1e-6) and torch.isfinite(got).all()


@pytest.mark.parametrize("sigma", [1e-200, 1e-3, 1e300])
def test_any_positive_sigma_gives_a_finite_smoothed_prior(sigma):
    """Σ² underflowed to 0 (1e-200: NaN) or overflowed (1e300: OverflowError).
    A tiny σ smooths nothing, a huge one makes p̃ uniform."""
    p = torch.from_numpy(skewed_prior())
    for prior in (p, p.float()):
        smoothed = smooth_prior(prior, sigma=sigma)
        assert smoothed.dtype == prior.dtype and bool(torch.isfinite(smoothed).all())
        expected = p if sigma < 1 else torch.full_like(p, 1 / 313)
        torch.testing.assert_close(smoothed.double(), expected, rtol=1e-5, atol=1e-9)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive finite"):
            smooth_prior(p, sigma=bad)


def test_weights_that_would_be_infinite_are_refused_with_the_count_of_empty_bins():
    one_colour = torch.zeros(313, dtype=torch.float64)
    one_colour[100] = 1.0
    with pytest.raises(ValueError, match=r"lam = 0 needs every smoothed bin to have mass; \d+ of"):
        class_weights(smooth_prior(one_colour, sigma=1.0), 0.0)
