"""Annealed-mean and mode decoding against a float64 numpy version, and the paper's properties."""

import numpy as np
import pytest
import torch

from zhangcolor.bins import ab_bins
from zhangcolor.decode import annealed_mean, annealed_probabilities, check_temperature, mode


def numpy_annealed_mean(logits: np.ndarray, centers: np.ndarray, t: float) -> np.ndarray:
    """The paper's f_T(z) = exp(log z / T) / Σ exp(log z / T), from probabilities, in float64."""
    z = np.exp(logits - logits.max(1, keepdims=True))
    z /= z.sum(1, keepdims=True)
    f = np.exp(np.log(z) / t)
    f /= f.sum(1, keepdims=True)
    return np.einsum("bqhw,qc->bchw", f, centers)


@pytest.mark.parametrize("t", [1.0, 0.77, 0.38, 0.14])
def test_annealed_mean_matches_numpy(t):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2, 313, 5, 4))
    centers = ab_bins(torch.float64)
    ours = annealed_mean(torch.from_numpy(logits), centers, t).numpy()
    np.testing.assert_allclose(ours, numpy_annealed_mean(logits, centers.numpy(), t), atol=1e-9)
    ours32 = annealed_mean(torch.from_numpy(logits).float(), centers.float(), t).double().numpy()
    np.testing.assert_allclose(ours32, numpy_annealed_mean(logits, centers.numpy(), t), atol=1e-3)


def test_temperature_one_is_the_mean():
    logits = torch.randn(1, 313, 3, 3, dtype=torch.float64)
    centers = ab_bins(torch.float64)
    mean = torch.einsum("bqhw,qc->bchw", logits.softmax(1), centers)
    assert torch.allclose(annealed_mean(logits, centers, 1.0), mean)


def test_small_temperature_tends_to_the_mode():
    logits = torch.randn(2, 313, 4, 4, dtype=torch.float64)
    logits.scatter_add_(
        1, torch.randint(0, 313, (2, 1, 4, 4)), torch.full((2, 1, 4, 4), 10.0).double()
    )
    centers = ab_bins(torch.float64)  # each pixel has one bin ahead by a clear margin
    assert torch.allclose(annealed_mean(logits, centers, 1e-3), mode(logits, centers), atol=1e-6)
    # and the distance to the mode shrinks as T falls
    gaps = [
        (annealed_mean(logits, centers, t) - mode(logits, centers)).abs().mean()
        for t in (1, 0.38, 0.1)
    ]
    assert gaps[0] > gaps[1] > gaps[2]


def test_huge_logits_stay_finite():
    logits = torch.zeros(1, 313, 1, 1)
    logits[0, 7] = 1e4
    out = annealed_mean(logits, ab_bins(), 0.01)
    assert torch.isfinite(out).all() and torch.allclose(out.flatten(), ab_bins()[7])


def test_annealed_probabilities_are_the_papers_f_t_of_the_predicted_distribution():
    """f_T(z) = exp(log z / T) / Σ exp(log z / T) (eq. 5), from z = softmax(logits), in numpy."""
    logits = torch.randn(2, 313, 2, 2, dtype=torch.float64) * 3
    z = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    f = np.exp(np.log(z) / 0.38)
    f /= f.sum(1, keepdims=True)
    np.testing.assert_allclose(annealed_probabilities(logits, 0.38).numpy(), f, rtol=1e-10)


@pytest.mark.parametrize("t", [0, -1, float("inf"), float("nan")])
def test_non_positive_or_non_finite_temperatures_raise(t):
    with pytest.raises(ValueError, match="temperature must be positive and finite"):
        annealed_mean(torch.zeros(1, 313, 1, 1), ab_bins(), t)
    with pytest.raises(ValueError):
        check_temperature(t)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="centers"):
        annealed_mean(torch.zeros(1, 300, 1, 1), ab_bins())
    with pytest.raises(ValueError, match=r"\(B, Q, H, W\)"):
        mode(torch.zeros(313, 1, 1), ab_bins())


def test_a_cpu_batch_is_decoded_photo_by_photo_with_the_same_result():
    """On a CPU a batch is decoded one photo at a time (faster); it must equal one pass over the
    batch, and each photo decoded alone, in float64 and channels_last alike."""
    from zhangcolor.decode import _annealed_mean

    logits = torch.randn(3, 313, 5, 4, dtype=torch.float64) * 4
    centers = ab_bins(torch.float64)
    batch = annealed_mean(logits, centers, 0.38)
    assert torch.equal(batch, _annealed_mean(logits, centers, 0.38))
    for i in range(3):
        assert torch.equal(batch[i : i + 1], annealed_mean(logits[i : i + 1], centers, 0.38))
    last = logits.float().contiguous(memory_format=torch.channels_last)
    decoded = annealed_mean(last, ab_bins(), 0.38)
    torch.testing.assert_close(decoded, batch.float(), atol=1e-3, rtol=0)
