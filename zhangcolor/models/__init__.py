"""Colorization networks: a backbone plus a head, every head on every backbone; and the authors'
SIGGRAPH 2017 network, whole, as they released it.

The backbone maps L ``(B, 1, H, W)`` in [0, 100] to features at 1/4 of the input resolution;
the head maps those to 313 bin logits (classification) or to ab (regression). ``siggraph17``
also takes the user's colour points (hints); its two outputs are its own (see its module).
Every network says what it takes and gives: ``kind`` (its head), ``takes_hints``, and
``out_stride`` (input pixels per output pixel, per axis).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zhangcolor.bins import ab_bins
from zhangcolor.constants import STRIDE
from zhangcolor.models.eccv16 import ECCV16
from zhangcolor.models.heads import build_head
from zhangcolor.models.hint_prior import HintPrior
from zhangcolor.models.siggraph17 import SIGGRAPH17
from zhangcolor.models.unet import UNet
from zhangcolor.options import BACKBONES, ENCODERS, HEADS, Head, ModelConfig

__all__ = [
    "BACKBONES",
    "ENCODERS",
    "HEADS",
    "SIGGRAPH17",
    "ColorizationNet",
    "Head",
    "ModelConfig",
]


class ColorizationNet(nn.Module):
    """Backbone + head: L ``(B, 1, H, W)`` (and, for a backbone that takes them, hint channels
    ``(B, 3, H, W)``: a / 110, b / 110, mask) -> ``(B, 313, H/4, W/4)`` logits or
    ``(B, 2, H/4, W/4)`` ab in ab units, as :attr:`kind` says."""

    out_stride = STRIDE

    def __init__(self, *, backbone: nn.Module, head: Head, point_vote: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = build_head(Head.parse(head), backbone.out_channels)
        if point_vote:  # the points' own vote on each pixel's bins (ModelConfig.point_vote)
            self.hint_prior = HintPrior(ab_bins(), backbone.out_channels)

    @property
    def kind(self) -> Head:
        return self.head.kind

    @property
    def takes_hints(self) -> bool:
        return self.backbone.takes_hints

    def forward(self, lightness: Tensor, hints: Tensor | None = None) -> Tensor:
        """``hints`` None is no points (automatic colorization); a backbone that takes none
        refuses any."""
        if hints is not None and not self.takes_hints:
            raise ValueError(f"{type(self.backbone).__name__} takes no hints; pass hints=None")
        features = self.backbone(lightness, hints)
        output = self.head(features)
        if hints is None or not hasattr(self, "hint_prior"):
            return output
        return output + self.hint_prior(hints, lightness, features)


def build_model(config: ModelConfig) -> ColorizationNet | SIGGRAPH17:
    """The network a config describes. siggraph17 has the authors' fixed layout: ``width``
    and ``encoder`` do not apply, and it has no rgb-regression head (a ValueError)."""
    if config.backbone == "siggraph17":
        return SIGGRAPH17(head=config.head)
    if config.backbone == "eccv16":
        backbone: nn.Module = ECCV16(width=config.width, hints=config.hints)
    else:
        backbone = UNet(encoder=config.encoder, pretrained=config.pretrained, hints=config.hints)
    return ColorizationNet(backbone=backbone, head=config.head, point_vote=config.point_vote)


def feature_encoder(device: torch.device | str = "cpu") -> nn.Module:
    """The frozen ImageNet EfficientNet-Lite0 (offline weights), in eval mode: sRGB in
    [-1, 1] ``(B, 3, H, W)`` -> feature maps at strides 4, 8, 16 and 32, for the perceptual
    and contrastive losses."""
    from zhangcolor.models.efficientnet_lite import EfficientNetLite

    encoder = EfficientNetLite(variant="efficientnet-lite0")
    encoder.load_imagenet(True)
    return encoder.to(device).eval().requires_grad_(False)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (or any ``.module``) wrapper."""
    return getattr(model, "module", model)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def catalogue() -> list[dict]:
    """Every backbone × head (unet once per encoder, siggraph17 with its own two) with its
    parameter count."""
    rows = []
    variants = [("eccv16", {"width": 1.0}), ("eccv16", {"width": 0.25})]
    variants += [("unet", {"encoder": e}) for e in ENCODERS]
    variants += [("siggraph17", {"width": 1.0})]  # the authors' one width
    with torch.device("meta"):  # no memory, no init: counting only
        for backbone, extra in variants:
            for head in Head:
                if backbone == "siggraph17" and head is Head.RGB_REGRESSION:
                    continue
                model = build_model(ModelConfig(backbone=backbone, head=head, **extra))
                rows.append(
                    {
                        "backbone": backbone,
                        "head": head.value,
                        **extra,
                        "parameters": count_parameters(model),
                    }
                )
    return rows
