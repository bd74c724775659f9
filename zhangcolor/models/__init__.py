"""Colorization networks: a backbone plus a head, every head on every backbone.

The backbone maps L ``(B, 1, H, W)`` in [0, 100] to features at 1/4 of the input resolution;
the head maps those to 313 bin logits (classification) or to ab (regression).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zhangcolor.constants import AB_NORM, Q
from zhangcolor.models.eccv16 import ECCV16
from zhangcolor.models.unet import ENCODERS, UNet

BACKBONES = ("eccv16", "unet")
HEADS = ("classification", "regression")


@dataclass
class ModelConfig:
    """The network (defaults in configs/*.yaml, section `model`)."""

    backbone: str = "eccv16"  # eccv16 (the paper's) or unet
    head: str = "classification"  # classification (313 logits) or regression (ab)
    width: float = 1.0  # eccv16 channel multiplier; 1 is the paper's 32.2 M-parameter network
    encoder: str = "efficientnet-lite0"  # unet encoder: resnet18, resnet34, efficientnet-lite0
    pretrained: bool | str = False  # unet: ImageNet encoder weights (True, or a file path)

    def __post_init__(self) -> None:
        for name, value, valid in [
            ("backbone", self.backbone, BACKBONES),
            ("head", self.head, HEADS),
            ("encoder", self.encoder, ENCODERS),
        ]:
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        if not self.width > 0:
            raise ValueError(f"width must be positive, got {self.width}")


class ColorizationNet(nn.Module):
    """Backbone + head: L ``(B, 1, H, W)`` -> ``(B, 313, H/4, W/4)`` logits or
    ``(B, 2, H/4, W/4)`` ab in ab units."""

    def __init__(self, *, backbone: nn.Module, head: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_kind = head
        out = Q if head == "classification" else 2
        self.head = nn.Conv2d(backbone.out_channels, out, 1)

    def forward(self, lightness: Tensor) -> Tensor:
        out = self.head(self.backbone(lightness))
        # Regression predicts ab / 110 so that its targets are in about [-1, 1].
        return out if self.head_kind == "classification" else out * AB_NORM


def build_model(config: ModelConfig) -> ColorizationNet:
    """The network a config describes."""
    if config.backbone == "eccv16":
        backbone: nn.Module = ECCV16(width=config.width)
    else:
        backbone = UNet(encoder=config.encoder, pretrained=config.pretrained)
    return ColorizationNet(backbone=backbone, head=config.head)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def catalogue() -> list[dict]:
    """Every backbone × head (unet once per encoder) with its parameter count."""
    rows = []
    variants = [("eccv16", {"width": 1.0}), ("eccv16", {"width": 0.25})]
    variants += [("unet", {"encoder": e}) for e in ENCODERS]
    with torch.device("meta"):  # no memory, no init: counting only
        for backbone, extra in variants:
            for head in HEADS:
                model = build_model(ModelConfig(backbone=backbone, head=head, **extra))
                rows.append(
                    {
                        "backbone": backbone,
                        "head": head,
                        **extra,
                        "parameters": count_parameters(model),
                    }
                )
    return rows
