"""Class rebalancing (paper, section 2.2).

From the empirical ab distribution p over the Q bins, in two steps:

    p̃ = p smoothed by a Gaussian of σ = 5 ab units on the ab grid      (smooth_prior)
    w ∝ ((1 - λ) p̃ + λ / Q)^-1,  λ = ½,  normalised so that E_p̃[w] = Σ_q p̃_q w_q = 1
                                                                         (class_weights, eq. 4)

The smoothing puts p on the grid of bin centres and convolves it with a Gaussian; mass that would
land on an out-of-gamut node is dropped, and p̃ is renormalised over the Q bins.

The class-rebalanced AuC (section 3.1) weighs each pixel by 1 / p̃ of its true color's nearest
bin instead (:func:`inverse_prior_weights`), so every color counts alike.

Both functions take any value their arguments' checks allow: the kernel is computed in float64 as
exp(-(d/σ)²/2), so a σ of 1e-200 smooths nothing and one of 1e300 makes p̃ uniform, where σ²
would underflow to 0 or overflow; weights that would be infinite (λ = 0 with bins of no smoothed
mass) are a ValueError. How large finite weights may be is the caller's to bound (build-bins
keeps them within what a model file stores).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from zhangcolor.bins import ab_bins, nearest_bins
from zhangcolor.constants import LAMBDA, SIGMA

#: The smallest p̃ a pixel's weight divides by: a bin with no mass near it (p̃ = 0) weighs
#: 1e12, not infinity, so a rebalanced AuC stays a number.
_MIN_PRIOR = 1e-12


def _check_distribution(prior: Tensor, name: str) -> None:
    if prior.dim() != 1:
        raise ValueError(f"{name} must have shape (Q,), got {tuple(prior.shape)}")
    if not bool(torch.isfinite(prior).all()) or bool((prior < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative")
    if not float(prior.sum()) > 0:
        raise ValueError(f"{name} has no mass: no pixel was counted")


def prior_from_counts(counts: Tensor) -> Tensor:
    """Normalise bin counts into the empirical distribution p.

    Args:
        counts: ``(Q,)`` non-negative pixel counts per bin.

    Returns:
        ``(Q,)`` p, summing to 1.
    """
    _check_distribution(counts, "counts")
    counts = counts.to(torch.float64) if not counts.is_floating_point() else counts
    return counts / counts.sum()


def smooth_prior(prior: Tensor, centers: Tensor | None = None, sigma: float = SIGMA) -> Tensor:
    """Smooth p with a Gaussian kernel of σ ab units on the grid of bin centres.

    Args:
        prior: ``(Q,)`` empirical distribution p (any non-negative mass; it is renormalised).
        centers: ``(Q, 2)`` bin centres; the paper's 313 by default.
        sigma: Gaussian σ in ab units (> 0).

    Returns:
        ``(Q,)`` p̃, summing to 1.
    """
    _check_distribution(prior, "prior")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive finite number, got {sigma}")
    if centers is None:
        centers = ab_bins(dtype=prior.dtype, device=prior.device)
    if centers.shape != (prior.shape[0], 2):
        raise ValueError(
            f"centers must have shape ({prior.shape[0]}, 2) to match the prior, "
            f"got {tuple(centers.shape)}"
        )
    dtype = prior.dtype if prior.is_floating_point() else torch.float64
    centers = centers.to(dtype=torch.float64, device=prior.device)
    # The kernel between bin centres is the grid convolution restricted to in-gamut nodes; d/σ
    # first, so that no σ² underflows to 0 or overflows.
    kernel = torch.exp(-0.5 * (torch.cdist(centers, centers) / sigma) ** 2)  # (Q, Q)
    smoothed = kernel @ prior.to(torch.float64)
    return (smoothed / smoothed.sum()).to(dtype)


def class_weights(prior_smoothed: Tensor, lam: float = LAMBDA) -> Tensor:
    """The paper's class-rebalancing weights (eq. 4): w ∝ ((1 - λ) p̃ + λ / Q)^-1, normalised so
    that E_p̃[w] = Σ_q p̃_q w_q = 1.

    A pure function of p̃ and λ: smooth p first with :func:`smooth_prior`.

    Args:
        prior_smoothed: ``(Q,)`` p̃, the smoothed empirical distribution over the bins.
        lam: weight λ in [0, 1] of the uniform distribution (½ in the paper); λ = 1 gives w = 1.

    Returns:
        ``(Q,)`` w, in p̃'s dtype (float64 for integer input).
    """
    _check_distribution(prior_smoothed, "prior_smoothed")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam (λ) must be in [0, 1], got {lam}")
    dtype = prior_smoothed.dtype if prior_smoothed.is_floating_point() else torch.float64
    p = prior_smoothed.to(dtype)
    p = p / p.sum()
    if lam == 0.0 and bool((p == 0).any()):
        empty = int((p == 0).sum())
        raise ValueError(
            f"lam = 0 needs every smoothed bin to have mass; {empty} of {len(p)} have none, and "
            "their weights would be infinite"
        )
    weights = 1.0 / ((1.0 - lam) * p + lam / p.shape[0])
    weights = weights / (p * weights).sum()
    if not bool(torch.isfinite(weights).all()):
        raise ValueError(f"the weights overflow (λ = {lam:g} and bins of almost no mass)")
    return weights


def inverse_prior_weights(true_ab: Tensor, centers: Tensor, prior_smoothed: Tensor) -> Tensor:
    """The class-rebalanced AuC's weight of each pixel: 1 / p̃ of its true color's nearest bin
    (p̃ floored at 1e-12, so a bin without mass gives a large weight rather than infinity).

    Which p̃: training's validation rebalances with the run's own bins (``--bins``); ``evaluate``
    with the shipped default prior (``load_bins()``), whatever model it scores, so that its
    rebalanced AuCs compare across models.

    Args:
        true_ab: ``(B, 2, H, W)`` true ab.
        centers: ``(Q, 2)`` bin centres.
        prior_smoothed: ``(Q,)`` p̃ over those bins.

    Returns:
        ``(B, H, W)`` weights, in p̃'s dtype.
    """
    _, index = nearest_bins(true_ab, centers, 1)  # (B, 1, H, W)
    return 1.0 / prior_smoothed[index[:, 0]].clamp_min(_MIN_PRIOR)
