"""Training losses on the network's 1/4-resolution output.

- ``rebalanced_cross_entropy``: the paper's multinomial cross-entropy (eq. 2) against the
  soft-encoded target, each pixel weighted by w of its true color's nearest bin (eq. 3).
- ``regression_loss``: L1, L2 or Huber on ab, the baseline of the paper's comparison.

Both average over valid pixels (alpha = 255), so transparent pixels carry no weight.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from zhangcolor.decode import compute_dtype
from zhangcolor.options import REGRESSION_LOSSES


def rebalanced_cross_entropy(
    logits: Tensor,
    index: Tensor,
    weight: Tensor,
    class_weights: Tensor | None,
    mask: Tensor | None = None,
) -> Tensor:
    """-Σ_pixels v(Z) Σ_q Z_q log Ẑ_q, averaged over valid pixels.

    Args:
        logits: ``(B, Q, h, w)`` predicted logits.
        index: ``(B, k, h, w)`` soft-encoding bins, nearest first (``soft_encode_sparse``).
        weight: ``(B, k, h, w)`` soft-encoding weights Z, summing to 1 over dim 1.
        class_weights: ``(Q,)`` rebalancing weights w, or None for the paper's unweighted "class"
            variant.
        mask: ``(B, h, w)`` 1 for pixels that count, 0 for the rest; all count if None.

    Returns:
        scalar loss.
    """
    log_p = F.log_softmax(logits.to(compute_dtype(logits)), dim=1)  # (B, Q, h, w)
    cross = -(weight * log_p.gather(1, index)).sum(1)  # (B, h, w)
    pixel = torch.ones_like(cross) if mask is None else mask.to(cross.dtype)
    if class_weights is not None:
        pixel = pixel * class_weights.to(cross)[index[:, 0]]  # v(Z) = w of the nearest bin
    valid = torch.ones_like(cross) if mask is None else mask.to(cross.dtype)
    return (cross * pixel).sum() / valid.sum().clamp_min(1.0)


def regression_loss(
    pred: Tensor, target: Tensor, kind: str = "l2", delta: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """L1, L2 (squared error) or Huber between ab, averaged over valid pixels.

    Args:
        pred: ``(B, 2, h, w)`` predicted ab, ab units.
        target: ``(B, 2, h, w)`` true ab, ab units.
        kind: ``l1``, ``l2`` or ``huber``.
        delta: Huber threshold, in ab units.
        mask: ``(B, h, w)`` 1 for pixels that count.

    Returns:
        scalar loss: per pixel, the sum over a and b.
    """
    if kind not in REGRESSION_LOSSES:
        raise ValueError(f"unknown regression loss {kind!r}; valid: {', '.join(REGRESSION_LOSSES)}")
    dtype = torch.promote_types(compute_dtype(pred), target.dtype)
    pred, target = pred.to(dtype), target.to(dtype)
    if kind == "l1":
        per = (pred - target).abs()
    elif kind == "l2":
        per = (pred - target).square()
    else:
        per = F.huber_loss(pred, target, reduction="none", delta=delta)
    per = per.sum(1)  # (B, h, w)
    if mask is None:
        return per.mean()
    mask = mask.to(per.dtype)
    return (per * mask).sum() / mask.sum().clamp_min(1.0)
