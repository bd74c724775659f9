"""Training losses on the network's 1/4-resolution output, and the criterion a run trains with.

- ``rebalanced_cross_entropy``: the paper's multinomial cross-entropy (eq. 2) against the
  soft-encoded target, each pixel weighted by w of its true color's nearest bin (eq. 3).
- ``regression_loss``: L1, L2 or Huber on ab, the baseline of the paper's comparison.
- ``perceptual_loss`` and ``contrastive_loss``: terms on features of a frozen ImageNet encoder,
  added to L2 for the regression head, so that a regression model is pulled away from the
  desaturated mean: the prediction's features near the truth's, and nearer to them than to the
  gray image's.
- ``build_criterion``: the head's loss, built once per run from its config and bins (as
  torchvision's ``criterion = nn.CrossEntropyLoss(...)``), called on each batch's network
  output and truth.

All average over valid pixels (alpha = 255), so transparent pixels carry no weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from zhangcolor.color import lab_to_rgb
from zhangcolor.constants import STRIDE
from zhangcolor.decode import compute_dtype
from zhangcolor.encode import soft_encode_sparse
from zhangcolor.options import FEATURE_LOSSES, REGRESSION_LOSSES, Head, TrainConfig


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


# ----------------------------------------------------------------------------- the criterion


def targets_at_output(ab: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """ab ``(B, 2, H, W)`` and mask ``(B, H, W)`` averaged down to the output's 1/4 size; a
    pixel there counts only if all its 4×4 source pixels do."""
    small_ab = F.avg_pool2d(ab, STRIDE)  # (B, 2, H/4, W/4)
    small_mask = F.avg_pool2d(mask[:, None].float(), STRIDE)[:, 0] >= 1.0  # (B, H/4, W/4)
    return small_ab, small_mask


class Criterion(Protocol):
    """A run's loss: the network's output ``(B, C, H/4, W/4)`` against a crop's truth, L
    ``(B, 1, H, W)`` in [0, 100], ab ``(B, 2, H, W)`` and mask ``(B, H, W)`` (True where the
    pixel counts); returns the scalar loss."""

    def __call__(self, output: Tensor, lightness: Tensor, ab: Tensor, mask: Tensor) -> Tensor: ...


@dataclass(frozen=True, kw_only=True)
class ClassificationCriterion:
    """Cross-entropy against the soft-encoded ab, each pixel weighted by w of its nearest bin
    (``class_weights``; None for the paper's unweighted "class" variant)."""

    centers: Tensor  # (Q, 2) bin centres
    class_weights: Tensor | None  # (Q,) w

    def __call__(self, output: Tensor, lightness: Tensor, ab: Tensor, mask: Tensor) -> Tensor:
        small_ab, small_mask = targets_at_output(ab, mask)
        index, weight = soft_encode_sparse(small_ab, self.centers)  # (B, k, H/4, W/4) each
        return rebalanced_cross_entropy(output, index, weight, self.class_weights, small_mask)


@dataclass(frozen=True, kw_only=True)
class RegressionCriterion:
    """L1, L2 or Huber between the predicted and the true ab."""

    kind: str  # l1, l2 or huber
    delta: float  # Huber threshold, ab units

    def __call__(self, output: Tensor, lightness: Tensor, ab: Tensor, mask: Tensor) -> Tensor:
        small_ab, small_mask = targets_at_output(ab, mask)
        return regression_loss(output, small_ab, self.kind, self.delta, small_mask)


@dataclass(frozen=True, kw_only=True)
class RgbCriterion:
    """The RGB baseline: L2 between the predicted sRGB and the crop's, averaged down to the
    output's size."""

    def __call__(self, output: Tensor, lightness: Tensor, ab: Tensor, mask: Tensor) -> Tensor:
        _, small_mask = targets_at_output(ab, mask)
        true_rgb = F.avg_pool2d(lab_to_rgb(torch.cat([lightness, ab], 1)), STRIDE)
        return regression_loss(output, true_rgb, "l2", mask=small_mask)


@dataclass(frozen=True, kw_only=True)
class FeatureCriterion:
    """L2 on ab plus ``weight`` times the perceptual or contrastive term (``kind``, one of
    :data:`~zhangcolor.options.FEATURE_LOSSES`) on the frozen ``encoder``'s features."""

    kind: str
    encoder: nn.Module
    weight: float

    def __call__(self, output: Tensor, lightness: Tensor, ab: Tensor, mask: Tensor) -> Tensor:
        small_ab, small_mask = targets_at_output(ab, mask)
        loss = regression_loss(output, small_ab, "l2", mask=small_mask)
        return loss + self.weight * self._feature_term(output, lightness, ab, mask)

    def _feature_term(self, pred_ab: Tensor, lightness: Tensor, ab: Tensor, mask: Tensor) -> Tensor:
        """The feature term on sRGB at the crop's full size: the predicted ab upsampled and
        joined with the true L (as colorize does); pixels that do not count take the truth's
        value in the prediction."""
        size = ab.shape[-2:]
        up = F.interpolate(pred_ab.float(), size=size, mode="bilinear", align_corners=False)
        pred = lab_to_rgb(torch.cat([lightness, up], 1))  # (B, 3, H, W)
        truth = lab_to_rgb(torch.cat([lightness, ab], 1))
        pred = torch.where(mask[:, None], pred, truth)
        if self.kind == "l2+perceptual":
            return perceptual_loss(pred, truth, self.encoder)
        gray = lab_to_rgb(torch.cat([lightness, torch.zeros_like(ab)], 1))
        return contrastive_loss(pred, truth, gray, self.encoder)


def build_criterion(
    config: TrainConfig, bins: dict[str, Tensor], features: nn.Module | None = None
) -> Criterion:
    """The loss a run trains with, from its head and loss options.

    Args:
        config: the run's config (``model.head``, ``loss``, ``rebalance``, ``huber_delta``,
            ``feature_weight``).
        bins: ``centers (Q, 2)`` and ``weights (Q,)``, on the training device.
        features: the frozen encoder (:func:`zhangcolor.models.feature_encoder`), needed by
            the feature losses only.
    """
    head, kind = config.model.head, config.loss_kind
    if head is Head.CLASSIFICATION:
        weights = bins["weights"] if config.rebalance else None
        return ClassificationCriterion(centers=bins["centers"], class_weights=weights)
    if head is Head.RGB_REGRESSION:
        return RgbCriterion()
    if kind in FEATURE_LOSSES:
        if features is None:
            raise ValueError(f"the {kind} loss needs the frozen feature encoder; got none")
        return FeatureCriterion(kind=kind, encoder=features, weight=config.feature_weight)
    return RegressionCriterion(kind=kind, delta=config.huber_delta)
