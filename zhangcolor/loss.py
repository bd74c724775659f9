"""Training losses on the network's 1/4-resolution output.

- ``rebalanced_cross_entropy``: the paper's multinomial cross-entropy (eq. 2) against the
  soft-encoded target, each pixel weighted by w of its true color's nearest bin (eq. 3).
- ``regression_loss``: L1, L2 or Huber on ab, the baseline of the paper's comparison.
- ``perceptual_loss`` and ``contrastive_loss``: terms on features of a frozen ImageNet encoder,
  added to L2 for the regression head (seed 002's idea): the prediction's features near the
  truth's, and nearer to them than to the gray image's.

All average over valid pixels (alpha = 255), so transparent pixels carry no weight.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
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


def _features(encoder: nn.Module, rgb: Tensor) -> list[Tensor]:
    """The encoder's feature maps of sRGB ``(B, 3, H, W)`` in [0, 1] (ImageNet Lite: [-1, 1])."""
    return encoder(rgb * 2.0 - 1.0)


def perceptual_loss(pred_rgb: Tensor, true_rgb: Tensor, encoder: nn.Module) -> Tensor:
    """Mean squared distance between the encoder's features of the prediction and of the truth,
    summed over its feature maps.

    Args:
        pred_rgb, true_rgb: ``(B, 3, H, W)`` sRGB in [0, 1]; put the truth into the prediction
            where pixels do not count.
        encoder: frozen, returning a list of feature maps.
    """
    truth = [f.detach() for f in _features(encoder, true_rgb)]
    return sum(F.mse_loss(p, t) for p, t in zip(_features(encoder, pred_rgb), truth, strict=True))


def contrastive_loss(
    pred_rgb: Tensor, true_rgb: Tensor, gray_rgb: Tensor, encoder: nn.Module
) -> Tensor:
    """Σ over feature maps of ‖f(pred) − f(truth)‖₁ / ‖f(pred) − f(gray)‖₁: small when the
    prediction is near the truth *and* far from the gray image (the truth as the positive,
    the gray input as the negative)."""
    pred = _features(encoder, pred_rgb)
    truth = [f.detach() for f in _features(encoder, true_rgb)]
    gray = [f.detach() for f in _features(encoder, gray_rgb)]
    terms = [
        (p - t).abs().mean() / ((p - g).abs().mean() + 1e-6)
        for p, t, g in zip(pred, truth, gray, strict=True)
    ]
    return sum(terms)
