"""Colorization metrics (paper, section 3.1): the AuC of "pixels within an ab distance", raw and
class-rebalanced, and Hasler & Süsstrunk's colorfulness."""

from __future__ import annotations

import torch
from torch import Tensor

#: AuC sweeps the ab L2 threshold over 0..150 in steps of 1.
AUC_MAX_THRESHOLD = 150


def within_thresholds(pred_ab: Tensor, true_ab: Tensor, weight: Tensor | None = None) -> Tensor:
    """The weight of the pixels whose ab error is at most t, for t = 0, 1, ..., 150.

    Args:
        pred_ab, true_ab: ``(B, 2, H, W)`` ab.
        weight: ``(B, H, W)`` weight of each pixel (0 leaves it out); 1 for all if None.

    Returns:
        ``(151,)`` float64 sums; divided by the total weight, the curve whose mean is the AuC.
    """
    dtype = torch.promote_types(torch.promote_types(pred_ab.dtype, true_ab.dtype), torch.float32)
    error = (pred_ab.to(dtype) - true_ab.to(dtype)).norm(dim=1).flatten()  # (N,)
    w = torch.ones_like(error) if weight is None else weight.flatten().to(error.device)
    # error <= t  <=>  ceil(error) <= t for integer t: one histogram, then a running sum.
    bucket = torch.ceil(error).clamp_(max=AUC_MAX_THRESHOLD + 1).long()
    counts = torch.bincount(bucket, weights=w.double(), minlength=AUC_MAX_THRESHOLD + 2)
    return counts[: AUC_MAX_THRESHOLD + 1].cumsum(0)


def auc_from_sums(within: Tensor, total: float) -> float:
    """AuC in [0, 100] from :func:`within_thresholds` sums and the total weight."""
    return float((within / max(total, 1e-12)).mean() * 100)


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
    shape = (pred_ab.shape[0], *pred_ab.shape[2:])
    weight = torch.ones(shape, dtype=torch.float64, device=pred_ab.device)
    if pixel_weight is not None:
        weight = weight * pixel_weight
    if mask is not None:
        weight = weight * mask
    return auc_from_sums(within_thresholds(pred_ab, true_ab, weight), float(weight.sum()))


def colorfulness(rgb: Tensor) -> float:
    """Hasler & Süsstrunk (2003) colorfulness of sRGB ``(3, H, W)`` in [0, 1] (0-255 scale)."""
    r, g, b = (rgb.double() * 255).unbind(0)
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(
        torch.hypot(rg.std(unbiased=False), yb.std(unbiased=False))
        + 0.3 * torch.hypot(rg.mean(), yb.mean())
    )
