"""What a network predicts from its features at 1/4 resolution, and how that becomes ab.

- ``classification`` (the paper's): logits over the Q = 313 bins, decoded by the annealed mean at
  a temperature T (paper, section 2.3);
- ``regression`` (the paper's baseline): ab itself; T does not apply.
"""

from __future__ import annotations

from torch import Tensor, nn

from zhangcolor.constants import AB_NORM, Q
from zhangcolor.options import Head


class ClassificationHead(nn.Conv2d):
    """Features ``(B, C, h, w)`` -> logits ``(B, Q, h, w)``: a 1×1 convolution."""

    kind = Head.CLASSIFICATION

    def __init__(self, channels: int) -> None:
        super().__init__(channels, Q, 1)


class RegressionHead(nn.Conv2d):
    """Features ``(B, C, h, w)`` -> ab ``(B, 2, h, w)`` in ab units: a 1×1 convolution whose
    output is scaled by 110, so that the convolution itself works in about [-1, 1]."""

    kind = Head.REGRESSION

    def __init__(self, channels: int) -> None:
        super().__init__(channels, 2, 1)

    def forward(self, features: Tensor) -> Tensor:
        return super().forward(features) * AB_NORM


def build_head(kind: Head, channels: int) -> nn.Conv2d:
    return ClassificationHead(channels) if kind is Head.CLASSIFICATION else RegressionHead(channels)
