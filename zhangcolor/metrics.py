"""Colorization metrics (paper, section 3.1)."""

from __future__ import annotations

import torch
from torch import Tensor

#: AuC sweeps the ab L2 threshold over 0..150 in steps of 1.
AUC_MAX_THRESHOLD = 150


def auc(
    pred_ab: Tensor, true_ab: Tensor, mask: Tensor | None = None, pixel_weight: Tensor | None = None
) -> float:
    """Area under the curve of "share of pixels within an ab L2 threshold", thresholds 0..150,
    normalised to [0, 100]. With ``pixel_weight`` (e.g. the inverse prior of each pixel's true
    bin) it is the class-rebalanced AuC.

    Args:
        pred_ab, true_ab: ``(B, 2, H, W)`` ab.
        mask: ``(B, H, W)`` pixels that count.
        pixel_weight: ``(B, H, W)`` weight of each pixel.
    """
    error = (pred_ab.float() - true_ab.float()).norm(dim=1)  # (B, H, W)
    weight = torch.ones_like(error) if pixel_weight is None else pixel_weight.float()
    if mask is not None:
        weight = weight * mask.float()
    thresholds = torch.arange(AUC_MAX_THRESHOLD + 1, device=error.device, dtype=error.dtype)
    total = weight.sum().clamp_min(1e-12)
    within = torch.stack([(weight * (error <= t)).sum() / total for t in thresholds])
    return float(within.mean() * 100)
