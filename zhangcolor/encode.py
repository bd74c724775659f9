"""Soft-encoding of ab into a distribution over the Q bins (paper, section 2.1).

Each pixel's ab is spread over its k = 5 nearest bin centres with Gaussian weights (σ = 5) that
sum to 1. Training uses the sparse form (indices and weights); the dense ``(B, Q, H, W)`` target
is there for inspection and for callers that want it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zhangcolor.bins import nearest_bins
from zhangcolor.constants import K_NEIGHBOURS, SIGMA


def _check(k: int, sigma: float) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not (sigma > 0 and sigma < float("inf")):
        raise ValueError(f"sigma must be positive and finite, got {sigma}")


def soft_encode_sparse(
    ab: Tensor, centers: Tensor, k: int = K_NEIGHBOURS, sigma: float = SIGMA
) -> tuple[Tensor, Tensor]:
    """Soft-encode ab as the k nearest bins and their Gaussian weights.

    Args:
        ab: ``(B, 2, H, W)`` float ab values.
        centers: ``(Q, 2)`` bin centres.
        k: number of nearest bins to spread over.
        sigma: Gaussian σ in ab units.

    Returns:
        ``index (B, k, H, W)`` long bin indices, nearest first, and ``weight (B, k, H, W)``
        summing to 1 over dim 1.
    """
    _check(k, sigma)
    dist2, index = nearest_bins(ab, centers, k)
    # softmax is the normalised Gaussian, and stays finite when every weight underflows.
    weight = torch.softmax(dist2 * (-0.5 / sigma**2), dim=1)
    return index, weight


def soft_encode(ab: Tensor, centers: Tensor, k: int = K_NEIGHBOURS, sigma: float = SIGMA) -> Tensor:
    """Soft-encode ab as a distribution over the bins.

    Args:
        ab: ``(B, 2, H, W)`` float ab values.
        centers: ``(Q, 2)`` bin centres.
        k: number of nearest bins with non-zero mass.
        sigma: Gaussian σ in ab units.

    Returns:
        ``(B, Q, H, W)`` target distribution Z: k non-zeros per pixel, summing to 1 over dim 1.
    """
    index, weight = soft_encode_sparse(ab, centers, k, sigma)
    b, _, h, w = ab.shape
    out = weight.new_zeros(b, centers.shape[0], h, w)
    return out.scatter_(1, index, weight)
